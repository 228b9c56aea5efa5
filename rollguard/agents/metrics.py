r"""The worker's Prometheus metrics (``rollguard worker --metrics-port``); docs/metrics.md
lists every series.

Liveness first: ``rollguard_checkpoint_age_seconds`` is the age of the last complete
checkpoint (:mod:`rollguard.agents.liveness`); alert when it passes a few checkpoint
intervals. The figures come from the worker's own objects, so a scrape never sees a value
the worker did not hold:

- liveness, the process counters (messages read, dead letters, decisions), pending joins
  and consumer lag are read at scrape time, from the HTTP server's thread;
- the figures of each experiment (Δ and its bounds, guardrails, outcomes, the join's
  late and expired counts) are taken on the worker's own thread at the end of every
  checkpoint (:meth:`WorkerMetrics.observe_checkpoint`): the policy caches what it
  computes, and computing it from another thread could race with the records it takes.
  They are taken at most once a second (:data:`EXPERIMENTS_EVERY_S`: checkpoints come
  faster, and a scrape every few seconds needs no more), so they are at most a second and a
  checkpoint interval old.

>>> from prometheus_client import generate_latest
>>> from rollguard.agents.liveness import Liveness
>>> now = [10.0]                             # a clock the example moves by hand
>>> live = Liveness(clock=lambda: now[0])
>>> metrics = WorkerMetrics(live)
>>> now[0] = 12.5
>>> live.checkpointed(0.05, problem=None)
>>> metrics.observe_checkpoint(0.05)
>>> now[0] = 14.0
>>> text = generate_latest(metrics.registry).decode()
>>> [line for line in text.splitlines() if line.startswith("rollguard_checkpoint_age")]
['rollguard_checkpoint_age_seconds 1.5']
>>> 'rollguard_checkpoints_total{outcome="complete"} 1.0' in text
True

An experiment's series, from its evaluator (here replay's, on synthetic traffic where the
candidate is clearly better):

>>> import json
>>> from rollguard.replay import Replay
>>> from rollguard.schemas import parse_experiments
>>> from rollguard.synth import Arm, shadow_events
>>> replay = Replay(parse_experiments("{name: e, task: binary, mode: shadow, champion: m:1, "
...     "candidates: [m:2], primary: {metric: accuracy, margin: 0.01}, min_samples: 100, "
...     "guardrails: [{metric: error_rate, max: 0.05}]}", "doc.yaml"))
>>> events = replay.run_lines(json.dumps(e).encode() for e in shadow_events(
...     "e", Arm("m:1", 0.7), [Arm("m:2", 0.9)], n=400, seed=1))
>>> [e.action for e in events]
['start', 'promote']
>>> figures = experiment_figures(replay.evaluators["e"])
>>> [d] = figures.deltas
>>> d.candidate, d.window, d.lower <= d.estimate <= d.upper, d.lower > -d.margin
('m:2', 'analysis', True, True)
>>> d.guardrails
(('error_rate <= 0.05', 'pass'),)
>>> text = render(experiment_families([figures]))
>>> import re
>>> {m[1]: float(m[2]) for m in re.finditer(
...     r'rollguard_guardrail_status{.*status="(\w+)".*} (\S+)', text)}
{'pass': 1.0, 'fail': 0.0, 'undecided': 0.0}
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, get_args, get_type_hints

from prometheus_client import CollectorRegistry, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from rollguard.agents.liveness import Liveness
from rollguard.schemas.events import ControlEvent
from rollguard.stats.sequential import FAIL, PASS, UNDECIDED
from rollguard.streams.join import INPUT_KINDS

if TYPE_CHECKING:
    from rollguard.agents.runtime import Runtime
    from rollguard.decisions.evaluator import ExperimentEvaluator

log = logging.getLogger("rollguard.worker")

#: every action of a control event: each (experiment, action) series exists from the start
ACTIONS: tuple[str, ...] = get_args(get_type_hints(ControlEvent)["action"])
#: a guardrail's status, one series each (1 for the current one, 0 for the others)
STATUSES = (PASS, FAIL, UNDECIDED)
#: the evaluator's counters exported, as (family, label value) per counter key
LATE = {"late_labels": "labels", "late_predictions": "predictions"}
EXPIRED = {"unlabelled_expired": "unlabelled", "incomplete_expired": "incomplete"}
DUPLICATES = {"duplicate_requests": "requests", "duplicate_predictions": "predictions",
              "duplicate_labels": "labels"}
#: the ``candidate`` label of the experiment-wide sample-ratio guardrail (arms are
#: ``model:version``, so no arm is called this)
WHOLE_EXPERIMENT = "all"


class _LivenessCollector:
    """Reads :class:`Liveness` at each scrape."""

    def __init__(self, liveness: Liveness) -> None:
        self.liveness = liveness

    def collect(self) -> Iterator[Metric]:
        live = self.liveness
        yield GaugeMetricFamily(
            "rollguard_checkpoint_age_seconds",
            "Seconds since the worker's last complete checkpoint (state, offsets and outputs "
            "committed, the input's end offsets known, every partition with unread input "
            "reading).", value=live.age())
        yield GaugeMetricFamily(
            "rollguard_last_checkpoint_timestamp_seconds",
            "Unix time of the worker's last complete checkpoint.", value=live.last_complete)
        checkpoints = CounterMetricFamily(
            "rollguard_checkpoints", "Checkpoints committed, by whether they were complete.",
            labels=["outcome"])
        checkpoints.add_metric(["complete"], live.checkpoints)
        checkpoints.add_metric(["incomplete"], live.incomplete)
        yield checkpoints
        yield GaugeMetricFamily(
            "rollguard_last_checkpoint_complete",
            "1 when the last checkpoint was complete (every input end offset known, every "
            "partition with unread input reading); 0 with the reason in the worker's log.",
            value=0.0 if live.problem else 1.0)
        yield GaugeMetricFamily(
            "rollguard_restoring", "1 while the worker restores partitions' state.",
            value=1.0 if live.restoring else 0.0)
        yield GaugeMetricFamily(
            "rollguard_paused_partitions",
            "Join partitions that stopped fetching: too far ahead of the slowest in event time.",
            value=live.partitions.get("paused", 0))
        assigned = GaugeMetricFamily(
            "rollguard_assigned_partitions", "Partitions this worker owns, by stage.",
            labels=["stage"])
        for stage in ("join", "evaluate"):
            assigned.add_metric([stage], live.partitions.get(stage, 0))
        yield assigned


class _RuntimeCollector:
    """The process counters, pending joins and consumer lag, read from the runtime at each
    scrape (copies of its dicts are taken in one step each: the worker's thread may change
    them meanwhile), and the experiments' figures of the last checkpoint."""

    def __init__(self, runtime: Runtime, experiments: ExperimentCache) -> None:
        self.runtime = runtime
        self.experiments = experiments

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        consumed = CounterMetricFamily(
            "rollguard_input_messages",
            "Messages this process read from each input topic (re-deliveries after a restart "
            "or a rebalance included: rate() is the throughput).", labels=["topic"])
        for topic, n in dict(runtime.consumed).items():
            consumed.add_metric([topic], n)
        yield consumed

        dead = CounterMetricFamily(
            "rollguard_dead_letters",
            "Input messages this process sent to the dead-letter topic, by the input topic "
            "and the problem.", labels=["topic", "reason"])
        for what, n in sorted(dict(runtime.dead_letters).items()):
            parts = what.split(":", 2)
            if len(parts) == 3 and parts[0] == "deadletter":
                dead.add_metric([runtime.topic_of.get(parts[1], parts[1]), parts[2]], n)
        yield dead

        decisions = CounterMetricFamily(
            "rollguard_decisions",
            "Control events this process published, by experiment and action (the evaluating "
            "worker publishes them).", labels=["experiment", "action"])
        published = dict(runtime.decisions)
        names = [e.name for e in runtime.config.experiments]
        for name in names + sorted({n for n, _ in published} - set(names)):
            for action in ACTIONS:
                decisions.add_metric([name, action], published.get((name, action), 0))
        yield decisions

        joins = sorted(dict(runtime.join_tasks).items())
        pending = GaugeMetricFamily(
            "rollguard_join_pending_entries",
            "Requests held by the join of each input partition this worker owns (waiting for "
            "predictions or a label, labels waiting for their request, and finished requests "
            "kept until their TTL to count duplicates), by store.",
            labels=["partition", "store"])
        lag = GaugeMetricFamily(
            "rollguard_consumer_lag_messages",
            "Input messages not yet read per owned input partition: the end offset the broker "
            "gave at the last checkpoint minus the next offset the join will read (at least 0).",
            labels=["topic", "partition"])
        ends = runtime.input_ends
        for p, task in joins:
            in_memory, on_disk = task.core.pending_counts()
            pending.add_metric([str(p), "memory"], in_memory)
            if on_disk is not None:
                pending.add_metric([str(p), "disk"], on_disk)
            next_offset = task.core.next_offset
            for kind in INPUT_KINDS:
                topic = runtime.topic_of[kind]
                end = ends.get((topic, p))
                if end is not None:
                    lag.add_metric([topic, str(p)], max(0, end - next_offset[kind]))
        yield pending
        yield lag

        owned = set(runtime.eval_tasks)
        yield from experiment_families(
            f for p, figures in self.experiments.by_partition.items() if p in owned
            for f in figures)


