"""A single-node Apache Kafka broker (KRaft) run from Maven Central's jars, no Docker needed.

``rollguard kafka start`` resolves ``org.apache.kafka:kafka_2.13`` once with Maven and the
``pom.xml`` beside this file, caches the jars under rollguard's cache directory, formats the
storage and starts the broker on 127.0.0.1. It returns once a client's metadata request
succeeds. Every failure is a :class:`BrokerError` whose message is one sentence saying what
to do (plus the broker's last log lines when it died).

>>> broker = LocalBroker(port=19092, home=Path("/tmp/rg-doc"))
>>> broker.bootstrap
'127.0.0.1:19092'
>>> broker.data_dir.name
'broker-19092'
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

KAFKA_VERSION = "4.1.1"  # keep equal to <kafka.version> in pom.xml
MIN_JAVA = 17
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0

_SERVER_PROPERTIES = """\
# written by rollguard: a single-node KRaft broker on loopback
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.cleaner.backoff.ms=1000
"""

_LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Logger:
      - name: kafka
        level: INFO
      - name: org.apache.kafka
        level: INFO
      - name: kafka.log.LogCleaner
        level: WARN
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
"""


class BrokerError(RuntimeError):
    """A local broker could not be started, found or stopped; the message says what to do."""


def rollguard_home() -> Path:
    """Where rollguard caches Kafka's jars and keeps local brokers: ``$ROLLGUARD_HOME``,
    else ``$XDG_CACHE_HOME/rollguard``, else ``~/.cache/rollguard``."""
    if os.environ.get("ROLLGUARD_HOME"):
        return Path(os.environ["ROLLGUARD_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "rollguard"


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as dead
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def java_executable() -> str:
    """The ``java`` to run the broker with (``$JAVA_HOME/bin/java`` first), checked to be 17+."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not candidate or not Path(candidate).exists():
        raise BrokerError(
            f"Java {MIN_JAVA} or newer is needed to run the Kafka broker and none was found: "
            "install a JDK or JRE (for example `apt-get install openjdk-17-jre-headless`) "
            "or set JAVA_HOME."
        )
    proc = subprocess.run([candidate, "-version"], capture_output=True, text=True, timeout=30)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise BrokerError(
            f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA} or newer but {candidate} is Java "
            f"{major or 'of an unknown version'}: install OpenJDK 17 and put it first on PATH "
            "or set JAVA_HOME."
        )
    return candidate


@dataclass(frozen=True)
class BrokerInfo:
    """What ``rollguard kafka status`` reports about a running local broker."""

    pid: int
    port: int
    controller_port: int
    data_dir: str
    log_file: str
    started_at: float
    start_seconds: float
    kafka_version: str = KAFKA_VERSION

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class LocalBroker:
    """One local single-node KRaft broker, identified by its port.

    ``home`` holds the jar cache (``kafka-<version>/libs``) and, unless ``data_dir`` is
    given, the broker's storage (``broker-<port>``). A state file in ``home/run`` lets
    ``status``, ``stop`` and ``logs`` find the broker from another process.
    """

    port: int = 9092
    data_dir: Path = None  # type: ignore[assignment]
    home: Path = field(default_factory=rollguard_home)
    heap: str = "512m"

    def __post_init__(self) -> None:
        self.home = Path(self.home)
        if self.data_dir is None:
            self.data_dir = self.home / f"broker-{self.port}"
        self.data_dir = Path(self.data_dir).expanduser().resolve()

    # -- places ---------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def jars_dir(self) -> Path:
        return self.home / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def state_file(self) -> Path:
        return self.home / "run" / f"broker-{self.port}.json"

    # -- jars -----------------------------------------------------------------------
    def jars_cached(self) -> bool:
        return (self.jars_dir / ".complete").exists()

    def ensure_jars(self, progress=print) -> Path:
        """Resolve Kafka's jars with Maven into the cache, unless they are there already."""
        if self.jars_cached():
            return self.jars_dir
        mvn = shutil.which("mvn")
        if not mvn:
            raise BrokerError(
                "Maven is needed once to download Kafka's jars from Maven Central and none "
                "was found: install it (for example `apt-get install maven`) and run again."
            )
        pom = resources.files("rollguard.kafka").joinpath("pom.xml")
        staging = self.jars_dir.with_name("libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        progress(f"Resolving Apache Kafka {KAFKA_VERSION} from Maven Central (once) ...")
        with resources.as_file(pom) as pom_path:
            proc = subprocess.run(
                [mvn, "-B", "-q", "-f", str(pom_path), "dependency:copy-dependencies",
                 f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
                capture_output=True, text=True, timeout=1800,
            )
        if proc.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise BrokerError(
                "Maven could not resolve Kafka's jars from Maven Central: check that Maven "
                f"reaches its repository (its output follows).\n{tail}"
            )
        shutil.rmtree(self.jars_dir, ignore_errors=True)
        staging.rename(self.jars_dir)
        (self.jars_dir / ".complete").write_text(KAFKA_VERSION)
        return self.jars_dir

    # -- lifecycle ------------------------------------------------------------------
    def status(self) -> BrokerInfo | None:
        """The running broker on this port, or None (a stale state file is removed)."""
        try:
            raw = json.loads(self.state_file.read_text())
            info = BrokerInfo(**raw)
        except (OSError, ValueError, TypeError):
            return None
        if _pid_alive(info.pid):
            return info
        self.state_file.unlink(missing_ok=True)
        return None

    def start(self, timeout: float = START_TIMEOUT_S, progress=print) -> BrokerInfo:
        """Start the broker (or return the one already running on this port)."""
        running = self.status()
        if running is not None:
            return running
        began = time.monotonic()
        java = java_executable()
        if not port_is_free(self.port):
            raise BrokerError(
                f"Port {self.port} on 127.0.0.1 is already in use by another program: stop it "
                "or choose another port with --port."
            )
        jars = self.ensure_jars(progress)
        controller_port = free_port()
        log_dir = self.data_dir / "kraft"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        props.write_text(_SERVER_PROPERTIES.format(
            port=self.port, controller_port=controller_port, log_dir=log_dir))
        log4j = self.data_dir / "log4j2.yaml"
        log4j.write_text(_LOG4J2)
        classpath = f"{jars}/*"
        base_cmd = [java, f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
        if not (log_dir / "meta.properties").exists():
            fmt = subprocess.run(
                base_cmd + ["kafka.tools.StorageTool", "format", "--ignore-formatted",
                            "-t", _cluster_id(), "-c", str(props)],
                capture_output=True, text=True, timeout=120,
            )
            if fmt.returncode != 0:
                tail = "\n".join((fmt.stdout + fmt.stderr).strip().splitlines()[-10:])
                raise BrokerError(
                    f"Formatting the broker's storage in {log_dir} failed: remove that "
                    f"directory or pass another --data-dir (the tool said:)\n{tail}")
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                base_cmd[:1] + [f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC",
                                "-Djava.awt.headless=true"] + base_cmd[1:]
                + ["kafka.Kafka", str(props)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.data_dir,
            )
        try:
            self._wait_ready(proc, timeout)
        except BaseException:  # an error or Ctrl-C while waiting: leave no orphan broker
            _terminate(proc.pid, STOP_TIMEOUT_S)
            raise
        info = BrokerInfo(
            pid=proc.pid, port=self.port, controller_port=controller_port,
            data_dir=str(self.data_dir), log_file=str(self.log_file),
            started_at=time.time(), start_seconds=round(time.monotonic() - began, 2),
        )
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(info.__dict__, indent=2))
        return info

    def _wait_ready(self, proc: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            code = proc.poll()
            if code is not None:
                raise BrokerError(
                    f"The Kafka broker exited during start with code {code}: read its log "
                    f"({self.log_file}); its last lines are:\n{self.tail_log(20)}")
            if _metadata_ok(self.bootstrap):
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"The Kafka broker did not answer a metadata request within {timeout:.0f} s "
                    f"and was stopped: read its log ({self.log_file}); its last lines are:\n"
                    f"{self.tail_log(20)}")
            time.sleep(0.2)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout``); False if none ran."""
        info = self.status()
        if info is None:
            return False
        _terminate(info.pid, timeout)
        self.state_file.unlink(missing_ok=True)
        return True

    def tail_log(self, lines: int = 50) -> str:
        try:
            with open(self.log_file, "rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - 256 * 1024))
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])


def running_brokers(home: Path | None = None) -> list[BrokerInfo]:
    """Every local broker started through rollguard that still runs."""
    home = Path(home) if home else rollguard_home()
    found = []
    for state in sorted((home / "run").glob("broker-*.json")):
        port = int(state.stem.split("-", 1)[1])
        info = LocalBroker(port=port, home=home).status()
        if info is not None:
            found.append(info)
    return found


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (as Kafka's).

    Like Kafka's own ``Uuid.randomUuid``, never one that starts with ``-``: the storage
    tool would read it as an option (one format in 64 failed so).

    >>> all(not _cluster_id().startswith("-") and len(_cluster_id()) == 22 for _ in range(500))
    True
    """
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _metadata_ok(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    from rollguard.kafka.clients import client_config

    admin = AdminClient(client_config(bootstrap, **{"socket.connection.setup.timeout.ms": 1000}))
    try:
        admin.list_topics(timeout=1.0)
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    return True


def _terminate(pid: int, timeout: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
