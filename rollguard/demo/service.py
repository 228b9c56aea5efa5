"""The demo's model service: what a user's service does, with rollguard's serving library.

For each loan application it asks the :class:`~rollguard.serving.Router` which version
answers and which score in the shadow, calls the real models (timed by
:meth:`~rollguard.serving.Reporter.timed`), reports the request and every prediction with the
:class:`~rollguard.serving.Reporter`, and reports the label when the outcome becomes known,
later or never. For each page view of the recommender it asks both rankers for their top 10,
shows the viewer :meth:`~rollguard.serving.Route.shown` (their team-draft interleaving while
the experiment interleaves) and reports the films watched when the session ends.
:class:`~rollguard.serving.RegistryUpdater` moves the ``champion`` alias (loans) and the
``recs-champion`` alias of a JSON registry when rollguard promotes. The service reads
nothing else of rollguard's.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rollguard.demo.data import Application
from rollguard.demo.models import DemoModel
from rollguard.demo.recommender import PageView, Viewers, demo_rankers
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
        self.rankers = demo_rankers()
        self.viewers = Viewers()
        # one alias per model family: what production runs today, moved on promotion
        updaters = []
        for alias, family in (("champion", [e for e in experiments if e.task != "ranking"]),
                              ("recs-champion", [e for e in experiments if e.task == "ranking"])):
            champions = {e.champion for e in family}
            if self.registry.get(alias) is None and len(champions) == 1:
                self.registry.set(alias, next(iter(champions)))
            updaters.append((alias, {e.name for e in family}))
        self.initial_champion = self.registry.get("champion")
        self.router.start()
        self.updaters = [RegistryUpdater(_Only(self.router, names), self.registry, alias=alias)
                         for alias, names in updaters]
        self.updater = self.updaters[0]
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

    def handle_view(self, view: PageView) -> list[str]:
        """Recommend films to one viewer: both rankers while the experiment interleaves, the
        list the viewer is shown, and what the viewer will watch (reported later)."""
        exp, rid, unit = view.experiment, view.request_id, view.unit
        route = self.route(exp, unit)
        lists = {}
        for arm in route.arms:                           # the served ranker first
            with self.reporter.timed(exp, rid, arm, served=arm == route.serve,
                                     unit=unit) as timing:
                timing.items = lists[arm] = self.rankers[arm].rank(view.viewer)
        shown = [film for film, _ in route.shown(exp, rid, lists)]
        self.requests += 1
        self.served[exp][route.serve] += 1
        return self.viewers.watched(view, shown)

    def report_watched(self, view: PageView, watched: list[str]) -> None:
        """The viewer's session ended: the films watched, possibly none."""
        self.reporter.report_label(view.request_id, engaged=watched)
        self.labels += 1

    # -- replaying traffic --------------------------------------------------------------------
    def replay(self, applications: Iterable[Application], stop: threading.Event) -> None:
        """Answer the applications at their times, report labels when they are due; until
        ``stop`` is set. Event times are the wall clock."""
        began = time.monotonic()
        due_labels: list[tuple[float, int, Any, Any]] = []
        order = itertools.count()
        for app in applications:
            due = began + app.at
            while True:
                now = time.monotonic()
                while due_labels and due_labels[0][0] <= now:
                    _, _, done, watched = heapq.heappop(due_labels)
                    if watched is None:
                        self.report_label(done)
                    else:
                        self.report_watched(done, watched)
                if now >= due or stop.is_set():
                    break
                wake = min(due, due_labels[0][0]) if due_labels else due
                time.sleep(min(max(wake - now, 0.0), 0.05))
            if stop.is_set():
                break
            watched = self.handle_view(app) if isinstance(app, PageView) else None
            if watched is None:
                self.handle(app)
            if app.label_delay is not None:
                heapq.heappush(due_labels, (time.monotonic() + app.label_delay, next(order),
                                            app, watched))
            self.pending_labels = len(due_labels)
        self.pending_labels = len(due_labels)

    def close(self) -> None:
        """Deliver what is queued and stop the router and the registry updater."""
        self.reporter.close(timeout=10.0)
        for updater in self.updaters:
            updater.wait_idle(5.0)
            updater.close()
        self.router.close()


class _Only:
    """The router's control events of some experiments, for one alias's registry updater."""

    def __init__(self, router: Router, names: set[str]) -> None:
        self.router, self.names = router, names

    def on_change(self, callback: Any, replay: bool = True) -> None:
        names = self.names
        self.router.on_change(lambda state: callback(state) if state.experiment in names
                              else None, replay)
