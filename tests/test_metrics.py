"""The worker's Prometheus metrics (rollguard/agents/metrics.py) without a broker: what the
runtime's objects hold is what a scrape shows, and docs/metrics.md documents every series
with its type and labels. tests/test_prometheus_kafka.py scrapes a real worker."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rollguard.agents.liveness import Liveness, Progress
from rollguard.agents.metrics import WorkerMetrics, experiment_families, experiment_figures, render
from rollguard.agents.runtime import Runtime, WorkerConfig
from rollguard.agents.transport import FetchedBatch
from rollguard.decisions.evaluator import ExperimentEvaluator
from rollguard.replay import Replay
from rollguard.schemas import parse_experiments
from rollguard.schemas.events import decode_replay_line
from rollguard.schemas.jsonschema import json_schemas
from rollguard.streams.join import INPUT_KINDS
from rollguard.streams.partition import JoinPartition
from rollguard.streams.topics import TopicNames
from rollguard.synth import Arm, ab_events, shadow_events

ROOT = Path(__file__).resolve().parents[1]
#: the actions of a control event, as its JSON Schema gives them
CONTROL_ACTIONS = set(json_schemas()["control"]["properties"]["action"]["enum"])
METRICS_MD = ROOT / "docs" / "metrics.md"
NAMES = TopicNames("t.")

SHADOW = """
- name: e
  task: binary
  mode: shadow
  champion: m:1
  candidates: [m:2]
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 100
  guardrails: [{metric: error_rate, max: 0.05}]
"""


def series(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of an exposition by its series name: (labels, value)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name].append((sample.labels, sample.value))
    return out


def replayed(yaml: str, events) -> Replay:
    replay = Replay(parse_experiments(yaml, "test.yaml"))
    replay.run_lines(json.dumps(e).encode() for e in events)
    return replay


class JoinWithoutKafka:
    """A join task's pure core without its Kafka checkpointer: staging settles (as the live
    task does), committing has nothing to do."""

    def __init__(self, partition: int, experiments) -> None:
        self.partition = partition
        self.core = JoinPartition(partition, experiments, topics={
            kind: getattr(NAMES, kind) for kind in INPUT_KINDS})
        self.progress = Progress()
        self.unchecked = 0
        self.frontier = -math.inf

    def on_messages(self, kind, offsets, keys, values) -> None:
        self.core.on_messages(kind, offsets, keys, values)

    def stage(self, backlogged) -> None:
        self.staged_dead = self.core.dead_letter_counts()
        self.core.settle(backlogged=backlogged)
        self.core.take_dead_letters()

    def finish(self) -> None:
        pass

    def committed(self) -> None:
        pass

    def covers(self) -> dict:
        return {}

    staged_covers: dict = {}

    def close(self) -> None:
        pass


def evaluating(evaluators: dict) -> SimpleNamespace:
    """An evaluation task's evaluators without its Kafka checkpointer."""
    return SimpleNamespace(evaluators=evaluators, stage=lambda force_snapshot: None,
                           finish=lambda: None, committed=lambda: None, covers=dict,
                           staged_covers={}, partition=-1, close=lambda: None,
                           stalled_for=lambda published: 0.0)  # test_stall.py checks that


def prediction(rid: str, version: str, served: bool, experiment: str = "e") -> bytes:
    return json.dumps({"request_id": rid, "experiment": experiment, "ts": 5.0, "model": "m",
                       "version": version, "served": served, "prediction": 1}).encode()


@pytest.fixture
def worker():
    """A real Runtime and its metrics, with join partitions 0 and 1 but no broker."""
    experiments = parse_experiments(SHADOW, "test.yaml")
    ends: dict = {}
    runtime = Runtime(WorkerConfig("unused:9092", experiments, names=NAMES),
                      end_offsets=lambda tps: {tp: ends[tp] for tp in tps if tp in ends},
                      liveness=Liveness())
    metrics = WorkerMetrics(runtime.liveness, runtime)
    runtime.on_checkpoint = metrics.observe_checkpoint
    for p in (0, 1):
        runtime.join_tasks[p] = JoinWithoutKafka(p, experiments)
    yield runtime, metrics, ends
    runtime.close()


