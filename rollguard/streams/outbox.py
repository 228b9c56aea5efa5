"""What one join partition writes to the outcomes topic at a checkpoint, pure.

The evaluator of an experiment needs two things from every join partition: its records, and
its *frontier* (every record it releases later has a larger event time), without which it
cannot release anything in event-time order. An experiment with records, statistics or
counters gets a :class:`Batch` of its own, keyed by its name; the first time a partition
speaks to an experiment it gets one even when empty, which makes its evaluator. After that,
a frontier that moved with nothing else to say goes out once per *outcomes partition*, under
:data:`FRONTIER_KEY`, for every evaluator there: a checkpoint writes (experiments with news
+ partitions) messages, not (experiments) — with a hundred experiments and six partitions,
about a tenth.

Each frontier message follows the partition's own batches of the same checkpoint in the same
transaction, so an evaluator that reads it has read them; a batch too large for one message
is split, its early parts keeping the frontier already sent.

>>> box = Outbox(source=0, partitions=2)
>>> settled = [("a", Batch(0, [], 5.0)), ("b", Batch(0, [], 5.0))]
>>> [(m.key, m.partition) for m in box.messages(settled)]     # first contact: one each
[(b'a', None), (b'b', None)]
>>> settled = [("a", Batch(0, [], 7.0)), ("b", Batch(0, [], 7.0))]
>>> [(m.key, m.partition) for m in box.messages(settled)]     # only the frontier moved
[(b'*', 0), (b'*', 1)]
>>> box.messages(settled)                                      # nothing new
[]
"""

from __future__ import annotations

import math
from typing import NamedTuple

from rollguard.streams.records import FRONTIER_KEY, Batch, encode_batch

#: records per message on the outcomes topic (a few hundred KiB)
BATCH_RECORDS = 2000


class Message(NamedTuple):
    """One message for the outcomes topic; ``partition`` None: by its key."""

    key: bytes
    value: bytes
    partition: int | None = None


def chunk_batch(batch: Batch, sent_frontier: float, size: int = BATCH_RECORDS) -> list[Batch]:
    """A large batch as several messages: the early ones keep the frontier already sent
    (their records must not be released before the last part arrives), the last one
    carries the new frontier, the statistics and the counters.

    >>> from rollguard.streams.records import JoinedRecord
    >>> records = [JoinedRecord(0, float(i), f"r{i}", "e", None, None, ()) for i in range(5)]
    >>> parts = chunk_batch(Batch(0, records, 9.0, None, {"x": 1}), sent_frontier=2.0, size=2)
    >>> [(len(p.records), p.frontier, p.counters) for p in parts]
    [(2, 2.0, None), (2, 2.0, None), (1, 9.0, {'x': 1})]
    """
    records = batch.records
    if len(records) <= size:
        return [batch]
    if sent_frontier == math.inf:  # waking up from idle: the early parts must not say idle
        sent_frontier = -math.inf
    parts = [Batch(batch.source, records[i:i + size], sent_frontier)
             for i in range(0, len(records), size)]
    parts[-1] = Batch(batch.source, parts[-1].records, batch.frontier, batch.stats,
                      batch.counters)
    return parts


class Outbox:
    """The messages of join partition ``source`` for an outcomes topic of ``partitions``."""

    def __init__(self, source: int, partitions: int, *, size: int = BATCH_RECORDS) -> None:
        self.source = source
        self.partitions = partitions
        self.size = size  # records per message at most
        #: the frontier the evaluators were last told
        self.sent = -math.inf
        #: experiments told at least once by a batch of their own
        self.introduced: set[str] = set()

    def messages(self, settled: list[tuple[str, Batch]]) -> list[Message]:
        """The messages for one settle's batches (one per experiment, one frontier)."""
        out: list[Message] = []
        sent, introduced = self.sent, self.introduced
        frontier, untold = sent, False
        for name, batch in settled:
            frontier = batch.frontier  # the same in every experiment's batch
            if not batch.records and not batch.stats and not batch.counters \
                    and name in introduced:
                untold = True
                continue
            parts = chunk_batch(batch, sent, self.size)
            out += [Message(name.encode(), encode_batch(part)) for part in parts]
            introduced.add(name)
        if frontier != sent and untold:
            told = encode_batch(Batch(self.source, [], frontier))
            out += [Message(FRONTIER_KEY, told, q) for q in range(self.partitions)]
        self.sent = frontier
        return out
