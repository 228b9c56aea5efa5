"""What the join hands to the evaluator: one record per request when its predictions are in
(``SCORED``) and one when its label joins them (``OUTCOME``); and once per join partition
and experiment, a ``FIRST`` record at the event time of its first request or prediction,
so the experiment starts with its first traffic (a shadow experiment's candidates are
scored only once the ``start`` event tells the routers to).

A record carries the largest event time of its parts, so its place in the evaluator's
(event time, request_id, kind) order does not depend on the order the topics were read in.
Records travel between workers in :class:`Batch` messages (msgpack: compact, and decoded
into these types only — never pickle).

>>> view = ArmView("churn:6", True, 1, 0.8, 12.5, None, 100.0)
>>> rec = JoinedRecord(SCORED, 100.0, "r1", "churn-v7", None, None, (view,))
>>> decode_batch(encode_batch(Batch(0, [rec]))).records[0] == rec
True
>>> rec.sort_key()
(100.0, 'r1', 0)
"""

from __future__ import annotations

from typing import Any, Union

import msgspec

SCORED = 0   # every expected prediction of the request has arrived
OUTCOME = 1  # ... and so has its label
FIRST = 2    # the experiment's first traffic in a join partition: no request, no arms

#: a prediction or a label: a scalar, or for a ranking the items (ranked, or engaged), or
#: engaged item -> gain
Value = Union[bool, int, float, str, None, list[str], dict[str, float]]


class ArmView(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """One arm's prediction of a request, as the evaluator needs it."""

    arm: str
    served: bool
    prediction: Value
    score: float | None
    latency_ms: float | None
    error: str | None
    ts: float


class JoinedRecord(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A joined request: its predictions (in the experiment's arm order) and maybe its label."""

    kind: int
    ts: float
    request_id: str
    experiment: str
    unit: str | None
    segments: dict[str, str] | None
    arms: tuple[ArmView, ...]
    label: Value = None
    label_ts: float | None = None
    reward: float | None = None

    def sort_key(self) -> tuple[float, str, int]:
        return (self.ts, self.request_id, self.kind)

    def view(self, arm: str) -> ArmView | None:
        for view in self.arms:
            if view.arm == arm:
                return view
        return None

    @property
    def served_arm(self) -> str | None:
        for view in self.arms:
            if view.served:
                return view.arm
        return None


class Batch(msgspec.Struct, array_like=True):
    """One message on the internal outcomes topic: what a join partition produced for one
    experiment since its last checkpoint (records in event-time order, statistics delta,
    counters delta) and its frontier (every later record has a larger event time; ``inf``
    while the partition is idle)."""

    source: int
    records: list[JoinedRecord]
    frontier: float = float("-inf")
    stats: dict[str, Any] | None = None
    counters: dict[str, int] | None = None


#: the key of a frontier message on the outcomes topic: a :class:`Batch` without records for
#: every experiment of the partition it is written to (no experiment name is ``*``). A join
#: partition whose frontier moved, with nothing else to say, sends one to each outcomes
#: partition instead of an empty batch to each experiment.
FRONTIER_KEY = b"*"

_ENCODER = msgspec.msgpack.Encoder()
_BATCH_DECODER = msgspec.msgpack.Decoder(Batch)


def encode_batch(batch: Batch) -> bytes:
    return _ENCODER.encode(batch)


def decode_batch(data: bytes) -> Batch:
    return _BATCH_DECODER.decode(data)
