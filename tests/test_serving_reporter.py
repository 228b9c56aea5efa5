"""Reporter: what reaches a REAL broker is the contract of EVENTS.md; losses are surfaced."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest
from aiokafka.partitioner import murmur2  # Java's murmur2, as Kafka's Java producer uses it
from confluent_kafka import Consumer, TopicPartition

from rollguard.kafka.admin import TopicSpec, create_contract_topics, ensure_topics
from rollguard.kafka.clients import client_config
from rollguard.serving import DeliveryFailure, Reporter
from rollguard.streams.topics import TopicNames

TS = 1_700_000_000.5


def read_back(bootstrap: str, topic: str, count: int, timeout: float = 15.0) -> list:
    """The first ``count`` messages of every partition of ``topic``."""
    consumer = Consumer(client_config(bootstrap, **{"group.id": f"test-{uuid.uuid4().hex}",
                                                    "enable.auto.commit": False}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages, deadline = [], time.monotonic() + timeout
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                messages.append(message)
        return messages
    finally:
        consumer.close()


def java_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


# -- without a broker: bad input is refused in one sentence ------------------------------------

@pytest.fixture
def offline_reporter():
    reporter = Reporter("127.0.0.1:1", topic_prefix="offline.")
    yield reporter
    reporter.close(timeout=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(prediction=1, score=1.5), "field 'score' must be a number between 0 and 1"),
    (dict(prediction=None), "field 'prediction' is missing"),
    (dict(prediction=float("nan")), "field 'prediction' is NaN"),
    (dict(prediction=[1, 2]), "field 'prediction' must be a number, a string or a boolean"),
    (dict(prediction=1, latency_ms=-3.0), "field 'latency_ms'"),
    (dict(prediction=1, segments={"tier": 1}), "field 'segments"),
])
def test_a_bad_prediction_is_refused_with_the_consumers_reason(offline_reporter, kwargs, message):
    with pytest.raises(ValueError, match=message) as caught:
        offline_reporter.report_prediction("churn-v7", "req-1", "churn:7", served=True, **kwargs)
    assert str(caught.value).count("\n") == 0


def test_an_arm_must_be_model_colon_version(offline_reporter):
    with pytest.raises(ValueError, match="'model:version'"):
        offline_reporter.report_prediction("churn-v7", "req-1", "churn7", served=True, prediction=1)


def test_the_reporter_refuses_to_lose_its_own_callbacks():
    with pytest.raises(ValueError, match="on_error"):
        Reporter("127.0.0.1:1", **{"on_delivery": print})


def test_a_full_local_queue_drops_instead_of_blocking():
    failures: list[DeliveryFailure] = []
    reporter = Reporter("127.0.0.1:1", topic_prefix="offline.",
                        **{"queue.buffering.max.messages": 2})
    reporter.on_error(failures.append)
    try:
        started = time.perf_counter()
        results = [reporter.report_label(f"req-{i}", label=1, ts=TS) for i in range(5)]
        elapsed = time.perf_counter() - started
    finally:
        reporter.close(timeout=0)
    assert results == [True, True, False, False, False]
    assert reporter.dropped == 3 and elapsed < 1.0  # returned at once, no broker to wait for
    dropped = [f for f in failures if "queue is full" in f.reason]
    assert len(dropped) == 3 and dropped[0].key == b"req-2" and dropped[0].retriable


def test_a_timed_block_without_a_prediction_is_counted_not_raised(offline_reporter, caplog):
    with offline_reporter.timed("churn-v7", "req-1", "churn:7", served=True):
        pass
    with offline_reporter.timed("churn-v7", "req-2", "churn:7", served=True) as timing:
        timing.prediction, timing.score = 1, float("nan")  # a model's NaN must not fail the request
    assert offline_reporter.invalid == 2
    assert any("not reported" in r.getMessage() for r in caplog.records)


# -- with a real broker -------------------------------------------------------------------------

@pytest.mark.kafka
def test_reports_reach_kafka_in_the_contract(kafka_bootstrap, topic_prefix):
    names = TopicNames(topic_prefix)
    create_contract_topics(kafka_bootstrap, names, partitions=3)
    failures: list[DeliveryFailure] = []
    with Reporter(kafka_bootstrap, topic_prefix=topic_prefix) as reporter:
        reporter.on_error(failures.append)
        for i in range(30):
            assert reporter.report_request("churn-v7", f"req-{i}", unit=f"user-{i}",
                                           segments={"tier": "vip"},
                                           features={"age": 41, "plan": None}, ts=TS)
        assert reporter.report_prediction(
            "churn-v7", "req-0", "churn:6", served=True, prediction=np.int64(1),
            score=np.float32(0.75), latency_ms=3.25, unit="user-0", segments={"tier": "vip"}, ts=TS)
        served = reporter.call("churn-v7", "req-0", "team:churn:7", lambda x: (0, 0.125),
                               "features", served=False)
        with pytest.raises(ZeroDivisionError):
            with reporter.timed("churn-v7", "req-1", "churn:7", served=False, ts=TS) as timing:
                timing.prediction = 1 / 0
        assert reporter.report_label("req-0", label=True, reward=0.5, ts=TS + 60)
        assert reporter.report_label("req-1", label="churned")
    assert served == (0, 0.125)
    assert (reporter.delivered, reporter.failed, reporter.dropped) == (35, 0, 0) and not failures

    requests = read_back(kafka_bootstrap, names.requests, 30)
    assert len(requests) == 30
    for message in requests:
        assert message.partition() == java_partition(message.key(), 3)
    first = json.loads(next(m for m in requests if m.key() == b"req-0").value())
    assert first == {"request_id": "req-0", "experiment": "churn-v7", "ts": TS, "unit": "user-0",
                     "segments": {"tier": "vip"}, "features": {"age": 41, "plan": None}}

    predictions = {(m.key(), json.loads(m.value())["version"]): json.loads(m.value())
                   for m in read_back(kafka_bootstrap, names.predictions, 3)}
    assert predictions[b"req-0", "6"] == {
        "request_id": "req-0", "experiment": "churn-v7", "ts": TS, "model": "churn",
        "version": "6", "served": True, "prediction": 1, "score": 0.75, "latency_ms": 3.25,
        "unit": "user-0", "segments": {"tier": "vip"}}
    shadow = predictions[b"req-0", "7"]
    assert (shadow["model"], shadow["served"], shadow["prediction"], shadow["score"]) \
        == ("team:churn", False, 0, 0.125)
    assert 0 <= shadow["latency_ms"] < 1000 and "error" not in shadow
    failed = predictions[b"req-1", "7"]
    assert failed["error"] == "ZeroDivisionError: division by zero" and "prediction" not in failed
    assert failed["ts"] == TS and failed["latency_ms"] >= 0

    labels = {m.key(): json.loads(m.value()) for m in read_back(kafka_bootstrap, names.labels, 2)}
    assert labels[b"req-0"] == {"request_id": "req-0", "ts": TS + 60, "label": True, "reward": 0.5}
    assert labels[b"req-1"]["label"] == "churned" and abs(labels[b"req-1"]["ts"] - time.time()) < 60


@pytest.mark.kafka
def test_a_delivery_failure_is_counted_and_reported(kafka_bootstrap, topic_prefix):
    names = TopicNames(topic_prefix)
    # a requests topic that refuses records over 1 KiB, as a misconfigured cluster might
    ensure_topics(kafka_bootstrap, [TopicSpec(names.requests, 1, {"max.message.bytes": "1024"})])
    failures: list[DeliveryFailure] = []
    reporter = Reporter(kafka_bootstrap, topic_prefix=topic_prefix, **{"compression.type": "none"})
    reporter.on_error(failures.append)
    try:
        assert reporter.report_request("churn-v7", "small", ts=TS)
        reporter.flush(10)
        assert reporter.report_request("churn-v7", "big", features={"blob": "x" * 5000}, ts=TS)
        assert reporter.flush(15) == 0
    finally:
        reporter.close()
    assert (reporter.delivered, reporter.failed) == (1, 1)
    assert len(failures) == 1 and failures[0].key == b"big" and failures[0].topic == names.requests
    assert "too large" in failures[0].reason.lower()


@pytest.mark.kafka
def test_close_flushes_what_is_queued(kafka_bootstrap, topic_prefix):
    names = TopicNames(topic_prefix)
    create_contract_topics(kafka_bootstrap, names, partitions=2)
    reporter = Reporter(kafka_bootstrap, topic_prefix=topic_prefix, **{"linger.ms": 1000})
    for i in range(500):
        reporter.report_label(f"req-{i}", label=i % 2, ts=TS)
    reporter.close()  # well before linger.ms: close must send, not drop
    assert reporter.delivered == 500
    assert len(read_back(kafka_bootstrap, names.labels, 500)) == 500


@pytest.mark.kafka
def test_a_missing_topic_is_a_reported_failure_never_auto_created(kafka_bootstrap, topic_prefix):
    from rollguard.kafka.admin import admin_client

    failures: list[DeliveryFailure] = []
    # the broker auto-creates topics; the reporter must not ask it to (1 s to give up)
    reporter = Reporter(kafka_bootstrap, topic_prefix=topic_prefix,
                        **{"topic.metadata.propagation.max.ms": 1000})
    reporter.on_error(failures.append)
    try:
        assert reporter.report_label("req-1", label=1, ts=TS)  # queued: the failure comes later
        assert reporter.flush(20) == 0
    finally:
        reporter.close()
    assert (reporter.delivered, reporter.failed) == (0, 1)
    assert failures[0].topic == f"{topic_prefix}labels"
    assert "unknown topic" in failures[0].reason.lower()
    topics = admin_client(kafka_bootstrap).list_topics(timeout=10).topics
    assert f"{topic_prefix}labels" not in topics


def test_a_request_id_that_is_not_a_string_is_refused(offline_reporter):
    with pytest.raises(ValueError, match="request_id"):
        offline_reporter.report_request("churn-v7", 12345)


@pytest.mark.kafka
def test_a_uuid_request_id_is_reported_as_its_string(kafka_bootstrap, topic_prefix):
    import uuid

    names = TopicNames(topic_prefix)
    create_contract_topics(kafka_bootstrap, names, partitions=3)
    rid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    with Reporter(kafka_bootstrap, topic_prefix=topic_prefix) as reporter:
        assert reporter.report_request("churn-v7", rid, ts=TS)
        assert reporter.report_label(rid, label=True, ts=TS + 1)
    [request] = read_back(kafka_bootstrap, names.requests, 1)
    [label] = read_back(kafka_bootstrap, names.labels, 1)
    for message in (request, label):
        assert message.key() == str(rid).encode()
        assert json.loads(message.value())["request_id"] == str(rid)
