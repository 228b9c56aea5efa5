"""Local Apache Kafka (KRaft) run from Maven Central's jars, no Docker needed: one broker, or
a cluster of several.

``rollguard kafka start`` resolves ``org.apache.kafka:kafka_2.13`` once with Maven and the
``pom.xml`` beside this file, caches the jars under rollguard's cache directory, formats the
storage and starts the broker on 127.0.0.1. It returns once a client's metadata request
succeeds. ``rollguard kafka start --nodes 3`` starts a :class:`LocalCluster` instead: three
brokers (each also a controller of one static quorum) on ports P, P+1 and P+2, which
replicate every partition three times. Every failure is a :class:`BrokerError` whose message
is one sentence saying what to do (plus the broker's last log lines when it died).

While it works, ``start`` names each stage through its ``progress`` callback ("resolving
Kafka's jars with Maven ...", "starting broker on port P...", "waiting for the broker to
answer..."); :class:`StageProgress` shows those on a console with how long each has waited
(a spinner on a terminal, a line every few seconds otherwise). Each broker's data dir is
remembered under ``home/places`` when it launches, so that ``rollguard kafka logs --port P``
finds its log after it stopped or died, wherever ``--data-dir`` put it.

>>> broker = LocalBroker(port=19092, home=Path("/tmp/rg-doc"))
>>> broker.bootstrap
'127.0.0.1:19092'
>>> broker.data_dir.name
'broker-19092'
>>> LocalCluster(port=19092, home=Path("/tmp/rg-doc")).bootstrap
'127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094'
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Callable

from rollguard.processes import pid_alive

KAFKA_VERSION = "4.1.1"  # keep equal to <kafka.version> in pom.xml
MIN_JAVA = 17
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
KILL_WAIT_S = 5.0  # how long a SIGKILLed process may take to be gone
SYNC_TIMEOUT_S = 60.0
CLUSTER_HEAP = "384m"  # per node: three JVMs share a small machine
PROGRESS_EVERY_S = 5.0  # a plain progress line at least this often while a stage lasts

_SERVER_PROPERTIES = """\
# written by rollguard: a KRaft broker and controller on loopback
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
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
# keep records by size, not by age: replayed or test events carry old event times, and a
# time limit would delete them at the next retention check (every 5 minutes)
log.retention.ms=-1
log.retention.bytes=1073741824
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


