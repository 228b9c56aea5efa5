"""Webhook notifications from a live worker on a real broker: every decision reaches a hook
that answers at least once, deduplicable by (experiment, seq); hooks that fail, hang or are
down change and delay no control event; a worker SIGKILLed while posting leaves the post to
the worker that starts after it."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import yaml

from rollguard.schemas import load_experiments
from rollguard.streams.topics import TopicNames
from tests.kafka_helpers import WorkerProcess, produce_events, read_topic, wait_for
from tests.test_notify import Hook, closed_port
from tests.test_worker_kafka import EXPERIMENTS, assert_same_control, replay_of, traffic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def experiments_with(tmp_path, hooks: list[dict]):
    """The broker tests' two experiments (one promoted, one rolled back), each with ``hooks``."""
    experiments = yaml.safe_load(EXPERIMENTS)
    for experiment in experiments:
        experiment["notify"] = hooks
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump(experiments, sort_keys=False))
    return path, load_experiments(path)


def control_messages(bootstrap, names):
    return read_topic(bootstrap, names.control)


def decisions_of(expected):
    """(experiment, seq) of every decision a hook with the default actions gets."""
    return {(e["experiment"], e["seq"]) for e in expected if e["action"] != "start"}


def test_each_decision_is_posted_and_failing_hooks_change_and_delay_nothing(
        kafka_bootstrap, topic_prefix, tmp_path):
    names = TopicNames(topic_prefix)
    with Hook() as good, Hook(lambda n: 500) as failing, \
            Hook(lambda n: ("hang", 5.0)) as hanging:
        down = f"http://127.0.0.1:{closed_port()}/hook"
        path, experiments = experiments_with(tmp_path, [
            {"url": good.url("/good")},
            {"url": failing.url("/failing"), "attempts": 3},
            {"url": hanging.url("/hanging"), "timeout": "500ms", "attempts": 2},
            {"url": down, "attempts": 2}])
        events = traffic()
        produce_events(kafka_bootstrap, names, events)
        _, expected = replay_of(experiments, events)
        wanted = decisions_of(expected)
        assert len(wanted) == 2  # a promotion and a rollback

        proc = WorkerProcess(kafka_bootstrap, path, topic_prefix, f"app-{uuid.uuid4().hex[:6]}",
                             tmp_path / "data", tmp_path / "worker.log")
        with proc:
            wait_for(lambda: len(control_messages(kafka_bootstrap, names)) >= len(expected), 90)
            wait_for(lambda: {(b["experiment"], b["seq"]) for b in good.bodies()} >= wanted, 60)
            # three failing hooks give each decision up, with one line each
            wait_for(lambda: proc.log_text().count("gave up posting") >= 3 * len(wanted), 60)
            exit_code = proc.stop()
        log = proc.log_text()
        assert exit_code == 0, log[-3000:]
        assert "Traceback" not in log

        # the control events are those replay gives: the hooks changed nothing
        published = control_messages(kafka_bootstrap, names)
        live = [json.loads(m.value()) for m in published]
        assert_same_control(live, expected)

        # the hook that answers got every decision at least once, as the control event has it
        by_id = {(e["experiment"], e["seq"]): e for e in live}
        for request in good.requests:
            body = json.loads(request["body"])
            event = by_id[body["experiment"], body["seq"]]
            for key in ("action", "ts", "reason", "champion", "traffic", "mode"):
                assert body[key] == event[key]
            assert body["id"] == f"{event['experiment']}/{event['seq']}"
            assert request["headers"]["Idempotency-Key"] == body["id"]
            assert request["headers"]["Content-Type"] == "application/json"
            assert "\n" not in body["text"] and event["action"] in body["text"]
        assert {(b["experiment"], b["seq"]) for b in good.bodies()} == wanted

        # each failing hook was tried its attempts for each decision, then given up in one line
        assert len(failing.requests) == 3 * len(wanted)
        assert len(hanging.requests) == 2 * len(wanted)
        gave_up = [line for line in log.splitlines() if "gave up posting" in line]
        assert len(gave_up) == 3 * len(wanted)
        assert sum(f":{failing.port}/…" in line and "HTTP 500" in line for line in gave_up) == 2
        assert sum("no answer within 0.5 s" in line for line in gave_up) == 2
        assert sum("connection refused" in line for line in gave_up) == 2

        # no decision waited for them: the last one was published while the failing hook was
        # still being tried (3 attempts, 1 s and 2 s apart) for the first decision it got
        last_published = max(m.timestamp()[1] for m in published) / 1000
        assert last_published < failing.requests[2]["at"], (
            "a decision was published only after a failing hook had been given up")


def test_a_decision_published_before_a_sigkill_is_posted_after_the_restart(
        kafka_bootstrap, topic_prefix, tmp_path):
    names = TopicNames(topic_prefix)
    released = threading.Event()
    # until released, the hook never answers in time: the worker is killed while posting
    with Hook(lambda n: 200 if released.is_set() else ("hang", 10.0)) as hook:
        path, experiments = experiments_with(
            tmp_path, [{"url": hook.url(), "timeout": "1s", "attempts": 10}])
        events = traffic()
        produce_events(kafka_bootstrap, names, events)
        _, expected = replay_of(experiments, events)
        wanted = decisions_of(expected)
        app_id = f"app-{uuid.uuid4().hex[:6]}"

        def worker(name: str) -> WorkerProcess:
            return WorkerProcess(kafka_bootstrap, path, topic_prefix, app_id, tmp_path / "data",
                                 tmp_path / f"{name}.log", "--instance-id", f"{app_id}-1")

        first = worker("first").start()
        try:
            wait_for(lambda: len(control_messages(kafka_bootstrap, names)) >= len(expected), 90)
            wait_for(lambda: hook.requests, 60)
        finally:
            first.kill()  # published, being posted, not yet posted
        released.set()
        released_at = time.time()
        with worker("second") as second:
            def posted():
                return {(json.loads(r["body"])["experiment"], json.loads(r["body"])["seq"])
                        for r in list(hook.requests) if r["at"] >= released_at}
            wait_for(lambda: posted() >= wanted, 60)
            assert second.stop() == 0, second.log_text()[-3000:]
        assert posted() == wanted
        # the restart published nothing again: each decision once, as replay has them
        assert_same_control([json.loads(m.value())
                             for m in control_messages(kafka_bootstrap, names)], expected)
