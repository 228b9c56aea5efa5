"""``rollguard demo``: the whole loop on one machine, started and stopped by one command.

1. Kafka: the local KRaft broker (``rollguard kafka start``'s), unless bootstrap servers are
   given; a fresh topic prefix per run, so runs never see each other's state.
2. The worker: ``python -m rollguard.cli worker experiments.yaml ...`` in a subprocess, as a
   user runs it.
3. The models: trained with River on past loan applications (:mod:`rollguard.demo.models`).
4. The service (:mod:`rollguard.demo.service`): Router + Reporter + registry updater, replaying
   applications as traffic with labels coming back after a random delay, some never.
5. The display reads the worker's stats and control topics until every experiment has its
   final decision; then everything the demo started is stopped (also on Ctrl-C, SIGTERM and
   errors) and the decisions are printed with their reasons and evidence.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from rollguard.demo import data as demo_data
from rollguard.demo.display import Progress, decisions_summary, models_table, offline_vs_live
from rollguard.status import Follower, render_status

#: seconds of traffic after which the demo gives up waiting for decisions
FAST_TIME_LIMIT = 90.0
NORMAL_TIME_LIMIT = 600.0


class DemoError(RuntimeError):
    """The demo could not finish; the message is one sentence saying what happened."""


@dataclass
class DemoResult:
    """What a run ended with. ``exit_code`` is 0 when every experiment reached a decision."""

    exit_code: int
    topic_prefix: str | None = None
    bootstrap: str | None = None
    work_dir: Path | None = None
    #: experiment → its final control event, and → all its control events in seq order
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    champion_alias: tuple[str | None, str | None] = (None, None)  # (before, after)
    message: str = ""
    seconds: float = 0.0
    worker_pid: int | None = None
    worker_exit_code: int | None = None  # after SIGTERM: 0 when it stopped cleanly


def default_prefix(seed: int) -> str:
    """A fresh topic prefix, e.g. ``demo-20250101-120000-7-1a2b.``."""
    return f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{seed}-{uuid.uuid4().hex[:4]}."


def experiments_text() -> str:
    """The demo's experiment file, shipped as package data."""
    package = resources.files("rollguard.demo")
    return package.joinpath("experiments.yaml").read_text(encoding="utf-8")


# -- the processes the demo starts ---------------------------------------------------------------