class StageProgress:
    """The stages of a start as a user sees them, each with how long it has waited.

    Pass it as ``progress`` to :meth:`LocalBroker.start` or :meth:`LocalCluster.start`: each
    call names a new stage, which is written as a line at once. While the stage lasts, the
    live view (``live``, e.g. a spinner's text; every second) or, without one, ``write`` (every
    ``every`` seconds) shows it again with the seconds it has waited. Used as a context
    manager, a thread does those updates; :meth:`tick` does one (``clock`` may be a fake).

    >>> now = [0.0]
    >>> progress = StageProgress(print, every=5, clock=lambda: now[0])
    >>> progress("waiting for the broker to answer…")
    waiting for the broker to answer…
    >>> now[0] = 4.0; progress.tick()           # not yet: the last line is 4 s old
    >>> now[0] = 5.2; progress.tick()
    waiting for the broker to answer (5 s)…
    >>> now[0] = 7.0; progress.tick()           # the next one 5 s after that
    >>> now[0] = 10.4; progress.tick()
    waiting for the broker to answer (10 s)…
    >>> progress.done("ready on 127.0.0.1:9092 after 10 s"); progress.tick()
    ready on 127.0.0.1:9092 after 10 s
    """

    def __init__(self, write: Callable[[str], None], every: float = PROGRESS_EVERY_S,
                 clock: Callable[[], float] = time.monotonic,
                 live: Callable[[str], None] | None = None) -> None:
        self.write = write
        self.live = live
        self.every = every
        self.clock = clock
        self.began = clock()
        self.stage: str | None = None
        self._stage_began = self._last_line = self.began
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._status = None  # a rich Status while a spinner shows (see on())
        self._console = None

    @classmethod
    def on(cls, console, every: float = PROGRESS_EVERY_S) -> "StageProgress":
        """Progress on a rich ``console``: lines plus a spinner with the seconds waited on a
        terminal, plain lines (one at least every ``every`` s) otherwise."""
        progress = cls(lambda line: console.print(line, markup=False, highlight=False),
                       every=every)
        if console.is_terminal:
            progress._console = console
            progress.live = lambda text: progress._status and progress._status.update(text)
        return progress

    def elapsed(self) -> float:
        """Seconds since this progress began."""
        return self.clock() - self.began

    def __call__(self, stage: str) -> None:
        with self._lock:
            now = self.clock()
            self.stage, self._stage_began, self._last_line = stage, now, now
            self.write(stage)
            if self._console is not None and self._status is None:
                self._status = self._console.status(stage)
                self._status.start()
            if self.live is not None:
                self.live(stage)

    def tick(self) -> None:
        """Show the stage again with the seconds it has waited: on the live view, else as a
        line when the last line is ``every`` seconds old."""
        with self._lock:
            if self.stage is None:
                return
            now = self.clock()
            text = with_elapsed(self.stage, now - self._stage_began)
            if self.live is not None:
                self.live(text)
            elif now - self._last_line >= self.every:
                self.write(text)
                self._last_line = now

    def done(self, line: str | None = None) -> None:
        """The last stage is over: stop the spinner, then write ``line`` (if any)."""
        with self._lock:
            self.stage = None
            if self._status is not None:
                self._status.stop()
                self._status = None
            if line is not None:
                self.write(line)

    def __enter__(self) -> "StageProgress":
        period = 1.0 if self.live is not None else min(1.0, self.every / 2)

        def run() -> None:
            while not self._stopped.wait(period):
                self.tick()

        self._thread = threading.Thread(target=run, name="kafka-start-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.done()


def with_elapsed(stage: str, seconds: float) -> str:
    """A stage's text with the seconds it has waited.

    >>> with_elapsed("waiting for the broker to answer…", 12.4)
    'waiting for the broker to answer (12 s)…'
    >>> with_elapsed("resolving Kafka's jars with Maven (first time: about a minute)…", 31)
    "resolving Kafka's jars with Maven (first time: about a minute; 31 s so far)…"
    """
    body = stage[:-1] if stage.endswith("…") else stage.rstrip(". ")
    if body.endswith(")"):
        return f"{body[:-1]}; {seconds:.0f} s so far)…"
    return f"{body} ({seconds:.0f} s)…"


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
    """A TCP port on loopback that is free right now, outside the ephemeral range.

    The system hands ports of its ephemeral range to every outgoing connection: a port
    picked there can be taken by some client's connection in the seconds a broker needs to
    start ("already in use"). Below that range only listeners can take it.

    >>> low, _ = ephemeral_ports()
    >>> port = free_port()
    >>> port_is_free(port) and (port < low or low <= 1024)
    True
    """
    low, _ = ephemeral_ports()
    if low > 11024:
        for _ in range(200):
            port = random.randrange(10000, low)
            if port_is_free(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ephemeral_ports() -> tuple[int, int]:
    """The system's range of ports for outgoing connections (Linux's default when unknown)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


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
    """What ``rollguard kafka status`` reports about a running local broker (or cluster node)."""

    pid: int
    port: int
    controller_port: int
    data_dir: str
    log_file: str
    started_at: float
    start_seconds: float
    kafka_version: str = KAFKA_VERSION
    node_id: int = 1
    cluster_port: int | None = None  # the port of its LocalCluster; None for a lone broker

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class _Boot:
    """A broker ready to run: its command line and the controller port it will listen on."""

    command: tuple[str, ...]
    controller_port: int


@dataclass
class LocalBroker:
    """One local KRaft broker (and controller), identified by its port.

    Alone (the default) it is a single-node cluster: node 1, the only voter of its controller
    quorum, on a controller port chosen at each start. As a node of a :class:`LocalCluster` it
    is given its ``node_id``, a fixed ``controller_port``, the quorum's ``voters`` and the
    cluster's ``properties`` (they override the lone broker's), and knows its ``cluster_port``.

    ``home`` holds the jar cache (``kafka-<version>/libs``) and, unless ``data_dir`` is
    given, the broker's storage (``broker-<port>``). A state file in ``home/run`` lets
    ``status``, ``stop`` and ``logs`` find the broker from another process while it runs; a
    record in ``home/places`` (written at launch, kept after it stops) lets ``logs`` find its
    log afterwards too.

    >>> node = LocalBroker(port=19093, home=Path("/tmp/rg-doc"), node_id=2,
    ...                    controller_port=19193, voters="1@127.0.0.1:19192,2@127.0.0.1:19193",
    ...                    properties={"min.insync.replicas": "2"}, cluster_port=19092)
    >>> [line for line in node.server_properties().splitlines()
    ...  if line.startswith(("node.id", "controller.quorum", "min.insync", "listeners"))]
    ['node.id=2', 'controller.quorum.voters=1@127.0.0.1:19192,2@127.0.0.1:19193', 'listeners=PLAINTEXT://127.0.0.1:19093,CONTROLLER://127.0.0.1:19193', 'min.insync.replicas=2']
    >>> node.title
    'Node 2 of the Kafka cluster on port 19092'
    """

    port: int = 9092
    data_dir: Path = None  # type: ignore[assignment]
    home: Path = field(default_factory=rollguard_home)
    heap: str = "512m"
    node_id: int = 1
    controller_port: int | None = None  # None: a free port at each start
    voters: str | None = None  # controller.quorum.voters; None: this node alone
    properties: dict[str, str] = field(default_factory=dict)
    cluster_port: int | None = None

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
    def title(self) -> str:
        """How messages name this broker."""
        if self.cluster_port is None:
            return "The Kafka broker"
        return f"Node {self.node_id} of the Kafka cluster on port {self.cluster_port}"

    @property
    def jars_dir(self) -> Path:
        return self.home / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def state_file(self) -> Path:
        return self.home / "run" / f"broker-{self.port}.json"

    @property
    def place_file(self) -> Path:
        """Where the last broker launched on this port kept its data and log (see
        :func:`broker_log`)."""
        return _place_file(self.home, "broker", self.port)

    def server_properties(self, controller_port: int | None = None) -> str:
        """This broker's ``server.properties``: the lone broker's settings, then ``properties``."""
        controller_port = controller_port or self.controller_port
        text = _SERVER_PROPERTIES.format(
            node_id=self.node_id, voters=self.voters or f"{self.node_id}@127.0.0.1:{controller_port}",
            port=self.port, controller_port=controller_port, log_dir=self.data_dir / "kraft")
        return _with_properties(text, self.properties)

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
        progress("resolving Kafka's jars with Maven (first time: about a minute)…")
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
        if pid_alive(info.pid):
            return info
        self.state_file.unlink(missing_ok=True)
        return None

    def start(self, timeout: float = START_TIMEOUT_S, progress=print) -> BrokerInfo:
        """Start the broker (or return the one already running on this port)."""
        running = self.status()
        if running is not None:
            return running
        began = time.monotonic()
        boot = self._prepare(progress)
        progress(f"starting broker on port {self.port}…")
        proc = self._launch(boot)
        try:
            progress("waiting for the broker to answer…")
            _await([(self, proc)], lambda: _metadata_ok(self.bootstrap), timeout,
                   f"{self.title} did not answer a metadata request")
        except BaseException:  # an error or Ctrl-C while waiting: leave no orphan broker
            _terminate([proc.pid], STOP_TIMEOUT_S)
            raise
        return self._record(boot, proc, began)

    def _prepare(self, progress=print, cluster_id: str | None = None,
                 jars: Path | None = None) -> _Boot:
        """Check Java, the ports and the jars (unless given ``jars``), write the configuration
        and format the storage (with ``cluster_id``, else a new one) unless it is formatted
        already."""
        java = java_executable()
        if not port_is_free(self.port):
            raise BrokerError(
                f"Port {self.port} on 127.0.0.1 is already in use by another program: stop it "
                "or choose another port with --port."
            )
        jars = jars or self.ensure_jars(progress)
        controller_port = self.controller_port or free_port()
        if self.controller_port and not port_is_free(controller_port):
            raise BrokerError(
                f"Controller port {controller_port} of node {self.node_id} is already in use by "
                f"another program: stop it, or stop the cluster (`rollguard kafka stop --port "
                f"{self.cluster_port}`) and start it again on new controller ports.")
        log_dir = self.data_dir / "kraft"
        props = self.data_dir / "server.properties"
        log4j = self.data_dir / "log4j2.yaml"
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            props.write_text(self.server_properties(controller_port))
            log4j.write_text(_LOG4J2)
        except OSError as exc:
            raise BrokerError(
                f"{self.title} cannot write its data dir {self.data_dir} "
                f"({exc.strerror or exc}): choose a writable --data-dir.") from None
        classpath = f"{jars}/*"
        base_cmd = [java, f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
        if not (log_dir / "meta.properties").exists():
            if self.cluster_port is None:  # a cluster says once for all its nodes
                progress(f"formatting the broker's storage in {log_dir}…")
            fmt = subprocess.run(
                base_cmd + ["kafka.tools.StorageTool", "format", "--ignore-formatted",
                            "-t", cluster_id or _cluster_id(), "-c", str(props)],
                capture_output=True, text=True, timeout=120,
            )
            if fmt.returncode != 0:
                tail = "\n".join((fmt.stdout + fmt.stderr).strip().splitlines()[-10:])
                raise BrokerError(
                    f"Formatting the broker's storage in {log_dir} failed: remove that "
                    f"directory or pass another --data-dir (the tool said:)\n{tail}")
        command = (base_cmd[:1] + [f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC",
                                   "-Djava.awt.headless=true"] + base_cmd[1:]
                   + ["kafka.Kafka", str(props)])
        return _Boot(tuple(command), controller_port)

    def _launch(self, boot: _Boot) -> subprocess.Popen:
        # remembered before it runs: `kafka logs` finds the log of a broker that died starting
        _write_json(self.place_file, {
            "port": self.port, "data_dir": str(self.data_dir), "log_file": str(self.log_file),
            "node_id": self.node_id, "cluster_port": self.cluster_port, "launched_at": time.time()})
        with open(self.log_file, "ab") as log:
            return subprocess.Popen(
                list(boot.command), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.data_dir,
            )

    def _record(self, boot: _Boot, proc: subprocess.Popen, began: float) -> BrokerInfo:
        info = BrokerInfo(
            pid=proc.pid, port=self.port, controller_port=boot.controller_port,
            data_dir=str(self.data_dir), log_file=str(self.log_file),
            started_at=time.time(), start_seconds=round(time.monotonic() - began, 2),
            node_id=self.node_id, cluster_port=self.cluster_port,
        )
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(info.__dict__, indent=2))
        return info

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout``); False if none ran."""
        info = self.status()
        if info is None:
            return False
        _terminate([info.pid], timeout)
        self.state_file.unlink(missing_ok=True)
        return True

    def tail_log(self, lines: int = 50) -> str:
        return tail_file(self.log_file, lines)


def cluster_properties(nodes: int) -> dict[str, str]:
    """What every node of a ``nodes``-node cluster sets on top of the lone broker's settings:
    three replicas of each partition (internal topics too; fewer on fewer nodes), of which
    writes with acks=all need all but one in sync.

    >>> props = cluster_properties(3)
    >>> props["default.replication.factor"], props["min.insync.replicas"]
    ('3', '2')
    >>> cluster_properties(2)["transaction.state.log.min.isr"]
    '1'
    """
    replicas = min(3, nodes)
    in_sync = max(1, replicas - 1)
    return {
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(in_sync),
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(in_sync),
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(in_sync),
    }


class _ClientPorts:
    """The client ports of a cluster whose ``nodes`` nodes listen from ``port`` on."""

    port: int
    nodes: int

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(range(self.port, self.port + self.nodes))

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)


