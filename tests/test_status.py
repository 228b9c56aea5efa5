"""``rollguard status`` reads the worker's stats and control topics on a real broker.

The snapshots and control events are the pure core's own (``rollguard replay`` over synthetic
traffic: the same evaluator the worker runs), published to the topics as the worker publishes
them, so these tests stay fast; tests/test_demo.py reads what a live worker wrote.
"""

from __future__ import annotations

import functools
import io
import json
import threading
import time

import pytest
from confluent_kafka import Producer
from rich.console import Console

from rollguard.kafka.admin import create_contract_topics
from rollguard.replay import Replay
from rollguard.schemas import encode, parse_experiments
from rollguard.status import Follower, StatusError, show_status
from rollguard.streams.topics import TopicNames
from rollguard.synth import Arm, ab_events, shadow_events

pytestmark = [pytest.mark.kafka]

EXPERIMENTS = """
- name: better
  task: binary
  mode: shadow
  champion: m:1
  candidates: [m:2]
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 200
  label_ttl: 1h
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
- name: split
  task: binary
  mode: ab
  champion: m:1
  candidates: [m:2]
  traffic: {"m:1": 0.5, "m:2": 0.5}
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 100000
  label_ttl: 1h
"""


@functools.lru_cache(maxsize=1)
def core_output():
    """Control events and final snapshots of three experiments, from the pure core; a
    prediction of an arm 'better' does not have and one of an unknown experiment become
    dead letters, as in the worker."""
    experiments = parse_experiments(EXPERIMENTS, "experiments.yaml")
    events = list(shadow_events("better", Arm("m:1", 0.8), [Arm("m:2", 0.88)], n=1500, seed=1))
    events += shadow_events("worse", Arm("m:1", 0.8), [Arm("m:3", 0.7)], n=1500, seed=2)
    events += ab_events("split", Arm("m:1", 0.8), [Arm("m:2", 0.8)], n=600, seed=3,
                        shares={"m:1": 0.5, "m:2": 0.5})
    events.sort(key=lambda e: e["ts"])
    ts = events[0]["ts"]
    bad = [{"topic": "predictions", "request_id": "x1", "experiment": "better", "ts": ts,
            "model": "m", "version": "9", "served": False, "prediction": 1},
           {"topic": "predictions", "request_id": "x2", "experiment": "nope", "ts": ts,
            "model": "m", "version": "1", "served": True, "prediction": 1}]
    replay = Replay(experiments)
    control = replay.run_lines(json.dumps(e).encode() for e in bad + events)
    snapshots = {name: ev.snapshot() for name, ev in replay.evaluators.items()}
    return control, snapshots


