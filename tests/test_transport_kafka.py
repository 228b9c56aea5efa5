"""The worker's consumer takes partitions in turn on a backlog (real broker).

aiokafka prefetches up to ``max_partition_fetch_bytes`` per partition and hands the prefetched
records out partition by partition; without turns, a worker catching up reads one partition's
whole fetch (tens of thousands of events) before the next, and the evaluator must buffer
everything in between. ``fetch_in_turn`` is the call the worker's consumer makes instead.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from rollguard.agents.transport import fetch_in_turn

PARTITIONS = 3
PER_PARTITION = 6000
TURN = 500


def _backlog(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for p in range(PARTITIONS):
        for i in range(PER_PARTITION):
            producer.produce(topic, value=b"x" * 100, key=b"%d" % i, partition=p)
            if i % 1000 == 0:
                producer.poll(0)
    assert producer.flush(30) == 0


async def _turns(bootstrap: str, topic: str) -> list[tuple[int, int]]:
    """(partition, records) of each call, until every record was handed out."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 30
        # wait until every partition has a prefetched result queued (the backlog case)
        while len(getattr(consumer._fetcher, "_records", {})) < PARTITIONS:
            assert time.monotonic() < deadline, "the consumer never prefetched every partition"
            await asyncio.sleep(0.1)
        turns, total = [], 0
        while total < PARTITIONS * PER_PARTITION and time.monotonic() < deadline:
            got = await fetch_in_turn(consumer, set(tps), timeout=1.0, max_records=TURN)
            for tp, records in got.items():
                turns.append((tp.partition, len(records)))
                total += len(records)
        return turns
    finally:
        await consumer.stop()


def test_backlogged_partitions_are_read_in_turns(kafka_bootstrap, topic_prefix):
    topic = f"{topic_prefix}.turns"
    _backlog(kafka_bootstrap, topic)
    turns = asyncio.run(_turns(kafka_bootstrap, topic))
    assert sum(n for _, n in turns) == PARTITIONS * PER_PARTITION  # nothing lost or repeated
    # every partition gets a turn within the first PARTITIONS calls, and no partition gets two
    # turns in a row while others wait: the records handed out stay within one turn (TURN
    # records) of each other, where aiokafka alone hands out one partition's whole fetch
    # (all 6000 records here) first
    assert {p for p, _ in turns[:PARTITIONS]} == set(range(PARTITIONS)), turns[:10]
    handed = dict.fromkeys(range(PARTITIONS), 0)
    for partition, n in turns:
        handed[partition] += n
        if min(handed.values()) < PER_PARTITION:
            assert max(handed.values()) - min(handed.values()) <= 2 * TURN, (turns, handed)
