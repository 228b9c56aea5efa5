"""rollguard replay: stdout holds control events only; a bad line goes to stderr and is
skipped; --from-kafka reads a topic range and decides as the file replay does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from confluent_kafka import Producer

from rollguard.kafka.admin import create_contract_topics
from rollguard.streams.topics import TopicNames
from rollguard.synth import Arm, shadow_events

EXPERIMENT = """
name: churn
task: binary
mode: shadow
champion: m:1
candidates: [m:2]
primary: {metric: accuracy, margin: 0.01}
min_samples: 150
allowed_lateness: 2s
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rollguard.cli", "replay", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def files(tmp_path):
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(EXPERIMENT)
    events = list(shadow_events("churn", Arm("m:1", 0.8), [Arm("m:2", 0.9)], n=1200, seed=4))
    path = tmp_path / "events.jsonl"
    lines = [json.dumps(e) for e in events]
    lines.insert(100, "{not json")
    lines.insert(200, json.dumps({**events[5], "score": 7}))  # out of range
    path.write_text("\n".join(lines) + "\n")
    return experiments, path, events


def test_stdout_holds_only_control_events_and_bad_lines_go_to_stderr(files):
    experiments, path, _ = files
    result = run(str(experiments), "--events", str(path))
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["action"] for e in events] == ["start", "promote"]
    assert [e["seq"] for e in events] == [1, 2]
    assert "promoted" in events[1]["reason"] and events[1]["champion"] == "m:2"
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith("line 101: ") and "not valid JSON" in errors[0]
    assert errors[1].startswith("line 201: ") and "score" in errors[1]


def test_a_missing_file_is_one_sentence(files, tmp_path):
    experiments, _, _ = files
    result = run(str(experiments), "--events", str(tmp_path / "nope.jsonl"))
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.kafka
def test_from_kafka_decides_as_the_file_replay(files, kafka_bootstrap, topic_prefix):
    experiments, path, events = files
    names = TopicNames(topic_prefix)
    create_contract_topics(kafka_bootstrap, names, partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random",
                         "enable.idempotence": True})
    for event in events:
        event = dict(event)
        topic = getattr(names, event.pop("topic"))
        producer.produce(topic, key=event["request_id"].encode(), value=json.dumps(event).encode(),
                         timestamp=int(event["ts"] * 1000))
    assert producer.flush(30) == 0
    from_file = run(str(experiments), "--events", str(path)).stdout
    since, until = str(events[0]["ts"] - 1), str(events[-1]["ts"] + 1)
    result = run(str(experiments), "--from-kafka", "-b", kafka_bootstrap, "--topic-prefix",
                 topic_prefix, "--since", since, "--until", until)
    assert result.returncode == 0, result.stderr
    assert [json.loads(x) for x in result.stdout.splitlines()] == \
        [json.loads(x) for x in from_file.splitlines()]


def test_from_kafka_finishes_when_retention_deleted_a_partition(files, kafka_bootstrap,
                                                                topic_prefix):
    """Records that retention (here: DeleteRecords, the same move of the log start) took away
    never make the replay wait for them: with --since or without, it reads what remains."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    experiments, _, events = files
    names = TopicNames(topic_prefix)
    create_contract_topics(kafka_bootstrap, names, partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for event in events:
        event = dict(event)
        producer.produce(getattr(names, event.pop("topic")), key=event["request_id"].encode(),
                         value=json.dumps(event).encode(), timestamp=int(event["ts"] * 1000))
    assert producer.flush(30) == 0
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    gone = TopicPartition(names.labels, 0, -1)  # -1: up to the high watermark
    for future in admin.delete_records([gone]).values():
        future.result(timeout=30)
    since, until = str(events[0]["ts"] - 1), str(events[-1]["ts"] + 1)
    base = [str(experiments), "--from-kafka", "-b", kafka_bootstrap, "--topic-prefix",
            topic_prefix]
    ranged, whole = run(*base, "--since", since, "--until", until), run(*base)
    assert ranged.returncode == 0 and whole.returncode == 0, ranged.stderr + whole.stderr
    assert ranged.stdout == whole.stdout
    assert [json.loads(x)["action"] for x in whole.stdout.splitlines()][:1] == ["start"]