def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the worker gets SIGTERM if the demo dies without cleaning up (SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the demo's own cleanup still stops it
        pass


class WorkerProcess:
    """``rollguard worker`` in a subprocess, its output in a log file."""

    def __init__(self, experiments: Path, bootstrap: str, prefix: str, app_id: str,
                 work_dir: Path, fast: bool) -> None:
        self.log_path = work_dir / "worker.log"
        self.cmd = [sys.executable, "-m", "rollguard.cli", "worker", str(experiments),
                    "--bootstrap-servers", bootstrap, "--topic-prefix", prefix,
                    "--app-id", app_id, "--data-dir", str(work_dir / "worker"),
                    "--partitions", "3",
                    "--snapshot-interval", "1" if fast else "2",
                    "--session-timeout", "10", "--log-level", "INFO"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,  # Ctrl-C reaches the demo, which stops it
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the worker checkpoints and publishes its last snapshot), SIGKILL if stuck."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                return self.proc.wait(10)
        return self.proc.returncode

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # Faust's terminal codes
        return "\n".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def _interrupt_deferred():
    """Hold Ctrl-C back while a process is being started, so it is never left half-started."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    asked: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: asked.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if asked:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupt_ignored():
    """While stopping what it started, the demo finishes the job: a second Ctrl-C (or a
    SIGTERM) does not cut it short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """``kill <demo>`` stops the demo as Ctrl-C does: everything it started is stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the demo ------------------------------------------------------------------------------------

def run_demo(*, fast: bool = False, seed: int = 7, bootstrap_servers: str | None = None,
             topic_prefix: str | None = None, port: int = 9092, keep_broker: bool = False,
             work_dir: str | os.PathLike[str] | None = None, rate: float | None = None,
             time_limit: float | None = None, plain: bool | None = None,
             console: Console | None = None) -> DemoResult:
    """Run the demo; print progress, then the decisions; return how it ended.

    - ``fast``: 400 applications/s, labels after ~1.5 s on average (capped at 8 s); about
      half a minute. Otherwise 100/s and ~4 s (capped at 30 s), about a minute.
    - ``seed``: the traffic (rows, customers, label delays, the never-labelled ones) and the
      models are a pure function of it, and so is which experiment is promoted and which
      rolled back.
    - ``bootstrap_servers``: use this Kafka (else ``KAFKA_BOOTSTRAP_SERVERS``, else start the
      local broker of ``rollguard kafka start`` on ``port``, or use it if it already runs).
    - ``topic_prefix``: default a fresh ``demo-<time>-<seed>-<random>.`` per run.
    - ``keep_broker``: leave a local broker the demo started running (for ``rollguard status``).
    - ``work_dir``: the worker's log and data, the registry file and the experiment file
      (default: a new temporary directory, kept and printed).
    - ``rate``: applications per second (overrides the pace of ``fast``).
    - ``time_limit``: seconds of traffic to wait for every decision (90 fast, 600 otherwise).
    - ``plain``: print progress lines instead of a live screen (default: when not a terminal).

    The exit code is 0 when every experiment reached its decision, 1 on an error or when the
    time limit passed first (one sentence says which), 130 when interrupted.
    """
    console = console or Console(highlight=False)
    began = time.monotonic()
    pace = demo_data.FAST if fast else demo_data.NORMAL
    if rate is not None:
        if rate <= 0:
            return _failed(console, "--rate must be a number of applications per second > 0.")
        pace = demo_data.Pace(rate, pace.label_delay_mean, pace.label_delay_max, pace.unlabelled)
    limit = time_limit if time_limit is not None else \
        FAST_TIME_LIMIT if fast else NORMAL_TIME_LIMIT
    bootstrap = bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None
    prefix = topic_prefix or default_prefix(seed)
    live = (not plain) if plain is not None else console.is_terminal
    run = _Run(console, seed=seed, fast=fast, pace=pace, limit=limit, bootstrap=bootstrap,
               prefix=prefix, port=port, keep_broker=keep_broker, work_dir=work_dir, live=live)
    with _sigterm_as_interrupt(), _wrapping(console):
        try:
            result = run.execute()
        except KeyboardInterrupt:
            run.cleanup()
            result = run.result(130, "Interrupted: the demo stopped everything it had started.")
            console.print(f"[yellow]{result.message}[/yellow]")
        except DemoError as exc:
            run.cleanup()
            result = run.result(1, str(exc))
            _error(console, result.message)
            if run.work_dir is not None:
                console.print(f"Its files (worker log, registry): {run.work_dir}", style="dim")
        finally:
            run.cleanup()
    result.seconds = time.monotonic() - began
    return result


@contextlib.contextmanager
def _wrapping(console: Console):
    """Tables, paragraphs and the live screen wrap at the console's width (one-line items
    ask for ``soft_wrap`` themselves), whatever the console's default; restored after."""
    previous = console.soft_wrap
    console.soft_wrap = False
    try:
        yield
    finally:
        console.soft_wrap = previous


def _error(console: Console, message: str) -> None:
    err = Console(stderr=True, highlight=False) if console.file in (sys.stdout, None) else console
    err.print(Text.assemble(("error: ", "red"), message), soft_wrap=True)


def _failed(console: Console, message: str) -> DemoResult:
    _error(console, message)
    return DemoResult(1, message=message)