def scrape(metrics: WorkerMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    return series(generate_latest(metrics.registry).decode())


def message(kind: str, partition: int, offset: int, value: bytes):
    """A one-message turn of an input partition, as the worker's transport hands it over."""
    return SimpleNamespace(topic=getattr(NAMES, kind), partition=partition, offset=offset,
                           key=None, value=FetchedBatch([offset], [b"k"], [value]))


def test_messages_dead_letters_pending_and_lag_are_the_runtimes(worker):
    runtime, metrics, ends = worker
    inputs = [message("predictions", 0, 0, prediction("r1", "1", True)),
              message("predictions", 0, 1, prediction("r1", "2", False)),
              message("predictions", 0, 2, prediction("r2", "9", False)),   # unknown arm
              message("labels", 1, 0, b"{not json"),
              message("requests", 1, 0, json.dumps({"request_id": "r3", "experiment": "e",
                                                     "ts": 4.0}).encode())]
    for msg in inputs:
        runtime.on_input(msg)
    ends.update({(NAMES.predictions, 0): 10,   # 7 unread
                 (NAMES.requests, 0): 0, (NAMES.labels, 0): 0,
                 (NAMES.requests, 1): 1,
                 (NAMES.labels, 1): 0})        # older than what was read: at least 0
    runtime.checkpoint()
    runtime.on_input(message("labels", 1, 1, b"\xff"))  # after the checkpoint: not counted yet
    got = scrape(metrics)

    read = {s["topic"]: v for s, v in got["rollguard_input_messages_total"]}
    assert read == {NAMES.requests: 1, NAMES.predictions: 3, NAMES.labels: 2}
    dead = {(s["topic"], s["reason"]): v for s, v in got["rollguard_dead_letters_total"]}
    assert dead == {(NAMES.predictions, "unknown_arm"): 1, (NAMES.labels, "not_json"): 1}
    lag = {(s["topic"], s["partition"]): v for s, v in got["rollguard_consumer_lag_messages"]}
    assert lag == {(NAMES.predictions, "0"): 7, (NAMES.requests, "0"): 0,
                   (NAMES.labels, "0"): 0, (NAMES.requests, "1"): 0, (NAMES.labels, "1"): 0}, \
        "partition 1's predictions end is unknown: no series"
    pending = {(s["partition"], s["store"]): v for s, v in got["rollguard_join_pending_entries"]}
    assert pending == {("0", "memory"): len(runtime.join_tasks[0].core.joiner.memory),
                       ("1", "memory"): len(runtime.join_tasks[1].core.joiner.memory)}
    assert pending[("0", "memory")] == 1 and pending[("1", "memory")] == 1
    decisions = {(s["experiment"], s["action"]): v for s, v in got["rollguard_decisions_total"]}
    assert decisions == {("e", action): 0 for action in CONTROL_ACTIONS}, \
        "every action's series exists at 0 before the first decision"

    runtime.checkpoint()
    dead = {(s["topic"], s["reason"]): v
            for s, v in scrape(metrics)["rollguard_dead_letters_total"]}
    assert dead[(NAMES.labels, "not_utf8")] == 1, "counted at the checkpoint after it"


def test_an_experiment_is_shown_by_the_worker_that_evaluates_it(worker):
    runtime, metrics, _ = worker
    replay = replayed(SHADOW, shadow_events("e", Arm("m:1", 0.7), [Arm("m:2", 0.9)], n=400,
                                            seed=1))
    evaluator = replay.evaluators["e"]
    runtime.eval_tasks[3] = evaluating({"e": evaluator})
    assert "rollguard_primary_delta_lower_bound" not in scrape(metrics), \
        "figures are taken at a checkpoint, not from the scrape's thread"
    runtime.checkpoint()
    got = scrape(metrics)
    delta = evaluator.policy.evidence()["candidates"]["m:2"]["delta"]
    who = {"experiment": "e", "candidate": "m:2", "window": "analysis"}
    assert got["rollguard_primary_delta_estimate"] == [(who, delta["estimate"])]
    assert got["rollguard_primary_delta_lower_bound"] == [(who, delta["lower"])]
    assert got["rollguard_primary_delta_upper_bound"] == [(who, delta["upper"])]
    assert got["rollguard_primary_margin"] == [(who, 0.01)]
    outcomes = {s["arm"]: v for s, v in got["rollguard_labelled_outcomes_total"]}
    arms = evaluator.snapshot()["statistics"]["arms"]
    assert outcomes == {arm: arms[arm]["outcomes"]["count"] for arm in ("m:1", "m:2")}
    assert got["rollguard_experiment_info"] == [(
        {"experiment": "e", "mode": "shadow", "metric": "accuracy", "champion": "m:2"}, 1)]

    del runtime.eval_tasks[3]  # the partition was revoked: another worker evaluates "e" now
    got = scrape(metrics)
    assert "rollguard_primary_delta_lower_bound" not in got
    assert "rollguard_experiment_info" not in got


def test_a_bake_window_has_its_own_series():
    yaml = SHADOW.replace("min_samples: 100\n", "min_samples: 100\n  bake: {duration: 3600s, "
                          "min_samples: 100}\n")
    replay = replayed(yaml, shadow_events("e", Arm("m:1", 0.7), [Arm("m:2", 0.9)], n=600,
                                          seed=1))
    evidence = replay.evaluators["e"].policy.evidence()
    assert "bake" in evidence, "promoted and baking"
    got = series(render(experiment_families([experiment_figures(replay.evaluators["e"])])))
    windows = {s["window"]: v for s, v in got["rollguard_primary_delta_lower_bound"]}
    assert windows == {"analysis": evidence["candidates"]["m:2"]["delta"]["lower"],
                       "bake": evidence["bake"]["delta"]["lower"]}
    assert {s["candidate"] for s, _ in got["rollguard_primary_delta_lower_bound"]} == {"m:2"}
    baking = {(s["window"], s["status"]): v for s, v in got["rollguard_guardrail_status"]}
    assert baking[("bake", "pass")] + baking[("bake", "fail")] + baking[("bake", "undecided")] == 1
    assert got["rollguard_experiment_info"][0][0]["champion"] == "m:2"


def test_the_sample_ratio_guardrail_is_the_whole_experiments():
    yaml = SHADOW.replace("mode: shadow", "mode: ab").replace(
        "guardrails: [{metric: error_rate, max: 0.05}]", "guardrails: [{metric: srm}]")
    replay = replayed(yaml, ab_events("e", Arm("m:1", 0.7), [Arm("m:2", 0.9)], n=300, seed=1,
                                      shares={"m:1": 0.5, "m:2": 0.5}))
    status = replay.evaluators["e"].policy.evidence()["srm"]["status"]
    got = series(render(experiment_families([experiment_figures(replay.evaluators["e"])])))
    assert {(s["candidate"], s["guardrail"], s["status"]): v
            for s, v in got["rollguard_guardrail_status"]} == {
        ("all", "srm", s): float(s == status) for s in ("pass", "fail", "undecided")}


@pytest.mark.parametrize("metric, task, bounds", [("accuracy", "binary", (-1.0, 1.0)),
                                                  ("abs_error", "regression", None)])
def test_bounds_are_absent_until_the_sequence_gives_them(metric, task, bounds):
    [exp] = parse_experiments(f"{{name: e, task: {task}, mode: shadow, champion: m:1, "
                              f"candidates: [m:2], primary: {{metric: {metric}}}}}", "t.yaml")
    got = series(render(experiment_families([experiment_figures(ExperimentEvaluator(exp))])))
    assert "rollguard_primary_delta_estimate" not in got, "no outcome yet"
    if bounds is None:  # an unbounded metric's asymptotic sequence: none in its burn-in
        assert "rollguard_primary_delta_lower_bound" not in got
    else:               # a bounded metric's: the whole range
        assert (got["rollguard_primary_delta_lower_bound"][0][1],
                got["rollguard_primary_delta_upper_bound"][0][1]) == bounds
    assert got["rollguard_primary_margin"][0][1] == 0.0
    assert got["rollguard_candidate_active"][0][1] == 1


def test_the_costly_figures_are_taken_again_only_after_a_record():
    replay = Replay(parse_experiments(SHADOW, "t.yaml"))
    events = list(shadow_events("e", Arm("m:1", 0.8), [Arm("m:2", 0.8)], n=150, seed=3))

    def feed(first: int, last: int) -> None:
        for offset in range(first, last):
            kind, event = decode_replay_line(json.dumps(events[offset]).encode())
            replay.parts[0].on_event(kind, offset, event)
        replay.finish()

    feed(0, 300)
    ev = replay.evaluators["e"]
    first = experiment_figures(ev)
    assert experiment_figures(ev, first).deltas is first.deltas, "no record since: reused"
    feed(300, len(events))
    assert ev.policy.final is None, "equal arms, few outcomes: undecided, still counting"
    again = experiment_figures(ev, first)
    assert again.stamp != first.stamp and again.deltas != first.deltas


# -- docs/metrics.md -------------------------------------------------------------------------
def documented() -> dict[str, tuple[str, set[str]]]:
    """Series name -> (type, labels) from the tables of docs/metrics.md."""
    from tests.test_docs import _ticked, tables

    rows: dict[str, tuple[str, set[str]]] = {}
    for _, header, table in tables(METRICS_MD.read_text(encoding="utf-8")):
        if header[:3] != ["series", "type", "labels"]:
            continue
        for row in table:
            [name] = _ticked(row[0])
            labels = set(_ticked(row[2]))
            if row[2].startswith("those of the bounds"):
                labels |= rows["rollguard_primary_delta_lower_bound"][1]
            rows[name] = (row[1], labels)
    return rows


def exposed(metrics: WorkerMetrics) -> dict[str, tuple[str, set[str]]]:
    """Series name (as queried) -> (type, labels) of what ``metrics`` serves."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        name = family.name + ("_total" if family.type == "counter" else "")
        if name.endswith("_created"):
            continue  # prometheus_client's creation time of the histogram
        labels = {label for sample in family.samples for label in sample.labels} - {"le"}
        out[name] = (family.type, labels)
    return out


def test_every_series_is_documented_with_its_type_and_labels(worker):
    runtime, metrics, ends = worker
    ends[(NAMES.requests, 0)] = 0
    replay = replayed(SHADOW.replace("mode: shadow", "mode: ab").replace(
        "guardrails: [{metric: error_rate, max: 0.05}]", "guardrails: [{metric: srm}]"),
        ab_events("e", Arm("m:1", 0.7), [Arm("m:2", 0.9)], n=200, seed=1,
                  shares={"m:1": 0.5, "m:2": 0.5}))
    runtime.eval_tasks[0] = evaluating(replay.evaluators)
    runtime.dead_letters["deadletter:labels:not_json"] += 1
    runtime.checkpoint()
    served, docs = exposed(metrics), documented()
    assert set(served) == set(docs), (
        f"served but not in docs/metrics.md: {sorted(set(served) - set(docs))}; documented "
        f"but not served: {sorted(set(docs) - set(served))}")
    for name, (kind, labels) in served.items():
        assert docs[name] == (kind, labels), f"{name}: docs/metrics.md says {docs[name]}, " \
                                             f"the worker serves {(kind, labels)}"
        assert name.startswith("rollguard_")
        assert name.endswith("_total") == (kind == "counter"), f"{name}: _total is for counters"


def test_metrics_doc_lines_are_short():
    for number, line in enumerate(METRICS_MD.read_text(encoding="utf-8").splitlines(), 1):
        assert len(line) <= 105, f"docs/metrics.md:{number} is {len(line)} characters long"


def test_every_alert_rule_is_documented():
    rules = (ROOT / "deploy" / "prometheus" / "rollguard-alerts.yml").read_text()
    alerts = set(re.findall(r"^\s+- alert: (\w+)$", rules, re.M))
    assert alerts, "the rules file has alerts"
    from tests.test_docs import _ticked, tables

    [rows] = [rows for _, header, rows in tables(METRICS_MD.read_text(encoding="utf-8"))
              if header[0] == "alert"]
    assert {_ticked(row[0])[0] for row in rows} == alerts
