"""The live worker on a real broker: same decisions as replay, bad input dead-lettered,
no loss and no double count across SIGKILLs, several workers sharing the partitions."""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid

import pytest
from confluent_kafka import TopicPartition

from rollguard.agents.runtime import EndOffsets
from rollguard.replay import Replay
from rollguard.schemas import load_experiments
from rollguard.streams.topics import TopicNames
from rollguard.synth import Arm, shadow_events
from tests.kafka_helpers import WorkerProcess, latest_json, produce_events, read_topic, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

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
  bake: {duration: 120s, min_samples: 300}  # promoted early in the stream, complete late
  guardrails:
    - {metric: latency_p99_ms, max_ratio: 1.5}
    - {metric: error_rate, max: 0.05}
- name: worse
  task: binary
  mode: shadow
  champion: m:1
  candidates: [m:3]
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 200
  label_ttl: 1h
  allowed_lateness: 2s
"""


def traffic(n: int = 1500) -> list[dict]:
    events = list(shadow_events("better", Arm("m:1", 0.8), [Arm("m:2", 0.87)], n=n, seed=11))
    events += shadow_events("worse", Arm("m:1", 0.8), [Arm("m:3", 0.72)], n=n, seed=12)
    return sorted(events, key=lambda e: e["ts"])


def replay_of(experiments, events):
    replay = Replay(experiments)
    control = replay.run_lines(json.dumps(e).encode() for e in events)
    return replay, [json.loads(json.dumps(_plain(e))) for e in control]


def _plain(event):
    from rollguard.schemas import encode

    return json.loads(encode(event))


def group_offsets(bootstrap, group, tps):
    """The consumer group's committed offset of each topic partition (-1: none)."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in tps])
    [future] = admin.list_consumer_group_offsets([request], request_timeout=10).values()
    return {(tp.topic, tp.partition): tp.offset for tp in future.result(10).topic_partitions}


def control_events(bootstrap, names):
    return [json.loads(m.value()) for m in read_topic(bootstrap, names.control)]


def actions_of(bootstrap, names, experiment: str) -> list[str]:
    return [e["action"] for e in sorted(control_events(bootstrap, names), key=lambda e: e["seq"])
            if e["experiment"] == experiment]


def assert_same_control(live: list[dict], expected: list[dict]) -> None:
    """The same control events, compared whole; on a difference, say which first."""
    key = lambda e: (e["experiment"], e["seq"])  # noqa: E731
    live, expected = sorted(live, key=key), sorted(expected, key=key)
    brief = lambda events: [(e["experiment"], e["seq"], e["action"], e["ts"]) for e in events]  # noqa: E731
    assert brief(live) == brief(expected)
    for a, b in zip(live, expected):
        for field in b:
            assert a[field] == b[field], f"{key(b)} {field}: {a[field]!r} != {b[field]!r}"


def assert_statistics_equal(live: dict, offline: dict, path: str = "$") -> None:
    """Counts equal exactly; floats equal up to summation order (rel 1e-9)."""
    if isinstance(offline, dict):
        assert isinstance(live, dict) and live.keys() == offline.keys(), path
        for key in offline:
            assert_statistics_equal(live[key], offline[key], f"{path}.{key}")
    elif isinstance(offline, list):
        assert isinstance(live, list) and len(live) == len(offline), path
        for i, (a, b) in enumerate(zip(live, offline)):
            assert_statistics_equal(a, b, f"{path}[{i}]")
    elif isinstance(offline, float) and isinstance(live, float):
        assert math.isclose(live, offline, rel_tol=1e-9, abs_tol=1e-12), f"{path}: {live} != {offline}"
    else:
        assert live == offline, f"{path}: {live!r} != {offline!r}"