@dataclass(frozen=True)
class ClusterInfo(_ClientPorts):
    """What ``rollguard kafka status`` reports about a local cluster as a whole.

    >>> info = ClusterInfo(port=19092, nodes=3, cluster_id="x", controller_ports=[29092, 29093, 29094],
    ...                    data_dir="/tmp/c", started_at=0.0, start_seconds=0.0)
    >>> info.ports
    (19092, 19093, 19094)
    >>> info.voters
    '1@127.0.0.1:29092,2@127.0.0.1:29093,3@127.0.0.1:29094'
    """

    port: int
    nodes: int
    cluster_id: str
    controller_ports: tuple[int, ...]
    data_dir: str
    started_at: float
    start_seconds: float
    kafka_version: str = KAFKA_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "controller_ports", tuple(self.controller_ports))

    @property
    def voters(self) -> str:
        """``controller.quorum.voters``: every node, by id, at its controller port."""
        return ",".join(f"{node}@127.0.0.1:{port}"
                        for node, port in enumerate(self.controller_ports, start=1))


@dataclass
class LocalCluster(_ClientPorts):
    """Several local KRaft nodes as one cluster, identified by its first node's port.

    Node ``i`` (1 to ``nodes``) is a :class:`LocalBroker` listening for clients on
    ``port + i - 1``, broker and voter of one static controller quorum of all the nodes, with
    its data in ``data_dir/node-<i>`` (default ``home/cluster-<port>``). Every partition has
    three replicas and acks=all writes need two in sync (:func:`cluster_properties`), so the
    cluster keeps working when one node of three is lost. A state file
    ``home/run/cluster-<port>.json``, beside each node's own, lets ``status`` and ``stop`` find
    it from another process; starting it again on the same data restarts the same cluster.

    For tests of failures: :meth:`kill` (SIGKILL, no goodbye), :meth:`stop_node` (SIGTERM),
    :meth:`restart` (back in sync) and :meth:`rolling_restart`. Kafka creates its internal
    topics (``__consumer_offsets``, ``__transaction_state``) with three replicas on their first
    use: use a consumer group and a transaction once while all nodes run, before losing one.

    >>> cluster = LocalCluster(port=19092, home=Path("/tmp/rg-doc"))
    >>> cluster.ports, cluster.data_dir.name, cluster.node(2).data_dir.name, cluster.node(2).bootstrap
    ((19092, 19093, 19094), 'cluster-19092', 'node-2', '127.0.0.1:19093')
    """

    port: int = 9092
    nodes: int = 3
    data_dir: Path = None  # type: ignore[assignment]
    home: Path = field(default_factory=rollguard_home)
    heap: str = CLUSTER_HEAP

    def __post_init__(self) -> None:
        if self.nodes < 2:
            raise BrokerError(
                f"A cluster needs at least 2 nodes, not {self.nodes}: start a single broker "
                "with `rollguard kafka start` (without --nodes) instead.")
        if self.port < 1 or self.port + self.nodes - 1 > 65535:
            raise BrokerError(
                f"A {self.nodes}-node cluster needs ports {self.port} to "
                f"{self.port + self.nodes - 1}: choose a --port from 1 to {65536 - self.nodes}.")
        self.home = Path(self.home)
        if self.data_dir is None:
            self.data_dir = self.home / f"cluster-{self.port}"
        self.data_dir = Path(self.data_dir).expanduser().resolve()

    # -- places ---------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.home / "run" / f"cluster-{self.port}.json"

    def node(self, node: int, info: ClusterInfo | None = None) -> LocalBroker:
        """Node ``node`` (1-based) as a LocalBroker; given the running cluster's ``info``, it
        can start in that quorum (on that cluster's data dir)."""
        if not 1 <= node <= self.nodes:
            raise BrokerError(
                f"The Kafka cluster on port {self.port} has nodes 1 to {self.nodes}, not "
                f"{node}: name one of those.")
        data_dir = Path(info.data_dir) if info else self.data_dir
        return LocalBroker(
            port=self.port + node - 1, data_dir=data_dir / f"node-{node}", home=self.home,
            heap=self.heap, node_id=node,
            controller_port=info.controller_ports[node - 1] if info else None,
            voters=info.voters if info else None,
            properties=cluster_properties(self.nodes), cluster_port=self.port)

    # -- lifecycle ------------------------------------------------------------------
    def status(self) -> ClusterInfo | None:
        """The cluster on this port while any node of it runs, else None (its stale state
        file is removed)."""
        try:
            info = ClusterInfo(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if any(self.node_status(node) for node in range(1, info.nodes + 1)):
            return info
        self.state_file.unlink(missing_ok=True)
        return None

    def node_status(self, node: int) -> BrokerInfo | None:
        """Node ``node`` of this cluster if it runs, else None."""
        info = LocalBroker(port=self.port + node - 1, home=self.home).status()
        return info if info is not None and info.cluster_port == self.port else None

    def start(self, timeout: float = START_TIMEOUT_S, progress=print) -> ClusterInfo:
        """Start all nodes side by side and return once a metadata request to each lists them
        all; if the cluster runs, start only its nodes that are down and return it."""
        began = time.monotonic()
        info = self.status()
        if info is not None:
            if info.nodes != self.nodes:
                raise BrokerError(
                    f"The Kafka cluster on port {self.port} runs {info.nodes} nodes, not "
                    f"{self.nodes}: stop it with `rollguard kafka stop --port {self.port}` first.")
            down = [node for node in range(1, self.nodes + 1) if self.node_status(node) is None]
            if down:
                self._boot(down, info, timeout, progress)
            return info
        for port in self.ports:
            other = LocalBroker(port=port, home=self.home).status()
            if other is not None:
                owner = other.cluster_port or other.port
                what = "cluster" if other.cluster_port else "broker"
                raise BrokerError(
                    f"Port {port} is used by the local Kafka {what} on port {owner}: stop it "
                    f"with `rollguard kafka stop --port {owner}` or choose another --port.")
        info = ClusterInfo(
            port=self.port, nodes=self.nodes, cluster_id=self._cluster_id_of_data(),
            controller_ports=_free_ports(self.nodes, avoid=self.ports),
            data_dir=str(self.data_dir), started_at=time.time(), start_seconds=0.0)
        _write_json(_place_file(self.home, "cluster", self.port), {
            "port": self.port, "nodes": self.nodes, "data_dir": str(self.data_dir),
            "launched_at": time.time()})
        self._boot(list(range(1, self.nodes + 1)), info, timeout, progress)
        info = replace(info, start_seconds=round(time.monotonic() - began, 2))
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(info.__dict__, indent=2))
        return info

    def _cluster_id_of_data(self) -> str:
        """The id the data dir's nodes are formatted with; a new one (recorded) for a new dir."""
        record = self.data_dir / "cluster.json"
        try:
            saved = json.loads(record.read_text())
        except FileNotFoundError:
            saved = None
        except (OSError, ValueError):
            saved = {}
        if saved is not None:
            if not isinstance(saved, dict) or not saved.get("cluster_id"):
                raise BrokerError(
                    f"{record} is unreadable: remove {self.data_dir} or pass another --data-dir.")
            if saved.get("nodes") != self.nodes:
                raise BrokerError(
                    f"{self.data_dir} holds a cluster of {saved.get('nodes')} nodes, not "
                    f"{self.nodes}: start it with --nodes {saved.get('nodes')} or pass another "
                    "--data-dir.")
            return saved["cluster_id"]
        cluster_id = _cluster_id()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps({"cluster_id": cluster_id, "nodes": self.nodes}))
        except OSError as exc:
            raise BrokerError(
                f"The Kafka cluster on port {self.port} cannot write its data dir "
                f"{self.data_dir} ({exc.strerror or exc}): choose a writable --data-dir.") from None
        return cluster_id

    def _boot(self, nodes: list[int], info: ClusterInfo, timeout: float, progress) -> None:
        """Start ``nodes`` side by side in ``info``'s quorum; return once each lists all nodes."""
        began = time.monotonic()
        brokers = [self.node(node, info) for node in nodes]
        jars = brokers[0].ensure_jars(progress)  # once, before the nodes prepare side by side
        plural = "s" if len(nodes) > 1 else ""
        which = f"node{plural} {', '.join(map(str, nodes))}"
        unformatted = any(not (b.data_dir / "kraft" / "meta.properties").exists() for b in brokers)
        progress(f"{'formatting the storage of' if unformatted else 'preparing'} {which} in "
                 f"{info.data_dir}…")
        with ThreadPoolExecutor(len(brokers)) as pool:
            boots = list(pool.map(lambda b: b._prepare(progress, info.cluster_id, jars), brokers))
        progress(f"starting {which} on port{plural} {', '.join(str(b.port) for b in brokers)}…")
        started: list[tuple[LocalBroker, subprocess.Popen]] = []
        late = (f"The Kafka cluster on port {self.port} did not list its {self.nodes} brokers"
                if len(brokers) > 1 else
                f"{brokers[0].title} did not answer a metadata request listing all "
                f"{self.nodes} brokers")
        try:
            for broker, boot in zip(brokers, boots):
                started.append((broker, broker._launch(boot)))
            progress(f"waiting for the cluster's {self.nodes} brokers to answer and list each "
                     "other…")
            _await(started, lambda: all(_brokers_listed(b.bootstrap) == self.nodes
                                        for b in brokers), timeout, late)
        except BaseException:  # an error or Ctrl-C while waiting: leave no orphan node
            _terminate([proc.pid for _, proc in started], STOP_TIMEOUT_S)
            raise
        for (broker, proc), boot in zip(started, boots):
            broker._record(boot, proc, began)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop every node side by side (SIGTERM, then SIGKILL after ``timeout``); False if
        none ran."""
        info = self.status()
        nodes = info.nodes if info else self.nodes
        running = [b for b in map(self.node_status, range(1, nodes + 1)) if b is not None]
        _terminate([b.pid for b in running], timeout)
        for broker in running:
            LocalBroker(port=broker.port, home=self.home).state_file.unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)
        return info is not None or bool(running)

    def stop_node(self, node: int, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop node ``node`` cleanly (SIGTERM: it hands its leaderships over first); False if
        it was not running."""
        return self.node(node).stop(timeout)

    def kill(self, node: int) -> BrokerInfo:
        """SIGKILL node ``node``'s JVM, as a crash would (no goodbye to the cluster); return
        what it was, once it is gone."""
        broker = self.node(node)
        info = self.node_status(node)
        if info is None:
            raise BrokerError(
                f"{broker.title} is not running: start it again with restart({node}) first.")
        _terminate([info.pid], STOP_TIMEOUT_S, signal.SIGKILL)
        broker.state_file.unlink(missing_ok=True)
        return info

    def restart(self, node: int, timeout: float = START_TIMEOUT_S,
                sync_timeout: float = SYNC_TIMEOUT_S) -> BrokerInfo:
        """Stop node ``node`` cleanly if it runs, start it again on its own data and ports, and
        return once it answers metadata listing all nodes and no partition is under-replicated."""
        info = self.status()
        if info is None:
            raise BrokerError(
                f"No Kafka cluster runs on port {self.port}: start it with `rollguard kafka "
                f"start --nodes {self.nodes} --port {self.port}`.")
        self.node(node)  # a node that does not exist is an error before anything stops
        self.stop_node(node)
        self._boot([node], info, timeout, progress=lambda line: None)
        self.wait_in_sync(sync_timeout)
        return self.node_status(node)  # type: ignore[return-value]

    def rolling_restart(self, timeout: float = START_TIMEOUT_S,
                        sync_timeout: float = SYNC_TIMEOUT_S) -> None:
        """Restart the nodes one after another, each once the cluster is back in sync."""
        self.wait_in_sync(sync_timeout)
        for node in range(1, self.nodes + 1):
            self.restart(node, timeout, sync_timeout)

    def wait_in_sync(self, timeout: float = SYNC_TIMEOUT_S) -> None:
        """Return once a metadata request lists all nodes and no partition is under-replicated
        (every replica of every partition, internal topics included, is in its ISR)."""
        deadline = time.monotonic() + timeout
        while True:
            lagging = _under_replicated(self.bootstrap, self.nodes)
            if lagging == 0:
                return
            if time.monotonic() > deadline:
                what = (f"did not list its {self.nodes} brokers" if lagging is None else
                        f"still had {lagging} under-replicated partitions")
                raise BrokerError(
                    f"The Kafka cluster on port {self.port} {what} after {timeout:.0f} s: read "
                    f"its nodes' logs ({self.data_dir}/node-*/broker.log).")
            time.sleep(0.25)


