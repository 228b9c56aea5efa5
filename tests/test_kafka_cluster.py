"""The local three-node KRaft cluster, for real: losing a node, restarting it, stopping it all.

One cluster serves the whole module (started once through the CLI, then driven through the
API from this process via the state files): the tests run in file order and the last one
stops it, starts it again on its data and stops it for good.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from typer.testing import CliRunner

from rollguard.cli import app
from rollguard.kafka.clients import client_config
from rollguard.kafka.local import LocalCluster, free_port_run, rollguard_home
from rollguard.processes import pid_alive

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A three-node cluster started with `python -m rollguard.cli kafka start --nodes 3`."""
    port = free_port_run(3)
    data_dir = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("ROLLGUARD_HOME", None)  # the jar cache and state files of rollguard_home()
    started = subprocess.run(
        [sys.executable, "-m", "rollguard.cli", "kafka", "start", "--nodes", "3",
         "--port", str(port), "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    local = LocalCluster(port=port, data_dir=data_dir, home=rollguard_home())
    try:
        assert started.returncode == 0, started.stderr
        local.cli_output = started.stdout  # type: ignore[attr-defined]
        yield local
    finally:
        local.stop()


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient(client_config(bootstrap))


def _create_topic(bootstrap: str, partitions: int = 3) -> str:
    """A new topic with the cluster's default replication factor and min.insync.replicas."""
    topic = f"cluster-{uuid.uuid4().hex[:8]}"
    admin = _admin(bootstrap)  # held: a future dies with its client
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions)],
                                  operation_timeout=30, request_timeout=30)
    futures[topic].result(timeout=60)
    return topic


def _transaction(bootstrap: str, topic: str, values: list[str], commit: bool,
                 transactional_id: str) -> None:
    producer = Producer(client_config(bootstrap, **{
        "transactional.id": transactional_id, "acks": "all", "enable.idempotence": True,
        "transaction.timeout.ms": 60000, "message.timeout.ms": 60000}))
    producer.init_transactions(60)
    producer.begin_transaction()
    for i, value in enumerate(values):
        producer.produce(topic, value.encode(), key=str(i).encode())
    if commit:
        producer.commit_transaction(60)
    else:
        producer.flush(60)
        producer.abort_transaction(60)


