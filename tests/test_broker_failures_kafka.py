"""Brokers restart all the time: the worker loses nothing, counts nothing twice and goes on
deciding. These tests run their own brokers (they kill them) on real Kafka."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from rollguard.kafka.admin import create_contract_topics
from rollguard.kafka.local import LocalBroker, free_port, rollguard_home
from rollguard.schemas import load_experiments
from rollguard.streams.topics import TopicNames
from rollguard.synth import Arm, shadow_events
from tests.kafka_helpers import ROOT, WorkerProcess, latest_json, wait_for
from tests.test_worker_kafka import assert_same_control, assert_statistics_equal, control_events, replay_of

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# one experiment decides early, one only late (at max_samples): a decision after the restart
EXPERIMENTS = """
- name: better
  task: binary
  mode: shadow
  champion: m:1
  candidates: [m:2]
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 200
  label_ttl: 1h
  allowed_lateness: 2s
- name: equal
  task: binary
  mode: shadow
  champion: m:1
  candidates: [m:4]
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 200
  max_samples: 900
  label_ttl: 1h
  allowed_lateness: 2s
"""


#: events already in Kafka when the worker starts. The stream's event time runs 25 times
#: faster than the wall clock (to be short); started on empty topics, the partitions would
#: be idle when the first events arrive, and the few milliseconds between their first
#: fetches would be more than the experiments' allowed lateness (2 s) of event time: the
#: live start would not be replay's (docs/processing-guarantee.md, on idle partitions).
BACKLOG = 800


def traffic(n: int) -> list[dict]:
    events = list(shadow_events("better", Arm("m:1", 0.8), [Arm("m:2", 0.87)], n=n, seed=21))
    events += shadow_events("equal", Arm("m:1", 0.8), [Arm("m:4", 0.8)], n=n, seed=22)
    return sorted(events, key=lambda e: e["ts"])


class PacedProducer:
    """Produces replay-style events at about ``rate`` events/s, riding out broker outages
    (librdkafka retries until ``message.timeout.ms``). ``held_up``: topic kind → seconds its
    events reach the producer later than their turn (as when that topic's partition leader
    is being elected while the others take writes)."""

    def __init__(self, bootstrap: str, names: TopicNames, rate: float = 1000.0,
                 held_up: dict[str, float] | None = None) -> None:
        self.names, self.rate, self.held_up = names, rate, held_up or {}
        self.producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                                  "linger.ms": 5, "acks": "all", "enable.idempotence": True,
                                  "message.timeout.ms": 180000,
                                  "logger": __import__("logging").getLogger("paced")})
        #: events Kafka refused to take (the delivery report's error), as a service would see
        self.failed: list[tuple[dict, str]] = []

    def produce(self, events: list[dict]) -> None:
        began = time.monotonic()
        waiting: list[tuple[float, dict]] = []  # held-up events, by when they are due
        for i, event in enumerate(events):
            delay = self.held_up.get(event["topic"])
            if delay is None:
                self._send(event)
            else:
                waiting.append((time.monotonic() + delay, event))
            while waiting and waiting[0][0] <= time.monotonic():
                self._send(waiting.pop(0)[1])
            ahead = (i + 1) / self.rate - (time.monotonic() - began)
            if ahead > 0.01:
                time.sleep(ahead)
        for due, event in waiting:
            time.sleep(max(0.0, due - time.monotonic()))
            self._send(event)

    def _send(self, original: dict) -> None:
        event = dict(original)
        topic = getattr(self.names, event.pop("topic"))
        value = json.dumps(event).encode()

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                self.failed.append((original, err.str()))

        while True:
            try:
                self.producer.produce(topic, key=event["request_id"].encode(), value=value,
                                      on_delivery=delivered)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)

    def flush(self) -> None:
        assert self.producer.flush(180) == 0, "every event reached the broker"


def delivered_reference(path: Path, events: list[dict], *producers: PacedProducer,
                        reference: tuple[dict, list]) -> tuple[dict, list]:
    """Replay's statistics and control events over the events Kafka took. A delivery that
    failed during a failover is the service's loss, reported to it, never the worker's:
    the worker is held to replay over what is in the topics (it is shown, so a run that
    hides a loss of the worker behind the producer's cannot pass unseen)."""
    failed = [(event, error) for producer in producers for event, error in producer.failed]
    if not failed:
        return reference
    print(f"the test's producer lost {len(failed)} event(s) to Kafka errors: "
          f"{sorted({error for _, error in failed})}")
    lost = {id(event) for event, _ in failed}
    replay, expected = replay_of(load_experiments(path),
                                 [e for e in events if id(e) not in lost])
    return {name: ev.snapshot()["statistics"] for name, ev in replay.evaluators.items()}, expected


def wait_settled(bootstrap: str, names: TopicNames, offline: dict, expected: list,
                 timeout: float = 120) -> None:
    """Until the stats topic counts every record replay counts and every decision is out."""
    def settled():
        snap = latest_json(bootstrap, names.stats)
        return all(snap.get(name, {}).get("statistics", {}).get("records")
                   == offline[name]["records"] for name in offline)
    wait_for(settled, timeout=timeout)
    wait_for(lambda: len(control_events(bootstrap, names)) >= len(expected), timeout=30)


def kill_broker(broker: LocalBroker) -> None:
    """SIGKILL: no goodbye, no flush."""
    info = broker.status()
    os.killpg(info.pid, signal.SIGKILL)
    wait_for(lambda: broker.status() is None, timeout=10, every=0.1)


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} is served"
    return float(match.group(1))


