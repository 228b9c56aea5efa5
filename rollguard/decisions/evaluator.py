"""One experiment's evaluation, pure: batches from the join partitions in, control events out.

It merges the partitions' records into event-time order (:mod:`rollguard.decisions.ordering`),
adds up their statistics deltas and counters, and hands each record, in order, to the
experiment's policy (:mod:`rollguard.decisions.policy`). The live worker and
``rollguard replay`` both run this.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from rollguard.decisions.history import History
from rollguard.decisions.manual import Refused, apply_request
from rollguard.decisions.ordering import EventTimeMerge
from rollguard.decisions.policy import Policy
from rollguard.schemas.events import ControlEvent, ControlRequest
from rollguard.streams.aggregate import ExperimentStats
from rollguard.streams.records import FIRST, SCORED, Batch, JoinedRecord, decode_batch, encode_batch

if TYPE_CHECKING:
    from rollguard.schemas.experiment import Experiment


class ExperimentEvaluator:
    """Statistics totals, the reorder buffer and the policy of one experiment."""

    def __init__(self, experiment: Experiment, sources: int = 1, *, history: bool = True) -> None:
        self.experiment = experiment
        self.merge = EventTimeMerge(sources)
        self.totals = ExperimentStats(experiment, reference_left={})
        self.counters: Counter[str] = Counter()
        self.policy = Policy(experiment)
        # points for <prefix>history (history.py); a replay may do without them
        self.history = History(experiment.name, enabled=history)
        self.changed = False
        #: replay: people's requests to apply once the policy has taken ``at_record`` records
        self.scheduled: list[tuple[int, ControlRequest]] = []
        #: replay: the one-sentence reasons of scheduled requests that could not apply
        self.refused: list[str] = []

    def apply_request(self, request: ControlRequest) -> ControlEvent:
        """A person's request, applied where the analysis is now (raises
        :class:`~rollguard.decisions.manual.Refused` with one sentence)."""
        event = apply_request(self.policy, request)
        self.history.decided([event], self.policy)
        self.changed = True
        return event

    def schedule(self, at_record: int, request: ControlRequest) -> None:
        """Replay: apply ``request`` once the policy has taken ``at_record`` records (the
        ``evidence.manual.at_record`` of the live event), as the worker did."""
        self.scheduled.append((at_record, request))
        self.scheduled.sort(key=lambda item: item[0])

    def _due_requests(self, *, final: bool = False) -> list[ControlEvent]:
        events = []
        while self.scheduled and (final or self.scheduled[0][0] <= self.policy.records):
            _, request = self.scheduled.pop(0)
            try:
                events.append(self.apply_request(request))
            except Refused as refused:
                self.refused.append(str(refused))
        return events

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
        return self._apply(self.merge.release(flush=True)) + self._due_requests(final=True)

    def _apply(self, records: list[JoinedRecord]) -> list[ControlEvent]:
        events: list[ControlEvent] = []
        policy, totals = self.policy, self.totals
        for record in records:
            if self.scheduled and record.kind != FIRST:
                events.extend(self._due_requests())
            if record.kind == SCORED:
                totals.on_ordered_scored(record)
            emitted = policy.on_record(record)
            events.extend(emitted)
            self.history.observe(record, emitted, policy)
        return events

    def take_history(self) -> list[dict[str, Any]]:
        """The history points made since the last call (docs/history.md)."""
        return self.history.take()

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
            "history": self.history.to_dict(),
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
        new.history = History.from_dict(experiment.name, d.get("history"))
        return new
