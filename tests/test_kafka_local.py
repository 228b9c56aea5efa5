"""The local KRaft broker: start, status, stop, and the one-sentence errors."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rollguard.cli import app
from rollguard.kafka.local import BrokerError, LocalBroker, free_port, rollguard_home

pytestmark = pytest.mark.kafka


def _one_sentence(message: str) -> str:
    first = message.splitlines()[0]
    assert first.endswith((".", ":")), first
    return first


def test_start_is_idempotent_status_reports_and_stop_stops(tmp_path):
    broker = LocalBroker(port=free_port(), data_dir=tmp_path / "data", home=rollguard_home())
    info = broker.start()
    try:
        assert broker.status() == info
        assert broker.start().pid == info.pid, "a second start returns the running broker"
        with socket.create_connection(("127.0.0.1", info.port), timeout=5):
            pass
        # another rollguard home does not know this broker, and finds its port taken
        other = LocalBroker(port=info.port, data_dir=tmp_path / "other", home=tmp_path / "home2")
        other.jars_dir.parent.mkdir(parents=True)
        other.jars_dir.symlink_to(broker.jars_dir)
        with pytest.raises(BrokerError, match=f"Port {info.port} on 127.0.0.1 is already in use"):
            other.start()
    finally:
        assert broker.stop()
    assert broker.status() is None
    assert not broker.stop(), "stopping twice says nothing ran"
    assert "Kafka Server started" in broker.tail_log(500)


def test_broker_that_dies_during_start_is_reported_with_its_log(tmp_path):
    broker = LocalBroker(port=free_port(), data_dir=tmp_path / "data", home=rollguard_home())
    broker.start()
    broker.stop()
    meta = broker.data_dir / "kraft" / "meta.properties"
    meta.write_text(meta.read_text().replace("node.id=1", "node.id=7"))
    with pytest.raises(BrokerError) as caught:
        broker.start(timeout=60)
    message = str(caught.value)
    assert _one_sentence(message).startswith("The Kafka broker exited during start")
    assert len(message.splitlines()) > 1, "the broker's last log lines follow the sentence"
    assert broker.status() is None


def test_missing_java_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError) as caught:
        LocalBroker(port=free_port(), home=tmp_path).start()
    assert "Java 17 or newer" in _one_sentence(str(caught.value))
    assert "install" in str(caught.value)


def test_old_java_is_refused(tmp_path, monkeypatch):
    fake_java = tmp_path / "bin" / "java"
    fake_java.parent.mkdir()
    fake_java.write_text('#!/bin/sh\necho \'openjdk version "11.0.2" 2019-01-15\' >&2\n')
    fake_java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(BrokerError, match="needs Java 17 or newer but .* is Java 11"):
        LocalBroker(port=free_port(), home=tmp_path).start()


def test_missing_maven_says_what_to_install_when_jars_are_not_cached(tmp_path, monkeypatch):
    java = Path(os.popen("command -v java").read().strip()).resolve()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(java)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(BrokerError) as caught:
        LocalBroker(port=free_port(), home=tmp_path / "empty-cache").start()
    assert "Maven is needed once" in _one_sentence(str(caught.value))


def test_cli_status_without_broker_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLLGUARD_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["kafka", "status"])
    assert result.exit_code == 3
    assert "No local Kafka broker is running" in result.output


def test_cli_start_error_is_one_line_without_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLLGUARD_HOME", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(app, ["kafka", "start", "--port", str(free_port())])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "Java 17 or newer" in result.output


def test_ctrl_c_while_the_broker_boots_leaves_no_orphan(tmp_path, monkeypatch):
    from rollguard.kafka import local

    started = []
    real_popen = local.subprocess.Popen

    def recording_popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        started.append(proc)
        return proc

    def interrupted(bootstrap):
        raise KeyboardInterrupt

    monkeypatch.setattr(local.subprocess, "Popen", recording_popen)
    monkeypatch.setattr(local, "_metadata_ok", interrupted)
    broker = LocalBroker(port=free_port(), data_dir=tmp_path / "data", home=rollguard_home())
    with pytest.raises(KeyboardInterrupt):
        broker.start()
    assert started and started[-1].poll() is not None, "the broker process was stopped"
    assert broker.status() is None


def test_cluster_arguments_are_checked_before_anything_starts(tmp_path, monkeypatch):
    from rollguard.kafka.local import LocalCluster

    with pytest.raises(BrokerError, match="A cluster needs at least 2 nodes, not 1"):
        LocalCluster(port=free_port(), nodes=1, home=tmp_path)
    with pytest.raises(BrokerError, match="choose a --port from 1 to 65533"):
        LocalCluster(port=65534, nodes=3, home=tmp_path)
    with pytest.raises(BrokerError, match="has nodes 1 to 3, not 4"):
        LocalCluster(port=free_port(), home=tmp_path).node(4)
    monkeypatch.setenv("ROLLGUARD_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["kafka", "start", "--nodes", "0"])
    assert result.exit_code == 2 and "--nodes" in result.output
    result = CliRunner().invoke(app, ["kafka", "start", "--nodes", "3", "--port", "65534"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "choose a --port from 1 to 65533" in result.output


def test_cli_logs_of_a_node_that_never_ran_says_how_to_start_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLLGUARD_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["kafka", "logs", "--port", "39092", "--node", "2"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "start one with `rollguard kafka start --nodes 3 --port 39092`" in result.output


def test_a_data_dir_of_three_nodes_is_not_started_as_another_count(tmp_path):
    from rollguard.kafka.local import LocalCluster

    data = tmp_path / "data"
    first = LocalCluster(port=free_port(), nodes=3, data_dir=data, home=tmp_path)
    cluster_id = first._cluster_id_of_data()
    assert first._cluster_id_of_data() == cluster_id, "the same data dir keeps its cluster id"
    with pytest.raises(BrokerError, match="holds a cluster of 3 nodes, not 5: start it with --nodes 3"):
        LocalCluster(port=first.port, nodes=5, data_dir=data, home=tmp_path).start()
