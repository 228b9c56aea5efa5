"""History points (docs/history.md): the live worker's path and ``rollguard replay`` make the
same points from the same events, each decision is in one, and the cadence stays bounded."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import zlib

import msgspec
import pytest

from rollguard.decisions.evaluator import ExperimentEvaluator
from rollguard.decisions.partition import EvalPartition
from rollguard.decisions.history import is_point, schedule_points
from rollguard.replay import Replay
from rollguard.schemas import encode, parse_experiments
from rollguard.streams.join import INPUT_KINDS
from rollguard.streams.outbox import Outbox
from rollguard.streams.partition import JoinPartition
from rollguard.synth import Arm, ab_events, shadow_events

EXPERIMENTS = """
- name: better
  task: binary
  mode: shadow
  champion: m:1
  candidates: [m:2]
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 150
  allowed_lateness: 2s
  guardrails:
    - {metric: error_rate, max: 0.05}
    - {metric: precision, segment: {tier: vip}, min: 0.5}
- name: worse
  task: binary
  mode: shadow
  champion: m:1
  candidates: [m:3]
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 150
  allowed_lateness: 2s
- name: split
  task: binary
  mode: ab
  champion: m:1
  candidates: [m:2]
  traffic: {"m:1": 0.5, "m:2": 0.5}
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 150
  allowed_lateness: 2s
  guardrails: [{metric: srm}]
  bake: {duration: 30s, min_samples: 100}
"""
PARTITIONS = 3


def traffic() -> list[dict]:
    events = list(shadow_events("better", Arm("m:1", 0.8), [Arm("m:2", 0.88)], n=900, seed=1))
    events += shadow_events("worse", Arm("m:1", 0.8), [Arm("m:3", 0.7)], n=900, seed=2)
    events += ab_events("split", Arm("m:1", 0.8), [Arm("m:2", 0.9)], n=1800, seed=3,
                        shares={"m:1": 0.5, "m:2": 0.5})
    return sorted(events, key=lambda e: e["ts"])


@pytest.fixture(scope="module")
def experiments():
    return parse_experiments(EXPERIMENTS, "experiments.yaml")


@pytest.fixture(scope="module")
def replayed(experiments):
    replay = Replay(experiments, history=True)
    control = replay.run_lines(json.dumps(e).encode() for e in traffic())
    return control, replay.take_history()


def as_json(points: list[dict]) -> list[dict]:
    """Each point as the worker publishes it (msgspec JSON) and a reader decodes it."""
    return [json.loads(msgspec.json.encode(p)) for p in points]


def live_path(experiments, events, seed: int, *, after_checkpoint=None
              ) -> tuple[list, list[dict]]:
    """What the worker does, without Kafka: the events spread over join partitions by
    request_id, each partition's three topics read in a random interleaving, settled at
    random checkpoints, with releases between them; each join partition's messages for the outcomes topic as its
    :class:`Outbox` writes them (batches split at 40 records, frontier messages) and read by
    the :class:`EvalPartition` they land on; after each checkpoint every evaluation
    partition saved and restored (as a restarted worker restores it) and its points taken,
    as EvalTask.stage publishes them. ``after_checkpoint(told, evals)``: called after each
    checkpoint with each join partition's last settled frontier and the evaluation
    partitions."""
    rng = random.Random(seed)
    queues = {(p, kind): [] for p in range(PARTITIONS) for kind in INPUT_KINDS}
    for event in events:
        event = dict(event)
        kind = event.pop("topic")
        p = zlib.crc32(event["request_id"].encode()) % PARTITIONS
        queues[p, kind].append(json.dumps(event).encode())
    offsets = {key: 0 for key in queues}
    parts = [JoinPartition(p, experiments) for p in range(PARTITIONS)]
    outboxes = [Outbox(p, PARTITIONS, size=40) for p in range(PARTITIONS)]
    evals = [EvalPartition(q, experiments, sources=PARTITIONS) for q in range(PARTITIONS)]
    eval_offsets = [0] * PARTITIONS
    told: dict[int, float] = {}
    control, points = [], []

    def checkpoint(final: bool = False) -> None:
        for p, part in enumerate(parts):
            backlogged = {kind for kind in INPUT_KINDS
                          if offsets[p, kind] < len(queues[p, kind])}
            quiet = part.events_since_settle == 0
            settled = part.settle(backlogged=backlogged, quiet=quiet or final)
            if settled:
                told[p] = settled[-1][1].frontier
            for message in outboxes[p].messages(settled):
                q = message.partition
                if q is None:  # by its key, as Kafka's partitioner would
                    q = zlib.crc32(message.key) % PARTITIONS
                control.extend(evals[q].on_batch(eval_offsets[q], message.key, message.value))
                eval_offsets[q] += 1
        for q, part in enumerate(evals):
            points.extend(point for _, point in part.take_history())
            restored = EvalPartition(q, experiments, sources=PARTITIONS)
            for change in part.changes():
                restored.restore(change.key, change.value)
            evals[q] = restored
        if after_checkpoint is not None:
            after_checkpoint(told, evals)

    unread = [key for key in queues if queues[key]]
    since = 0
    while unread:
        key = rng.choice(unread)
        for _ in range(rng.randint(1, 60)):
            if offsets[key] >= len(queues[key]):
                break
            p, kind = key
            parts[p].on_message(kind, offsets[key], None, queues[key][offsets[key]])
            offsets[key] += 1
            since += 1
        if rng.random() < 0.3:  # a release between checkpoints (JoinTask, RELEASE_EVERY)
            parts[key[0]].release_ready()
        unread = [k for k in queues if offsets[k] < len(queues[k])]
        if since >= rng.randint(200, 1500):
            checkpoint()
            since = 0
    checkpoint()
    checkpoint(final=True)  # every partition read to its end and quiet: idle
    return control, points


def by_experiment(control: list) -> list[bytes]:
    """Control events in (experiment, seq) order: each experiment's are ordered on its key;
    two experiments' events have no order between them (they may be on two partitions)."""
    return [encode(e) for e in sorted(control, key=lambda e: (e.experiment, e.seq))]


