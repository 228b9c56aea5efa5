"""``rollguard demo --service-only``: the demo's model service alone, as docker-compose.yml runs
it beside workers in their own containers. It fails in one sentence without a broker, and on a
real broker it answers applications, reports them, and stops cleanly on SIGTERM."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from rich.console import Console

from rollguard.demo.serve import run_service
from rollguard.kafka.admin import create_contract_topics
from rollguard.streams.topics import TopicNames
from tests.kafka_helpers import ROOT, read_topic


def test_it_needs_a_broker_that_runs_already(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    out = io.StringIO()
    code = run_service(fast=True, console=Console(file=out, width=200, color_system=None))
    assert code == 1
    assert out.getvalue().strip() == ("error: --service-only needs a Kafka that runs already: "
                                      "pass --bootstrap-servers (or set KAFKA_BOOTSTRAP_SERVERS).")


@pytest.mark.kafka
def test_it_serves_until_sigterm_with_fresh_request_ids(kafka_bootstrap, topic_prefix, tmp_path):
    names = TopicNames(topic_prefix)
    create_contract_topics(kafka_bootstrap, names, partitions=3)
    log = tmp_path / "service.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", ROLLGUARD_TOPIC_PREFIX=topic_prefix)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rollguard.cli", "demo", "--service-only", "--fast",
             "--rate", "100", "-b", kafka_bootstrap, "--work-dir", str(tmp_path / "data")],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while "applications answered" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.5)
        time.sleep(2)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    text = log.read_text(errors="replace")
    assert code == 0, text
    assert f"topic prefix {topic_prefix}" in text, "ROLLGUARD_TOPIC_PREFIX is the prefix"
    assert "Stopped: " in text and "Traceback" not in text
    run_id = text.split("  ·  run ")[1].split()[0]
    requests = [json.loads(m.value()) for m in read_topic(kafka_bootstrap, names.requests)]
    assert requests, "it reported requests"
    assert all(r["request_id"].endswith(f"-{run_id}") for r in requests), \
        "a restarted service never repeats a request id"
    registry = json.loads((tmp_path / "data" / "aliases.json").read_text())
    assert registry["champion"] == "loan:1"
