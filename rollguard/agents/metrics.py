"""The worker's Prometheus metrics (``rollguard worker --metrics-port``).

Liveness first: ``rollguard_checkpoint_age_seconds`` is the age of the last complete
checkpoint (:mod:`rollguard.agents.liveness`); alert when it passes a few checkpoint
intervals. The figures are read from the worker's own objects at scrape time, so a scrape
never sees a value the worker did not hold.

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
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from rollguard.agents.liveness import Liveness


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


class WorkerMetrics:
    """The worker's metrics in a registry of their own."""

    def __init__(self, liveness: Liveness) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_LivenessCollector(liveness))
        self.checkpoint_seconds = Histogram(
            "rollguard_checkpoint_duration_seconds",
            "Seconds one checkpoint took (end offsets, settling, the transactions' commits).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry)

    def observe_checkpoint(self, seconds: float) -> None:
        self.checkpoint_seconds.observe(seconds)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on ``host:port`` from a background thread."""
        start_http_server(port, addr=host, registry=self.registry)
