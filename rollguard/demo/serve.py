"""``rollguard demo --service-only``: the demo's model service alone, against a given Kafka.

Where the broker, the topics and the workers run elsewhere (``docker compose up`` runs each in
its own container), this runs only the loan-approval service of :mod:`rollguard.demo.service`:
it trains the three versions, routes every application through the Router, reports requests,
predictions and (later, or never) labels through the Reporter, and moves the ``champion``
alias of its registry on promote. It prints each control event as it arrives and a progress
line every few seconds; once every experiment has its final decision it prints the decisions
with their evidence, and goes on answering applications (now with the champion the
experiments chose) until it is stopped (SIGTERM, Ctrl-C: exit 0).

It starts nothing and stops nothing else: no broker, no worker, no topic. The topic prefix is
``--topic-prefix``, else ``ROLLGUARD_TOPIC_PREFIX``, else the worker's default ``rollguard.``.
Each start tags its request ids with a fresh run id, so a restarted service never sends a
request id twice.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from rollguard.demo import data as demo_data
from rollguard.demo.display import Progress, decisions_summary, models_table, offline_vs_live
from rollguard.demo.run import (DemoError, _error, _interrupt_ignored, _sigterm_as_interrupt,
                                _wrapping, experiments_text)
from rollguard.status import Follower, StatusError, render_status

#: seconds between progress lines once every experiment has decided (before: every 5 s)
QUIET_EVERY = 60.0
#: how long the service waits for Kafka to answer when it starts
CONNECT_TIMEOUT = 60.0


def run_service(*, fast: bool = False, seed: int = 7, bootstrap_servers: str | None = None,
                topic_prefix: str | None = None, work_dir: str | os.PathLike[str] | None = None,
                rate: float | None = None, console: Console | None = None) -> int:
    """Run the demo's model service against ``bootstrap_servers`` until stopped; the exit
    code is 0 when it was stopped (SIGTERM, Ctrl-C), 1 with one sentence on an error."""
    console = console or Console(highlight=False)
    bootstrap = bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        _error(console, "--service-only needs a Kafka that runs already: pass "
                        "--bootstrap-servers (or set KAFKA_BOOTSTRAP_SERVERS).")
        return 1
    pace = demo_data.FAST if fast else demo_data.NORMAL
    if rate is not None:
        if rate <= 0:
            _error(console, "--rate must be a number of applications per second > 0.")
            return 1
        pace = demo_data.Pace(rate, pace.label_delay_mean, pace.label_delay_max, pace.unlabelled)
    prefix = topic_prefix or os.environ.get("ROLLGUARD_TOPIC_PREFIX") or "rollguard."
    service = _Service(console, seed=seed, fast=fast, pace=pace, bootstrap=bootstrap,
                       prefix=prefix, work_dir=work_dir)
    with _sigterm_as_interrupt(), _wrapping(console):
        try:
            service.execute()
        except KeyboardInterrupt:
            service.close()
            console.print(f"Stopped: {service.requests_line()}.")
            return 0
        except DemoError as exc:
            service.close()
            _error(console, str(exc))
            return 1
        finally:
            service.close()
    return 0  # pragma: no cover - execute() returns only by an exception


class _Service:
    """The service's resources, closed whatever happens."""

    def __init__(self, console: Console, *, seed: int, fast: bool, pace: demo_data.Pace,
                 bootstrap: str, prefix: str, work_dir: Any) -> None:
        self.console = console
        self.seed, self.fast, self.pace = seed, fast, pace
        self.bootstrap, self.prefix = bootstrap, prefix
        self.work_dir = Path(work_dir).expanduser().resolve() if work_dir is not None else None
        self.run_id = uuid.uuid4().hex[:6]
        self.service: Any = None
        self.follower: Follower | None = None
        self.stop = threading.Event()
        self.traffic_thread: threading.Thread | None = None
        self.traffic_error: BaseException | None = None
        self.traffic_started: float | None = None
        self._closed = False

    def execute(self) -> None:
        from rollguard.demo.models import evaluate_offline, train_models
        from rollguard.demo.service import LoanService
        from rollguard.kafka.clients import BrokerUnreachable, require_broker
        from rollguard.schemas import parse_experiments

        console = self.console
        mode = "fast" if self.fast else "normal pace"
        console.print(Text.assemble(
            ("rollguard demo service", "bold"),
            f"  ·  seed {self.seed}  ·  {mode}  ·  {self.pace.rate:g} loan applications/s  ·  "
            f"Kafka {self.bootstrap}  ·  topic prefix {self.prefix}  ·  run {self.run_id}"),
            soft_wrap=True)
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while True:
            try:
                require_broker(self.bootstrap)
                break
            except BrokerUnreachable as exc:
                if time.monotonic() > deadline:
                    raise DemoError(str(exc)) from None
                time.sleep(1.0)
        if self.work_dir is None:
            self.work_dir = Path(tempfile.mkdtemp(prefix="rollguard-demo-service-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        experiments = parse_experiments(experiments_text(), "experiments.yaml")
        names = [e.name for e in experiments]

        t0 = time.monotonic()
        models = train_models(self.seed)
        evaluate_offline(models, demo_data.holdout_rows(self.seed))
        console.print(f"Models trained in {time.monotonic() - t0:.1f} s on "
                      f"{demo_data.TRAIN_ROWS:,} past applications; accuracy on "
                      f"{demo_data.HOLDOUT_ROWS:,} held-out applications, as each model's team "
                      "measured it:", soft_wrap=True)
        console.print(models_table(models, demo_data.TRAIN_ROWS, demo_data.HOLDOUT_ROWS))
        registry = self.work_dir / "aliases.json"
        self.service = LoanService(self.bootstrap, self.prefix, experiments, models, registry)
        alias_before = self.service.initial_champion
        if not self.service.router.wait_ready(30.0):
            raise DemoError(f"The router could not read {self.prefix}control within 30 s: check "
                            f"that Kafka at {self.bootstrap} answers and that the topics exist "
                            "(`rollguard topics create`).")
        try:
            self.follower = Follower(self.bootstrap, self.prefix)
        except StatusError as exc:
            raise DemoError(str(exc)) from None
        self._start_traffic()
        console.print(f"Answering loan applications; registry {registry} (champion "
                      f"{alias_before}). Control events as they arrive:", soft_wrap=True)

        progress = Progress(console, live=False, header="", order=names)
        decided = False
        with progress:
            while True:
                self.follower.poll(0.25)
                views = {n: self.follower.views[n] for n in names if n in self.follower.views}
                progress.events(views, self.traffic_started)
                progress.update(views, self.service, self.traffic_started, "")
                if self.traffic_error is not None:
                    raise DemoError(f"The service stopped: {self.traffic_error!r}.")
                if not decided and all(n in views and views[n].final() is not None
                                       for n in names):
                    decided = True
                    progress.every = QUIET_EVERY
                    self._summary(views, names, models, alias_before)

    def _summary(self, views: dict[str, Any], names: list[str], models: dict[str, Any],
                 alias_before: str | None) -> None:
        console = self.console
        self.service.updater.wait_idle(5.0)
        self.service.registry.reload()
        alias_after = self.service.registry.get("champion")
        console.print("")
        console.rule("Where the experiments ended")
        console.print(render_status([views[n] for n in names], compact=True, reason=False))
        console.print("")
        console.rule("Decisions")
        console.print(decisions_summary(views, self.traffic_started, names))
        console.print("")
        console.print(Text("Offline, each version's team saw; live, rollguard saw:", style="bold"))
        console.print(offline_vs_live(models, views))
        moved = "" if alias_before == alias_after else f"{alias_before} → "
        console.print(Text.assemble(("Registry  ", "bold"), f"{self.work_dir / 'aliases.json'}: "
                                    f"alias champion = {moved}", (str(alias_after), "bold")))
        console.print(f"Every experiment reached its decision; the service goes on answering "
                      f"applications with what they decided (a progress line every "
                      f"{QUIET_EVERY:g} s) until it is stopped.", soft_wrap=True)
        console.print("")

    def _start_traffic(self) -> None:
        # a fresh run id in every request id: a restarted service never repeats one
        applications = (replace(app, request_id=f"{app.request_id}-{self.run_id}")
                        for app in demo_data.all_traffic(self.seed, self.pace))

        def replay() -> None:
            try:
                self.service.replay(applications, self.stop)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                self.traffic_error = exc

        self.traffic_started = time.time()
        self.traffic_thread = threading.Thread(target=replay, name="demo-traffic", daemon=True)
        self.traffic_thread.start()

    def requests_line(self) -> str:
        if self.service is None:
            return "no application was answered"
        return (f"{self.service.requests:,} applications answered, {self.service.labels:,} "
                "labels reported")

    def close(self) -> None:
        """Stop the traffic, deliver what is queued, close the clients; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with _interrupt_ignored():  # a second SIGTERM does not cut the flush short
            self.stop.set()
            if self.traffic_thread is not None:
                self.traffic_thread.join(30)
            for closing in (self.service, self.follower):
                if closing is not None:
                    try:
                        closing.close()
                    except Exception as exc:  # noqa: BLE001 - go on closing the rest
                        self.console.print(f"[yellow]while stopping: {exc}[/yellow]")
