"""Steering by hand, without Kafka: pause freezes decisions (not statistics), manual promote
and rollback end the experiment with who and why, refusals change nothing, and a replay
given the same requests publishes the same events."""

from __future__ import annotations

import json

import msgspec
import pytest

from rollguard.decisions.evaluator import ExperimentEvaluator
from rollguard.decisions.manual import Refused, apply_request
from rollguard.decisions.policy import Policy
from rollguard.replay import Replay
from rollguard.schemas import ControlRequest, encode, parse_experiments
from rollguard.streams.records import OUTCOME, ArmView, Batch, JoinedRecord
from rollguard.synth import Arm, shadow_events

SHADOW = """
name: e
task: binary
mode: shadow
champion: m:1
candidates: [m:2]
primary: {metric: accuracy, margin: 0.0}
min_samples: 100
"""


def experiment(text: str = SHADOW):
    [exp] = parse_experiments(text, "test.yaml")
    return exp


def outcome(i: int, candidate_right: bool = True) -> JoinedRecord:
    """Request i: the champion errs on one in ten, the candidate as told."""
    views = (ArmView("m:1", True, i % 10 != 0, None, 1.0, None, float(i)),
             ArmView("m:2", False, candidate_right, None, 1.0, None, float(i)))
    return JoinedRecord(OUTCOME, float(i), f"r{i}", "e", None, None, views, True, float(i))


def ask(action: str, candidate: str | None = None, by: str = "ana") -> ControlRequest:
    return ControlRequest(experiment="e", action=action, reason="release freeze.", by=by,
                          request_id=f"q-{action}-{by}", requested_at=1.7e9, candidate=candidate)


def feed(policy: Policy, start: int, stop: int) -> list:
    return [e for i in range(start, stop) for e in policy.on_record(outcome(i))]


def test_pause_freezes_decisions_not_statistics_and_resume_decides_again():
    unpaused = Policy(experiment())
    promoted_at = next(e.ts for e in feed(unpaused, 0, 4000) if e.action == "promote")

    policy = Policy(experiment())
    feed(policy, 0, 10)
    paused = apply_request(policy, ask("pause"))
    assert (paused.action, paused.seq, paused.ts) == ("pause", 2, 9.0)
    assert paused.traffic == {"m:1": 1.0} and paused.shadow == ["m:2"], "routing unchanged"
    assert paused.evidence["manual"]["by"] == "ana" and paused.evidence["manual"]["at_record"] == 10
    assert feed(policy, 10, int(promoted_at) + 500) == [], "no automatic decision while paused"
    track = policy.tracks["m:2"]
    assert track.counts("m:1")["m:2"] == int(promoted_at) + 500, "statistics keep counting"
    assert policy.status()["paused"]["reason"] == "release freeze."

    resumed = apply_request(policy, ask("resume"))
    assert resumed.action == "resume" and "resumed by ana: release freeze;" in resumed.reason
    [promote] = feed(policy, int(promoted_at) + 500, int(promoted_at) + 501)
    assert promote.action == "promote" and promote.seq == 4


def test_a_manual_promote_or_rollback_ends_the_experiment_with_who_and_why():
    policy = Policy(experiment())
    feed(policy, 0, 50)
    event = apply_request(policy, ask("promote", by="bo"))
    assert event.action == "promote" and event.champion == "m:2"
    assert event.traffic == {"m:2": 1.0} and event.shadow == []
    assert event.reason == "m:2 is promoted by hand, by bo: release freeze."
    assert event.evidence["manual"]["request_id"] == "q-promote-bo"
    assert feed(policy, 50, 3000) == [], "final: nothing follows"

    policy = Policy(experiment())
    feed(policy, 0, 50)
    apply_request(policy, ask("pause"))
    event = apply_request(policy, ask("rollback"))  # applies while paused too
    assert event.action == "rollback" and event.traffic == {"m:1": 1.0}
    assert event.reason == "All candidates are rolled back by hand, by ana: release freeze."


