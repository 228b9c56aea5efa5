"""The join of requests, predictions and delayed labels, keyed by ``request_id``.

Pure: no Kafka, no Faust, no clock. One :class:`Joiner` serves one partition of the
co-partitioned input topics (or a whole replay file). It takes events in any arrival order
and hands the evaluator two kinds of :class:`~rollguard.streams.records.JoinedRecord`:

- ``SCORED`` once a request's expected predictions are in (shadow mode: every arm of the
  experiment; other modes: the served one);
- ``OUTCOME`` once its label has joined them, unless the label came later than
  ``label_ttl`` after the prediction (then it is counted as late and not applied).

Determinism. Records leave in event-time order, and only when the join's *watermark* says
nothing more can change them: a record whose parts end at ``ready`` is released once the
watermark passes ``ready + allowed_lateness``, and carries exactly the optional parts (the
request, predictions of arms that were not needed) with event time up to
``ready + allowed_lateness``. The watermark is the largest event time read, held back to
the least advanced input topic that still has a backlog: the three topics may be read in
any interleaving, and what is released is the same as when a replay file is read in
event-time order. Expiry of requests never labelled also follows the watermark.
Input that comes later than that (an event older than what was released already, from a
producer that reordered its writes or was held up beyond the wait of
:mod:`rollguard.streams.idle`) is counted as ``late_input:<kind>`` and what it completes
goes at the event time already released, so the records leave in order.

Once per experiment, a ``FIRST`` record marks the event time of its first accepted request
or prediction here: the experiment starts with its traffic, before any request is complete.

Duplicates (same request and arm, or a second label) count once: the first wins, and a
finished request stays as a small ``done`` marker until its TTL runs out.

>>> from types import SimpleNamespace as Exp
>>> exp = Exp(name="e", mode="shadow", arms=("m:1", "m:2"), label_ttl=60.0,
...           allowed_lateness=1.0, state="memory")
>>> joiner = Joiner({"e": exp})
>>> from rollguard.schemas.events import Prediction, Label
>>> for arm, served in (("m:1", True), ("m:2", False)):
...     _ = joiner.on_prediction(Prediction(request_id="r1", experiment="e", ts=10.0,
...                                         model="m", version=arm[-1], served=served,
...                                         prediction=1))
>>> _ = joiner.on_label(Label(request_id="r1", ts=20.0, label=1))
>>> [(r.kind, r.ts) for r in joiner.release()]   # watermark 20: FIRST and SCORED settled
[(2, 10.0), (0, 10.0)]
>>> joiner.on_label(Label(request_id="r9", ts=30.0, label=0)) is None
True
>>> [(r.kind, r.ts) for r in joiner.release()]   # watermark 30: the OUTCOME (ready 20) too
[(1, 20.0)]
"""

from __future__ import annotations

import heapq
import math

import msgspec
from collections import Counter
from typing import TYPE_CHECKING, Any, Mapping

from rollguard.schemas.events import Invalid
from rollguard.streams.pending import DiskStore, LabelPart, MemoryStore, PendingEntry
from rollguard.streams.records import FIRST, OUTCOME, SCORED, ArmView, JoinedRecord

if TYPE_CHECKING:
    from rollguard.schemas.experiment import Experiment

#: labels keep at most this long waiting for their predictions when no experiment says more
DEFAULT_ORPHAN_TTL = 7 * 86400.0
#: experiments whose labels take longer than this keep their pending joins on disk ("auto")
AUTO_DISK_TTL = 6 * 3600.0

INPUT_KINDS = ("requests", "predictions", "labels")


def uses_disk(experiment: Experiment) -> bool:
    """Where an experiment's pending joins live: its ``state`` key, or by its label TTL."""
    state = getattr(experiment, "state", "auto")
    if state == "auto":
        return experiment.label_ttl > AUTO_DISK_TTL
    return state == "disk"