def health(data_dir: Path, app_id: str, max_age: float = 10.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rollguard.cli", "health", "--data-dir",
                           str(data_dir), "--app-id", app_id, "--max-age", str(max_age)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def wait_working(data_dir: Path, app_id: str, partitions: int = 3) -> None:
    """Until the worker owns its partitions (restored) and has checkpointed them."""
    owns = f"owns {partitions} join and {partitions} evaluation partitions"
    wait_for(lambda: owns in health(data_dir, app_id).stdout, timeout=90)


@pytest.fixture
def own_broker(tmp_path):
    broker = LocalBroker(port=free_port(), data_dir=tmp_path / "broker", home=rollguard_home())
    broker.start()
    yield broker
    broker.stop()


def test_a_broker_killed_and_restarted_mid_stream_loses_nothing_and_stops_nothing(
        own_broker, tmp_path):
    bootstrap, names = own_broker.bootstrap, TopicNames(f"t{uuid.uuid4().hex[:8]}.")
    path = tmp_path / "experiments.yaml"
    path.write_text(EXPERIMENTS)
    events = traffic(1350)
    replay, expected = replay_of(load_experiments(path), events)
    offline = {name: ev.snapshot()["statistics"] for name, ev in replay.evaluators.items()}
    assert [e["action"] for e in expected if e["experiment"] == "equal"][-1] == "hold"
    create_contract_topics(bootstrap, names, partitions=3)

    app_id, port = f"app-{uuid.uuid4().hex[:6]}", free_port()
    data_dir = tmp_path / "data"
    worker = WorkerProcess(bootstrap, path, names.prefix, app_id, data_dir,
                           tmp_path / "worker.log", "--metrics-port", str(port))
    producer = PacedProducer(bootstrap, names)
    half = len(events) // 2
    producer.produce(events[:BACKLOG])  # see BACKLOG
    producer.flush()
    with worker:
        wait_working(data_dir, app_id)
        producer.produce(events[BACKLOG:half])
        producer.flush()
        kill_broker(own_broker)                       # mid-stream: the worker is busy
        outage = threading.Thread(target=producer.produce, args=(events[half:half + 500],))
        outage.start()                                # the services keep producing into it
        time.sleep(8)
        own_broker.start()                            # the same data, 8 s later
        outage.join()
        producer.produce(events[half + 500:])
        producer.flush()
        offline, expected = delivered_reference(path, events, producer,
                                                reference=(offline, expected))
        wait_settled(bootstrap, names, offline, expected)
        assert worker.alive(), "the worker rode out the restart"
        assert metric(port, "rollguard_checkpoint_age_seconds") < 10
        checked = health(data_dir, app_id)
        assert checked.returncode == 0 and checked.stdout.startswith("healthy"), checked.stdout
        assert worker.stop() == 0, worker.log_text()[-3000:]

    log = worker.log_text()
    assert "could not be read" in log, "the outage was noticed"
    assert "read again" in log, "and its end"
    live = latest_json(bootstrap, names.stats)
    for name in offline:  # every outcome counted exactly once
        assert_statistics_equal(live[name]["statistics"], offline[name])
    # every decision, the late hold included, published once and equal to replay's
    assert_same_control(control_events(bootstrap, names), expected)
    stopped = health(data_dir, app_id)
    assert stopped.returncode == 1 and "not running" in stopped.stdout


@dataclass
class Scenario:
    """Two experiments' traffic on three partitions, what replay makes of it, and a worker
    (not started) to run on it."""

    names: TopicNames
    path: Path                 # the experiments file
    events: list[dict]
    expected: list[dict]       # replay's control events
    offline: dict              # replay's statistics per experiment
    app_id: str
    data_dir: Path
    worker: WorkerProcess

    @classmethod
    def on(cls, bootstrap: str, names: TopicNames, tmp_path: Path) -> Scenario:
        path = tmp_path / "experiments.yaml"
        path.write_text(EXPERIMENTS)
        events = traffic(1350)
        replay, expected = replay_of(load_experiments(path), events)
        offline = {name: ev.snapshot()["statistics"] for name, ev in replay.evaluators.items()}
        create_contract_topics(bootstrap, names, partitions=3)
        app_id, data_dir = f"app-{uuid.uuid4().hex[:6]}", tmp_path / "data"
        worker = WorkerProcess(bootstrap, path, names.prefix, app_id, data_dir,
                               tmp_path / "worker.log")
        return cls(names, path, events, expected, offline, app_id, data_dir, worker)


def test_a_topic_whose_writes_are_held_up_is_waited_for(kafka_bootstrap, topic_prefix,
                                                        tmp_path):
    """A broker failover holds up the writes to the partitions it led for a moment, while the
    same services' writes to the other topics go on. The requests here reach Kafka a second
    behind their predictions and labels (25 s of this stream's event time, far beyond its
    2 s allowed lateness); the requests topic is read to its end at every checkpoint, yet
    the join waits for it: every record keeps its request's segments, as in replay."""
    sc = Scenario.on(kafka_bootstrap, TopicNames(topic_prefix), tmp_path)
    names, events, expected, offline = sc.names, sc.events, sc.expected, sc.offline
    producer = PacedProducer(kafka_bootstrap, names, rate=600.0)
    producer.produce(events[:BACKLOG])  # see BACKLOG
    producer.flush()
    with sc.worker as worker:
        wait_working(sc.data_dir, sc.app_id)
        held_up = PacedProducer(kafka_bootstrap, names, rate=600.0, held_up={"requests": 1.0})
        held_up.produce(events[BACKLOG:])
        held_up.flush()
        offline, expected = delivered_reference(sc.path, events, producer, held_up,
                                                reference=(offline, expected))
        wait_settled(kafka_bootstrap, names, offline, expected)
        assert worker.stop() == 0, worker.log_text()[-3000:]
    live = latest_json(kafka_bootstrap, names.stats)
    for name in offline:  # the segments too: no request was joined late
        assert_statistics_equal(live[name]["statistics"], offline[name])
        assert "duplicate_requests" not in live[name].get("counters", {})
    assert_same_control(control_events(kafka_bootstrap, names), expected)


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("%")]
    return lines[-1] if lines else ""