class _Run:
    """One run's resources, so that whatever happens they are all stopped."""

    def __init__(self, console: Console, *, seed: int, fast: bool, pace: demo_data.Pace,
                 limit: float, bootstrap: str | None, prefix: str, port: int,
                 keep_broker: bool, work_dir: Any, live: bool) -> None:
        self.console = console
        self.seed, self.fast, self.pace, self.limit = seed, fast, pace, limit
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.port = port
        self.keep_broker = keep_broker
        self.work_dir: Path | None = Path(work_dir) if work_dir is not None else None
        self.live = live
        self.broker: Any = None          # a LocalBroker the demo started (None otherwise)
        self.broker_note = ""
        self.worker: WorkerProcess | None = None
        self.service: Any = None
        self.follower: Follower | None = None
        self.stop = threading.Event()
        self.traffic_thread: threading.Thread | None = None
        self.traffic_error: BaseException | None = None
        self.traffic_started: float | None = None  # wall clock
        self.models: dict[str, Any] = {}
        self.alias_before: str | None = None
        self.alias_after: str | None = None
        self._cleaned = False

    # -- the steps ------------------------------------------------------------------------
    def execute(self) -> DemoResult:
        from rollguard.demo import recommender
        from rollguard.demo.models import evaluate_offline, train_models
        from rollguard.demo.recommender import demo_rankers
        from rollguard.demo.service import LoanService
        from rollguard.kafka.admin import TopicError, create_contract_topics
        from rollguard.schemas import load_experiments
        from rollguard.streams.topics import TopicNames

        console = self.console
        mode = "fast" if self.fast else "normal pace"
        console.print(Text.assemble(("rollguard demo", "bold"),
                                    f"  ·  seed {self.seed}  ·  {mode}  ·  "
                                    f"{self.pace.rate:g} loan applications/s"))
        self._prepare_work_dir()
        experiments_path = self.work_dir / "experiments.yaml"
        experiments_path.write_text(experiments_text(), encoding="utf-8")
        experiments = load_experiments(experiments_path)

        self._kafka()
        names = TopicNames(self.prefix)
        self._check_prefix_is_fresh()
        try:
            create_contract_topics(self.bootstrap, names, partitions=3)
        except TopicError as exc:
            raise DemoError(str(exc)) from None
        app_id = "rollguard-" + self.prefix.rstrip(".")
        with _interrupt_deferred():
            self.worker = WorkerProcess(experiments_path, self.bootstrap, self.prefix, app_id,
                                        self.work_dir, self.fast).start()
        console.print(f"Worker started (pid {self.worker.pid}), topic prefix "
                      f"[bold]{self.prefix}[/bold], files in {self.work_dir}")

        t0 = time.monotonic()
        models = self.models = train_models(self.seed)
        evaluate_offline(models, demo_data.holdout_rows(self.seed))
        console.print(f"\nModels trained in {time.monotonic() - t0:.1f} s on "
                      f"{demo_data.TRAIN_ROWS:,} past applications (River's Agrawal loan data, "
                      f"approval rule {demo_data.RULE}); accuracy on {demo_data.HOLDOUT_ROWS:,} "
                      "held-out applications, as each model's team measured it:")
        console.print(models_table(models, demo_data.TRAIN_ROWS, demo_data.HOLDOUT_ROWS))
        console.print(f"\nRecommender: {recommender.FILMS} films, {recommender.VIEWERS:,} "
                      f"viewers, {recommender.K} films per page view; "
                      + "; ".join(f"{r.arm} {r.title}" for r in demo_rankers().values()) + ".",
                      highlight=False)
        console.print("\nExperiments (" + str(experiments_path) + "):")
        for exp in experiments:
            extra = f", steps {' → '.join(f'{100 * s:g}%' for s in exp.canary.steps)}" \
                if exp.canary else ""
            share = demo_data.SHARES.get(exp.name, 0.0)
            what = f"{100 * share:g}% of applications" if exp.task != "ranking" else \
                f"{recommender.RATE_SHARE * self.pace.rate:g} page views/s"
            console.print(f"  {exp.name:<18} {exp.mode:<10} {exp.champion} vs "
                          f"{', '.join(exp.candidates)}  {what}{extra}",
                          highlight=False, soft_wrap=True)
        console.print("")

        self.service = LoanService(self.bootstrap, self.prefix, experiments, models,
                                   self.work_dir / "aliases.json")
        self.alias_before = self.service.initial_champion
        if not self.service.router.wait_ready(15.0):
            raise DemoError(f"The router could not read {names.control} within 15 s: check that "
                            f"Kafka at {self.bootstrap} answers.")
        self.follower = Follower(self.bootstrap, self.prefix)
        self._start_traffic()
        return self._watch(experiments)

    def _prepare_work_dir(self) -> None:
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="rollguard-demo-"))
        else:
            self.work_dir = self.work_dir.expanduser().resolve()
            self.work_dir.mkdir(parents=True, exist_ok=True)

    def _kafka(self) -> None:
        from rollguard.kafka.local import BrokerError, LocalBroker

        console = self.console
        if self.bootstrap is not None:
            console.print(f"Kafka: {self.bootstrap} (given)")
            return
        broker = LocalBroker(port=self.port)
        running = broker.status()
        if running is not None:
            self.bootstrap = running.bootstrap
            self.broker_note = "the local broker was already running and is left running"
            console.print(f"Kafka: the local broker already running on {running.bootstrap} "
                          f"(pid {running.pid})")
            return
        try:
            if not broker.jars_cached():
                broker.ensure_jars(progress=lambda line: console.print(line, style="dim"))
            with _interrupt_deferred():
                self.broker = broker
                info = broker.start(progress=lambda line: console.print(line, style="dim"))
        except BrokerError as exc:
            self.broker = None
            raise DemoError(f"{exc} To use a Kafka that already runs, pass --bootstrap-servers.") \
                from None
        self.bootstrap = info.bootstrap
        console.print(f"Kafka: started the local broker on {info.bootstrap} in "
                      f"{info.start_seconds:.1f} s (data in {info.data_dir})")

    def _check_prefix_is_fresh(self) -> None:
        """A prefix with control events already is an earlier run's: its decisions are final."""
        from rollguard.status import StatusError

        try:
            with Follower(self.bootstrap, self.prefix) as earlier:
                earlier.read_to_end(5.0)
                used = sorted(earlier.views)
        except StatusError as exc:
            raise DemoError(str(exc)) from None
        if used:
            raise DemoError(f"The topic prefix '{self.prefix}' already holds the control events "
                            f"of an earlier run ({', '.join(used)}): leave --topic-prefix out "
                            "for a fresh one, or give a new one.")

    def _start_traffic(self) -> None:
        applications = demo_data.all_traffic(self.seed, self.pace)

        def replay() -> None:
            try:
                self.service.replay(applications, self.stop)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                self.traffic_error = exc

        self.traffic_started = time.time()
        self.traffic_thread = threading.Thread(target=replay, name="demo-traffic", daemon=True)
        self.traffic_thread.start()

    def _watch(self, experiments: list[Any]) -> DemoResult:
        names = [e.name for e in experiments]
        follower, worker, service = self.follower, self.worker, self.service
        header = (f"rollguard demo · seed {self.seed} · prefix {self.prefix} · Ctrl-C stops "
                  "everything")
        deadline = time.monotonic() + self.limit
        with Progress(self.console, live=self.live, header=header, order=names) as progress:
            while True:
                follower.poll(0.25)
                views = {n: follower.views[n] for n in names if n in follower.views}
                progress.events(views, self.traffic_started)
                code = worker.exit_code()
                state = "running" if code is None else f"exited ({code})"
                progress.update(views, service, self.traffic_started, state)
                if code is not None:
                    raise DemoError(f"The worker exited with code {code} before the decisions: "
                                    f"read its log {worker.log_path}; its last lines are:\n"
                                    f"{worker.log_tail()}")
                if self.traffic_error is not None:
                    raise DemoError(f"The service stopped: {self.traffic_error!r}.")
                if all(n in views and views[n].final() is not None for n in names):
                    break
                if time.monotonic() > deadline:
                    missing = [n for n in names if n not in views or views[n].final() is None]
                    raise DemoError(
                        f"No decision for {', '.join(missing)} within {self.limit:g} s of "
                        "traffic: the worker may be too slow on this machine (see "
                        f"{worker.log_path}); try again without --fast or with a longer "
                        "--time-limit.")
        return self._finish(names)

    def _finish(self, names: list[str]) -> DemoResult:
        console, follower = self.console, self.follower
        self._stop_traffic()
        self.service.close()
        self.service.registry.reload()
        self.alias_after = self.service.registry.get("champion")
        self.service = None
        if self.worker is not None:  # SIGTERM: a final checkpoint publishes the last snapshot
            self.worker.stop()
        follower.read_to_end(5.0)
        views = {n: follower.views[n] for n in names if n in follower.views}
        console.print("")
        console.rule("Where the experiments ended")
        console.print(render_status([views[n] for n in names if n in views], compact=True,
                                    reason=False))
        console.print("")
        console.rule("Decisions")
        console.print(decisions_summary(views, self.traffic_started, names))
        console.print("")
        console.print(Text("Offline, each version's team saw; live, rollguard saw:", style="bold"))
        console.print(offline_vs_live(self.models, views))
        result = self.result(0, "Every experiment reached its decision.")
        result.decisions = {n: dict(v.final()) for n, v in views.items() if v.final()}
        result.history = {n: list(v.history) for n, v in views.items()}
        self.cleanup()
        console.print("")
        registry = self.work_dir / "aliases.json"
        moved = "" if self.alias_before == self.alias_after else f"{self.alias_before} → "
        console.print(Text.assemble(("Registry  ", "bold"), f"{registry}: alias champion = {moved}",
                                    (str(self.alias_after), "bold")))
        console.print(Text.assemble(("Kafka     ", "bold"), f"{self.bootstrap}, topic prefix ",
                                    (self.prefix, "bold"),
                                    f" ({self.broker_note})" if self.broker_note else ""))
        console.print(Text("Look further", style="bold"))
        for line in self._commands():
            console.print("  " + line, highlight=False, markup=False, soft_wrap=True)
        return result

    def _commands(self) -> list[str]:
        b = "" if self._is_default_broker() else f" -b {self.bootstrap}"
        lines = []
        if self.broker_note.startswith("the local broker was stopped"):
            port = "" if self.port == 9092 else f" --port {self.port}"
            lines.append(f"rollguard kafka start{port}"
                         "          # start the broker again: the demo's topics are kept")
        prefix = self.prefix
        lines += [
            f"rollguard status{b} --topic-prefix {prefix}",
            f"rollguard status loan-canary-v2 --watch{b} --topic-prefix {prefix}",
            f"rollguard replay {self.work_dir / 'experiments.yaml'} --from-kafka{b} "
            f"--topic-prefix {prefix}",
            f"less {self.worker.log_path if self.worker else self.work_dir / 'worker.log'}",
        ]
        return lines

    def _is_default_broker(self) -> bool:
        return self.bootstrap == "127.0.0.1:9092"

    def _stop_traffic(self) -> None:
        self.stop.set()
        if self.traffic_thread is not None:
            self.traffic_thread.join(30)
            self.traffic_thread = None

    # -- the end ----------------------------------------------------------------------------
    def result(self, code: int, message: str) -> DemoResult:
        worker = self.worker
        return DemoResult(code, self.prefix, self.bootstrap, self.work_dir,
                          champion_alias=(self.alias_before, self.alias_after), message=message,
                          worker_pid=worker.pid if worker else None,
                          worker_exit_code=worker.exit_code() if worker else None)

    def cleanup(self) -> None:
        """Stop everything this run started, in order; safe to call more than once."""
        if self._cleaned:
            return
        self._cleaned = True
        steps = [self._stop_traffic, self._close_service, self._stop_worker,
                 self._close_follower, self._stop_broker]
        with _interrupt_ignored():
            for step in steps:
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - go on stopping the rest
                    self.console.print(f"[yellow]while stopping: {exc}[/yellow]")

    def _close_service(self) -> None:
        if self.service is not None:
            service, self.service = self.service, None
            service.close()

    def _stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    def _close_follower(self) -> None:
        if self.follower is not None:
            follower, self.follower = self.follower, None
            follower.close()

    def _stop_broker(self) -> None:
        if self.broker is None:
            return
        broker, self.broker = self.broker, None
        if self.keep_broker:
            self.broker_note = ("the local broker is left running: `rollguard kafka stop"
                                f"{'' if self.port == 9092 else f' --port {self.port}'}` stops it")
            return
        broker.stop()
        self.broker_note = "the local broker was stopped; its data is kept"
