"""One event of each kind of the contract through a real broker and back through the schemas.

``rollguard check`` runs it: the quickest proof that a broker, the topics and the event
contract work together on this machine.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from rollguard.kafka.admin import create_contract_topics
from rollguard.kafka.clients import client_config
from rollguard.schemas import (ControlEvent, DeadLetter, Label, Prediction, Request, decode_control,
                               decode_label, decode_prediction, decode_request, encode)
from rollguard.streams.topics import TopicNames


@dataclass
class Trip:
    kind: str
    sent: Any
    received: Any


def sample_events(ts: float | None = None) -> dict[str, Any]:
    """One valid event of each kind, as a service (or rollguard) would write it."""
    ts = time.time() if ts is None else ts
    rid = f"check-{uuid.uuid4().hex[:8]}"
    return {
        "requests": Request(request_id=rid, experiment="check", ts=ts, unit="user-42",
                            segments={"tier": "vip", "country": "DE"},
                            features={"salary": 52000.0, "age": 41, "elevel": "2"}),
        "predictions": Prediction(request_id=rid, experiment="check", ts=ts + 0.01,
                                  model="churn", version="7", served=True, prediction=1,
                                  score=0.83, latency_ms=12.5, unit="user-42",
                                  segments={"tier": "vip"}),
        "labels": Label(request_id=rid, ts=ts + 60.0, label=1, reward=1.0),
        "control": ControlEvent(experiment="check", seq=1, ts=ts + 60.0, action="start",
                                mode="canary", champion="churn:6",
                                traffic={"churn:6": 0.95, "churn:7": 0.05}, shadow=[],
                                reason="The experiment starts in canary mode.",
                                evidence={"n": {"churn:6": 0, "churn:7": 0}}),
    }


_DECODE = {"requests": decode_request, "predictions": decode_prediction,
           "labels": decode_label, "control": decode_control}


def round_trip(bootstrap: str, names: TopicNames, timeout: float = 30.0) -> list[Trip]:
    """Produce one event of each kind (and a dead letter) and read each back."""
    create_contract_topics(bootstrap, names, partitions=1)
    events = sample_events()
    producer = Producer(client_config(bootstrap, **{"partitioner": "murmur2_random"}))
    for kind, event in events.items():
        key = event.experiment if kind == "control" else event.request_id
        producer.produce(getattr(names, kind), key=key.encode(), value=encode(event))
    bad = DeadLetter(key=b"r-bad", value=b"{not json", topic=names.predictions, partition=0,
                     offset=7, error="prediction rejected: the value is not valid JSON.")
    producer.produce(names.deadletter, key=bad.key, value=bad.value, headers=bad.headers())
    if producer.flush(timeout) != 0:
        raise RuntimeError(f"The broker at {bootstrap} did not take the events within {timeout:.0f} s.")

    consumer = Consumer(client_config(bootstrap, **{
        "group.id": f"rollguard-check-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": True}))
    topics = {getattr(names, kind): kind for kind in [*events, "deadletter"]}
    consumer.assign([TopicPartition(topic, 0, 0) for topic in topics])
    trips: list[Trip] = []
    pending = set(topics)
    deadline = time.monotonic() + timeout
    try:
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.topic())
                continue
            kind = topics[msg.topic()]
            if kind == "deadletter":
                trips.append(Trip(kind, bad, DeadLetter.from_headers(msg.key(), msg.value(),
                                                                     msg.headers())))
            else:
                trips.append(Trip(kind, events[kind], _DECODE[kind](msg.value())))
    finally:
        consumer.close()
    return trips
