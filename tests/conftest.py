"""Shared fixtures: a real Kafka broker for the tests that need one.

The broker comes, in this order, from ``KAFKA_BOOTSTRAP_SERVERS``; from testcontainers when a
Docker engine answers; else from rollguard's own local KRaft broker (``rollguard kafka start``)
started once per test session on a free port and stopped after. No test of Kafka behaviour
uses a mock of Kafka.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest


def _docker_engine_answers() -> bool:
    try:
        import docker  # testcontainers depends on the docker SDK

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:  # noqa: BLE001 - no engine, no socket, no SDK: all mean "no Docker"
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """``host:port`` of a real Kafka broker for this test session."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    if _docker_engine_answers():
        from testcontainers.community.kafka import KafkaContainer

        # Confluent's image in KRaft mode: the one testcontainers knows how to wait for
        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from rollguard.kafka.local import LocalBroker, free_port, rollguard_home

    # the jar cache is shared with `rollguard kafka start`; the broker's data is not
    data_dir = Path(tempfile.mkdtemp(prefix="rollguard-test-broker-"))
    broker = LocalBroker(port=free_port(), data_dir=data_dir, home=rollguard_home())
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic prefix, so tests sharing the broker never see each other's events."""
    return f"t{uuid.uuid4().hex[:10]}."
