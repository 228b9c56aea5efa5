"""Read rollguard's own topics as they are now: a one-shot reader's consumer and partitions,
and the latest value per key of a compacted topic (control, stats)."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from rollguard.kafka.clients import client_config


class TopicUnavailable(RuntimeError):
    """The broker did not answer, or the topic does not exist; the message says which."""


def reader(bootstrap: str, purpose: str = "read") -> Consumer:
    """A consumer that reads committed messages under a group of its own, committing nothing,
    and says when it reaches a partition's end (``_PARTITION_EOF``)."""
    return Consumer(client_config(bootstrap, **{
        "group.id": f"rollguard-{purpose}-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": True}))


def partitions_of(consumer: Consumer, bootstrap: str, topic: str, timeout: float) -> list[int]:
    """The partitions of ``topic``, or :class:`TopicUnavailable` in one sentence."""
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    except KafkaException as exc:
        raise TopicUnavailable(f"Kafka at {bootstrap} did not answer ({exc.args[0].str()}): "
                               "check the address and that the broker runs.") from None
    if meta is None or meta.error is not None:
        raise TopicUnavailable(f"Topic {topic} does not exist on {bootstrap}: is the worker "
                               "running with this topic prefix (--topic-prefix)?")
    return sorted(meta.partitions)


def latest_values(bootstrap: str, topic: str, timeout: float = 10.0) -> dict[str, bytes]:
    """``{key: latest value}`` of every committed message of ``topic`` (tombstones drop a key)."""
    consumer = reader(bootstrap)
    try:
        partitions = [TopicPartition(topic, p, 0)
                      for p in partitions_of(consumer, bootstrap, topic, timeout)]
        consumer.assign(partitions)
        remaining = {p.partition for p in partitions}
        latest: dict[str, bytes] = {}
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        remaining.discard(msg.partition())
                    continue
                key = (msg.key() or b"").decode("utf-8", "replace")
                if msg.value() is None:
                    latest.pop(key, None)
                else:
                    latest[key] = msg.value()
        return latest
    finally:
        consumer.close()