@pytest.fixture
def setup(kafka_bootstrap, topic_prefix, tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(EXPERIMENTS)
    names = TopicNames(topic_prefix)

    def worker(app_id: str, name: str = "worker") -> WorkerProcess:
        return WorkerProcess(kafka_bootstrap, path, topic_prefix, app_id, tmp_path / f"data-{name}",
                             tmp_path / f"{name}.log", "--instance-id", f"{app_id}-{name}")
    return kafka_bootstrap, names, load_experiments(path), worker


def test_live_decisions_equal_replay_and_bad_input_is_dead_lettered(setup):
    bootstrap, names, experiments, worker = setup
    events = traffic()
    hostile = [
        ("predictions", b"bad-utf8", b"\xff\xfe\x00 not text"),
        ("predictions", b"not-json", b"{this is not json"),
        ("labels", b"missing", b'{"ts": 5.0, "label": 1}'),
        ("predictions", b"ill-typed", json.dumps({
            "request_id": "x1", "experiment": "better", "ts": "yesterday", "model": "m",
            "version": "1", "served": True, "prediction": 1}).encode()),
        ("predictions", b"nan", b'{"request_id": "x2", "experiment": "better", "ts": 1.0, '
                                b'"model": "m", "version": "2", "served": false, '
                                b'"prediction": 1, "score": NaN}'),
        ("requests", b"unknown", json.dumps({"request_id": "x3", "experiment": "nope",
                                             "ts": 1.0}).encode()),
        ("labels", b"huge", b'{"request_id": "x4", "ts": 1.0, "label": "' + b"y" * 1_000_000 + b'"}'),
        ("labels", b"tombstone", None),
    ]
    produce_events(bootstrap, names, events, raw=hostile)
    _, expected = replay_of(experiments, events)
    assert [e["action"] for e in expected if e["action"] != "start"] == ["rollback", "promote"] or \
        sorted(e["action"] for e in expected if e["action"] != "start") == ["promote", "rollback"]

    app_id = f"app-{uuid.uuid4().hex[:6]}"
    with worker(app_id) as proc:
        wait_for(lambda: len(control_events(bootstrap, names)) >= len(expected), timeout=120)
        dead = read_topic(bootstrap, names.deadletter)
        wait_for(lambda: len(read_topic(bootstrap, names.deadletter)) >= len(hostile), timeout=30)
        assert proc.alive(), "bad input never stops the worker"
        # the consumer group's offsets follow the checkpoints to the end of the input
        inputs = [(topic, p) for topic in names.inputs() for p in range(3)]  # produce_events
        ends = EndOffsets(bootstrap)(inputs)  # the worker's own ListOffsets reader
        wait_for(lambda: group_offsets(bootstrap, app_id, inputs) == ends, timeout=30)
        exit_code = proc.stop()
    assert exit_code == 0, proc.log_text()[-3000:]
    assert "Traceback" not in proc.log_text()

    # the same events through the worker and through replay give the same control events
    assert_same_control(control_events(bootstrap, names), expected)

    dead = read_topic(bootstrap, names.deadletter)
    by_key = {m.key(): m for m in dead}
    assert len(dead) == len(hostile)
    for kind, key, value in hostile:
        msg = by_key[key]
        headers = dict(msg.headers())
        assert msg.value() == (value or b""), "original bytes, unchanged"
        assert headers["rollguard.topic"].decode() == getattr(names, kind)
        error = headers["rollguard.error"].decode()
        assert error.endswith(".") and "\n" not in error, error
        assert int(headers["rollguard.offset"]) >= 0
    assert "NaN" in dict(by_key[b"nan"].headers())["rollguard.error"].decode()
    assert "too large" in dict(by_key[b"huge"].headers())["rollguard.error"].decode()

    counters = latest_json(bootstrap, names.stats)["better"]["counters"]
    # unreadable input cannot be tied to an experiment: every experiment reports it as "all:"
    assert counters["all:deadletter:predictions:nan"] == 1
    assert counters["all:deadletter:predictions:not_utf8"] == 1
    assert counters["all:deadletter:requests:unknown_experiment"] == 1
    assert counters["all:deadletter:labels:too_large"] == 1


def test_no_loss_no_double_count_across_sigkills(setup):
    bootstrap, names, experiments, worker = setup
    events = traffic(2500)
    replay, expected_control = replay_of(experiments, events)
    offline = {name: ev.snapshot()["statistics"] for name, ev in replay.evaluators.items()}

    chunks = [events[i::8] for i in range(8)]  # interleaved slices keep each topic in order? no:
    chunks = [events[i * len(events) // 8:(i + 1) * len(events) // 8] for i in range(8)]
    produced, killed_once = threading.Event(), threading.Event()
    bake_ends = next(e["ts"] for e in expected_control if e["action"] == "complete")

    def produce_slowly():
        for chunk in chunks:
            if chunk[-1]["ts"] >= bake_ends:  # the rest completes the bake: kill first
                killed_once.wait(90)
            produce_events(bootstrap, names, chunk)
            time.sleep(1.0)
        produced.set()

    app_id = f"app-{uuid.uuid4().hex[:6]}"
    feeder = threading.Thread(target=produce_slowly, daemon=True)
    feeder.start()
    assert [e["action"] for e in expected_control if e["experiment"] == "better"] == \
        ["start", "promote", "complete"]
    kills, killed_baking = 0, False
    proc = worker(app_id, "run").start()
    try:
        for pause in (None, 5.5, 7.0):  # kill at different points of the stream
            if pause is None:  # the first: while "better" bakes (its end not produced yet)
                wait_for(lambda: "promote" in actions_of(bootstrap, names, "better"), 90)
                killed_baking = "complete" not in actions_of(bootstrap, names, "better")
            else:
                time.sleep(pause)
            proc.kill()
            kills += 1
            killed_once.set()
            proc = worker(app_id, "run").start()
        produced.wait(60)
        wait_for(lambda: len(control_events(bootstrap, names)) >= len(expected_control), 120)

        def settled():
            snap = latest_json(bootstrap, names.stats)
            return all(snap.get(name, {}).get("statistics", {}).get("records")
                       == offline[name]["records"] for name in offline)
        wait_for(settled, timeout=60)
    finally:
        proc.stop()
    assert kills == 3 and killed_baking, "a worker was killed during the bake window"
    restored = [int(n) for n in re.findall(r"restored: (\d+) pending in memory", proc.log_text())]
    assert any(restored), "some restarts found joins in flight in the restored state"
    live = latest_json(bootstrap, names.stats)
    for name in offline:
        assert_statistics_equal(live[name]["statistics"], offline[name])
    # each decision published once, as replay makes it
    assert_same_control(control_events(bootstrap, names), expected_control)


def test_two_workers_share_the_partitions(setup):
    """A second worker joins between two halves of the stream: the partitions are split
    (the first worker hands its pending joins over through the changelog) and the
    decisions are still exactly replay's."""
    bootstrap, names, experiments, worker = setup
    events = traffic(3000)
    half = len(events) // 2
    produce_events(bootstrap, names, events[:half], partitions=4)
    _, expected = replay_of(experiments, events)
    app_id = f"app-{uuid.uuid4().hex[:6]}"
    owned = lambda w: set(re.findall(r"join partition (\d+) restored", w.log_text()))  # noqa: E731
    pending = lambda w: [int(n) for n in re.findall(r"restored: (\d+) pending", w.log_text())]  # noqa: E731
    with worker(app_id, "a") as a:
        wait_for(lambda: owned(a), timeout=90)
        with worker(app_id, "b") as b:
            wait_for(lambda: owned(b), timeout=90)
            produce_events(bootstrap, names, events[half:], partitions=4)
            wait_for(lambda: len(control_events(bootstrap, names)) >= len(expected), timeout=150)
            assert a.alive() and b.alive()
    assert owned(a) | owned(b) == {"0", "1", "2", "3"}
    assert any(pending(b)), "the second worker took over joins in flight"
    assert_same_control(control_events(bootstrap, names), expected)
