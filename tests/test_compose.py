"""docker-compose.yml: no Docker engine runs here, so check what can be checked without one:
the file parses, and its services, ports and topic names agree with the code's defaults."""

from __future__ import annotations

from pathlib import Path

import yaml

from rollguard.cli import bootstrap_or_default
from rollguard.kafka.local import KAFKA_VERSION, LocalBroker
from rollguard.streams.topics import DEFAULT_PREFIX

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_broker_is_the_official_kraft_image_of_the_pinned_version():
    kafka = compose()["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", "KRaft, no ZooKeeper"
    assert "ZOOKEEPER" not in " ".join(env)
    assert kafka["healthcheck"]["test"]


def test_host_port_matches_the_default_bootstrap_of_the_cli_and_local_broker():
    ports = compose()["services"]["kafka"]["ports"]
    host_port = int(ports[0].split(":")[0])
    assert host_port == LocalBroker().port == int(bootstrap_or_default(None).rsplit(":", 1)[1])


def test_topics_service_creates_the_contract_topics_with_the_default_prefix():
    services = compose()["services"]
    topics = services["topics"]
    assert topics["command"][:3] == ["rollguard", "topics", "create"]
    assert topics["environment"]["ROLLGUARD_TOPIC_PREFIX"] == DEFAULT_PREFIX
    internal = topics["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert internal.split(":")[0] == "kafka"
    assert f"INTERNAL://{internal}" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_dockerfile_installs_the_package_and_its_console_script():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install" in dockerfile and "COPY rollguard" in dockerfile


def test_worker_service_runs_the_example_experiments_after_the_topics():
    from rollguard.schemas import load_experiments

    worker = compose()["services"]["worker"]
    assert worker["command"][:2] == ["rollguard", "worker"]
    experiments_in_image = worker["command"][2]
    assert experiments_in_image.startswith("/app/")
    local = ROOT / experiments_in_image.removeprefix("/app/")
    assert load_experiments(local), "the file the worker reads parses"
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert worker["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == \
        compose()["services"]["topics"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert worker["healthcheck"]["test"]
    assert "COPY examples" in (ROOT / "Dockerfile").read_text()