def _read_committed(bootstrap: str, topic: str, group: str, expected: int) -> list[str]:
    """What a read_committed consumer of ``group`` reads next (``expected`` records, then a
    short wait for any more), with its offsets committed."""
    consumer = Consumer(client_config(bootstrap, **{
        "group.id": group, "isolation.level": "read_committed",
        "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    consumer.subscribe([topic])
    got: list[str] = []
    deadline = time.monotonic() + 60
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                got.append(msg.value().decode())
            if len(got) >= expected:
                quiet_until = quiet_until or time.monotonic() + 2.0
                if time.monotonic() > quiet_until:
                    break
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return got


def _partitions(bootstrap: str, topic: str):
    return _admin(bootstrap).list_topics(topic, timeout=10).topics[topic].partitions


def _cli(*args: str):
    return CliRunner().invoke(app, ["kafka", *args])


def test_cli_starts_one_cluster_of_three_brokers(cluster):
    info = cluster.status()
    assert info is not None and info.nodes == 3 and len(set(info.controller_ports)) == 3
    assert "cluster of 3 nodes started in" in cluster.cli_output
    assert cluster.bootstrap in cluster.cli_output
    metadata = _admin(cluster.bootstrap).list_topics(timeout=10)
    assert sorted((b.id, b.port) for b in metadata.brokers.values()) == [
        (1, cluster.port), (2, cluster.port + 1), (3, cluster.port + 2)]
    admin = _admin(cluster.bootstrap)  # held: a future dies with its client
    described = admin.describe_cluster(request_timeout=10).result(timeout=20)
    assert described.cluster_id == info.cluster_id
    assert len(described.nodes) == 3
    for node in (1, 2, 3):
        props = (cluster.data_dir / f"node-{node}" / "server.properties").read_text()
        assert f"node.id={node}" in props
        assert f"controller.quorum.voters={info.voters}" in props
        assert "process.roles=broker,controller" in props
        meta = (cluster.data_dir / f"node-{node}" / "kraft" / "meta.properties").read_text()
        assert f"cluster.id={info.cluster_id}" in meta
    status = _cli("status", "--port", str(cluster.port + 1))
    assert status.exit_code == 0, status.output
    assert f"cluster of 3 nodes on {cluster.bootstrap}" in status.output
    assert status.output.count(": alive (pid") == 3


def test_a_topic_with_the_cluster_defaults_has_three_replicas_and_min_isr_two(cluster):
    topic = _create_topic(cluster.bootstrap)
    assert all(len(p.replicas) == 3 and len(p.isrs) == 3
               for p in _partitions(cluster.bootstrap, topic).values())
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = _admin(cluster.bootstrap)
    deadline = time.monotonic() + 30
    while True:  # the node that answers may learn of the new topic a moment after the others
        try:
            configs = admin.describe_configs([resource])[resource].result(timeout=20)
            break
        except KafkaException as exc:
            if "UNKNOWN_TOPIC_OR_PART" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert configs["min.insync.replicas"].value == "2"


def test_transactions_survive_a_killed_node_and_the_node_rejoins_in_sync(cluster):
    topic = _create_topic(cluster.bootstrap)
    group, txn = f"g-{topic}", f"txn-{topic}"
    # with all three nodes up (this also creates __transaction_state and __consumer_offsets)
    _transaction(cluster.bootstrap, topic, [f"a{i}" for i in range(10)], True, txn)
    _transaction(cluster.bootstrap, topic, [f"x{i}" for i in range(5)], False, txn)
    assert sorted(_read_committed(cluster.bootstrap, topic, group, 10)) == sorted(
        f"a{i}" for i in range(10))

    victim = _partitions(cluster.bootstrap, topic)[0].leader  # partition 0 must fail over
    meta = cluster.node(victim).data_dir / "kraft" / "meta.properties"
    formatted = meta.read_text()
    killed = cluster.kill(victim)
    assert not pid_alive(killed.pid) and cluster.node_status(victim) is None
    status = _cli("status")
    assert f"node {victim} on 127.0.0.1:{killed.port}: not running" in status.output

    _transaction(cluster.bootstrap, topic, [f"b{i}" for i in range(10)], True, txn)
    _transaction(cluster.bootstrap, topic, [f"y{i}" for i in range(5)], False, txn)
    assert sorted(_read_committed(cluster.bootstrap, topic, group, 10)) == sorted(
        f"b{i}" for i in range(10)), "the group's committed offsets survived the node too"
    parts = _partitions(cluster.bootstrap, topic)
    assert all(victim not in p.isrs and len(p.isrs) == 2 for p in parts.values())
    assert parts[0].leader != victim

    back = cluster.restart(victim)
    assert back.node_id == victim and back.pid != killed.pid and pid_alive(back.pid)
    assert all(sorted(p.isrs) == [1, 2, 3] for p in _partitions(cluster.bootstrap, topic).values())
    assert len(_admin(killed.bootstrap).list_topics(timeout=10).brokers) == 3
    assert meta.read_text() == formatted, "the node came back on its own data, not reformatted"


def test_stop_leaves_no_process_and_a_start_on_the_same_data_is_the_same_cluster(cluster):
    info = cluster.status()
    pids = [cluster.node_status(node).pid for node in (1, 2, 3)]
    stopped = _cli("stop", "--port", str(cluster.port))
    assert stopped.exit_code == 0 and "Stopped the Kafka cluster of 3 nodes" in stopped.output
    assert not any(pid_alive(pid) for pid in pids)
    assert cluster.status() is None and not cluster.state_file.exists()
    mine = subprocess.run(["pgrep", "-f", str(cluster.data_dir)], capture_output=True, text=True)
    assert mine.stdout == "", "no JVM of this cluster is left"

    again = cluster.start()
    try:
        assert again.cluster_id == info.cluster_id
        topics = _admin(cluster.bootstrap).list_topics(timeout=10).topics
        assert any(t.startswith("cluster-") for t in topics), "the topics are still there"
        pids = [cluster.node_status(node).pid for node in (1, 2, 3)]
    finally:
        assert cluster.stop()
    assert not any(pid_alive(pid) for pid in pids) and cluster.status() is None
