"""One partition of the join's outcomes, pure: batches and people's requests in, control
events, dead letters and state changes out.

The outcomes topic is keyed by experiment, so a partition holds the evaluators of the
experiments keyed there. The live worker wraps it with Kafka checkpoints
(agents/runtime.py); it owns its state and says what changed as keyed bytes
(streams/changelog.py).

>>> from rollguard.schemas import parse_experiments
>>> from rollguard.streams.records import Batch, encode_batch
>>> exps = parse_experiments("{name: e, task: binary, mode: shadow, champion: m:1, "
...                          "candidates: [m:2], primary: {metric: accuracy}}", "doc.yaml")
>>> part = EvalPartition(0, exps, sources=1)
>>> part.on_batch(0, b"e", encode_batch(Batch(0, [], 5.0)))
[]
>>> changes = part.changes()
>>> [(c.store, c.key) for c in changes]
[('state', b'e/e'), ('state', b'm')]
>>> restored = EvalPartition(0, exps, sources=1)
>>> for change in changes:
...     restored.restore(change.key, change.value)
>>> restored.next_offset, sorted(restored.evaluators)
(1, ['e'])
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Iterable

import msgspec

from rollguard.decisions.evaluator import ExperimentEvaluator
from rollguard.decisions.manual import Refused
from rollguard.schemas.events import ControlEvent, DeadLetter, Invalid, decode_control_request
from rollguard.streams.changelog import META, STATE, Change, evaluator_key, is_evaluator, name_of
from rollguard.streams.records import FRONTIER_KEY, decode_batch

if TYPE_CHECKING:
    from rollguard.schemas.experiment import Experiment

log = logging.getLogger("rollguard.worker")

_PACK = msgspec.msgpack.Encoder()
_UNPACK = msgspec.msgpack.Decoder()


class EvalPartition:
    """The evaluators of one outcomes partition, the offsets they cover, and what changed."""

    def __init__(self, partition: int, experiments: Iterable[Experiment], *, sources: int,
                 requests_topic: str = "control-requests") -> None:
        self.partition = partition
        self.experiments = {e.name: e for e in experiments}
        self.sources = sources  # join partitions feeding each evaluator
        self.requests_topic = requests_topic
        self.evaluators: dict[str, ExperimentEvaluator] = {}
        #: the next offset of the outcomes partition, and of the control requests' partition
        self.next_offset = 0
        self.next_request_offset = 0
        self.dead_letters: list[DeadLetter] = []
        #: experiments whose statistics changed since their last snapshot
        self.unpublished: set[str] = set()

    def evaluator(self, name: str) -> ExperimentEvaluator | None:
        """The evaluator of ``name`` (made on first use); None for an experiment this
        worker does not know (another worker app, or version, evaluates it)."""
        ev = self.evaluators.get(name)
        if ev is None and name in self.experiments:
            ev = self.evaluators[name] = ExperimentEvaluator(self.experiments[name],
                                                             self.sources)
        return ev

    def read_frontiers(self) -> dict[int, float]:
        """Each join partition's frontier as the outcomes read here told it (the furthest any
        evaluator of this partition heard; empty without evaluators)."""
        out: dict[int, float] = {}
        for ev in self.evaluators.values():
            for source, frontier in ev.merge.frontiers.items():
                if frontier > out.get(source, -math.inf):
                    out[source] = frontier
        return out

    # -- input ------------------------------------------------------------------------------
    def on_batch(self, offset: int, key: bytes, value: bytes) -> list[ControlEvent]:
        """Take one join batch; the control events it led to."""
        if offset < self.next_offset:
            return []  # already in the state
        self.next_offset = offset + 1
        if key == FRONTIER_KEY:
            return self._on_frontier(offset, value)
        ev = self.evaluator(key.decode())
        if ev is None:
            return []
        try:
            return ev.add_batch(decode_batch(value))
        except Exception:  # noqa: BLE001 - a bug must not stop every experiment's evaluation
            log.exception("the outcomes batch at offset %d of partition %d could not be "
                          "evaluated and is skipped; this is a rollguard bug, please report it",
                          offset, self.partition)
            return []

    def _on_frontier(self, offset: int, value: bytes) -> list[ControlEvent]:
        """A join partition's new frontier, for every evaluator here. It comes after that
        partition's batches of the same checkpoint, and each experiment's first batch from a
        join partition is one of its own, so every evaluator it reaches already exists."""
        events: list[ControlEvent] = []
        try:
            told = decode_batch(value)
            for ev in self.evaluators.values():
                events += ev.add_batch(told)
        except Exception:  # noqa: BLE001 - as in on_batch
            log.exception("the frontier message at offset %d of partition %d could not be "
                          "applied and is skipped; this is a rollguard bug, please report it",
                          offset, self.partition)
        return events

    def on_request(self, offset: int, key: bytes | None,
                   value: bytes | None) -> list[ControlEvent]:
        """Apply a person's control request (``rollguard pause`` …); the control event it led
        to. One that cannot apply becomes a dead letter with the reason
        (:meth:`take_dead_letters`)."""
        if offset < self.next_request_offset:
            return []
        self.next_request_offset = offset + 1
        request = decode_control_request(value if value is not None else b"")
        if type(request) is Invalid:
            self._refuse(offset, key, value, request.reason)
            return []
        ev = self.evaluator(request.experiment)
        if ev is None:
            log.info("control request %s for experiment '%s' left to the worker that "
                     "evaluates it", request.request_id, request.experiment)
            return []
        try:
            return [ev.apply_request(request)]
        except Refused as refused:
            self._refuse(offset, key, value, f"control request refused: {refused}")
            return []

    def _refuse(self, offset: int, key: bytes | None, value: bytes | None, reason: str) -> None:
        log.warning("%s", reason)
        self.dead_letters.append(DeadLetter(
            key=key, value=value if value is not None else b"", error=reason,
            topic=self.requests_topic, partition=self.partition, offset=offset))

    # -- output -----------------------------------------------------------------------------
    def take_dead_letters(self) -> list[DeadLetter]:
        dead, self.dead_letters = self.dead_letters, []
        return dead

    def take_history(self) -> list[tuple[str, dict[str, Any]]]:
        """The history points made since the last call, by experiment (docs/history.md)."""
        return [(name, point) for name, ev in self.evaluators.items()
                for point in ev.take_history()]

    def take_snapshots(self) -> list[tuple[str, dict[str, Any]]]:
        """The stats snapshots of the experiments that changed since their last one."""
        snapshots = [(name, self.evaluators[name].snapshot()) for name in sorted(self.unpublished)]
        self.unpublished.clear()
        return snapshots

    # -- checkpoints ----------------------------------------------------------------------
    def changes(self) -> list[Change]:
        """The evaluators that changed since the last call, and the meta (the offsets they
        cover), for the next checkpoint."""
        changes = []
        for name, ev in self.evaluators.items():
            if ev.changed:
                changes.append(Change(STATE, evaluator_key(name), _PACK.encode(ev.to_dict())))
                ev.changed = False
                self.unpublished.add(name)
        changes.append(Change(STATE, META, _PACK.encode(
            {"offset": self.next_offset, "requests": self.next_request_offset})))
        return changes

    def restore(self, key: bytes, value: bytes | None) -> None:
        """Take back one record of the changelog (read in order: the latest value wins)."""
        if key == META:
            meta = _UNPACK.decode(value)
            self.next_offset = meta["offset"]
            self.next_request_offset = meta.get("requests", 0)
        elif is_evaluator(key) and value is not None:
            name = name_of(key)
            if name in self.experiments:
                self.evaluators[name] = ExperimentEvaluator.from_dict(
                    self.experiments[name], self.sources, _UNPACK.decode(value))
