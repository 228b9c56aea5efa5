"""`rollguard deadletters`: the inputs a real worker could not use, with their reasons, as a
table, and with --follow the new ones as they come; its failures are one sentence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid

import pytest

from rollguard.kafka.admin import create_contract_topics
from rollguard.streams.topics import TopicNames
from tests.kafka_helpers import ROOT, WorkerProcess, produce_events, read_topic, wait_for

EXPERIMENT = """
name: dl
task: binary
mode: shadow
champion: m:1
candidates: [m:2]
primary: {metric: accuracy}
"""

SCORE = json.dumps({"request_id": "r-9", "experiment": "dl", "ts": 1.0, "model": "m",
                    "version": "2", "served": False, "prediction": 1, "score": 1.7}).encode()
SCORE_REASON = "prediction rejected: field 'score' must be a number between 0 and 1, got 1.7."


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "rollguard.cli", "deadletters", *args]


def run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="250")  # a wide table: one line per dead letter
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=env)


@pytest.mark.kafka
@pytest.mark.slow
def test_the_reasons_of_bad_messages_then_new_ones_as_they_come(kafka_bootstrap, topic_prefix,
                                                                tmp_path):
    names = TopicNames(topic_prefix)
    path = tmp_path / "experiment.yaml"
    path.write_text(EXPERIMENT)
    produce_events(kafka_bootstrap, names, [], raw=[("predictions", b"bad-1", b"{not json"),
                                                    ("predictions", b"bad-2", SCORE)])
    broker = ["-b", kafka_bootstrap, "--topic-prefix", topic_prefix]
    with WorkerProcess(kafka_bootstrap, path, topic_prefix, f"app-{uuid.uuid4().hex[:6]}",
                       tmp_path / "data", tmp_path / "worker.log") as worker:
        wait_for(lambda: len(read_topic(kafka_bootstrap, names.deadletter)) >= 2, 60)

        done = run(*broker)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == f"Dead letters in {names.deadletter}: 2"
        [json_row] = [line for line in lines if "bad-1" in line]
        assert "prediction rejected: the value is not valid JSON" in json_row
        assert "predictions[" in json_row and "]@" in json_row
        [score_row] = [line for line in lines if "bad-2" in line]
        assert SCORE_REASON in score_row

        limited = run(*broker, "--last", "1")
        assert limited.stdout.splitlines()[0] == f"Dead letters in {names.deadletter}: the " \
                                                 "latest 1"

        follow = subprocess.Popen(command(*broker, "--follow"), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                  env=dict(os.environ, COLUMNS="250"))
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.extend(iter(follow.stdout.readline, "")),
                                  daemon=True)
        reader.start()
        try:
            wait_for(lambda: any("bad-2" in line for line in seen), 30)  # the table first
            produce_events(kafka_bootstrap, names, [], raw=[
                ("labels", b"bad-3", b'{"request_id": "r-10", "ts": 1.0}')])
            wait_for(lambda: any("bad-3" in line for line in seen), 30)
        finally:
            follow.send_signal(signal.SIGINT)
            code = follow.wait(30)
        [new] = [line for line in seen if "bad-3" in line]
        assert "labels[" in new and "label rejected: field 'label' is missing" in new
        assert code == 0 and "Traceback" not in follow.stderr.read()
        assert worker.alive()


def test_an_unreachable_broker_is_one_sentence():
    done = run("-b", "127.0.0.1:1")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: No Kafka broker answers at 127.0.0.1:1")
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.kafka
def test_a_missing_topic_is_one_sentence_and_no_dead_letters_is_said(kafka_bootstrap,
                                                                     topic_prefix):
    done = run("-b", kafka_bootstrap, "--topic-prefix", topic_prefix)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: Topic {topic_prefix}deadletter does not exist on {kafka_bootstrap}: is the "
        "worker running with this topic prefix (--topic-prefix)?")
    create_contract_topics(kafka_bootstrap, TopicNames(topic_prefix), partitions=2)
    done = run("-b", kafka_bootstrap, "--topic-prefix", topic_prefix)
    assert done.returncode == 0
    assert done.stdout.strip() == f"No dead letters in {topic_prefix}deadletter."