def test_a_worker_that_cannot_checkpoint_exits_with_one_sentence(own_broker, tmp_path):
    """Broker gone for good: no checkpoint completes, so the worker stops itself (exit 75)
    for its supervisor to restart, instead of staying up doing nothing."""
    bootstrap, names = own_broker.bootstrap, TopicNames(f"t{uuid.uuid4().hex[:8]}.")
    path = tmp_path / "experiments.yaml"
    path.write_text(EXPERIMENTS)
    create_contract_topics(bootstrap, names, partitions=3)
    app_id, data_dir = f"app-{uuid.uuid4().hex[:6]}", tmp_path / "data"
    worker = WorkerProcess(bootstrap, path, names.prefix, app_id, data_dir,
                           tmp_path / "worker.log", "--stall-timeout", "8").start()
    try:
        wait_working(data_dir, app_id)
        PacedProducer(bootstrap, names).produce(traffic(100))
        kill_broker(own_broker)
        began = time.monotonic()
        code = worker.proc.wait(60)
        waited = time.monotonic() - began
    finally:
        if worker.alive():
            worker.kill()
    assert code == 75
    assert 5 <= waited < 30, waited  # the stall timeout counts from the last checkpoint
    line = last_line(worker.log_text())
    assert "made no progress" in line and line.endswith("resumes from its last checkpoint."), line
    assert "Traceback" not in worker.log_text()
    assert health(data_dir, app_id).returncode == 1