def test_during_a_bake_window_promote_completes_it_and_rollback_returns_to_the_former():
    baking = SHADOW + "bake: {duration: 1h, min_samples: 10000}\n"
    for action, expected, champion in (("promote", "complete", "m:2"),
                                       ("rollback", "rollback", "m:1")):
        policy = Policy(experiment(baking))
        events = feed(policy, 0, 4000)
        assert [e.action for e in events][-1] == "promote" and policy.bake is not None
        with pytest.raises(Refused, match="is baking m:2, not m:9"):
            apply_request(policy, ask("promote", candidate="m:9"))
        event = apply_request(policy, ask(action))
        assert (event.action, event.champion, event.traffic) == (expected, champion,
                                                                 {champion: 1.0})


@pytest.mark.parametrize("setup, request_, sentence", [
    ("fresh", ask("pause"), "has had no traffic yet"),
    ("over", ask("pause"), "is already over (rollback, seq 2)"),
    ("running", ask("resume"), "is not paused"),
    ("running", ask("promote", candidate="m:7"), "'m:7' is not a candidate under test"),
])
def test_a_request_that_cannot_apply_says_why_in_one_sentence_and_changes_nothing(
        setup, request_, sentence):
    policy = Policy(experiment())
    if setup != "fresh":
        feed(policy, 0, 20)
    if setup == "over":
        apply_request(policy, ask("rollback"))
    before = json.dumps(policy.to_dict(), sort_keys=True, default=str)
    with pytest.raises(Refused) as refused:
        apply_request(policy, request_)
    message = str(refused.value)
    assert sentence in message and message.endswith(".") and "\n" not in message
    assert json.dumps(policy.to_dict(), sort_keys=True, default=str) == before


def test_several_candidates_need_one_named():
    policy = Policy(experiment(SHADOW.replace("[m:2]", "[m:2, m:3]")))
    views = tuple(ArmView(a, a == "m:1", True, None, 1.0, None, 0.0) for a in ("m:1", "m:2", "m:3"))
    policy.on_record(JoinedRecord(OUTCOME, 0.0, "r0", "e", None, None, views, True, 0.0))
    with pytest.raises(Refused, match=r"has 2 candidates under test \(m:2, m:3\): say which"):
        apply_request(policy, ask("promote"))
    assert apply_request(policy, ask("promote", candidate="m:3")).champion == "m:3"


def test_the_state_survives_a_checkpoint_while_paused():
    evaluator = ExperimentEvaluator(experiment())
    evaluator.add_batch(Batch(0, [outcome(i) for i in range(30)], 100.0))
    evaluator.apply_request(ask("pause"))
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(evaluator.to_dict()))  # as stored
    restored = ExperimentEvaluator.from_dict(experiment(), 1, state)
    assert restored.policy.paused["by"] == "ana" and restored.policy.last_ts == 29.0
    assert restored.add_batch(Batch(0, [outcome(i) for i in range(30, 3000)], 1e9)) == []


def test_replay_given_the_published_requests_publishes_the_same_events():
    """Live: the requests apply when the evaluator reads them, between two batches. Replay
    reads the events the worker published and applies each at the same record."""
    exp = experiment(SHADOW.replace("margin: 0.0", "margin: 0.01"))
    events = sorted(shadow_events("e", Arm("m:1", 0.8), [Arm("m:2", 0.86)], n=3000, seed=5),
                    key=lambda e: e["ts"])
    lines = [json.dumps(e).encode() for e in events]

    # "live": the same join and evaluator, with the requests applied between settles
    live = Replay([exp])
    published, asked = [], iter([ask("pause"), ask("resume"), ask("pause", by="cy")])
    part = live.parts[0]
    from rollguard.schemas import decode_replay_line

    for number, line in enumerate(lines):
        kind, event = decode_replay_line(line)
        part.on_event(kind, number, event)
        if number % 400 == 399:
            published += live.settle(0)
            request = next(asked, None)
            if request is not None:
                published.append(live.evaluators["e"].apply_request(request))
    published += live.finish()
    manual = [e for e in published if "manual" in e.evidence]
    assert [e.action for e in manual] == ["pause", "resume", "pause"]

    replay = Replay([exp])
    replay.schedule_requests(encode(e) for e in manual)
    assert [encode(e) for e in replay.run_lines(lines)] == [encode(e) for e in published]
    assert replay.refused_requests() == [] and replay.bad_lines == []