class Joiner:
    """The join state of one partition and the rules that move it.

    ``on_request``/``on_prediction``/``on_label`` return None when the event was used (or
    counted as a duplicate), or an :class:`~rollguard.schemas.Invalid` saying in one sentence
    why it cannot be used (the caller sends it to the dead-letter topic).
    ``release()`` returns the records that are settled.
    """

    def __init__(self, experiments: Mapping[str, Any], *, memory: MemoryStore | None = None,
                 disk: DiskStore | None = None) -> None:
        self.experiments = dict(experiments)
        self._arms = {name: frozenset(e.arms) for name, e in self.experiments.items()}
        self._order = {name: {arm: i for i, arm in enumerate(e.arms)}
                       for name, e in self.experiments.items()}
        self._shadow = {name: e.mode == "shadow" for name, e in self.experiments.items()}
        self._ranking = {name: getattr(e, "task", None) == "ranking"
                         for name, e in self.experiments.items()}
        self._ttl = {name: float(e.label_ttl) for name, e in self.experiments.items()}
        self.lateness = max((float(e.allowed_lateness) for e in self.experiments.values()),
                            default=0.0)
        self.memory = memory if memory is not None else MemoryStore()
        self.disk = disk
        self._on_disk = {name: disk is not None and uses_disk(e)
                         for name, e in self.experiments.items()}
        self.orphan_ttl = max(self._ttl.values(), default=DEFAULT_ORPHAN_TTL)
        self.max_ts = {kind: -math.inf for kind in INPUT_KINDS}
        #: the event time releases have reached: every record released from now on carries
        #: an event time at least this (see :meth:`release`)
        self.released_to = -math.inf
        self.backlogged: frozenset[str] = frozenset()
        self._ready: list[tuple[float, str]] = []  # (ready time, request_id), lazily pruned
        #: (when its parts should all be in, request_id): see :meth:`check_pairs`
        self._pairing: list[tuple[float, str]] = []
        self.counters: Counter[tuple[str | None, str]] = Counter()
        #: per experiment, the earliest event time of its traffic here, until its FIRST
        #: record is released (then None)
        self.first_seen: dict[str, float | None] = {}

    # -- watermark ------------------------------------------------------------------------
    @property
    def watermark(self) -> float:
        """Largest event time read, held back to the least advanced backlogged input."""
        behind = [self.max_ts[k] for k in self.backlogged]
        return min(behind) if behind else max(self.max_ts.values())

    @property
    def frontier(self) -> float:
        """Every record released later has an event time above this."""
        return self.watermark - self.lateness

    # -- events ---------------------------------------------------------------------------
    def on_request(self, request: Any) -> Invalid | None:
        name = request.experiment
        if name not in self.experiments:
            return _unknown_experiment("request", name)
        self._saw("requests", request.ts, name)
        rid = request.request_id
        entry, store = self._find(rid)
        if entry is None:
            entry, store = PendingEntry(experiment=name,
                                        deadline=request.ts + self._ttl[name]), self._store(name)
        elif entry.experiment is None:
            entry, store = self._adopt(rid, entry, store, name, request.ts)
        elif entry.experiment != name:
            return _other_experiment("request", rid, entry.experiment, name)
        if entry.done or entry.request_ts is not None:
            self.counters[name, "duplicate_requests"] += 1
            return None
        if not entry.preds:
            self._expect_pair(rid, request.ts)
        self._first(name, request.ts)
        entry.request_ts = request.ts
        entry.request_unit = request.unit
        entry.request_segments = request.segments
        store.put(rid, entry, deadline_changed=True)
        return None

    def on_prediction(self, pred: Any) -> Invalid | None:
        name = pred.experiment
        arms = self._arms.get(name)
        if arms is None:
            return _unknown_experiment("prediction", name)
        arm = pred.arm
        if arm not in arms:
            return Invalid("prediction", "unknown_arm",
                           f"prediction rejected: arm '{arm}' is not part of experiment '{name}' "
                           f"(its arms are {', '.join(sorted(arms))}).", "model")
        if pred.error is None and (pred.items is not None) != self._ranking[name]:
            return _other_task(pred, name, self._ranking[name])
        self._saw("predictions", pred.ts, name)
        rid = pred.request_id
        entry, store = self._find(rid)
        new_deadline = False
        if entry is None:
            entry, store = PendingEntry(experiment=name,
                                        deadline=pred.ts + self._ttl[name]), self._store(name)
            new_deadline = True
        elif entry.experiment is None:
            entry, store = self._adopt(rid, entry, store, name, pred.ts)
            new_deadline = True
        elif entry.experiment != name:
            return _other_experiment("prediction", rid, entry.experiment, name)
        if entry.done:
            self.counters[name, "duplicate_predictions"] += 1
            return None
        preds = entry.preds
        if not preds and entry.request_ts is None:
            self._expect_pair(rid, pred.ts)
        if preds is None:
            preds = entry.preds = {}
        elif arm in preds:
            self.counters[name, "duplicate_predictions"] += 1
            return None
        elif entry.scored:  # its record went without this arm: too late to change it
            self.counters[name, "late_predictions"] += 1
            return None
        if pred.served:
            for other in preds.values():
                if other.served:
                    return Invalid("prediction", "second_served",
                                   f"prediction rejected: request '{rid}' already has a served "
                                   f"prediction from arm '{other.arm}'.", "served")
        if pred.ts + self._ttl[name] > entry.deadline:  # the TTL runs from the predictions
            entry.deadline = pred.ts + self._ttl[name]
            new_deadline = True
        self._first(name, pred.ts)
        preds[arm] = ArmView(arm, pred.served, pred.output, pred.score, pred.latency_ms,
                             pred.error, pred.ts)
        if entry.unit is None:
            entry.unit = pred.unit
        if entry.segments is None:
            entry.segments = pred.segments
        self._mark_ready(rid, entry, name)
        store.put(rid, entry, deadline_changed=new_deadline)
        return None

    def on_label(self, label: Any) -> Invalid | None:
        rid = label.request_id
        entry, store = self._find(rid)
        self._saw("labels", label.ts, entry.experiment if entry is not None else None)
        if entry is None:
            entry = PendingEntry(deadline=label.ts + self.orphan_ttl)
            entry.label = LabelPart(label.ts, label.truth, label.reward)
            store = self.disk if self.disk is not None else self.memory
            store.put(rid, entry)
            return None
        if entry.done or entry.label is not None:
            self.counters[entry.experiment, "duplicate_labels"] += 1
            return None
        entry.label = LabelPart(label.ts, label.truth, label.reward)
        if entry.experiment is not None:
            self._mark_ready(rid, entry, entry.experiment)
        store.put(rid, entry, deadline_changed=False)
        return None

    # -- release and expiry ---------------------------------------------------------------
    def release(self, *, flush: bool = False) -> list[JoinedRecord]:
        """The records settled by the watermark (all ready ones when ``flush``), in order.

        Released event times never go back: a record that input arriving later than
        ``allowed_lateness`` completed below what was released already goes at that point
        (counted as ``late_input:<topic kind>``), so the frontier this partition states holds.
        """
        limit = math.inf if flush else self.watermark - self.lateness
        released: list[JoinedRecord] = []
        heap = self._ready
        while heap and heap[0][0] <= limit:
            ready, rid = heapq.heappop(heap)
            entry, store = self._find(rid)
            if entry is None or entry.done or self._ready_time(entry) != ready:
                continue  # stale: expired, finished, or re-queued with a later time
            self._emit(rid, entry, store, released, limit)
        for name, first in self.first_seen.items():
            if first is not None and first <= limit:
                released.append(JoinedRecord(FIRST, first, "", name, None, None, ()))
                self.first_seen[name] = None
        floor = self.released_to
        if any(r.ts < floor for r in released):  # completed by input that came in late
            released = [r if r.ts >= floor else msgspec.structs.replace(r, ts=floor)
                        for r in released]
        released.sort(key=JoinedRecord.sort_key)
        if released:
            floor = max(floor, released[-1].ts)
        self.released_to = max(floor, self.watermark - self.lateness)
        return released

    def check_pairs(self) -> None:
        """Count the requests still without their pair once it can no longer come in time.

        The parts of one request (the request, the predictions it needs) carry event times
        within ``allowed_lateness`` of its first part; once the watermark has passed that, all
        of them have arrived or are late. A request with no prediction counts as
        ``requests_without_predictions``; one with predictions but not the served one as
        ``predictions_without_pair``, and so does a shadow record released with the served
        arm alone (no candidate scored it: ``route.shadow`` was empty, see :meth:`_emit`).
        Unscored ones still wait until ``label_ttl`` in case the parts are only late (then
        ``paired_late`` counts them); the count says so at once instead.
        """
        limit = self.watermark - self.lateness
        heap = self._pairing
        while heap and heap[0][0] <= limit:
            _, rid = heapq.heappop(heap)
            entry, store = self._find(rid)
            if entry is None or entry.done or entry.scored or entry.unpaired \
                    or entry.experiment is None:
                continue
            what = "predictions_without_pair" if entry.preds else "requests_without_predictions"
            self.counters[entry.experiment, what] += 1
            entry.unpaired = True
            store.put(rid, entry, deadline_changed=False)

    def expire(self) -> list[tuple[str, PendingEntry]]:
        """Drop requests whose TTL ran out (by the watermark); count what they were."""
        before = self.watermark - self.lateness
        gone: list[tuple[str, PendingEntry]] = []
        for store in (self.memory, self.disk):
            if store is not None:
                gone.extend(store.expire(before))
        for _, entry in gone:
            if entry.done:
                continue
            if entry.experiment is None:
                self.counters[None, "labels_without_prediction"] += 1
            elif not entry.scored:
                self.counters[entry.experiment, "incomplete_expired"] += 1
            else:
                self.counters[entry.experiment, "unlabelled_expired"] += 1
        return gone

    def drain_counters(self) -> dict[tuple[str | None, str], int]:
        counters, self.counters = self.counters, Counter()
        return dict(counters)

    def meta(self) -> dict[str, Any]:
        """The join's own state besides its pending entries (a checkpoint's meta)."""
        return {
            "max_ts": {k: (v if math.isfinite(v) else None) for k, v in self.max_ts.items()},
            "released_to": self.released_to if math.isfinite(self.released_to) else None,
            # (ts, rid) tuples, encoded as arrays: a copy in C, at every checkpoint
            "ready": list(self._ready),
            "pairing": list(self._pairing),
            "first_seen": self.first_seen,
        }

    def load_meta(self, meta: dict[str, Any]) -> None:
        """Restore what :meth:`meta` gave (older checkpoints lack some keys)."""
        for kind, ts in meta["max_ts"].items():
            self.max_ts[kind] = -math.inf if ts is None else ts
        released_to = meta.get("released_to")
        self.released_to = -math.inf if released_to is None else released_to
        self._ready = [(ts, rid) for ts, rid in meta["ready"]]
        self._pairing = [(ts, rid) for ts, rid in meta.get("pairing", ())]
        heapq.heapify(self._ready)
        heapq.heapify(self._pairing)
        self.first_seen = {name: ts for name, ts in meta.get("first_seen", {}).items()
                           if name in self.experiments}

    def pending(self) -> int:
        return len(self.memory) + (len(self.disk) if self.disk is not None else 0)

    # -- internals --------------------------------------------------------------------------
    def _first(self, name: str, ts: float) -> None:
        if name not in self.first_seen:
            self.first_seen[name] = ts
        else:
            first = self.first_seen[name]
            if first is not None and ts < first:
                self.first_seen[name] = ts

    def _saw(self, kind: str, ts: float, name: str | None) -> None:
        if ts > self.max_ts[kind]:
            self.max_ts[kind] = ts
        elif ts < self.released_to:
            self.counters[name, f"late_input:{kind}"] += 1

    def _expect_pair(self, rid: str, first_ts: float) -> None:
        heapq.heappush(self._pairing, (first_ts + self.lateness, rid))

    def _store(self, name: str) -> MemoryStore | DiskStore:
        return self.disk if self._on_disk[name] else self.memory

    def _find(self, rid: str) -> tuple[PendingEntry | None, Any]:
        entry = self.memory.get(rid)
        if entry is not None:
            return entry, self.memory
        if self.disk is not None:
            entry = self.disk.get(rid)
            if entry is not None:
                return entry, self.disk
        return None, self.memory

    def _adopt(self, rid: str, entry: PendingEntry, store: Any, name: str, ts: float):
        """A label-only entry meets its experiment: move it to that experiment's store."""
        entry.experiment = name
        entry.deadline = ts + self._ttl[name]
        target = self._store(name)
        if target is not store:
            store.remove(rid)
        return entry, target

    def _expected_ready(self, entry: PendingEntry, name: str) -> tuple[float, float] | None:
        """``(ready, horizon)``: the event time at which the record can be scored, and the
        latest event time of a part it takes; None while it cannot be scored.

        Shadow mode expects every arm's prediction within ``allowed_lateness`` of the first
        one's event time; an arm that did not score the request by then (a candidate
        dropped, or not shadowed yet) is left out, and the record goes at that time with the
        arms it has, as long as the served one is among them. Only parts up to that time
        decide, so live and replay release the same record.
        """
        preds = entry.preds
        if not preds:
            return None
        lateness = self.lateness
        if self._shadow[name]:
            views = preds.values()
            first = last = None
            for view in views:  # one pass: this runs for every prediction and release
                ts = view.ts
                if first is None or ts < first:
                    first = ts
                if last is None or ts > last:
                    last = ts
            due = first + lateness
            if last <= due:  # every part in time (the usual case): no second pass
                in_time, ready = views, last
            else:
                in_time = [v for v in views if v.ts <= due]
                ready = max(v.ts for v in in_time)
            if len(in_time) == len(self._arms[name]):
                return ready, ready + lateness
            return (due, due) if any(v.served for v in in_time) else None
        for view in preds.values():
            if view.served:
                return view.ts, view.ts + lateness
        return None

    def _ready_time(self, entry: PendingEntry) -> float | None:
        name = entry.experiment
        if name is None:
            return None
        expected = self._expected_ready(entry, name)
        if expected is None:
            return None
        scored = expected[0]
        if not entry.scored:
            return scored
        if entry.label is None:
            return None
        return max(scored, entry.label.ts)

    def _mark_ready(self, rid: str, entry: PendingEntry, name: str) -> None:
        ready = self._ready_time(entry)
        if ready is not None:
            heapq.heappush(self._ready, (ready, rid))

    def _emit(self, rid: str, entry: PendingEntry, store: Any, out: list[JoinedRecord],
              limit: float) -> None:
        name = entry.experiment
        ready, horizon = self._expected_ready(entry, name)
        order = self._order[name]
        arms = tuple(sorted((v for v in (entry.preds or {}).values() if v.ts <= horizon),
                            key=lambda v: order[v.arm]))
        unit, segments = entry.unit, entry.segments
        if entry.request_ts is not None and entry.request_ts <= horizon:  # the request wins
            unit = entry.request_unit if entry.request_unit is not None else unit
            segments = entry.request_segments if entry.request_segments is not None else segments
        if not entry.scored:
            entry.scored = True
            if entry.unpaired:
                self.counters[name, "paired_late"] += 1
            elif len(arms) == 1 and self._shadow[name]:  # no other arm scored it in time
                self.counters[name, "predictions_without_pair"] += 1
            out.append(JoinedRecord(SCORED, ready, rid, name, unit, segments, arms))
        label = entry.label
        if label is not None and max(ready, label.ts) <= limit:
            served = next((v for v in arms if v.served), arms[0])
            if label.ts - served.ts > self._ttl[name]:
                self.counters[name, "late_labels"] += 1
            else:
                out.append(JoinedRecord(OUTCOME, max(ready, label.ts), rid, name, unit,
                                        segments, arms, label.label, label.ts, label.reward))
            self._finish(rid, entry, store)
        else:
            store.put(rid, entry, deadline_changed=False)
            self._mark_ready(rid, entry, name)

    def _finish(self, rid: str, entry: PendingEntry, store: Any) -> None:
        """Keep only a small marker until the deadline, so duplicates are recognised."""
        store.put(rid, PendingEntry(experiment=entry.experiment, deadline=entry.deadline,
                                    scored=True, done=True), deadline_changed=False)


def _other_task(pred: Any, name: str, ranking: bool) -> Invalid:
    """A ranking's items sent to another task's experiment, or the reverse: no statistic
    could use it."""
    if ranking:
        return Invalid("prediction", "not_a_ranking",
                       f"prediction rejected: experiment '{name}' ranks items, so its "
                       f"predictions need items (the ranked item ids), not a prediction.",
                       "items")
    return Invalid("prediction", "unexpected_items",
                   f"prediction rejected: experiment '{name}' is not a ranking task, so its "
                   f"predictions need a prediction, not items.", "prediction")


def _unknown_experiment(noun: str, name: str) -> Invalid:
    return Invalid(noun, "unknown_experiment",
                   f"{noun} rejected: experiment '{name}' is not one this worker evaluates.",
                   "experiment")


def _other_experiment(noun: str, rid: str, owner: str, name: str) -> Invalid:
    return Invalid(noun, "other_experiment",
                   f"{noun} rejected: request '{rid}' belongs to experiment '{owner}', "
                   f"not '{name}'.", "experiment")
