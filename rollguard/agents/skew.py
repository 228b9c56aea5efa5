"""How far one join partition may run ahead of the slowest: backpressure into Kafka.

The evaluator releases records in event-time order across all join partitions
(:mod:`rollguard.decisions.ordering`), so it holds every record of a partition that runs
ahead until the slowest one catches up. When one worker's partitions lag the others' by an
hour of event time (it was down, restarting, or slower), the evaluator would hold an hour of
every other partition's records in memory and in its checkpoints: unbounded.

Instead, every join partition publishes its *frontier* (every record it releases later is
above it; +inf while it is idle) to a small compacted topic with each checkpoint, every
worker reads them all, and a partition whose frontier is more than ``max_skew`` seconds of
event time ahead of the slowest one stops fetching until the slowest catches up. What waits
then waits in Kafka, where it already is: the evaluator holds at most ``max_skew`` seconds
of records (times their rate). The slowest partition never pauses, so the whole always
progresses; decisions are unchanged (they follow event time), and so is the guarantee.

>>> frontiers = {0: 7200.0, 1: 130.0, 2: float("inf"), 3: 400.0}
>>> slowest(frontiers)
130.0
>>> sorted(paused({0: 7200.0, 3: 400.0}, slowest(frontiers), max_skew=300.0))
[0]
"""

from __future__ import annotations

import logging
import math
from typing import Mapping

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from rollguard.kafka.clients import client_config

log = logging.getLogger("rollguard.worker")

_PACK = msgspec.msgpack.Encoder()
_UNPACK = msgspec.msgpack.Decoder(float)


def slowest(frontiers: Mapping[int, float]) -> float:
    """The lowest frontier of all partitions (+inf when none is known, or all are idle).

    A partition that has settled nothing yet (−inf: a worker just started or took it over)
    is not known to be slow: it gets a frontier at its first checkpoint. Counting it would
    pause every other partition at every start.

    >>> slowest({0: float("-inf"), 1: 250.0, 2: float("inf")})
    250.0
    """
    return min((f for f in frontiers.values() if f != -math.inf), default=math.inf)


def paused(own: Mapping[int, float], slowest_frontier: float, max_skew: float) -> set[int]:
    """Which of ``own`` partitions (partition → frontier) are too far ahead to fetch.

    >>> sorted(paused({0: 100.0, 1: 500.0}, slowest_frontier=100.0, max_skew=300.0))
    [1]
    >>> paused({0: float("inf")}, slowest_frontier=100.0, max_skew=300.0)  # idle: nothing to pause
    set()
    """
    limit = slowest_frontier + max_skew
    return {p for p, frontier in own.items() if math.isfinite(frontier) and frontier > limit}


def encode_frontier(frontier: float) -> bytes:
    return _PACK.encode(frontier)


class FrontierBoard:
    """Every join partition's latest published frontier, read from ``topic``.

    Reads without a consumer group from the beginning (the topic is compacted: one message
    per partition), committed messages only; :meth:`read` never waits. Partitions that never
    published are unknown and hold nobody back.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.frontiers: dict[int, float] = {}
        self._consumer = Consumer(client_config(bootstrap, **{
            "group.id": f"rollguard-frontiers-{topic}",  # never commits; required by the API
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
        }))
        self._consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self._closed = False

    def read(self) -> dict[int, float]:
        """Take in what was published since the last read; the frontiers known now."""
        while not self._closed:
            messages = self._consumer.consume(1000, timeout=0)
            if not messages:
                return self.frontiers
            for msg in messages:
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.debug("reading %s: %s", self.topic, msg.error().str())
                    continue
                try:
                    self.frontiers[int(msg.key())] = _UNPACK.decode(msg.value())
                except (ValueError, TypeError, msgspec.DecodeError):
                    log.warning("A message on %s that is not a partition's frontier was "
                                "skipped (offset %d).", self.topic, msg.offset())
        return self.frontiers

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()