# -- the experiments' figures ------------------------------------------------------------------
@dataclass(frozen=True)
class DeltaFigures:
    """Δ = candidate − champion of the primary metric (higher is better) and the
    candidate's guardrails, in the analysis or in the bake window after a promotion."""

    candidate: str
    window: str                 # "analysis" or "bake"
    active: bool
    estimate: float | None
    lower: float | None
    upper: float | None
    margin: float
    guardrails: tuple[tuple[str, str], ...]  # (guardrail, status)


@dataclass(frozen=True)
class ExperimentFigures:
    """What the metrics show of one experiment, taken from its evaluator at one moment."""

    experiment: str
    mode: str
    metric: str
    champion: str
    outcomes: tuple[tuple[str, int], ...]   # (arm, labelled outcomes)
    counters: tuple[tuple[str, int], ...]   # the evaluator's counters, sorted
    buffered: int
    deltas: tuple[DeltaFigures, ...]
    srm: str | None = None                  # the sample-ratio guardrail's status, if any
    stamp: tuple[int, int] = (-1, -1)       # the policy's (records, seq) they were taken at


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _guardrails(evidence: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for g in evidence:
        name = str(g["guardrail"])
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:  # the same guardrail twice in the file: keep both apart
            name = f"{name} ({seen[name]})"
        out.append((name, str(g["status"])))
    return tuple(out)


def _delta(candidate: str, window: str, track: dict[str, Any]) -> DeltaFigures:
    delta = track["delta"]
    return DeltaFigures(candidate, window, track.get("status", "active") == "active",
                        _number(delta["estimate"]), _number(delta["lower"]),
                        _number(delta["upper"]), float(delta["margin"]),
                        _guardrails(track["guardrails"]))


def _outcome_count(stats: Any) -> int:
    n = getattr(stats, "n", None)  # regression
    return int(n if n is not None else stats.confusion.n)


def experiment_figures(ev: ExperimentEvaluator,
                       previous: ExperimentFigures | None = None) -> ExperimentFigures:
    """The figures of one evaluator; ``previous`` (of the same evaluator) lends its Δ and
    guardrails when the policy took no record since: computing them is the costly part."""
    policy = ev.policy
    stamp = (policy.records, policy.seq)
    if previous is not None and previous.stamp == stamp:
        deltas, champion, srm = previous.deltas, previous.champion, previous.srm
    else:
        status = policy.status()
        evidence = status["evidence"]
        deltas_list = [_delta(arm, "analysis", track)
                       for arm, track in evidence["candidates"].items()]
        bake = evidence.get("bake")
        if bake is not None:
            deltas_list.append(_delta(bake["champion"], "bake", bake))
        srm = evidence["srm"]["status"] if evidence.get("srm") is not None else None
        deltas, champion = tuple(deltas_list), status["champion"]
    exp = ev.experiment
    return ExperimentFigures(
        exp.name, exp.mode, exp.primary.metric, champion,
        tuple(sorted((arm, _outcome_count(s)) for arm, s in ev.totals.outcomes.items())),
        tuple(sorted(ev.counters.items())), len(ev.merge), deltas, srm, stamp)


def experiment_families(figures: Iterable[ExperimentFigures]) -> list[Metric]:
    """The metric families of these experiments' figures."""
    info = GaugeMetricFamily(
        "rollguard_experiment_info",
        "1 for each experiment this worker evaluates, with its mode, primary metric and "
        "current champion.", labels=["experiment", "mode", "metric", "champion"])
    outcomes = CounterMetricFamily(
        "rollguard_labelled_outcomes",
        "Labelled outcomes of each arm (as in the stats snapshot's outcomes.count).",
        labels=["experiment", "arm"])
    late = CounterMetricFamily(
        "rollguard_join_late",
        "Input that came too late to join: labels after label_ttl, predictions after their "
        "request's record had gone.", labels=["experiment", "kind"])
    expired = CounterMetricFamily(
        "rollguard_join_expired",
        "Requests that expired at label_ttl: scored but never labelled (unlabelled), or "
        "never scored by every expected arm (incomplete).", labels=["experiment", "reason"])
    duplicates = CounterMetricFamily(
        "rollguard_join_duplicates",
        "Requests, predictions and labels received again (counted once, the first wins).",
        labels=["experiment", "kind"])
    buffered = GaugeMetricFamily(
        "rollguard_reorder_buffered_records",
        "Joined records waiting for event-time order in the evaluator.", labels=["experiment"])
    labels = ["experiment", "candidate", "window"]
    estimate = GaugeMetricFamily(
        "rollguard_primary_delta_estimate",
        "Point estimate of delta = candidate - champion of the primary metric (higher is "
        "better).", labels=labels)
    lower = GaugeMetricFamily(
        "rollguard_primary_delta_lower_bound",
        "Lower bound of the anytime-valid confidence sequence of delta: promotion needs it "
        "above -margin.", labels=labels)
    upper = GaugeMetricFamily(
        "rollguard_primary_delta_upper_bound",
        "Upper bound of the anytime-valid confidence sequence of delta: below -margin rolls "
        "the candidate back.", labels=labels)
    margin = GaugeMetricFamily(
        "rollguard_primary_margin",
        "The non-inferiority margin of the primary metric: the decision threshold is "
        "-margin.", labels=labels)
    active = GaugeMetricFamily(
        "rollguard_candidate_active",
        "1 while the candidate is under test, 0 once dropped.", labels=labels)
    guardrail = GaugeMetricFamily(
        "rollguard_guardrail_status",
        "1 for the guardrail's current status (pass, fail or undecided), 0 for the others.",
        labels=[*labels, "guardrail", "status"])
    for f in figures:
        name = f.experiment
        info.add_metric([name, f.mode, f.metric, f.champion], 1)
        for arm, n in f.outcomes:
            outcomes.add_metric([name, arm], n)
        counters = dict(f.counters)
        for family, keys in ((late, LATE), (expired, EXPIRED), (duplicates, DUPLICATES)):
            for key, value in keys.items():
                family.add_metric([name, value], counters.get(key, 0))
        buffered.add_metric([name], f.buffered)
        guardrails = [([name, WHOLE_EXPERIMENT, "analysis"], "srm", f.srm)] if f.srm else []
        for d in f.deltas:
            key = [name, d.candidate, d.window]
            for family, value in ((estimate, d.estimate), (lower, d.lower), (upper, d.upper),
                                  (margin, d.margin)):
                if value is not None:
                    family.add_metric(key, value)
            active.add_metric(key, 1 if d.active else 0)
            guardrails += [(key, guard, current) for guard, current in d.guardrails]
        for key, guard, current in guardrails:
            for status in STATUSES:
                guardrail.add_metric([*key, guard, status], 1 if status == current else 0)
    return [info, outcomes, late, expired, duplicates, buffered, estimate, lower, upper, margin,
            active, guardrail]


class ExperimentCache:
    """The figures of the experiments this worker evaluates, per outcomes partition, as of
    the last :meth:`refresh` (replaced whole, so a scrape reads one consistent moment)."""

    def __init__(self) -> None:
        self.by_partition: dict[int, tuple[ExperimentFigures, ...]] = {}

    def refresh(self, eval_tasks: dict[int, Any]) -> None:
        """Take the figures of every evaluator (on the worker's thread)."""
        old = self.by_partition
        previous = {f.experiment: f for figures in old.values() for f in figures}
        self.by_partition = {
            p: tuple(experiment_figures(ev, previous.get(name))
                     for name, ev in sorted(task.evaluators.items()))
            for p, task in eval_tasks.items()}


def render(families: Iterable[Metric]) -> str:
    """The text exposition of ``families`` (what ``/metrics`` serves)."""

    class _Families:
        def collect(self) -> Iterable[Metric]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families())
    return generate_latest(registry).decode()