def test_a_fenced_worker_exits_with_one_sentence(kafka_bootstrap, topic_prefix, tmp_path):
    """Another owner of a partition's transactional id (a zombie's successor) fences this
    worker: its next checkpoint fails, and it exits at once, before Faust commits offsets."""
    names = TopicNames(topic_prefix)
    path = tmp_path / "experiments.yaml"
    path.write_text(EXPERIMENTS)
    create_contract_topics(kafka_bootstrap, names, partitions=3)
    app_id, data_dir = f"app-{uuid.uuid4().hex[:6]}", tmp_path / "data"
    worker = WorkerProcess(kafka_bootstrap, path, names.prefix, app_id, data_dir,
                           tmp_path / "worker.log").start()
    try:
        wait_working(data_dir, app_id)
        successor = Producer({"bootstrap.servers": kafka_bootstrap,
                              "transactional.id": f"{app_id}-join-0"})
        successor.init_transactions(30)
        PacedProducer(kafka_bootstrap, names).produce(traffic(50))
        code = worker.proc.wait(60)
    finally:
        if worker.alive():
            worker.kill()
    assert code == 75
    assert not (ROOT / f"{app_id}-data").exists(), "Faust's folder is under --data-dir"
    assert (data_dir / app_id / "faust").is_dir()
    line = last_line(worker.log_text())
    assert f"The checkpoint of {app_id}-join-0 failed" in line, line
    assert line.endswith("resumes from its last checkpoint."), line
    assert "Traceback" not in worker.log_text()


# -- a three-broker cluster: RF 3, min.insync.replicas 2 -------------------------------------

class RouterWatch:
    """A Router on the cluster, asked for a route every few ms from another thread, as a
    model service would; records whether it ever failed or fell back to fail-safe."""

    def __init__(self, bootstrap: str, names: TopicNames) -> None:
        from rollguard.serving import Router

        self.router = Router(bootstrap, experiments={"better": "m:1", "equal": "m:1"},
                             topic_prefix=names.prefix).start()
        self.routes = 0
        self.errors: list[str] = []
        self.failed_safe = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._ask, daemon=True)
        self._thread.start()

    def _ask(self) -> None:
        i = 0
        while not self._stop.wait(0.005):
            i += 1
            try:
                for name in ("better", "equal"):
                    self.router.route(name, f"unit-{i % 97}")
                self.routes += 1
            except Exception as exc:  # noqa: BLE001 - the test reports any failure
                self.errors.append(repr(exc))
            self.failed_safe |= self.router.failed_safe

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.router.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from rollguard.kafka.local import LocalCluster, free_port_run

    local = LocalCluster(port=free_port_run(3), nodes=3,
                         data_dir=tmp_path_factory.mktemp("cluster"), home=rollguard_home())
    local.start(progress=lambda line: None)
    try:
        yield local
    finally:
        local.stop()