def running_brokers(home: Path | None = None) -> list[BrokerInfo]:
    """Every local broker started through rollguard that still runs (cluster nodes too)."""
    home = Path(home) if home else rollguard_home()
    found = []
    for state in sorted((home / "run").glob("broker-*.json")):
        port = int(state.stem.split("-", 1)[1])
        info = LocalBroker(port=port, home=home).status()
        if info is not None:
            found.append(info)
    return found


def running_clusters(home: Path | None = None) -> list[ClusterInfo]:
    """Every local cluster started through rollguard of which a node still runs."""
    home = Path(home) if home else rollguard_home()
    found = []
    for state in sorted((home / "run").glob("cluster-*.json")):
        info = LocalCluster(port=int(state.stem.split("-", 1)[1]), home=home).status()
        if info is not None:
            found.append(info)
    return found


def find_cluster(port: int, home: Path | None = None) -> LocalCluster | None:
    """The running local cluster one of whose nodes has ``port``, or None."""
    home = Path(home) if home else rollguard_home()
    for info in running_clusters(home):
        if port in info.ports:
            return LocalCluster(port=info.port, nodes=info.nodes, data_dir=Path(info.data_dir),
                                home=home)
    return None


def broker_log(port: int, node: int | None = None, home: Path | None = None) -> Path:
    """The log of the broker on ``port`` or, given ``node``, of that node of the cluster on
    ``port``: a running one's, else that of the last one launched there (its data dir is
    remembered in ``home/places``, wherever ``--data-dir`` put it), else the one in the
    default data dir."""
    home = Path(home) if home else rollguard_home()
    cluster = find_cluster(port, home)
    if cluster is not None:
        return cluster.node(node or port - cluster.port + 1).log_file
    if node is not None:
        known = _read_place(home, "cluster", port)
        if known is None:  # a node's port of a cluster that does not run
            lone = _read_place(home, "broker", port)
            if lone and lone.get("cluster_port"):
                port = lone["cluster_port"]
                known = _read_place(home, "cluster", port)
        nodes = int(known["nodes"]) if known else max(3, node)
        how = f"rollguard kafka start --nodes {nodes} --port {port}"
        places = [LocalCluster(port=port, nodes=nodes, home=home,
                               data_dir=Path(known["data_dir"]) if known else None
                               ).node(node).log_file]
        if known:
            places.append(LocalCluster(port=port, nodes=nodes, home=home).node(node).log_file)
    else:
        how = f"rollguard kafka start --port {port}"
        info = LocalBroker(port=port, home=home).status()
        known = _read_place(home, "broker", port)
        places = [Path(info.log_file)] if info else []
        places += [Path(known["log_file"])] if known else []
        places += [LocalBroker(port=port, home=home).log_file,
                   LocalCluster(port=port, home=home).node(1).log_file]
    for place in places:
        if place.exists():
            return place
    raise BrokerError(f"No broker log at {places[0]}: start one with `{how}`.")


