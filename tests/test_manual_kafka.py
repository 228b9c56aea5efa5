"""Steering by hand on a real broker: ``rollguard pause | resume | rollback`` reach the worker
that evaluates the experiment, which publishes the control events with who and why; a
request that cannot apply is refused in one sentence and changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from rollguard.streams.topics import TopicNames
from rollguard.synth import Arm, shadow_events
from tests.kafka_helpers import WorkerProcess, produce_events, read_topic, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

EXPERIMENT = """
name: steered
task: binary
mode: shadow
champion: m:1
candidates: [m:2]
primary: {metric: accuracy, margin: 0.01}
min_samples: 100000
allowed_lateness: 1s
"""


def rollguard(*args: str, bootstrap: str, prefix: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rollguard.cli", *args, "-b", bootstrap,
                           "--topic-prefix", prefix], capture_output=True, text=True,
                          timeout=120)


def control(bootstrap: str, names: TopicNames) -> list[dict]:
    return [json.loads(m.value()) for m in read_topic(bootstrap, names.control)]


def test_pause_resume_and_rollback_by_hand(kafka_bootstrap, topic_prefix, tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(EXPERIMENT)
    names = TopicNames(topic_prefix)
    events = sorted(shadow_events("steered", Arm("m:1", 0.8), [Arm("m:2", 0.8)], n=600,
                                  seed=3), key=lambda e: e["ts"])
    produce_events(kafka_bootstrap, names, events[:len(events) // 2], partitions=2)
    run = lambda *args: rollguard(*args, bootstrap=kafka_bootstrap, prefix=topic_prefix)  # noqa: E731
    with WorkerProcess(kafka_bootstrap, path, topic_prefix, f"app-{uuid.uuid4().hex[:6]}",
                       tmp_path / "data", tmp_path / "worker.log"):
        wait_for(lambda: any(e["action"] == "start" for e in control(kafka_bootstrap, names)),
                 timeout=90)

        paused = run("pause", "steered", "--reason", "release freeze", "--by", "ana")
        assert paused.returncode == 0, paused.stderr
        assert "steered seq 2 pause: steered is paused by ana: release freeze;" in paused.stdout

        again = run("pause", "steered", "--reason", "twice", "--by", "bo")
        assert again.returncode == 1
        assert again.stderr.count("\n") == 1 and "already paused (by ana: release freeze)" \
            in again.stderr, again.stderr

        unknown = run("rollback", "nope", "--reason", "typo")
        assert unknown.returncode == 1 and "No experiment 'nope' has started" in unknown.stderr
        assert "Traceback" not in unknown.stderr + again.stderr

        produce_events(kafka_bootstrap, names, events[len(events) // 2:], partitions=2)
        resumed = run("resume", "steered", "--reason", "freeze over", "--by", "ana")
        assert resumed.returncode == 0 and "seq 3 resume" in resumed.stdout, resumed.stderr
        rolled = run("rollback", "steered", "--reason", "customer complaints", "--by", "cy")
        assert rolled.returncode == 0 and "seq 4 rollback" in rolled.stdout, rolled.stderr

    published = control(kafka_bootstrap, names)
    assert [(e["seq"], e["action"]) for e in published] == \
        [(1, "start"), (2, "pause"), (3, "resume"), (4, "rollback")]
    final = published[-1]
    assert final["traffic"] == {"m:1": 1.0} and final["shadow"] == []
    assert final["evidence"]["manual"]["by"] == "cy"
    assert final["evidence"]["manual"]["reason"] == "customer complaints"
    # the refused request went to the dead-letter topic with its reason
    dead = [m for m in read_topic(kafka_bootstrap, names.deadletter)]
    reasons = [dict(m.headers())["rollguard.error"].decode() for m in dead]
    assert reasons == ["control request refused: experiment 'steered' is already paused "
                       "(by ana: release freeze): resume it first."]