def test_the_worker_path_makes_the_same_points_as_replay(experiments, replayed):
    expected_control, expected_points = replayed
    control, points = live_path(experiments, traffic(), seed=7)
    assert by_experiment(control) == by_experiment(expected_control)
    key = lambda p: (p["experiment"], p["point"])  # noqa: E731
    assert sorted(as_json(points), key=key) == sorted(as_json(expected_points), key=key)
    assert {p["experiment"] for p in points} == {"better", "worse", "split"}


def test_another_interleaving_makes_the_same_points(experiments, replayed):
    _, expected_points = replayed
    _, points = live_path(experiments, traffic(), seed=8)
    key = lambda p: (p["experiment"], p["point"])  # noqa: E731
    assert sorted(as_json(points), key=key) == sorted(as_json(expected_points), key=key)


def test_every_decision_is_in_one_point_with_its_reason(replayed):
    control, points = replayed
    decided = {(e.experiment, e.seq): e for e in control}
    in_points = {(p["experiment"], ev["seq"]): ev for p in points for ev in p.get("events", [])}
    assert in_points.keys() == decided.keys()
    for key, event in decided.items():
        assert in_points[key]["reason"] == event.reason
        assert in_points[key]["action"] == event.action
    actions = {name: [e.action for e in control if e.experiment == name]
               for name in ("better", "worse", "split")}
    assert actions["better"] == ["start", "promote"]
    assert actions["worse"] == ["start", "rollback"]
    assert actions["split"] == ["start", "promote", "complete"]


