"""Transactional checkpoints on a real broker: large states fit, aborted transactions are
never restored, and a new owner of a partition fences the old one."""

from __future__ import annotations

import os

import pytest
from confluent_kafka import Producer

from rollguard.agents.checkpoint import CheckpointError, Checkpointer, Output, read_changelog
from rollguard.agents.runtime import InternalTopics
from rollguard.kafka.admin import ensure_topics
from rollguard.streams.topics import TopicNames

pytestmark = pytest.mark.kafka


@pytest.fixture
def internal(kafka_bootstrap, topic_prefix):
    topics = InternalTopics(TopicNames(topic_prefix), "ckpt")
    ensure_topics(kafka_bootstrap, topics.specs(2))
    return topics


def test_a_state_far_beyond_kafkas_default_message_size_is_written_and_restored(
        kafka_bootstrap, internal, topic_prefix):
    big = os.urandom(12 << 20)  # 12 MiB, incompressible: beyond the restore's fetch size too
    ckpt = Checkpointer(kafka_bootstrap, f"{topic_prefix}eval-1")
    ckpt.commit([Output(internal.eval_state, b"e/x", big, None, 1),
                 Output(internal.eval_state, b"m", b"meta", None, 1)])
    ckpt.close()
    # as a task restores: its own checkpointer first, whose init completes the previous
    # owner's transaction (a commit's markers reach the partition after commit returns)
    owner = Checkpointer(kafka_bootstrap, f"{topic_prefix}eval-1")
    restored = {key: value for _, key, value in read_changelog(kafka_bootstrap,
                                                                internal.eval_state, 1)}
    owner.close()
    assert restored == {b"e/x": big, b"m": b"meta"}


def test_aborted_transactions_are_never_restored(kafka_bootstrap, internal, topic_prefix):
    ckpt = Checkpointer(kafka_bootstrap, f"{topic_prefix}join-0")
    ckpt.commit([Output(internal.join_state, b"r/a", b"1", None, 0)])
    ckpt.close()
    producer = Producer({"bootstrap.servers": kafka_bootstrap,
                         "transactional.id": f"{topic_prefix}zombie"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(internal.join_state, key=b"r/b", value=b"2", partition=0)
    producer.flush(10)
    producer.abort_transaction(30)
    keys = [key for _, key, _ in read_changelog(kafka_bootstrap, internal.join_state, 0)]
    assert keys == [b"r/a"]


def test_a_new_owner_fences_the_old_one(kafka_bootstrap, internal, topic_prefix):
    old = Checkpointer(kafka_bootstrap, f"{topic_prefix}join-1")
    old.commit([Output(internal.join_state, b"m", b"old", None, 1)])
    new = Checkpointer(kafka_bootstrap, f"{topic_prefix}join-1")  # the partition moved
    with pytest.raises(CheckpointError, match="checkpoint of .*join-1 failed"):
        old.commit([Output(internal.join_state, b"m", b"stale", None, 1)])
    new.commit([Output(internal.join_state, b"m", b"new", None, 1)])
    new.close()
    latest = {key: value for _, key, value in read_changelog(kafka_bootstrap,
                                                              internal.join_state, 1)}
    assert latest[b"m"] == b"new"


def test_a_refused_message_fails_the_checkpoint_at_once_with_its_reason(
        kafka_bootstrap, topic_prefix):
    import time

    from rollguard.kafka.admin import TopicSpec

    small = f"{topic_prefix}small"
    ensure_topics(kafka_bootstrap, [TopicSpec(small, 1, {"max.message.bytes": "1000"})])
    ckpt = Checkpointer(kafka_bootstrap, f"{topic_prefix}refused", timeout=30)
    began = time.monotonic()
    with pytest.raises(CheckpointError, match="refused .*(too large|TOO_LARGE)"):
        ckpt.commit([Output(small, b"k", os.urandom(5000), None, 0)])  # incompressible
    assert time.monotonic() - began < 10, "not after the transaction timeout"
