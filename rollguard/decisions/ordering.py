"""Event-time order across join partitions: the evaluator's reorder buffer.

Each join partition releases its records in event-time order and says, with every batch,
its *frontier*: every record it releases later has an event time above it (``+inf`` when the
partition is idle, i.e. read to its end and quiet). A record is released here once every
partition's frontier has passed it, in ``(ts, request_id, kind)`` order, so the policy sees
the same sequence whatever the interleaving of partitions and topics — the same as a
replay file read in event-time order.

>>> from rollguard.streams.records import JoinedRecord
>>> rec = lambda ts, rid: JoinedRecord(0, ts, rid, "e", None, None, ())
>>> merge = EventTimeMerge(sources=2)
>>> merge.add(0, [rec(1.0, "a"), rec(5.0, "c")], frontier=5.0)
>>> merge.release()          # partition 1 has not spoken yet: nothing is safe
[]
>>> merge.add(1, [rec(2.0, "b")], frontier=3.0)
>>> [r.request_id for r in merge.release()]
['a', 'b']
>>> merge.add(1, [], frontier=float("inf"))   # partition 1 went idle
>>> [r.request_id for r in merge.release()]
['c']
>>> first = JoinedRecord(2, 9.0, "", "e", None, None, ())   # FIRST: no request id
>>> merge.add(0, [first], 10.0); merge.add(1, [first], 10.0)
>>> len(merge.release())     # the same key from two partitions: never compared themselves
2
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Iterable

from rollguard.streams.records import JoinedRecord


class EventTimeMerge:
    """Records from ``sources`` join partitions, released in event-time order."""

    def __init__(self, sources: int) -> None:
        self.sources = sources
        self.frontiers: dict[int, float] = {}
        #: (ts, request_id, kind, arrival, record): the fields of JoinedRecord.sort_key, in
        #: line (no method call and key tuple per record), then the order of arrival, so
        #: two records never get compared themselves (two partitions' FIRST records of an
        #: experiment can share their event time; either may go first)
        self._heap: list[tuple[float, str, int, int, JoinedRecord]] = []
        self._arrivals = itertools.count()

    def add(self, source: int, records: Iterable[JoinedRecord], frontier: float) -> None:
        heap, push, arrival = self._heap, heapq.heappush, self._arrivals
        for record in records:
            push(heap, (record.ts, record.request_id, record.kind, next(arrival), record))
        previous = self.frontiers.get(source, -math.inf)
        if previous == math.inf or frontier == math.inf:  # going idle, or waking up
            self.frontiers[source] = frontier
        else:
            self.frontiers[source] = max(previous, frontier)

    @property
    def frontier(self) -> float:
        """Everything at or below this event time has arrived from every partition."""
        if len(self.frontiers) < self.sources:
            return -math.inf
        return min(self.frontiers.values())

    def release(self, *, flush: bool = False) -> list[JoinedRecord]:
        limit = math.inf if flush else self.frontier
        heap, out, pop = self._heap, [], heapq.heappop
        while heap and heap[0][0] <= limit:
            out.append(pop(heap)[4])
        return out

    def __len__(self) -> int:
        return len(self._heap)

    def buffered(self) -> list[JoinedRecord]:
        return [entry[4] for entry in sorted(self._heap)]