def _place_file(home: Path, kind: str, port: int) -> Path:
    """The record of where the last ``kind`` ("broker" or "cluster") launched on ``port``
    kept its data."""
    return Path(home) / "places" / f"{kind}-{port}.json"


def _read_place(home: Path, kind: str, port: int) -> dict | None:
    """The record of :func:`_place_file`, or None if there is none (or it is unreadable).

    >>> _read_place(Path("/nonexistent"), "broker", 9092) is None
    True
    """
    needs = ("data_dir", "nodes") if kind == "cluster" else ("data_dir", "log_file")
    try:
        record = json.loads(_place_file(home, kind, port).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and all(record.get(k) for k in needs) else None


def _write_json(path: Path, value: dict) -> None:
    """Write ``value`` to ``path`` at once (no reader sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    partial.write_text(json.dumps(value, indent=2))
    os.replace(partial, path)


def tail_file(path: Path, lines: int = 50) -> str:
    """The last ``lines`` lines of a log file (of its last 256 KiB), or a note that there is none."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - 256 * 1024))
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])


def free_port_run(count: int) -> int:
    """A port P such that P to P+count-1 on loopback are all free right now.

    >>> first = free_port_run(3)
    >>> all(port_is_free(port) for port in range(first, first + 3))
    True
    """
    low, _ = ephemeral_ports()
    while True:
        first = free_port()
        last = first + count - 1
        if last <= 65535 and (last < low or first >= low) and all(
                port_is_free(port) for port in range(first, first + count)):
            return first


