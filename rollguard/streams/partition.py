"""One join partition, pure: raw input messages in, batches for the evaluator and dead
letters out. The live worker wraps it with Kafka checkpoints; ``rollguard replay`` drives it
over a file. Both run exactly this code.

>>> from rollguard.schemas import parse_experiments
>>> [exp] = parse_experiments('''
... name: e
... task: binary
... mode: shadow
... champion: m:1
... candidates: [m:2]
... primary: {metric: accuracy}
... allowed_lateness: 0s
... ''', "doc.yaml")
>>> part = JoinPartition(0, [exp])
>>> part.on_message("predictions", 0, b"r1", b'{"request_id": "r1", "experiment": "e", '
...     b'"ts": 5, "model": "m", "version": "1", "served": true, "prediction": 1}')
>>> part.on_message("labels", 0, b"r1", b'not json')
>>> [d.error for d in part.dead_letters]
['label rejected: the value is not valid JSON (expecting value at line 1, column 1).']
>>> part.counters[(None, "deadletter:labels:not_json")]
1
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import msgspec

from rollguard.schemas.events import DeadLetter, Invalid, decode_label, decode_prediction, decode_request
from rollguard.streams.aggregate import ExperimentStats
from rollguard.streams.changelog import DISK, META, STATE, Change, is_pending, name_of, pending_key
from rollguard.streams.join import INPUT_KINDS, Joiner
from rollguard.streams.pending import DiskStore, MemoryStore, decode_entry
from rollguard.streams.records import FIRST, Batch, JoinedRecord

if TYPE_CHECKING:
    from rollguard.schemas.experiment import Experiment

log = logging.getLogger("rollguard.worker")

_PACK = msgspec.msgpack.Encoder()
_UNPACK = msgspec.msgpack.Decoder()
_DECODE = {"requests": decode_request, "predictions": decode_prediction, "labels": decode_label}


#: keys of the experiment file that change nothing the state was built from
NOT_STATE = ("notify",)


def fingerprint(experiment: Experiment) -> str:
    """A short digest of an experiment's definition: state built under another one is refused.
    Webhooks (``notify``) are not part of it: they may change on a running experiment."""
    definition = {k: v for k, v in experiment.to_dict().items() if k not in NOT_STATE}
    return hashlib.sha256(json.dumps(definition).encode()).hexdigest()[:16]  # as before


class JoinPartition:
    """The join of partition ``partition``: offsets, joiner, statistics deltas, dead letters."""

    def __init__(self, partition: int, experiments: Iterable[Any], *,
                 disk: DiskStore | None = None, topics: dict[str, str] | None = None) -> None:
        self.partition = partition
        self.experiments = {e.name: e for e in experiments}
        #: each experiment's fingerprint, in every checkpoint's meta: computed once, not at
        #: every checkpoint (about 20 µs an experiment)
        self.fingerprints = {name: fingerprint(e) for name, e in self.experiments.items()}
        self.joiner = Joiner(self.experiments, memory=MemoryStore(), disk=disk)
        self.topics = topics or {kind: kind for kind in INPUT_KINDS}  # kind -> topic name
        self.next_offset = {kind: 0 for kind in INPUT_KINDS}
        self.reference_left: dict[str, dict[str, int]] = {name: {} for name in self.experiments}
        self.deltas: dict[str, ExperimentStats] = {}
        self.dead_letters: list[DeadLetter] = []
        self.counters: Counter[tuple[str | None, str]] = Counter()
        self.events_since_settle = 0
        #: records released between checkpoints (:meth:`release_ready`), by experiment, for
        #: the next :meth:`settle`
        self._released: dict[str, list[JoinedRecord]] = {name: [] for name in self.experiments}
        self._restored_meta: dict[str, Any] | None = None

    # -- input ------------------------------------------------------------------------------
    def on_message(self, kind: str, offset: int, key: bytes | None, value: bytes | None) -> None:
        """Use one input message; below the restored offsets it is already in the state."""
        self.on_messages(kind, (offset,), (key,), (value,))

    def on_messages(self, kind: str, offsets: Sequence[int], keys: Sequence[bytes | None],
                    values: Sequence[bytes | None]) -> None:
        """Use a batch of one input topic's messages (consecutive fetches of this partition,
        in offset order): the same as :meth:`on_message` on each, with no per-message call
        from the runtime."""
        # on_event's steps inlined: this loop runs for every input message
        decode, handle, next_offset = _DECODE[kind], self._handler(kind), self.next_offset
        start = next_offset[kind]
        used = 0
        for offset, key, value in zip(offsets, keys, values):
            if offset < start:
                continue  # already in the state (restored), or a message fetched twice
            start = offset + 1
            used += 1
            event = decode(value if value is not None else b"")
            if type(event) is Invalid:
                self._dead(kind, offset, key, value, event)
                continue
            try:
                problem = handle(event)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the worker
                problem = self._internal_error(kind, offset, exc)
            if problem is not None:
                self._refused(kind, offset, key, value, event, problem)
        next_offset[kind] = start
        self.events_since_settle += used

    def on_event(self, kind: str, offset: int, event: Any, key: bytes | None = None,
                 value: bytes | None = None) -> None:
        """Use one decoded event (``key``/``value``: the raw message, for its dead letter)."""
        if offset < self.next_offset[kind]:
            return
        self.next_offset[kind] = offset + 1
        self.events_since_settle += 1
        try:
            problem = self._handler(kind)(event)
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the worker
            problem = self._internal_error(kind, offset, exc)
        if problem is not None:
            self._refused(kind, offset, key, value, event, problem)

    def _handler(self, kind: str) -> Callable[[Any], Invalid | None]:
        """What uses an event of ``kind`` (a request also feeds feature drift)."""
        if kind == "requests":
            return self._on_request
        return self.joiner.on_prediction if kind == "predictions" else self.joiner.on_label

    def _internal_error(self, kind: str, offset: int, exc: Exception) -> Invalid:
        log.exception("%s at offset %d of %s could not be processed", kind, offset,
                      self.topics[kind])
        return Invalid(kind[:-1], "internal_error",
                       f"{kind[:-1]} could not be processed ({type(exc).__name__}: {exc}); "
                       "this is a rollguard bug, please report it.")

    def _refused(self, kind: str, offset: int, key, value, event: Any, problem: Invalid) -> None:
        """A decoded event the join could not use: a dead letter, counted by experiment."""
        known = getattr(event, "experiment", None)
        self._dead(kind, offset, key, value, problem, known if known in self.experiments else None)

    def _on_request(self, request) -> Invalid | None:
        problem = self.joiner.on_request(request)
        if problem is None and request.features:
            self._delta(request.experiment).on_request(request)
        return problem

    def _dead(self, kind: str, offset: int, key, value, problem: Invalid,
              experiment: str | None = None) -> None:
        self.counters[experiment, f"deadletter:{kind}:{problem.problem}"] += 1
        self.dead_letters.append(DeadLetter(key=key, value=value if value is not None else b"",
                                            error=problem.reason, topic=self.topics[kind],
                                            partition=self.partition, offset=offset))

    def _delta(self, name: str) -> ExperimentStats:
        delta = self.deltas.get(name)
        if delta is None:
            delta = self.deltas[name] = ExperimentStats(
                self.experiments[name], reference_left=self.reference_left[name])
        return delta

    # -- output -----------------------------------------------------------------------------
    def settle(self, *, backlogged: Iterable[str] = (), quiet: bool = False,
               flush: bool = False) -> list[tuple[str, Batch]]:
        """Release what the watermark settled; one batch per experiment (every experiment
        gets one, even empty, so the evaluator learns this partition's frontier).

        ``backlogged``: input kinds with unread messages (they hold the watermark back);
        ``quiet``: nothing arrived since the last settle; with no backlog either, the
        partition is idle and releases everything (``flush`` does so unconditionally).
        """
        joiner = self.joiner
        joiner.backlogged = frozenset(backlogged)
        idle = flush or (quiet and not joiner.backlogged)
        self._release(flush=idle)
        by_experiment = self._released
        self._released = {name: [] for name in self.experiments}
        counters_by_exp: dict[str | None, dict[str, int]] = {}
        for (name, what), n in joiner.drain_counters().items():
            self.counters[name, what] += n
        for (name, what), n in self.counters.items():
            counters_by_exp.setdefault(name, {})[what] = n
        self.counters = Counter()
        # not tied to an experiment (unreadable input): every experiment's batch carries them
        shared = {f"all:{what}": n for what, n in counters_by_exp.pop(None, {}).items()}
        frontier = math.inf if idle else joiner.frontier
        batches = []
        for name, recs in by_experiment.items():
            delta = self.deltas.pop(name, None)
            stats = None
            if delta is not None and not delta.empty():
                delta.spend_reference()
                stats = delta.to_dict()
            counters = {**counters_by_exp.get(name, {}), **shared} or None
            batches.append((name, Batch(self.partition, recs, frontier, stats, counters)))
        self.events_since_settle = 0
        return batches

    def release_ready(self) -> None:
        """Between checkpoints: release what the watermark has settled even if every input
        topic had unread messages (the least advanced topic holds it back), and keep the
        records for the next :meth:`settle`. Never more than a checkpoint would release at
        this moment, so the records and their order are the same; the work of a busy
        interval is spread over the turns that read it instead of stalling the checkpoint.

        >>> from rollguard.schemas import parse_experiments
        >>> part = JoinPartition(0, parse_experiments(
        ...     "{name: e, task: binary, mode: shadow, champion: m:1, candidates: [m:2], "
        ...     "primary: {metric: accuracy}, allowed_lateness: 0s}", "x.yaml"))
        >>> part.on_message("requests", 0, b"r1", b'{"request_id": "r1", "experiment": "e", '
        ...                 b'"ts": 1, "features": {}}')
        >>> part.release_ready()    # predictions and labels not read yet: nothing settles
        >>> every = ["requests", "predictions", "labels"]
        >>> [r.kind for _, batch in part.settle(backlogged=every) for r in batch.records]
        []
        >>> for offset, (version, ts) in enumerate([("1", 2), ("2", 2)]):
        ...     part.on_message("predictions", offset, b"r1", (
        ...         '{"request_id": "r1", "experiment": "e", "ts": %d, "model": "m", '
        ...         '"version": "%s", "served": %s, "prediction": 1}'
        ...         % (ts, version, "true" if version == "1" else "false")).encode())
        >>> part.on_message("labels", 0, b"r1", b'{"request_id": "r1", "ts": 3, "label": 1}')
        >>> part.release_ready()    # requests read only to ts 1: FIRST settles, SCORED waits
        >>> [r.kind for _, batch in part.settle(backlogged=every) for r in batch.records]
        [2]
        """
        joiner = self.joiner
        held, joiner.backlogged = joiner.backlogged, frozenset(INPUT_KINDS)
        try:
            self._release()
        finally:
            joiner.backlogged = held

    def _release(self, *, flush: bool = False) -> None:
        """Release what the joiner's watermark settled (everything ready when ``flush``),
        count the pairs that can no longer come and the requests past their TTL, and keep
        the records and their statistics for the next :meth:`settle`."""
        joiner = self.joiner
        released, delta = self._released, self._delta
        for record in joiner.release(flush=flush):
            released[record.experiment].append(record)
            if record.kind != FIRST:
                delta(record.experiment).on_record(record)
        joiner.check_pairs()
        joiner.expire()

    def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters since the last settle, by ``deadletter:<topic kind>:<problem>``."""
        return {what: n for (_, what), n in self.counters.items()
                if what.startswith("deadletter:")}

    def take_dead_letters(self) -> list[DeadLetter]:
        dead, self.dead_letters = self.dead_letters, []
        return dead

    # -- checkpoints ----------------------------------------------------------------------
    # The partition owns its state; a checkpoint takes its changes as keyed bytes
    # (streams/changelog.py) and a restore hands them back, in the same format.
    @property
    def frontier(self) -> float:
        """Every record this partition releases from now on has an event time above this."""
        return self.joiner.frontier

    def pending_counts(self) -> tuple[int, int | None]:
        """Pending requests in memory and on disk (None: no disk store)."""
        disk = self.joiner.disk
        return len(self.joiner.memory), None if disk is None else len(disk)

    def changes(self) -> list[Change]:
        """What changed since the last call, for the next checkpoint: the pending entries
        (in memory: ``state``; on disk: ``disk``) and the meta, which covers
        :attr:`next_offset` of every input."""
        changes = [Change(STATE, pending_key(rid), value)
                   for rid, value in self.joiner.memory.stage()]
        disk = self.joiner.disk
        if disk is not None:
            changes += [Change(DISK, pending_key(rid), value) for rid, value in disk.stage()]
        changes.append(Change(STATE, META, _PACK.encode(self.meta())))
        return changes

    def restore(self, key: bytes, value: bytes | None) -> None:
        """Take back one record of the ``state`` changelog (the latest value of each key
        wins: read it in order)."""
        if key == META:
            self._restored_meta = _UNPACK.decode(value)
        elif is_pending(key):
            self.joiner.memory.load(name_of(key), None if value is None else decode_entry(value))

    @property
    def disk_restore_from(self) -> int | None:
        """Where the ``disk`` changelog must be read from to restore (None: from the start;
        the disk store keeps what was durable when it closed)."""
        disk = self.joiner.disk
        start = None if disk is None else disk.changelog_offset
        return None if start is None else start + 1

    def restore_disk(self, key: bytes, value: bytes | None) -> None:
        """Take back one record of the ``disk`` changelog."""
        self.joiner.disk.load(name_of(key), None if value is None else decode_entry(value))

    def restored(self) -> None:
        """Every changelog record is back: apply the meta (checked against the experiments)."""
        meta, self._restored_meta = self._restored_meta, None
        if meta is not None:
            self.load_meta(meta)

    def durable(self, disk_changelog_offset: int | None) -> None:
        """The last checkpoint is committed, its ``disk`` changes up to this offset of the
        changelog (None: none written)."""
        disk = self.joiner.disk
        if disk is not None and disk_changelog_offset is not None:
            disk.committed(disk_changelog_offset)

    def close(self) -> None:
        if self.joiner.disk is not None:
            self.joiner.disk.close()

    def meta(self) -> dict[str, Any]:
        return {
            "offsets": dict(self.next_offset),
            **self.joiner.meta(),
            "reference_left": self.reference_left,
            "experiments": dict(self.fingerprints),
        }

    def load_meta(self, meta: dict[str, Any]) -> None:
        for name, digest in meta.get("experiments", {}).items():
            if name in self.fingerprints and self.fingerprints[name] != digest:
                raise ValueError(
                    f"experiment '{name}' differs from the one this worker's state was built "
                    "with: give the changed experiment a new name, or delete the worker's "
                    "state topics to start over.")
        self.next_offset.update(meta["offsets"])
        self.joiner.load_meta(meta)
        for name, left in meta.get("reference_left", {}).items():
            if name in self.reference_left:
                self.reference_left[name].update(left)
