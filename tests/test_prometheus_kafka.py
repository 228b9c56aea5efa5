"""The worker's metrics as a real Prometheus scrapes them, on a real broker.

A worker with ``--metrics-port`` runs a shadow experiment whose candidate is clearly worse,
with one unreadable label among the events; Prometheus (Debian's ``prometheus``) scrapes it
every second with the shipped alert rules loaded. Through Prometheus's HTTP API the test
checks what users graph and alert on: every message read is counted, the rollback is counted
and its alert fires, the bad message is a dead letter, the lag drains to 0, and the Δ
bounds, guardrail status and labelled outcomes are the ones the stats snapshot publishes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest

from rollguard.kafka.admin import create_contract_topics
from rollguard.kafka.local import free_port
from rollguard.replay import Replay
from rollguard.schemas import load_experiments
from rollguard.schemas.jsonschema import json_schemas
from rollguard.streams.topics import TopicNames
from rollguard.synth import Arm, shadow_events
from tests.kafka_helpers import (ROOT, WorkerProcess, latest_json, produce_events, read_topic,
                                 wait_for)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RULES = ROOT / "deploy" / "prometheus" / "rollguard-alerts.yml"
GUARDRAIL = "error_rate <= 0.05"
#: the actions of a control event, as its JSON Schema gives them
CONTROL_ACTIONS = json_schemas()["control"]["properties"]["action"]["enum"]

EXPERIMENTS = """
- name: worse
  task: binary
  mode: shadow
  champion: m:1
  candidates: [m:3]
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 200
  label_ttl: 1h
  allowed_lateness: 2s
  guardrails:
    - {metric: error_rate, max: 0.05}
