"""The demo's model service: what a user's service does, with rollguard's serving library.

For each loan application it asks the :class:`~rollguard.serving.Router` which version
answers and which score in the shadow, calls the real models (timed by
:meth:`~rollguard.serving.Reporter.timed`), reports the request and every prediction with the
:class:`~rollguard.serving.Reporter`, and reports the label when the outcome becomes known,
later or never. A :class:`~rollguard.serving.RegistryUpdater` moves the ``champion`` alias of
a JSON registry when rollguard promotes. The service reads nothing else of rollguard's.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rollguard.demo.data import Application
from rollguard.demo.models import DemoModel
from rollguard.serving import JsonRegistry, RegistryUpdater, Reporter, Route, Router


class LoanService:
    """Answers loan applications with the version the router picks, and reports everything."""

    def __init__(self, bootstrap: str, topic_prefix: str, experiments: list[Any],
                 models: Mapping[str, DemoModel], registry_path: Path) -> None:
        self.experiments = {e.name: e for e in experiments}
        self.models = dict(models)
        self.router = Router(bootstrap, experiments=experiments, topic_prefix=topic_prefix)
        self.reporter = Reporter(bootstrap, topic_prefix=topic_prefix)
        self.registry = JsonRegistry(registry_path)
        champions = {e.champion for e in experiments}
        if self.registry.get("champion") is None and len(champions) == 1:
            self.registry.set("champion", next(iter(champions)))  # what production runs today
        self.initial_champion = self.registry.get("champion")
        self.router.start()
        self.updater = RegistryUpdater(self.router, self.registry)
        #: what the service did: applications answered, labels reported, served per arm
        self.requests = 0
        self.labels = 0
        self.served: dict[str, Counter[str]] = {name: Counter() for name in self.experiments}
        self.pending_labels = 0

    # -- one application ------------------------------------------------------------------
    def route(self, experiment: str, unit: str) -> Route:
        """Exactly what a user's service does: ask the router (champion-only until the
        worker's ``start``, which comes with the experiment's first traffic)."""
        return self.router.route(experiment, unit)

    def handle(self, app: Application) -> int | None:
        """Answer one application: the served version's prediction."""
        exp, rid, unit = app.experiment, app.request_id, app.unit
        route = self.route(exp, unit)
        self.reporter.report_request(exp, rid, unit=unit, features=app.features)
        answer = None
        for arm in route.arms:                           # the served version first
            served = arm == route.serve
            with self.reporter.timed(exp, rid, arm, served=served, unit=unit) as timing:
                timing.prediction, timing.score = self.models[arm].predict(app.features)
            if served:
                answer = timing.prediction
        self.requests += 1
        self.served[exp][route.serve] += 1
        return answer

    def report_label(self, app: Application) -> None:
        """The outcome of an application became known."""
        self.reporter.report_label(app.request_id, label=app.label)
        self.labels += 1

    # -- replaying traffic --------------------------------------------------------------------
    def replay(self, applications: Iterable[Application], stop: threading.Event) -> None:
        """Answer the applications at their times, report labels when they are due; until
        ``stop`` is set. Event times are the wall clock."""
        began = time.monotonic()
        due_labels: list[tuple[float, int, Application]] = []
        for app in applications:
            due = began + app.at
            while True:
                now = time.monotonic()
                while due_labels and due_labels[0][0] <= now:
                    self.report_label(heapq.heappop(due_labels)[2])
                if now >= due or stop.is_set():
                    break
                wake = min(due, due_labels[0][0]) if due_labels else due
                time.sleep(min(max(wake - now, 0.0), 0.05))
            if stop.is_set():
                break
            self.handle(app)
            if app.label_delay is not None:
                heapq.heappush(due_labels, (time.monotonic() + app.label_delay, app.index, app))
            self.pending_labels = len(due_labels)
        self.pending_labels = len(due_labels)

    def close(self) -> None:
        """Deliver what is queued and stop the router and the registry updater."""
        self.reporter.close(timeout=10.0)
        self.updater.wait_idle(5.0)
        self.updater.close()
        self.router.close()