def publish(bootstrap: str, names: TopicNames, control=(), snapshots=None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for event in control:
        producer.produce(names.control, key=event.experiment.encode(), value=encode(event))
    for name, snapshot in (snapshots or {}).items():
        producer.produce(names.stats, key=name.encode(), value=json.dumps(snapshot).encode())
    assert producer.flush(10) == 0


@pytest.fixture(scope="module")
def published(kafka_bootstrap):
    control, snapshots = core_output()
    names = TopicNames(f"st{time.time_ns()}.")
    create_contract_topics(kafka_bootstrap, names, partitions=1)
    publish(kafka_bootstrap, names, control, snapshots)
    return kafka_bootstrap, names, control, snapshots


def status_text(bootstrap: str, prefix: str, experiment=None, **kwargs) -> str:
    out = io.StringIO()
    show_status(experiment, bootstrap_servers=bootstrap, topic_prefix=prefix,
                console=Console(file=out, width=130, color_system=None), **kwargs)
    return out.getvalue()


def test_status_shows_every_experiment_from_the_topics(published):
    bootstrap, names, control, snapshots = published
    finals = {e.experiment: e for e in control if e.action in ("promote", "rollback", "hold")}
    assert finals["better"].action == "promote" and finals["worse"].action == "rollback"
    assert "split" not in finals

    text = status_text(bootstrap, names.prefix)
    assert text.index("better  ·") < text.index("split  ·") < text.index("worse  ·")  # by name
    better, rest = text.split("split  ·", 1)
    split, worse = rest.split("worse  ·", 1)
    split, worse = "split  ·" + split, "worse  ·" + worse
    # mode, arms and who serves now
    assert "better  ·  shadow  ·  champion m:2  ·  PROMOTE" in better
    assert "worse  ·  shadow  ·  champion m:1  ·  ROLLBACK" in worse
    assert "split  ·  ab  ·  champion m:1" in split
    for row in ("m:1   replaced", "m:2   promoted"):
        assert row in better
    assert "m:3   rolled back" in worse
    # traffic: after a promote the candidate serves all; a running A/B test its shares
    assert "100%" in better and "50%" in split
    # labelled n and accuracy per arm, from the snapshot's statistics
    arms = snapshots["better"]["statistics"]["arms"]
    assert f"{arms['m:2']['outcomes']['count']:,}" in better
    assert f"{arms['m:2']['outcomes']['accuracy']:.3f}" in better
    # Δ with its confidence-sequence bounds, as the decision's evidence says
    delta = finals["better"].evidence["candidates"]["m:2"]["delta"]
    assert f"{delta['estimate']:+.3f} [{delta['lower']:+.3f}, {delta['upper']:+.3f}]" in better
    assert "95% CS" in better
    # guardrails with their status
    assert "latency_p99_ms <= 1.5 x champion pass" in better
    assert "error_rate <= 0.05 pass" in better
    assert "guardrails none" in worse
    # label delay and dead letters (one of 'better', one no experiment owns)
    assert "label delay p50" in better and "labels" in better
    assert "dead letters 1 (+1 unreadable, not tied to an experiment)" in better
    # the decision and its reason
    assert "decision  promote " + finals["better"].reason[:40] in better.replace("\n", " ")
    assert "decision  rollback" in worse
    assert "last event" in split and "decision" not in split


def test_status_of_one_experiment(published):
    bootstrap, names, _, _ = published
    text = status_text(bootstrap, names.prefix, "worse")
    assert "worse  ·  shadow" in text and "better" not in text and "split" not in text
    with pytest.raises(StatusError, match=r"No experiment 'nope' under the topic prefix .*: the "
                       r"worker has published better, split, worse\."):
        status_text(bootstrap, names.prefix, "nope")


def test_an_older_or_repeated_control_event_changes_nothing(published):
    bootstrap, names, control, snapshots = published
    names2 = TopicNames(names.prefix + "again.")
    create_contract_topics(bootstrap, names2, partitions=1)
    start = [e for e in control if e.experiment == "better" and e.action == "start"]
    publish(bootstrap, names2, [e for e in control if e.experiment == "better"] + start)
    follower = Follower(bootstrap, names2.prefix)
    try:
        follower.read_to_end()
        view = follower.views["better"]
        assert view.control["action"] == "promote"
        assert [e["seq"] for e in view.history] == [1, 2]
        assert view.snapshot is None
    finally:
        follower.close()
    text = status_text(bootstrap, names2.prefix)  # control events alone are enough to show
    assert "PROMOTE" in text and "no labels yet" in text


def test_clear_errors(kafka_bootstrap):
    with pytest.raises(StatusError) as nothing:
        status_text(kafka_bootstrap, f"none{time.time_ns()}.")
    message = str(nothing.value)
    assert message.startswith("Nothing has been published under the topic prefix 'none")
    assert "--topic-prefix" in message and message.endswith(".") and "\n" not in message

    names = TopicNames(f"empty{time.time_ns()}.")
    create_contract_topics(kafka_bootstrap, names, partitions=1)
    with pytest.raises(StatusError, match="has published no statistics or control event"):
        status_text(kafka_bootstrap, names.prefix)

    began = time.monotonic()
    with pytest.raises(StatusError) as unreachable:
        status_text("127.0.0.1:1", "rollguard.", timeout=2.0)
    assert time.monotonic() - began < 10
    assert str(unreachable.value).startswith("Kafka at 127.0.0.1:1 did not answer")
    assert "rollguard kafka status" in str(unreachable.value)


def test_watch_follows_new_events(kafka_bootstrap):
    control, snapshots = core_output()
    names = TopicNames(f"watch{time.time_ns()}.")
    create_contract_topics(kafka_bootstrap, names, partitions=1)
    first = [e for e in control if e.experiment == "worse" and e.action == "start"]
    publish(kafka_bootstrap, names, first)
    later = threading.Timer(1.0, publish, (kafka_bootstrap, names,
                                           [e for e in control if e.experiment == "worse"],
                                           {"worse": snapshots["worse"]}))
    later.start()
    began = time.monotonic()
    text = status_text(kafka_bootstrap, names.prefix, watch=True, interval=0.3, duration=3.0)
    later.join()
    assert 2.5 < time.monotonic() - began < 10
    assert "ROLLBACK" in text and "m:3   rolled back" in text


def test_an_experiment_without_records_says_no_traffic_yet_not_srm_pass():
    from rollguard.status import ExperimentView, _facts

    snapshot = {"statistics": {"records": 0},
                "decision": {"evidence": {"srm": {"status": "pass"}}}}
    text = _facts(ExperimentView("e", snapshot=snapshot), compact=False).plain
    assert "no traffic yet" in text and "SRM" not in text
    snapshot["statistics"]["records"] = 120
    assert "SRM pass" in _facts(ExperimentView("e", snapshot=snapshot), compact=False).plain