"""


class Prometheus:
    """``prometheus`` in a subprocess, scraping one target every second."""

    def __init__(self, tmp_path: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: run scripts/system-packages.sh (it "
                        "installs Debian's prometheus package) and run the test again.")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "rollguard",
                                "static_configs": [{"targets": [target]}]}],
        }))
        self.log = tmp_path / "prometheus.log"
        self.cmd = [binary, f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}"]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Prometheus":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.ready, timeout=30, every=0.2)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def ready(self) -> bool:
        assert self.proc.poll() is None, "prometheus exited:\n" + self.log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's series: (labels, value)."""
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]

    def value(self, expr: str) -> float | None:
        """The value of a query with one series (None when it has none)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr}: {result}"
        return result[0][1] if result else None


def test_prometheus_scrapes_what_the_worker_did(kafka_bootstrap, topic_prefix, tmp_path):
    names = TopicNames(topic_prefix)
    path = tmp_path / "experiments.yaml"
    path.write_text(EXPERIMENTS)
    events = list(shadow_events("worse", Arm("m:1", 0.8), [Arm("m:3", 0.72)], n=1200, seed=12))
    bad = [("labels", b"not-json", b"{this is not json")]
    replay = Replay(load_experiments(path))
    expected = [e.action for e in replay.run_lines(json.dumps(e).encode() for e in events)]
    assert expected == ["start", "rollback"]
    produced = Counter(getattr(names, e["topic"]) for e in events) + Counter({names.labels: 1})
    create_contract_topics(kafka_bootstrap, names, partitions=3)

    port, app_id = free_port(), f"app-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(kafka_bootstrap, path, topic_prefix, app_id, tmp_path / "data",
                           tmp_path / "worker.log", "--metrics-port", str(port),
                           "--metrics-host", "127.0.0.1")
    rollback = 'rollguard_decisions_total{experiment="worse",action="rollback"}'
    with worker, Prometheus(tmp_path, f"127.0.0.1:{port}") as prom:
        # scraped before any decision: the rollback counter exists at 0, so increase() sees it
        wait_for(lambda: prom.value(rollback) == 0, timeout=60)
        assert prom.value('up{job="rollguard"}') == 1
        produce_events(kafka_bootstrap, names, events, raw=bad)

        offline = {arm: figures["outcomes"]["count"] for arm, figures
                   in replay.evaluators["worse"].snapshot()["statistics"]["arms"].items()}

        def settled():
            """Every message read and joined: Prometheus and the snapshot count replay's."""
            snapshot = latest_json(kafka_bootstrap, names.stats).get("worse")
            if snapshot is None or snapshot["decision"]["final"] is None or offline != {
                    arm: figures["outcomes"]["count"]
                    for arm, figures in snapshot["statistics"]["arms"].items()}:
                return None
            outcomes = {labels["arm"]: v for labels, v
                        in prom.query("rollguard_labelled_outcomes_total")}
            done = outcomes == offline \
                and prom.value("sum(rollguard_input_messages_total)") == sum(produced.values()) \
                and prom.value("sum(rollguard_consumer_lag_messages)") == 0
            return snapshot if done else None
        snapshot = wait_for(settled, timeout=60)
        assert worker.alive(), worker.log_text()[-3000:]

        # every message read, per input topic (the bad label too)
        read = {labels["topic"]: v for labels, v in prom.query("rollguard_input_messages_total")}
        assert read == {topic: float(n) for topic, n in produced.items()}
        # the decisions, as the control topic has them
        decided = {labels["action"]: v for labels, v
                   in prom.query('rollguard_decisions_total{experiment="worse"}')}
        published = Counter(json.loads(m.value())["action"]
                            for m in read_topic(kafka_bootstrap, names.control))
        assert published == Counter(expected)
        assert decided == {action: float(published[action]) for action in CONTROL_ACTIONS}
        # the unreadable label is one dead letter of the labels topic, by its problem
        assert prom.query("rollguard_dead_letters_total") == [
            ({"__name__": "rollguard_dead_letters_total", "instance": f"127.0.0.1:{port}",
              "job": "rollguard", "topic": names.labels, "reason": "not_json"}, 1.0)]
        # every owned input partition's lag is known, and drained
        assert len(prom.query("rollguard_consumer_lag_messages == 0")) == 9
        assert len(prom.query("rollguard_join_pending_entries")) == 3

        # Δ and its bounds, as the snapshot publishes them: the graph of bound against -margin
        published = snapshot["decision"]["evidence"]["candidates"]["m:3"]["delta"]
        who = '{experiment="worse",candidate="m:3",window="analysis"}'
        estimate = prom.value(f"rollguard_primary_delta_estimate{who}")
        lower = prom.value(f"rollguard_primary_delta_lower_bound{who}")
        upper = prom.value(f"rollguard_primary_delta_upper_bound{who}")
        assert (estimate, lower, upper) == (published["estimate"], published["lower"],
                                            published["upper"])
        assert lower <= estimate <= upper
        assert prom.value(f"rollguard_primary_margin{who}") == 0.01
        assert prom.query("rollguard_primary_delta_upper_bound + rollguard_primary_margin < 0"), \
            "rolled back: the upper bound is below -margin"
        # the guardrail's status: one series at 1, the snapshot's
        [guard] = snapshot["decision"]["evidence"]["candidates"]["m:3"]["guardrails"]
        statuses = {labels["status"]: v for labels, v in prom.query(
            f'rollguard_guardrail_status{{experiment="worse",guardrail="{GUARDRAIL}"}}')}
        assert statuses == {s: float(s == guard["status"]) for s in ("pass", "fail", "undecided")}
        # the join's counters, as the snapshot has them
        expired = {labels["reason"]: v for labels, v in prom.query("rollguard_join_expired_total")}
        counters = snapshot["counters"]
        assert expired == {"unlabelled": counters.get("unlabelled_expired", 0),
                           "incomplete": counters.get("incomplete_expired", 0)}
        assert prom.value("rollguard_checkpoint_age_seconds") < 10

        # the shipped rule fires on the rollback
        wait_for(lambda: prom.query(
            'ALERTS{alertname="RollguardRollback",alertstate="firing",experiment="worse"}'),
            timeout=15)
        assert not prom.query('ALERTS{alertstate="firing",alertname!="RollguardRollback"}'), \
            "no other alert fires on a healthy worker"
