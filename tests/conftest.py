"""Shared fixtures: a real Kafka broker for the tests that need one.

Which broker is chosen explicitly, never by what happens to run on the machine (a Docker
engine answering does not change it), with ``ROLLGUARD_TEST_BROKER``:

- ``local`` (the default): rollguard's own local KRaft broker (``rollguard kafka start``'s,
  from Maven Central's jars), started once per test session on a free port and stopped after;
- ``testcontainers``: a Kafka container started by testcontainers (needs a Docker engine that
  has, or can pull, its image);
- ``HOST:PORT`` (or several, comma-separated): a broker that runs already; it must not delete
  records by age (`log.retention.ms=-1`), since the tests produce events with 2023 timestamps.

Unset, ``KAFKA_BOOTSTRAP_SERVERS`` is used when it is set (as before), else ``local``. pytest's
header says which broker the run uses, and its summary where it was. No test of Kafka
behaviour uses a mock of Kafka.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from pathlib import Path

import pytest

BROKER_VARIABLE = "ROLLGUARD_TEST_BROKER"
_ADDRESS = re.compile(r"^[^\s:,]+:\d{1,5}(,[^\s:,]+:\d{1,5})*$")
_used: dict[str, str] = {}  # what the session's broker turned out to be, for the summary


def broker_choice() -> tuple[str, str]:
    """``(kind, detail)``: kind is ``local``, ``testcontainers`` or ``address`` (detail: the
    bootstrap servers); raises :class:`pytest.UsageError` (one sentence) on a bad value."""
    value = os.environ.get(BROKER_VARIABLE, "").strip()
    if not value:
        given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
        return ("address", given) if given else ("local", "")
    if value.lower() in ("local", "testcontainers"):
        return value.lower(), ""
    if _ADDRESS.match(value):
        return "address", value
    raise pytest.UsageError(
        f"{BROKER_VARIABLE}={value!r} is not a broker choice: set it to local (the default), "
        "testcontainers, or HOST:PORT of a Kafka that runs.")


def pytest_configure(config: pytest.Config) -> None:
    broker_choice()  # a bad value stops the run at once, in one sentence


def pytest_report_header(config: pytest.Config) -> str:
    kind, detail = broker_choice()
    how = os.environ.get(BROKER_VARIABLE) and f"{BROKER_VARIABLE}={os.environ[BROKER_VARIABLE]}"
    if kind == "local":
        what = "local (rollguard's KRaft broker, started for this session on a free port)"
    elif kind == "testcontainers":
        what = "testcontainers (a Kafka container on the Docker engine)"
    else:
        what = f"{detail} (a broker that runs already)"
        how = how or "KAFKA_BOOTSTRAP_SERVERS"
    return f"kafka broker: {what}; chosen by {how or f'default ({BROKER_VARIABLE} unset)'}"


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _used:
        terminalreporter.write_line(f"kafka broker used: {_used['kind']} at {_used['bootstrap']}")


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
    """``host:port`` of a real Kafka broker for this test session (see the module's doc)."""
    kind, detail = broker_choice()
    if kind == "address":
        _used.update(kind="given broker", bootstrap=detail)
        yield detail
        return
    if kind == "testcontainers":
        if not _docker_engine_answers():
            pytest.fail(f"{BROKER_VARIABLE}=testcontainers but no Docker engine answers: start "
                        "one, or leave the variable unset for the local broker.", pytrace=False)
        from testcontainers.community.kafka import KafkaContainer

        container, why = None, None
        try:
            # Confluent's image in KRaft mode: the one testcontainers knows how to wait for
            # tests produce events of 2023: a broker must not delete them by age meanwhile
            container = KafkaContainer().with_kraft() \
                .with_env("KAFKA_LOG_RETENTION_MS", "-1").start()
        except Exception as exc:  # noqa: BLE001 - a pull refused, a start that failed
            why = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if container is None:  # failed outside the except: no chained traceback is shown
            pytest.fail(f"testcontainers could not start its Kafka container ({why}): check "
                        "that the engine has or can pull its image, or use the local broker.",
                        pytrace=False)
        try:
            bootstrap = container.get_bootstrap_server()
            _used.update(kind="testcontainers", bootstrap=bootstrap)
            yield bootstrap
        finally:
            container.stop()
        return
    from rollguard.kafka.local import LocalBroker, free_port, rollguard_home

    # the jar cache is shared with `rollguard kafka start`; the broker's data is not
    data_dir = Path(tempfile.mkdtemp(prefix="rollguard-test-broker-"))
    broker = LocalBroker(port=free_port(), data_dir=data_dir, home=rollguard_home())
    broker.start()
    _used.update(kind="local", bootstrap=broker.bootstrap)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic prefix, so tests sharing the broker never see each other's events."""
    return f"t{uuid.uuid4().hex[:10]}."