#: the experiments' figures are taken at the first checkpoint at least this long after the
#: last time (seconds)
EXPERIMENTS_EVERY_S = 1.0


class WorkerMetrics:
    """The worker's metrics in a registry of their own; with ``runtime``, its counters,
    joins, lag and experiments too."""

    def __init__(self, liveness: Liveness, runtime: Runtime | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_LivenessCollector(liveness))
        self.checkpoint_seconds = Histogram(
            "rollguard_checkpoint_duration_seconds",
            "Seconds one checkpoint took (end offsets, settling, the transactions' commits).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry)
        self.runtime = runtime
        self.experiments = ExperimentCache()
        self._taken = -math.inf  # when the experiments' figures were last taken (monotonic)
        if runtime is not None:
            self.registry.register(_RuntimeCollector(runtime, self.experiments))

    def observe_checkpoint(self, seconds: float) -> None:
        """After each checkpoint, on the worker's thread: its duration, and the figures of
        the experiments as the checkpoint left them."""
        self.checkpoint_seconds.observe(seconds)
        now = time.monotonic()
        if self.runtime is not None and now - self._taken >= EXPERIMENTS_EVERY_S:
            self._taken = now
            try:
                self.experiments.refresh(self.runtime.eval_tasks)
            except Exception:  # noqa: BLE001 - the metrics must never stop the worker
                log.exception("the experiments' metrics could not be taken and keep their "
                              "previous figures; this is a rollguard bug, please report it")

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on ``host:port`` from a background thread."""
        start_http_server(port, addr=host, registry=self.registry)
