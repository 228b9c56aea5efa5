"""Read the dead-letter topic: each input the worker could not use, with its reason.

``rollguard deadletters`` shows the last ones as a table and, with ``--follow``, the new ones
as they come. A dead letter is the original record (key and value bytes unchanged) with four
headers: ``rollguard.error`` (why, one sentence), ``rollguard.topic``,
``rollguard.partition`` and ``rollguard.offset`` (docs/events.md).

>>> from rollguard.schemas import DeadLetter
>>> dead = DeadLetter(b"r-1", b"{oops", "prediction rejected: the value is not valid JSON.",
...                   "rollguard.predictions", 2, 41)
>>> row = Row.of(dead.key, dead.value, dead.headers(), prefix="rollguard.")
>>> row.origin, row.error
('predictions[2]@41', 'prediction rejected: the value is not valid JSON.')
>>> row.key_text, row.value_text
('r-1', '{oops')
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from rollguard.schemas.events import (HEADER_ERROR, HEADER_OFFSET, HEADER_PARTITION,
                                      HEADER_TOPIC)

__all__ = ["Row", "DeadLetterError", "read_dead_letters", "follow_dead_letters"]

_PREVIEW = 60


class DeadLetterError(RuntimeError):
    """The broker or the topic is not there; the message says what to do."""


def _text(raw: bytes | None, limit: int = _PREVIEW) -> str:
    if raw is None:
        return "(null)"
    if not raw:
        return "(empty)"
    text = raw[:limit * 4].decode("utf-8", "backslashreplace")
    text = " ".join(text.split())
    return text if len(text) <= limit and len(raw) <= limit * 4 else text[:limit - 1] + "…"


@dataclass(frozen=True)
class Row:
    """One dead letter as the command shows it."""

    when: str            # the dead letter's Kafka timestamp, local time
    origin: str          # input topic[partition]@offset
    key_text: str
    value_text: str
    error: str
    partition: int       # of the dead-letter topic
    offset: int          # of the dead-letter topic
    stamp: int = -1      # the Kafka timestamp in ms (-1: none)

    @classmethod
    def of(cls, key: bytes | None, value: bytes | None, headers: Any, *,
           timestamp_ms: int | None = None, partition: int = 0, offset: int = 0,
           prefix: str = "") -> Row:
        """A row from a dead letter's record; ``prefix``: left out of the input topic."""
        found: dict[str, str] = {}
        for name, raw in headers or []:
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8", "replace")
            found[name] = raw if raw is not None else ""
        topic = found.get(HEADER_TOPIC) or "?"
        if prefix and topic.startswith(prefix) and len(topic) > len(prefix):
            topic = topic[len(prefix):]
        where = f"{topic}[{found.get(HEADER_PARTITION, '?')}]@{found.get(HEADER_OFFSET, '?')}"
        when = "" if not timestamp_ms or timestamp_ms < 0 else _dt.datetime.fromtimestamp(
            timestamp_ms / 1000).strftime("%m-%d %H:%M:%S")
        error = found.get(HEADER_ERROR) or "(no rollguard.error header: not written by rollguard)"
        return cls(when, where, _text(key), _text(value), error, partition, offset,
                   timestamp_ms if timestamp_ms is not None else -1)


def _consumer(bootstrap: str) -> Any:
    from rollguard.kafka.compacted import reader

    return reader(bootstrap, "deadletters")


def _partitions(consumer: Any, bootstrap: str, topic: str, timeout: float) -> list[int]:
    from rollguard.kafka.compacted import TopicUnavailable, partitions_of

    try:
        return partitions_of(consumer, bootstrap, topic, timeout)
    except TopicUnavailable as exc:
        raise DeadLetterError(str(exc)) from None


def _row(message: Any, prefix: str) -> Row:
    kind, stamp = message.timestamp()
    return Row.of(message.key(), message.value(), message.headers(),
                  timestamp_ms=stamp if kind else None, partition=message.partition(),
                  offset=message.offset(), prefix=prefix)


def read_dead_letters(bootstrap: str, topic: str, last: int = 50, timeout: float = 10.0,
                      prefix: str = "") -> tuple[list[Row], bool, dict[int, int]]:
    """The last ``last`` dead letters of ``topic`` (oldest first), whether there are older
    ones, and where each partition ends (to follow from).

    The worker writes dead letters in transactions, whose commit markers take offsets too:
    twice ``last`` offsets are read back from each partition's end."""
    from confluent_kafka import KafkaError, TopicPartition

    consumer = _consumer(bootstrap)
    try:
        partitions = _partitions(consumer, bootstrap, topic, timeout)
        ends: dict[int, int] = {}
        older = False
        assign = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            ends[p] = high
            start = max(low, high - 2 * last)
            older |= start > low
            if high > low:
                assign.append(TopicPartition(topic, p, start))
        rows: list[Row] = []
        if assign:
            consumer.assign(assign)
            remaining = {tp.partition for tp in assign}
            deadline = time.monotonic() + timeout
            while remaining and time.monotonic() < deadline:
                for message in consumer.consume(500, timeout=0.5):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            remaining.discard(message.partition())
                        continue
                    rows.append(_row(message, prefix))
                    if message.offset() + 1 >= ends[message.partition()]:
                        remaining.discard(message.partition())
                    ends[message.partition()] = max(ends[message.partition()],
                                                    message.offset() + 1)
        rows.sort(key=lambda r: (r.stamp, r.partition, r.offset))
        shown = rows[-last:] if last > 0 else []
        return shown, older or len(shown) < len(rows), ends
    finally:
        consumer.close()


def follow_dead_letters(bootstrap: str, topic: str, start: dict[int, int], *,
                        should_stop: Callable[[], bool] = lambda: False,
                        poll: float = 0.5, prefix: str = "") -> Iterator[Row]:
    """The dead letters written to ``topic`` after ``start`` (partition -> offset), as they
    come, until ``should_stop()``; partitions added meanwhile are read from their start."""
    from confluent_kafka import TopicPartition

    consumer = _consumer(bootstrap)
    try:
        known = dict(start)
        consumer.assign([TopicPartition(topic, p, o) for p, o in known.items()])
        checked = time.monotonic()
        while not should_stop():
            if time.monotonic() - checked > 10:  # a partition added to the topic
                checked = time.monotonic()
                try:
                    added = set(_partitions(consumer, bootstrap, topic, 5.0)) - set(known)
                except DeadLetterError:
                    added = set()
                if added:
                    known.update({p: 0 for p in added})
                    consumer.assign([TopicPartition(topic, p, o) for p, o in known.items()])
            message = consumer.poll(poll)
            if message is None or message.error() is not None:
                continue
            known[message.partition()] = message.offset() + 1
            yield _row(message, prefix)
    finally:
        consumer.close()
