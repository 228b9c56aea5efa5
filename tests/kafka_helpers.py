"""Helpers for tests against the real broker: produce events, run workers, read topics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from rollguard.kafka.admin import create_contract_topics
from rollguard.streams.topics import TopicNames

ROOT = Path(__file__).resolve().parents[1]


def produce_events(bootstrap: str, names: TopicNames, events: Iterable[dict], partitions: int = 3,
                   raw: Iterable[tuple[str, bytes | None, bytes]] = ()) -> int:
    """Create the contract topics and produce replay-style events (each with ``topic``) to
    them, keyed by request_id; ``raw``: extra (kind, key, value bytes) messages as they are."""
    create_contract_topics(bootstrap, names, partitions=partitions)
    # idempotent: a retried batch keeps its place (else events arrive late under load)
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                         "enable.idempotence": True, "linger.ms": 20,
                         "message.max.bytes": 4 * 1024 * 1024})
    n = 0
    for event in events:
        event = dict(event)
        topic = getattr(names, event.pop("topic"))
        producer.produce(topic, key=event["request_id"].encode(), value=json.dumps(event).encode())
        n += 1
        if n % 5000 == 0:
            producer.poll(0)
    for kind, key, value in raw:
        producer.produce(getattr(names, kind), key=key, value=value)
        n += 1
    assert producer.flush(30) == 0
    return n


def read_topic(bootstrap: str, topic: str, timeout: float = 10.0) -> list[Any]:
    """Every committed message of ``topic`` (all partitions) as it is now."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "rollguard-tests",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "enable.partition.eof": True})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        if meta.error is not None:
            return []
        parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
        consumer.assign(parts)
        remaining, out = {p.partition for p in parts}, []
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        remaining.discard(msg.partition())
                    continue
                out.append(msg)
        return out
    finally:
        consumer.close()


def latest_json(bootstrap: str, topic: str) -> dict[str, dict]:
    """The latest JSON value per key of a compacted topic."""
    latest = {}
    for msg in read_topic(bootstrap, topic):
        latest[msg.key().decode()] = json.loads(msg.value())
    return latest


def wait_for(predicate: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)


class WorkerProcess:
    """``rollguard worker`` in a subprocess, as a user runs it."""

    def __init__(self, bootstrap: str, experiments: Path, prefix: str, app_id: str,
                 data_dir: Path, log: Path, *args: str) -> None:
        self.cmd = [sys.executable, "-m", "rollguard.cli", "worker", str(experiments),
                    "--bootstrap-servers", bootstrap, "--topic-prefix", prefix,
                    "--app-id", app_id, "--data-dir", str(data_dir),
                    "--checkpoint-interval", "0.5", "--snapshot-interval", "0.5", *args]
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        handle = open(self.log, "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=handle, stderr=subprocess.STDOUT,
                                     cwd=ROOT, env=env, start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL: no goodbye, no final checkpoint."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, as a supervisor stops it; returns the exit code."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise AssertionError(f"the worker did not stop within {timeout} s on SIGTERM")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "WorkerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.alive():
            self.stop()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")