def _free_ports(count: int, avoid: tuple[int, ...] = ()) -> list[int]:
    """``count`` different ports on loopback, free right now, none of them in ``avoid``."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in avoid and port not in ports:
            ports.append(port)
    return ports


def _with_properties(text: str, properties: dict[str, str]) -> str:
    """``text`` (a properties file) with each of ``properties`` set: in place, else appended.

    >>> print(_with_properties("a=1\\nb=2\\n", {"b": "3", "c": "4"}), end="")
    a=1
    b=3
    c=4
    """
    left = dict(properties)
    lines = []
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip()
        lines.append(f"{key}={left.pop(key)}" if not line.startswith("#") and key in left else line)
    return "\n".join(lines + [f"{key}={value}" for key, value in left.items()]) + "\n"


def _await(started: list[tuple[LocalBroker, subprocess.Popen]], ready, timeout: float,
           late: str) -> None:
    """Wait until ``ready()``. A broker of ``started`` that exits, or ``timeout``, is a
    BrokerError whose sentence begins with the broker's title, or with ``late``."""
    deadline = time.monotonic() + timeout
    while True:
        for broker, proc in started:
            code = proc.poll()
            if code is not None:
                raise BrokerError(
                    f"{broker.title} exited during start with code {code}: read its log "
                    f"({broker.log_file}); its last lines are:\n{broker.tail_log(20)}")
        if ready():
            return
        if time.monotonic() > deadline:
            if len(started) == 1:
                broker = started[0][0]
                raise BrokerError(
                    f"{late} within {timeout:.0f} s and was stopped: read its log "
                    f"({broker.log_file}); its last lines are:\n{broker.tail_log(20)}")
            tails = "\n".join(f"== {broker.log_file}\n{broker.tail_log(8)}"
                              for broker, _ in started)
            raise BrokerError(
                f"{late} within {timeout:.0f} s and was stopped: read its nodes' logs; "
                f"their last lines are:\n{tails}")
        time.sleep(0.2)


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


