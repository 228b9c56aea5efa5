"""When an input read to its end stops holding the join's watermark back.

The join's watermark waits for every input topic with unread messages (streams/join.py).
A topic read to its end is not yet *idle*, though: its producer may just be waiting. When a
broker fails over, the partitions it led stop taking writes for a moment (a leader election,
the producer's metadata refresh, its retries) while the same producer's writes to the other
topics go on. Had the join let the watermark run on with the others, the held-up messages
would arrive behind it, late, and their records would be joined without them (a request's
segments, a shadow candidate's prediction). Kafka Streams calls the same wait
``max.task.idle.ms``; Flink calls the timeout ``withIdleness``.

So an input that read a message within the last ``idle_after`` seconds (wall clock) still
holds the watermark back at the event time it reached. One that stays quiet longer goes idle
and the others run on (an experiment whose traffic stops on one topic still decides), so the
wait only delays records by ``idle_after`` at the end of a burst; decisions, which follow
event time, are the same. Replay reads a file in event-time order and has no such wait.

>>> recent = RecentInput(idle_after=5.0, offsets={"requests": 0, "labels": 0})
>>> sorted(recent.update({"requests": 10, "labels": 0}, now=100.0))   # requests just read
['requests']
>>> sorted(recent.update({"requests": 10, "labels": 3}, now=103.0))   # both within 5 s
['labels', 'requests']
>>> sorted(recent.update({"requests": 10, "labels": 3}, now=106.0))   # requests quiet 6 s
['labels']
>>> sorted(recent.update({"requests": 10, "labels": 3}, now=109.0))
[]
"""

from __future__ import annotations

import math
from collections.abc import Mapping


class RecentInput:
    """Which inputs read a message lately: they hold the watermark back for ``idle_after`` s.

    ``offsets``: each input's next offset now (what was restored is not "read lately").
    ``started``: when the task began (monotonic seconds): until ``idle_after`` after it, every
    input holds, as it has not been seen quiet that long. A partition just handed over by a
    rebalance is often read to its end; counted idle at once, it would let the other
    partitions run ahead in event time until its producers' next messages, which it would
    then release behind them. Looked at once per checkpoint, so "lately" is as fine as the
    checkpoint interval.

    >>> fresh = RecentInput(idle_after=5.0, offsets={"labels": 7}, started=100.0)
    >>> sorted(fresh.update({"labels": 7}, now=102.0)), sorted(fresh.update({"labels": 7}, now=106.0))
    (['labels'], [])
    """

    def __init__(self, idle_after: float, offsets: Mapping[str, int],
                 started: float = -math.inf) -> None:
        self.idle_after = idle_after
        self._offsets = dict(offsets)
        self._read_at = {kind: started for kind in offsets}

    def update(self, offsets: Mapping[str, int], now: float) -> set[str]:
        """The inputs that read a message within ``idle_after`` seconds of ``now``, given
        each input's next offset now."""
        for kind, offset in offsets.items():
            if offset != self._offsets.get(kind):
                self._offsets[kind] = offset
                self._read_at[kind] = now
        return {kind for kind, at in self._read_at.items() if now - at < self.idle_after}
