"""`rollguard kafka start` says on stderr what it is doing and how long it has waited, and
`rollguard kafka logs --port P` finds the log of a broker started with --data-dir (running or
not)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rollguard.cli import app
from rollguard.kafka.local import (KAFKA_VERSION, BrokerError, LocalBroker, LocalCluster,
                                   StageProgress, broker_log, free_port, free_port_run,
                                   rollguard_home, with_elapsed)

ROOT = Path(__file__).resolve().parents[1]


# -- the progress, without a broker ----------------------------------------------------
def test_each_stage_is_a_line_then_again_with_its_seconds_every_few_seconds():
    now = [100.0]
    lines: list[str] = []
    progress = StageProgress(lines.append, every=5, clock=lambda: now[0])
    progress.tick()
    assert lines == [], "nothing to say before the first stage"
    progress("resolving Kafka's jars with Maven (first time: about a minute)…")
    for t in range(101, 113):  # a tick each second, as the thread does
        now[0] = t
        progress.tick()
    progress("waiting for the broker to answer…")
    now[0] = 120.0
    progress.tick()
    progress.done("ready on 127.0.0.1:9092 after 20 s")
    now[0] = 200.0
    progress.tick()
    assert lines == [
        "resolving Kafka's jars with Maven (first time: about a minute)…",
        "resolving Kafka's jars with Maven (first time: about a minute; 5 s so far)…",
        "resolving Kafka's jars with Maven (first time: about a minute; 10 s so far)…",
        "waiting for the broker to answer…",
        "waiting for the broker to answer (8 s)…",
        "ready on 127.0.0.1:9092 after 20 s",
    ]
    assert progress.elapsed() == 100.0


def test_a_live_view_shows_the_seconds_at_every_tick_and_lines_only_for_stages():
    now = [0.0]
    lines: list[str] = []
    shown: list[str] = []
    progress = StageProgress(lines.append, every=5, clock=lambda: now[0], live=shown.append)
    progress("starting broker on port 9092…")
    progress("waiting for the broker to answer…")
    for t in (1.0, 2.0, 3.0):
        now[0] = t
        progress.tick()
    assert lines == ["starting broker on port 9092…", "waiting for the broker to answer…"]
    assert shown[-3:] == [f"waiting for the broker to answer ({s} s)…" for s in (1, 2, 3)]


def test_the_thread_keeps_a_long_stage_alive_and_stops_with_the_block():
    lines: list[str] = []
    with StageProgress(lines.append, every=0.2) as progress:
        progress("waiting for the broker to answer…")
        time.sleep(1.0)
    count = len(lines)
    assert count >= 3 and all(line.startswith("waiting for the broker to answer")
                              for line in lines), lines
    time.sleep(0.3)
    assert len(lines) == count, "no line after the block"
    assert with_elapsed("formatting the broker's storage in /x/kraft…", 3.2) == \
        "formatting the broker's storage in /x/kraft (3 s)…"


def test_a_taken_port_is_one_sentence_on_stderr(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLLGUARD_HOME", str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["kafka", "start", "--port", str(port)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [
        f"error: Port {port} on 127.0.0.1 is already in use by another program: stop it or "
        "choose another port with --port."]


def test_missing_maven_is_one_sentence_on_stderr(tmp_path, monkeypatch):
    java = shutil.which("java")
    if java is None:
        pytest.skip("no java on PATH")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(Path(java).resolve())
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("ROLLGUARD_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["kafka", "start", "--port", str(free_port())])
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: Maven is needed once") and "install it" in line


# -- where `kafka logs` looks, without a broker -----------------------------------------
def test_logs_of_a_stopped_cluster_are_found_in_its_data_dir(tmp_path):
    """What a 3-node cluster started with --data-dir leaves behind in the rollguard home
    (written at launch by LocalCluster.start and each node's LocalBroker) is enough to find
    each node's log once it no longer runs."""
    home, data = tmp_path / "home", tmp_path / "elsewhere"
    port = free_port_run(3)
    cluster = LocalCluster(port=port, nodes=3, data_dir=data, home=home)
    (home / "places").mkdir(parents=True)
    (home / "places" / f"cluster-{port}.json").write_text(json.dumps(
        {"port": port, "nodes": 3, "data_dir": str(cluster.data_dir)}))
    for node in (1, 2, 3):
        broker = cluster.node(node)
        broker.data_dir.mkdir(parents=True)
        broker.log_file.write_text(f"node {node} was here\n")
        broker.place_file.write_text(json.dumps(
            {"port": broker.port, "data_dir": str(broker.data_dir),
             "log_file": str(broker.log_file), "node_id": node, "cluster_port": port}))
    assert broker_log(port, home=home) == cluster.node(1).log_file
    assert broker_log(port + 2, home=home) == cluster.node(3).log_file
    assert broker_log(port, node=2, home=home) == cluster.node(2).log_file
    assert broker_log(port + 1, node=3, home=home) == cluster.node(3).log_file
    with pytest.raises(BrokerError, match="has nodes 1 to 3, not 4"):
        broker_log(port, node=4, home=home)


# -- one real broker, through the command ------------------------------------------------
def _rollguard(*args: str, home: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "ROLLGUARD_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "rollguard.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _maven_has_kafka() -> bool:
    """Maven is on PATH and its local repository holds Kafka: resolving takes seconds."""
    local = Path.home() / ".m2" / "repository" / "org" / "apache" / "kafka" / "kafka_2.13"
    return shutil.which("mvn") is not None and (local / KAFKA_VERSION).is_dir()


@pytest.mark.kafka
def test_start_with_a_data_dir_shows_its_stages_and_logs_finds_its_log(tmp_path):
    home, data = tmp_path / "home", tmp_path / "my-data"
    resolves = _maven_has_kafka()
    if not resolves:  # resolving from Maven Central could take minutes: use the cached jars
        cached = LocalBroker(home=rollguard_home()).ensure_jars()
        (home / f"kafka-{KAFKA_VERSION}").mkdir(parents=True)
        (home / f"kafka-{KAFKA_VERSION}" / "libs").symlink_to(cached)
    port = free_port()
    try:
        started = _rollguard("kafka", "start", "--port", str(port), "--data-dir", str(data),
                             home=home)
        stages = started.stderr.splitlines()
        assert started.returncode == 0, started.stderr
        assert "Traceback" not in started.stderr
        expected = [f"starting broker on port {port}…", "waiting for the broker to answer…"]
        if resolves:
            expected.insert(0, "resolving Kafka's jars with Maven (first time: about a minute)…")
        assert [line for line in stages if line in expected] == expected, stages
        assert stages[-1].startswith(f"ready on 127.0.0.1:{port} after "), stages
        assert "broker started in" in started.stdout and f"data {data}" in started.stdout

        running = _rollguard("kafka", "logs", "--port", str(port), "-n", "400", home=home,
                             timeout=60)
        assert running.returncode == 0, running.stderr
        assert "Kafka Server started" in running.stdout
        assert running.stderr.strip() == f"== {data / 'broker.log'}"
    finally:
        stopped = _rollguard("kafka", "stop", "--port", str(port), home=home, timeout=90)
        LocalBroker(port=port, data_dir=data, home=home).stop()  # if the command could not
    assert "Stopped the Kafka broker" in stopped.stdout
    assert not (home / f"broker-{port}").exists(), "the data went to --data-dir only"
    # stopped (or died): its log is still found where --data-dir put it
    after = _rollguard("kafka", "logs", "--port", str(port), "-n", "400", home=home, timeout=60)
    assert after.returncode == 0, after.stderr
    assert "Kafka Server started" in after.stdout and "Traceback" not in after.stderr
