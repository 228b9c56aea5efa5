"""One experiment's evaluation, pure: batches from the join partitions in, control events out.

It merges the partitions' records into event-time order (:mod:`rollguard.decisions.ordering`),
adds up their statistics deltas and counters, and hands each record, in order, to the
experiment's policy (:mod:`rollguard.decisions.policy`). The live worker and
``rollguard replay`` both run this.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from rollguard.decisions.ordering import EventTimeMerge
from rollguard.decisions.policy import Policy
from rollguard.schemas.events import ControlEvent
from rollguard.streams.aggregate import ExperimentStats
from rollguard.streams.records import SCORED, Batch, JoinedRecord, decode_batch, encode_batch

if TYPE_CHECKING:
    from rollguard.schemas.experiment import Experiment


class ExperimentEvaluator:
    """Statistics totals, the reorder buffer and the policy of one experiment."""

    def __init__(self, experiment: Experiment, sources: int = 1) -> None:
        self.experiment = experiment
        self.merge = EventTimeMerge(sources)
        self.totals = ExperimentStats(experiment, reference_left={})
        self.counters: Counter[str] = Counter()
        self.policy = Policy(experiment)
        self.changed = False

    def add_batch(self, batch: Batch) -> list[ControlEvent]:
        """Take one partition's batch; return the control events it led to, in order."""
        self.merge.add(batch.source, batch.records, batch.frontier)
        if batch.stats:
            self.totals.merge(ExperimentStats.from_dict(self.experiment, batch.stats))
        if batch.counters:
            self.counters.update(batch.counters)
        self.changed = True
        return self._apply(self.merge.release())

    def flush(self) -> list[ControlEvent]:
        """Input is over (end of a replay): release everything buffered."""
        return self._apply(self.merge.release(flush=True))

    def _apply(self, records: list[JoinedRecord]) -> list[ControlEvent]:
        events: list[ControlEvent] = []
        policy, totals = self.policy, self.totals
        for record in records:
            if record.kind == SCORED:
                totals.on_ordered_scored(record)
            events.extend(policy.on_record(record))
        return events

    # -- what people see ------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The stats snapshot of this experiment (shape: docs/stats-snapshot.md)."""
        return {
            "experiment": self.experiment.name,
            "mode": self.experiment.mode,
            "champion": self.experiment.champion,
            "candidates": list(self.experiment.candidates),
            "decision": self.policy.status(),
            "statistics": self.totals.get(),
            "counters": dict(sorted(self.counters.items())),
            "buffered": len(self.merge),
        }

    # -- state ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "frontiers": {str(k): v for k, v in self.merge.frontiers.items()},
            "buffered": encode_batch(Batch(-1, self.merge.buffered())),
            "totals": self.totals.to_dict(),
            "counters": dict(self.counters),
            "policy": self.policy.to_dict(),
        }

    @classmethod
    def from_dict(cls, experiment: Experiment, sources: int, d: dict[str, Any]) -> "ExperimentEvaluator":
        new = cls(experiment, sources)
        new.merge.frontiers = {int(k): float(v) for k, v in d["frontiers"].items()}
        new.merge.add(-1, decode_batch(d["buffered"]).records, float("-inf"))
        new.merge.frontiers.pop(-1, None)
        new.totals = ExperimentStats.from_dict(experiment, d["totals"])
        new.counters = Counter(d["counters"])
        new.policy = Policy.from_dict(experiment, d["policy"])
        return new