def group_coordinator(bootstrap: str, group: str) -> int:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    [future] = admin.describe_consumer_groups([group], request_timeout=10).values()
    return future.result().coordinator.id


def run_on_cluster(cluster, tmp_path, disturb) -> tuple[WorkerProcess, RouterWatch]:
    """The broker-restart scenario on the cluster: ``disturb(cluster, app_id)`` runs while the
    second half of the stream is produced; then the worker must settle on replay's figures."""
    bootstrap = cluster.bootstrap
    sc = Scenario.on(bootstrap, TopicNames(f"t{uuid.uuid4().hex[:8]}."), tmp_path)
    names, events, expected, offline = sc.names, sc.events, sc.expected, sc.offline
    app_id, data_dir, worker = sc.app_id, sc.data_dir, sc.worker
    producer = PacedProducer(bootstrap, names, rate=600.0)
    watch = RouterWatch(bootstrap, names)
    half = len(events) // 2
    producer.produce(events[:BACKLOG])
    producer.flush()
    try:
        with worker:
            wait_working(data_dir, app_id)
            producer.produce(events[BACKLOG:half])
            feeding = threading.Thread(target=producer.produce, args=(events[half:],))
            feeding.start()
            disturb(cluster, app_id)
            feeding.join()
            producer.flush()
            offline, expected = delivered_reference(sc.path, events, producer,
                                                    reference=(offline, expected))
            wait_settled(bootstrap, names, offline, expected)
            assert worker.alive(), "the worker went on"
            assert health(data_dir, app_id).returncode == 0
            assert worker.stop() == 0, worker.log_text()[-3000:]
        time.sleep(1.0)  # the Router reads the last decisions
    finally:
        watch.close()
    live = latest_json(bootstrap, names.stats)
    for name in offline:  # every outcome counted exactly once
        assert_statistics_equal(live[name]["statistics"], offline[name])
    assert_same_control(control_events(bootstrap, names), expected)  # each published once
    # the Router kept routing from its last state throughout, and followed every decision
    assert watch.errors == [] and watch.routes > 100 and not watch.failed_safe
    final = {e["experiment"]: e for e in expected}
    for name, event in final.items():
        assert watch.router.state(name).seq == event["seq"]
    return worker, watch


def test_losing_a_broker_of_three_mid_stream_loses_nothing_and_stops_nothing(cluster, tmp_path):
    killed = []

    def kill_the_coordinator(cluster, app_id):
        time.sleep(1.0)
        node = group_coordinator(cluster.bootstrap, app_id)  # the consumer group's, for spite
        cluster.kill(node)
        killed.append(node)

    try:
        run_on_cluster(cluster, tmp_path, kill_the_coordinator)
    finally:
        if killed:
            cluster.restart(killed[0])  # whole again for the next test
    assert killed


def test_a_rolling_restart_of_the_three_brokers_is_survived(cluster, tmp_path):
    run_on_cluster(cluster, tmp_path, lambda cluster, app_id: cluster.rolling_restart())


# -- one worker's partitions lag another's: backpressure, not an unbounded buffer -----------

def board(bootstrap: str, topic: str) -> dict[int, float]:
    """The join partitions' frontiers as the workers published them (agents/skew.py)."""
    import msgspec

    from tests.kafka_helpers import read_topic

    return {int(m.key()): msgspec.msgpack.decode(m.value()) for m in read_topic(bootstrap, topic)}