def test_points_are_ordered_and_carry_the_policy_evidence(replayed):
    control, points = replayed
    for name in ("better", "worse", "split"):
        mine = [p for p in points if p["experiment"] == name]
        assert [p["point"] for p in mine] == list(range(1, len(mine) + 1))
        assert all(a["ts"] <= b["ts"] for a, b in zip(mine, mine[1:]))
        assert all(is_point(p) for p in as_json(mine))
        assert 20 < len(mine) < 400
        final = [e for e in control if e.experiment == name][-1]
        last = mine[-1]
        assert last["state"] == final.action and last["ts"] == final.ts
        # the figures are the evidence of the final control event, copied
        for arm, track in final.evidence["candidates"].items():
            assert last["candidates"][arm]["n"] == track["n"]
            assert last["candidates"][arm]["delta"] == {
                k: track["delta"][k] for k in ("estimate", "lower", "upper")}
            assert [g["status"] for g in last["candidates"][arm]["guardrails"]] == \
                [g["status"] for g in track["guardrails"]]
        assert last["traffic"] == final.traffic and last["margin"] == 0.01
    split = [p for p in points if p["experiment"] == "split"]
    assert {p["state"] for p in split} == {"running", "baking", "complete"}
    baking = [p for p in split if p["state"] == "baking"]
    assert all(p["bake"]["former"] == "m:1" and p["bake"]["champion"] == "m:2" for p in baking)
    assert all(p["srm"]["status"] in ("pass", "undecided", "fail") for p in split)
    guard = [p for p in points if p["experiment"] == "better"][-1]["candidates"]["m:2"]
    error_rate = [g for g in guard["guardrails"] if g["guardrail"].startswith("error_rate")][0]
    assert error_rate["limit"] == {"max": 0.05} and error_rate["upper"] is not None


def test_the_cadence_stays_bounded_for_a_month():
    assert schedule_points(10_000_000, 30 * 86400) < 2000
    assert schedule_points(100_000, 86400) < 1200
    assert schedule_points(1000, 60) > 50  # a short experiment still gets a readable curve


def test_replay_writes_the_points_with_history(tmp_path, experiments, replayed):
    _, expected_points = replayed
    (tmp_path / "experiments.yaml").write_text(EXPERIMENTS)
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in traffic()))
    out = tmp_path / "history.jsonl"
    result = subprocess.run([sys.executable, "-m", "rollguard.cli", "replay",
                             str(tmp_path / "experiments.yaml"), "--events", str(events),
                             "--history", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == as_json(expected_points)
    bad = subprocess.run([sys.executable, "-m", "rollguard.cli", "replay",
                          str(tmp_path / "experiments.yaml"), "--events", str(events),
                          "--history", str(tmp_path / "missing-dir" / "h.jsonl")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "cannot be written" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_persons_pause_and_resume_are_points_as_live_so_in_replay():
    """Manual control events (rollguard.decisions.manual) come between two records: each
    makes a decision point, where the worker applied it and where replay schedules it."""
    from rollguard.schemas import ControlRequest
    from rollguard.streams.records import Batch
    from rollguard.synth import records

    [exp] = parse_experiments("{name: e, task: binary, mode: shadow, champion: m:1, "
                              "candidates: [m:2], primary: {metric: accuracy}, "
                              "min_samples: 100000}", "x.yaml")
    recs = list(records(Arm("m:1", 0.8), [Arm("m:2", 0.8)], n=600, seed=5, experiment="e"))
    ask = lambda action: ControlRequest(experiment="e", action=action, reason="freeze",  # noqa: E731
                                        by="ana", request_id=f"q-{action}", requested_at=1.0)
    live = ExperimentEvaluator(exp, 1)
    live.add_batch(Batch(0, recs[:400], recs[399].ts))
    at_pause = live.policy.records
    pause = live.apply_request(ask("pause"))
    live.add_batch(Batch(0, recs[400:800], recs[799].ts))
    at_resume = live.policy.records
    live.apply_request(ask("resume"))
    live.add_batch(Batch(0, recs[800:], float("inf")))
    points = live.take_history()
    marks = [(p["state"], [e["action"] for e in p.get("events", [])]) for p in points
             if p.get("events")]
    assert marks == [("running", ["start"]), ("paused", ["pause"]), ("running", ["resume"])]
    paused = [p for p in points if p["state"] == "paused"]
    assert paused[0]["ts"] == pause.ts and paused[0]["paused"]["by"] == "ana"
    assert len(paused) > 3, "the schedule goes on while paused: statistics keep counting"

    replayed = ExperimentEvaluator(exp, 1)
    replayed.schedule(at_pause, ask("pause"))
    replayed.schedule(at_resume, ask("resume"))
    replayed.add_batch(Batch(0, recs, float("inf")))
    replayed.flush()
    assert as_json(replayed.take_history()) == as_json(points)
