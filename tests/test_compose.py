"""docker-compose.yml, checked without a Docker engine: it parses, its variables have the
public defaults, and its services, ports, commands and topic names agree with the code.
`bash .ci/compose` runs it for real on a Docker engine (docs/compose.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from rollguard.cli import bootstrap_or_default
from rollguard.kafka.local import KAFKA_VERSION, LocalBroker
from rollguard.streams.topics import DEFAULT_PREFIX

ROOT = Path(__file__).resolve().parents[1]


def _defaults(value):
    """The file as `docker compose` reads it with no variable set: ``${X:-default}`` →
    ``default``, ``$$`` → ``$``."""
    if isinstance(value, dict):
        return {k: _defaults(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_defaults(v) for v in value]
    if isinstance(value, str):
        value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
        assert not re.search(r"\$\{?[A-Z_]", value.replace("$$", "")), \
            f"a variable without a default: {value}"
        return value.replace("$$", "$")
    return value


def raw() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose() -> dict:
    return _defaults(raw())


def test_images_are_variables_with_the_public_defaults():
    services = raw()["services"]
    assert services["kafka"]["image"] == \
        f"${{ROLLGUARD_KAFKA_IMAGE:-apache/kafka:{KAFKA_VERSION}}}"
    for name in ("topics", "worker", "service", "dashboard"):
        assert services[name]["image"] == "${ROLLGUARD_IMAGE:-rollguard:local}"
        assert services[name]["build"]["args"]["PYTHON_IMAGE"] == \
            "${ROLLGUARD_PYTHON_IMAGE:-python:3.11-slim}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in dockerfile
    assert "FROM ${PYTHON_IMAGE}" in dockerfile


def test_broker_is_a_kraft_node_with_a_healthcheck_that_asks_it():
    kafka = compose()["services"]["kafka"]
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", "KRaft, no ZooKeeper"
    assert "ZOOKEEPER" not in " ".join(env)
    assert "kafka-data:/var/lib/kafka/data" in kafka["volumes"]
    assert env["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    probe = " ".join(kafka["healthcheck"]["test"])
    assert "/dev/tcp/127.0.0.1/19092" in probe and "000000070000" in probe  # ApiVersions


def test_host_port_matches_the_default_bootstrap_of_the_cli_and_local_broker():
    services = compose()["services"]
    address, host_port, container_port = services["kafka"]["ports"][0].split(":")
    assert address == "127.0.0.1" and container_port == "9092"
    assert int(host_port) == LocalBroker().port == int(bootstrap_or_default(None).rsplit(":", 1)[1])
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"EXTERNAL://127.0.0.1:{host_port}" in advertised


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


def test_two_workers_run_the_demo_experiments_with_a_checkpoint_healthcheck():
    from rollguard.schemas import load_experiments

    services = compose()["services"]
    worker = services["worker"]
    assert worker["command"][:2] == ["rollguard", "worker"]
    assert worker["scale"] == 2
    experiments_in_image = worker["command"][2]
    assert experiments_in_image == "/app/rollguard/demo/experiments.yaml"
    assert load_experiments(ROOT / experiments_in_image.removeprefix("/app/"))
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert worker["environment"] == services["topics"]["environment"]
    data_dir = worker["command"][worker["command"].index("--data-dir") + 1]
    assert worker["volumes"] == [data_dir], "an anonymous volume: one per worker"
    health = worker["healthcheck"]["test"]
    assert health[1:3] == ["rollguard", "health"]
    assert health[health.index("--data-dir") + 1] == data_dir
    assert worker["restart"] == "unless-stopped"


def test_the_demo_service_and_the_dashboard_run_beside_them():
    services = compose()["services"]
    service = services["service"]
    assert service["command"][:3] == ["rollguard", "demo", "--service-only"]
    assert service["depends_on"]["worker"]["condition"] == "service_healthy"
    assert service["environment"] == services["worker"]["environment"]
    dashboard = services["dashboard"]
    command = dashboard["command"]
    assert command[:2] == ["rollguard", "dashboard"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    port = command[command.index("--port") + 1]
    assert dashboard["ports"] == [f"127.0.0.1:8080:{port}"]
    assert f"127.0.0.1:{port}/healthz" in " ".join(dashboard["healthcheck"]["test"])


def test_ci_prunes_only_the_untagged_images_of_the_dockerfiles_label():
    ci = (ROOT / ".ci" / "compose").read_text()
    label = re.search(r"^LABEL (\S+=\S+)$", (ROOT / "Dockerfile").read_text(), re.M).group(1)
    assert f"docker image prune -f --filter label={label}" in ci
    assert "prune -a" not in ci and "--all" not in ci, "dangling images only"


def _compose_check():
    """docker/compose_check.py, the checks .ci/compose runs in the rollguard image."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compose_check",
                                                  ROOT / "docker" / "compose_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    return check


def test_ci_kills_the_canarys_worker_while_it_is_still_deciding():
    from rollguard.schemas import load_experiments
    from rollguard.schemas.events import ENDING_ACTIONS

    ci = (ROOT / ".ci" / "compose").read_text()
    canary = re.search(r"^canary=(\S+)$", ci, re.M).group(1)
    experiments = {e.name: e for e in load_experiments(ROOT / "rollguard/demo/experiments.yaml")}
    assert experiments[canary].mode == "canary"
    # the check comes right after the kill, and again once every experiment has decided
    kill = ci.index("kill -KILL")
    checks = [m.start() for m in re.finditer(r'check deciding "\$canary" --killed-at', ci)]
    assert len(checks) == 2 and kill < checks[0] < ci.index("check wait final") < checks[1]
    assert set(_compose_check().VERDICTS) == ENDING_ACTIONS | {"promote"}


def test_the_deciding_check_fails_in_one_sentence_when_the_verdict_came_before_the_kill(
        monkeypatch, capsys):
    import argparse

    check = _compose_check()
    events = [(1_000, {"experiment": "c", "seq": 1, "action": "start"}),
              (5_000, {"experiment": "c", "seq": 2, "action": "set_traffic"}),
              (9_000, {"experiment": "c", "seq": 3, "action": "promote"})]
    monkeypatch.setattr(check, "control_messages", lambda bootstrap, topic: events)
    args = lambda at: argparse.Namespace(until_or_name="c", killed_at=at,  # noqa: E731
                                         bootstrap_servers="x:1", topic_prefix="p.")
    check.deciding(args(8_000))
    assert capsys.readouterr().out.splitlines()[-1] == (
        "c was still deciding: its last event before the kill was set_traffic (seq 2, 3.0 s "
        "before); then promote 1.0 s after")
    with pytest.raises(SystemExit):
        check.deciding(args(9_500))
    assert capsys.readouterr().err == ("c had already published promote (seq 3) 0.5 s before "
                                       "the kill, so the kill did not land while it was "
                                       "deciding.\n")