def _metadata(bootstrap: str):
    """A fresh client's metadata (confluent-kafka's ClusterMetadata), or None if none came."""
    from confluent_kafka.admin import AdminClient

    from rollguard.kafka.clients import client_config

    admin = AdminClient(client_config(bootstrap, **{"socket.connection.setup.timeout.ms": 1000}))
    try:
        return admin.list_topics(timeout=1.0)
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return None


def _metadata_ok(bootstrap: str) -> bool:
    return _metadata(bootstrap) is not None


def _brokers_listed(bootstrap: str) -> int:
    """How many brokers a metadata request to ``bootstrap`` lists (0 without an answer)."""
    metadata = _metadata(bootstrap)
    return len(metadata.brokers) if metadata is not None else 0


def _under_replicated(bootstrap: str, brokers: int) -> int | None:
    """How many partitions lack a replica in their ISR (or a leader); None unless a metadata
    request answers and lists ``brokers`` brokers."""
    metadata = _metadata(bootstrap)
    if metadata is None or len(metadata.brokers) < brokers:
        return None
    return sum(1 for topic in metadata.topics.values() for part in topic.partitions.values()
               if part.error is not None or len(part.isrs) < len(part.replicas))


def _reaped_or_gone(pid: int) -> bool:
    """True once ``pid`` has exited: reaped if it is our child, else no longer running."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # another process's child (a broker started by another command)
        return not pid_alive(pid)
    return reaped == pid


def _wait_gone(pids: list[int], timeout: float, pause: float) -> list[int]:
    """Wait up to ``timeout`` seconds for ``pids`` to exit; those still running."""
    left = list(pids)
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if not _reaped_or_gone(pid)]
        if left:
            time.sleep(pause)
    return left


def _terminate(pids: list[int], timeout: float, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to the process groups of ``pids`` at once and wait until they are gone;
    SIGKILL any left after ``timeout``."""
    for pid in pids:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
    left = _wait_gone(pids, timeout, pause=0.1)
    for pid in left:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _wait_gone(left, KILL_WAIT_S, pause=0.05)