def test_a_partition_far_ahead_of_a_stalled_one_waits_in_kafka(kafka_bootstrap, topic_prefix,
                                                                tmp_path):
    """Two workers share two partitions with a backlog of 160 minutes of event time; one stops
    (SIGSTOP) early in its catch-up. The other reads on only until its partition is
    ``--max-skew`` of event time ahead of the stalled one, then pauses: the rest waits in
    Kafka, not in the evaluator's memory. Resumed, the decisions and statistics are replay's."""
    names = TopicNames(topic_prefix)
    path = tmp_path / "experiments.yaml"
    path.write_text(EXPERIMENTS)
    # long enough that a, reading a backlog at tens of thousands of events a second, is far
    # from its end when it first learns b's frontier (b's first checkpoint, about a second in)
    events = list(shadow_events("better", Arm("m:1", 0.8), [Arm("m:2", 0.87)], n=96000,
                                seed=31, rate=10.0))
    events += shadow_events("equal", Arm("m:1", 0.8), [Arm("m:4", 0.8)], n=96000, seed=32,
                            rate=10.0)
    events.sort(key=lambda e: e["ts"])
    start, end = events[0]["ts"], events[-1]["ts"]
    replay, expected = replay_of(load_experiments(path), events)
    offline = {name: ev.snapshot()["statistics"] for name, ev in replay.evaluators.items()}
    create_contract_topics(kafka_bootstrap, names, partitions=2)
    app_id = f"app-{uuid.uuid4().hex[:6]}"
    frontiers_topic = f"{names.prefix}{app_id}.frontiers"

    def worker(name: str) -> WorkerProcess:
        return WorkerProcess(kafka_bootstrap, path, names.prefix, app_id, tmp_path / name,
                             tmp_path / f"{name}.log", "--instance-id", f"{app_id}-{name}",
                             "--max-skew", "300", "--session-timeout", "240")

    def signal_worker(w: WorkerProcess, sig: int) -> None:
        os.killpg(w.proc.pid, sig)

    # the whole stream is there before the workers start: no partition is ever idle (read to
    # its end and quiet) before its data arrives, which in compressed event time would let
    # the other's records pass first (docs/processing-guarantee.md, on idle partitions)
    producer = PacedProducer(kafka_bootstrap, names, rate=50000.0)
    producer.produce(events)
    producer.flush()
    a, b = worker("a").start(), worker("b").start()
    try:
        # b stops early in its catch-up: as soon as it owns its partition (the first worker
        # in the group may have read some of it before the partitions were split) and has
        # published its frontier once (a partition that never did holds nobody back)
        owns_one = "owns 1 join and 1 evaluation partitions"
        wait_for(lambda: owns_one in health(tmp_path / "b", app_id).stdout, timeout=90,
                 every=0.05)
        b_partition = int(re.findall(r"join partition (\d+) restored", b.log_text())[-1])
        wait_for(lambda: b_partition in board(kafka_bootstrap, frontiers_topic), timeout=30,
                 every=0.05)
        signal_worker(b, signal.SIGSTOP)
        a_partition = 1 - b_partition
        stalled_at = board(kafka_bootstrap, frontiers_topic)[b_partition]
        time.sleep(4)  # a checkpoints on; paused, it reads no further
        # a's frontier as a's last checkpoint published it (the group's committed offsets
        # trail the reading by up to two checkpoints: they follow committed checkpoints)
        reached = board(kafka_bootstrap, frontiers_topic)[a_partition]
        # a read past b's frontier by the skew (and what it reads in about a checkpoint
        # interval), then stopped far from its end
        assert stalled_at + 300 < reached < end - 2000, \
            (stalled_at - start, reached - start, end - start)
        assert "pause" in a.log_text() and a.alive()

        signal_worker(b, signal.SIGCONT)
        wait_settled(kafka_bootstrap, names, offline, expected)
        assert "resume" in a.log_text()
    finally:
        for w in (a, b):
            if w.alive():
                signal_worker(w, signal.SIGCONT)
                w.stop()
    live = latest_json(kafka_bootstrap, names.stats)
    for name in offline:
        assert_statistics_equal(live[name]["statistics"], offline[name])
    assert_same_control(control_events(kafka_bootstrap, names), expected)
