"""The policy per mode, from records to control events (DESIGN.md "Modes" and "Decisions",
EVENTS.md "control").

* canary: the candidate's share rises through every step with ``set_traffic``; a harmful
  canary is rolled back at once and traffic returns to the champion; a good one is promoted
  after the analysis at the last step;
* bandit: Thompson sampling moves traffic toward the better arm, never below ``min_share``,
  at most one ``set_traffic`` per ``update_every`` rewards, and concludes when one arm is best
  with probability ≥ 1 − α; the evidence shows each arm's posterior;
* several candidates: a bad one is dropped with ``set_traffic`` while the others continue;
  with three boundary candidates the family-wise error stays within α;
* ``hold`` at ``max_samples`` and at ``max_duration``;
* every event: ``seq`` increases by one, exactly one final event and nothing after it (also
  across a restart from ``to_dict()``), a reason that is one sentence naming the metric that
  decided, JSON evidence with n per arm, estimates, bounds, alpha and guardrail results, and a
  ``promote`` whose ``champion`` is the new champion.

Traffic comes from :mod:`rollguard.synth` with known truth, routed by the policy's current
traffic (helpers in ``test_policy_simulation.py``). Tolerances are stated next to assertions.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from rollguard.decisions.policy import FINAL, Policy
from rollguard.schemas.events import ControlEvent, decode_control, encode
from rollguard.streams.records import OUTCOME
from rollguard.synth import Arm, records
from tests.test_policy_simulation import (
    ALPHA,
    BETTER,
    BOUNDARY,
    CHAMPION,
    EQUAL,
    MARGIN,
    MUCH_BETTER,
    experiment,
    final,
    routed,
    run,
    three_se,
)

STEPS = [0.05, 0.25, 0.5]


def candidate_share(event: ControlEvent, arm: str = "m:2") -> float:
    return event.traffic.get(arm, 0.0)


def assert_traffic(event: ControlEvent) -> None:
    """Shares in [0, 1] summing to 1 (EVENTS.md)."""
    assert all(0.0 <= s <= 1.0 for s in event.traffic.values()), event.traffic
    assert abs(sum(event.traffic.values()) - 1.0) <= 1e-6, event.traffic


# -- canary -----------------------------------------------------------------------------------
def canary(**overrides):
    return experiment(mode="canary", primary={"metric": "accuracy", "margin": 0.05},
                      canary={"steps": STEPS, "step_samples": 100},
                      guardrails=[{"metric": "error_rate", "max": 0.05}, {"metric": "srm"}],
                      **overrides)


def test_canary_rises_through_every_step_then_promotes_after_the_last():
    exp = canary()
    policy, events = run(exp, [MUCH_BETTER], 40000, seed=5)
    assert [e.action for e in events] == ["start", "set_traffic", "set_traffic", "promote"]
    # the candidate's share is each step in turn, the champion has the rest
    for event, step in zip(events[:3], STEPS):
        assert_traffic(event)
        assert candidate_share(event) == pytest.approx(step, abs=1e-9)
        assert event.traffic["m:1"] == pytest.approx(1.0 - step, abs=1e-9)
        assert event.evidence["canary_step"]["share"] == step
        assert event.champion == "m:1" and event.shadow == []
    # each step passed an analysis: the bound cleared −δ, and step_samples candidate outcomes
    # were collected at the step before moving on (and min_samples before the first move)
    n_cand = [e.evidence["candidates"]["m:2"]["n"]["m:2"] for e in events]
    assert n_cand[1] >= exp.min_samples
    assert n_cand[2] - n_cand[1] >= 100 and n_cand[3] - n_cand[2] >= 100
    for e in events[1:]:
        assert e.evidence["candidates"]["m:2"]["delta"]["lower"] > -0.05
    # the final promotion comes only after the last step (50 %)
    assert events[3].champion == "m:2" and events[3].traffic == {"m:2": 1.0}
    assert events[3].evidence["canary_step"]["index"] == len(STEPS)


@pytest.mark.parametrize("cand, named", [
    (Arm("m:2", 0.9, error_rate=0.2), "error_rate"),   # a guardrail breach
    (Arm("m:2", 0.3), "accuracy"),                      # far worse on the primary metric
])
def test_harmful_canary_is_rolled_back_at_once(cand, named):
    exp = canary()
    _, events = run(exp, [cand], 40000, seed=6)
    assert [e.action for e in events] == ["start", "rollback"]
    rollback = events[-1]
    # at once: still at the first step, before the step's analysis could pass (fewer than
    # min_samples candidate outcomes)
    assert rollback.evidence["canary_step"]["index"] == 1
    assert rollback.evidence["candidates"]["m:2"]["n"]["m:2"] < exp.min_samples
    assert named in rollback.reason
    # traffic goes back to the champion
    assert rollback.traffic == {"m:1": 1.0} and rollback.champion == "m:1"


# -- bandit -----------------------------------------------------------------------------------
BANDIT_ARMS = [Arm("m:2", 0.86), Arm("m:3", 0.75)]   # champion 0.8: m:2 is best


def bandit(**overrides):
    settings = {"mode": "bandit", "candidates": ["m:2", "m:3"],
                "bandit": {"min_share": 0.05, "update_every": 100}}
    return experiment(**{**settings, **overrides})


def rewards_seen(event: ControlEvent) -> int:
    return sum(p["n"] for p in event.evidence["bandit"]["posteriors"].values())


@pytest.mark.parametrize("seed", range(8))
def test_bandit_moves_traffic_to_the_better_arm_and_concludes(seed):
    exp = bandit()
    _, events = run(exp, BANDIT_ARMS, 30000, seed=seed)
    moves = [e for e in events if e.action == "set_traffic"]
    last = final(events)
    assert events[0].action == "start" and last is not None and len(moves) >= 2
    previous = 0
    for e in moves:
        assert_traffic(e)
        # never below the minimum exploration share (allocation rounds to 1e-6)
        assert min(e.traffic.values()) >= 0.05 - 1e-6, e.traffic
        # at most one set_traffic per update_every (100) rewards
        assert rewards_seen(e) - previous >= 100
        previous = rewards_seen(e)
        assert "reward" in e.reason
    # the allocation moved toward the best arm: from 1/3 to the largest share
    assert max(moves[-1].traffic, key=moves[-1].traffic.get) == "m:2"
    assert moves[-1].traffic["m:2"] > 0.5
    # concluded: the best arm promoted by the anytime-valid sequence of Δ against −margin at
    # its α (the A/B test's rule, exact under the adaptive allocation), with min_samples of
    # both arms; the posterior P(best) only moved the traffic
    assert last.action == "promote" and last.champion == "m:2"
    ev = last.evidence["candidates"]["m:2"]
    assert ev["delta"]["lower"] > -MARGIN and min(ev["n"].values()) >= exp.min_samples
    assert "confidence" in last.reason
    # the evidence shows each arm's posterior: Beta(1 + successes, 1 + failures)
    posteriors = last.evidence["bandit"]["posteriors"]
    assert set(posteriors) == {"m:1", "m:2", "m:3"}
    for post in posteriors.values():
        assert post["posterior"] == "beta" and post["a"] + post["b"] == post["n"] + 2
    assert posteriors["m:2"]["mean"] > posteriors["m:1"]["mean"] > posteriors["m:3"]["mean"]
    assert last.evidence["bandit"]["prob_best"]["m:2"] > 0.5


def test_bandit_rolls_back_when_the_champion_is_best():
    """Each candidate confidently worse than the champion by more than the margin is
    dropped; the last one dropped is the rollback."""
    exp = bandit()
    _, events = run(exp, [Arm("m:2", 0.72), Arm("m:3", 0.7)], 30000, seed=1)
    last = final(events)
    assert last.action == "rollback" and last.champion == "m:1"
    assert last.traffic == {"m:1": 1.0}
    assert "worse than the champion's by more than the margin" in last.reason
    for arm in ("m:2", "m:3"):
        assert last.evidence["candidates"][arm]["status"] == "dropped"
        assert last.evidence["candidates"][arm]["delta"]["upper"] < -MARGIN


def test_bandit_business_rewards_show_a_normal_posterior():
    """Labels may carry a ``reward`` (EVENTS.md); non-0/1 rewards get a normal posterior,
    whose mean and sd the evidence shows."""
    exp = bandit(candidates=["m:2"], bandit={"min_share": 0.1, "update_every": 50})
    policy = Policy(exp)
    events = []
    for rec in routed(lambda: policy.traffic, CHAMPION, [Arm("m:2", 0.8)], 600, seed=2):
        if rec.kind == OUTCOME:   # candidate earns 2.0 per request, champion 1.5 or 2.0
            rec = msgspec.structs.replace(
                rec, reward=2.0 if rec.served_arm == "m:2" else 1.5 + 0.5 * (rec.label is True))
        events += policy.on_record(rec)
    assert "set_traffic" in [e.action for e in events]   # moved toward m:2 on these rewards
    evidence = policy.evidence()
    posteriors = evidence["bandit"]["posteriors"]
    champ = posteriors["m:1"]
    assert champ["posterior"] == "normal"
    # N(mean, var/n) of the champion's rewards: mean 1.75, sd 0.25/sqrt(n) (± 3 sd of the mean)
    assert champ["mean"] == pytest.approx(1.75, abs=3 * 0.25 / math.sqrt(champ["n"]))
    assert champ["sd"] == pytest.approx(0.25 / math.sqrt(champ["n"]), rel=0.1)
    json.dumps(evidence, allow_nan=False)


# -- several candidates -----------------------------------------------------------------------
def test_one_bad_candidate_is_dropped_with_set_traffic_and_the_others_continue():
    exp = experiment(mode="ab", candidates=["m:2", "m:3"])
    bad, good = Arm("m:2", 0.55), Arm("m:3", 0.95)
    policy, events = run(exp, [bad, good], 20000, seed=4, champion=CHAMPION)
    assert [e.action for e in events] == ["start", "set_traffic", "promote"]
    start, drop, promote = events
    assert_traffic(drop)
    # the bad candidate's share goes back to the champion; the good one keeps its share
    assert "m:2" not in drop.traffic or drop.traffic["m:2"] == 0.0
    assert drop.traffic["m:3"] == pytest.approx(start.traffic["m:3"], abs=1e-6)
    assert drop.traffic["m:1"] == pytest.approx(start.traffic["m:1"] + start.traffic["m:2"],
                                                abs=1e-6)
    assert drop.reason.startswith("m:2 is rolled back") and "accuracy" in drop.reason
    assert drop.evidence["candidates"]["m:2"]["status"] == "dropped"
    assert drop.evidence["candidates"]["m:3"]["status"] == "active"
    # the other candidate continued and won; the dropped one got no more outcomes
    assert promote.champion == "m:3" and promote.traffic == {"m:3": 1.0}
    assert promote.evidence["candidates"]["m:2"]["n"] == drop.evidence["candidates"]["m:2"]["n"]
    assert promote.evidence["candidates"]["m:3"]["n"]["m:3"] > \
        drop.evidence["candidates"]["m:3"]["n"]["m:3"]


def test_a_dropped_shadow_candidate_leaves_the_shadow_list():
    exp = experiment(candidates=["m:2", "m:3"])
    _, events = run(exp, [Arm("m:2", 0.6), Arm("m:3", 0.95)], 5000, seed=4)
    start, drop, promote = events
    assert start.shadow == ["m:2", "m:3"] and drop.shadow == ["m:3"]
    assert drop.traffic == {"m:1": 1.0} and drop.action == "set_traffic"
    assert promote.champion == "m:3" and promote.shadow == []


def test_two_candidates_dropped_at_once_give_one_sentence():
    """Two candidates that predict alike cross their bound on the same record: the final
    rollback's reason is still one sentence, naming both."""
    exp = experiment(candidates=["m:2", "m:3"])
    _, events = run(exp, [Arm("m:2", 0.6), Arm("m:3", 0.6)], 5000, seed=4)
    assert [e.action for e in events] == ["start", "rollback"]
    reason = events[-1].reason
    assert "m:2 is rolled back" in reason and "m:3 is rolled back" in reason
    assert is_one_sentence(reason), reason


#: three candidates at the margin boundary (accuracy 0.79 = 0.8 − δ), each with its own
#: pattern of disagreements with the champion
BOUNDARY_TRIO = [BOUNDARY, Arm("m:3", 0.79, {"tier=vip": 0.85, "tier=std": 0.775}),
                 Arm("m:4", 0.79, {"tier=vip": 0.7, "tier=std": 0.8125})]
FAMILY_RUNS = 200


def test_family_wise_error_with_three_boundary_candidates():
    exp = experiment(candidates=["m:2", "m:3", "m:4"])
    policy = Policy(exp)
    # each candidate's tests run at α/3 (Bonferroni): primary and guardrails alike
    assert all(t.alpha == pytest.approx(ALPHA / 3) for t in policy.tracks.values())
    any_promoted = any_wrong = 0
    for seed in range(FAMILY_RUNS):
        policy, events = run(exp, BOUNDARY_TRIO, 1500, seed, outcomes_only=True)
        decided = [e for e in events if e.action != "start"]
        any_promoted += any(e.action == "promote" for e in decided)
        any_wrong += bool(decided)   # a boundary candidate is neither better nor worse than −δ
    # Family-wise: P(any boundary candidate promoted) ≤ 3 · α/6 = α/2, and P(any of them
    # promoted or rolled back) ≤ α, under continuous monitoring. Tolerance: + 3 Monte-Carlo
    # standard errors for 200 runs (0.025 + 0.033; 0.05 + 0.046).
    assert any_promoted / FAMILY_RUNS <= ALPHA / 2 + three_se(ALPHA / 2, FAMILY_RUNS)
    assert any_wrong / FAMILY_RUNS <= ALPHA + three_se(ALPHA, FAMILY_RUNS)


# -- hold -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["shadow", "ab"])
def test_hold_at_max_samples(mode):
    exp = experiment(mode=mode, max_samples=400)
    policy, events = run(exp, [BOUNDARY], 20000, seed=8)
    assert [e.action for e in events] == ["start", "hold"]
    hold = events[-1]
    n = hold.evidence["candidates"]["m:2"]["n"]
    # exactly at the outcome that brought the candidate to max_samples labelled outcomes
    assert n["m:2"] == 400
    assert hold.traffic == {"m:1": 1.0} and hold.champion == "m:1"
    assert "max_samples" in hold.reason and "accuracy" in hold.reason
    if mode == "shadow":      # one outcome per request, at ts i + 0.5
        assert hold.ts == 399.5


@pytest.mark.parametrize("mode", ["shadow", "ab", "canary"])
def test_hold_at_max_duration(mode):
    extra = {"canary": {"steps": STEPS}} if mode == "canary" else {}
    exp = experiment(mode=mode, max_duration="5m", **extra)
    _, events = run(exp, [BOUNDARY], 20000, seed=8)
    assert [e.action for e in events] == ["start", "hold"]
    # the first record at or past 300 s of event time after the start (request i at ts = i)
    assert events[-1].ts == 300.0
    assert "max_duration" in events[-1].reason
    assert events[-1].traffic == {"m:1": 1.0}


# -- every event ------------------------------------------------------------------------------
@dataclass
class Scenario:
    name: str
    exp: Any
    arms: list[Arm]
    n: int
    seed: int
    actions: list[str]                # expected actions after start, "set_traffic*" = any
    named: dict[str, str]             # action -> the metric its reason must name
    champion: Arm = CHAMPION
    route: dict = field(default_factory=dict)


GUARDS = [{"metric": "latency_p99_ms", "max_ratio": 1.2}, {"metric": "error_rate", "max": 0.05},
          {"metric": "precision", "segment": {"tier": "vip"}, "min": 0.6}]

SCENARIOS = [
    Scenario("shadow-promote", experiment(guardrails=GUARDS), [BETTER], 20000, 1,
             ["promote"], {"promote": "accuracy"}),
    Scenario("shadow-drop-then-promote",
             experiment(candidates=["m:2", "m:3"], guardrails=GUARDS),
             [MUCH_BETTER, Arm("m:3", 0.6)], 20000, 2, ["set_traffic", "promote"],
             {"set_traffic": "accuracy", "promote": "accuracy"}),
    Scenario("shadow-latency", experiment(guardrails=GUARDS),
             [Arm("m:2", 0.9, latency_ms=(15.0, 0.3))], 20000, 3, ["rollback"],
             {"rollback": "latency_p99_ms"}),
    Scenario("ab-promote", experiment(mode="ab", guardrails=GUARDS + [{"metric": "srm"}]),
             [MUCH_BETTER], 20000, 4, ["promote"], {"promote": "accuracy"}),
    Scenario("ab-vip", experiment(mode="ab", guardrails=GUARDS[:2] + [
        {"metric": "precision", "segment": {"tier": "vip"}, "min": 0.95}]),
             [Arm("m:2", 0.92, {"tier=vip": 0.85})], 20000, 5, ["rollback"],
             {"rollback": "precision[tier=vip]"}),
    Scenario("ab-srm", experiment(mode="ab", guardrails=[{"metric": "srm"}]), [EQUAL], 20000, 6,
             ["rollback"], {"rollback": "srm"}, route={"bias": {"m:1": 0.6, "m:2": 0.4}}),
    Scenario("canary-promote", canary(), [MUCH_BETTER], 40000, 7,
             ["set_traffic", "set_traffic", "promote"],
             {"set_traffic": "accuracy", "promote": "accuracy"}),
    Scenario("canary-error", canary(), [Arm("m:2", 0.9, error_rate=0.2)], 40000, 8,
             ["rollback"], {"rollback": "error_rate"}),
    Scenario("bandit", bandit(guardrails=[{"metric": "error_rate", "max": 0.05},
                                          {"metric": "srm"}]),
             BANDIT_ARMS, 30000, 9, ["set_traffic*", "promote"],
             {"set_traffic": ("reward", "accuracy"), "promote": "accuracy"}),
    Scenario("hold-samples", experiment(mode="ab", max_samples=300, guardrails=GUARDS),
             [BOUNDARY], 20000, 10, ["hold"], {"hold": "max_samples"}),
    Scenario("hold-duration", experiment(max_duration=250, guardrails=GUARDS), [BOUNDARY],
             20000, 11, ["hold"], {"hold": "max_duration"}),
]


class Holder:
    """The policy a restarted worker would hold: rebuilt from its saved state on demand."""

    def __init__(self, exp) -> None:
        self.exp = exp
        self.policy = Policy(exp)

    def restart(self) -> None:
        # saved and read back as the worker's checkpoint does (msgpack)
        state = msgspec.msgpack.decode(msgspec.msgpack.encode(self.policy.to_dict()))
        self.policy = Policy.from_dict(self.exp, state)


def play(sc: Scenario, restart_every: int | None = None, after_final: int = 0
         ) -> list[ControlEvent]:
    """Run a scenario; restart the policy every ``restart_every`` records; feed
    ``after_final`` more records after the final event (restarting before them)."""
    holder = Holder(sc.exp)
    if sc.exp.mode == "shadow":
        source = records(sc.champion, sc.arms, sc.n, sc.seed)
    else:
        source = routed(lambda: holder.policy.traffic, sc.champion, sc.arms, sc.n, sc.seed,
                        **sc.route)
    events: list[ControlEvent] = []
    extra = None
    for i, rec in enumerate(source, start=1):
        events += holder.policy.on_record(rec)
        if restart_every and i % restart_every == 0:
            holder.restart()
        if holder.policy.final is not None:
            if extra is None:
                extra = after_final
                holder.restart()
            if extra == 0:
                break
            extra -= 1
    return events


@pytest.fixture(scope="module")
def played() -> dict[str, list[ControlEvent]]:
    return {sc.name: play(sc) for sc in SCENARIOS}


def test_scenarios_end_as_expected(played):
    for sc in SCENARIOS:
        actions = [e.action for e in played[sc.name]]
        assert actions[0] == "start", sc.name
        rest = actions[1:]
        if sc.actions[0] == "set_traffic*":
            assert set(rest[:-1]) == {"set_traffic"} and rest[-1:] == sc.actions[1:], \
                (sc.name, actions)
        else:
            assert rest == sc.actions, (sc.name, actions)


def test_seq_increases_by_one_and_one_final_event_ends_the_experiment(played):
    for sc in SCENARIOS:
        events = played[sc.name]
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), sc.name
        assert events[0].action == "start" and events[0].ts == 0.0   # with the first record
        assert all(e.experiment == sc.exp.name and e.mode == sc.exp.mode for e in events)
        finals = [i for i, e in enumerate(events) if e.action in FINAL]
        assert finals == [len(events) - 1], sc.name
        ts = [e.ts for e in events]
        assert ts == sorted(ts), sc.name   # event time of the triggering record


def test_nothing_after_the_final_event_also_across_a_restart():
    for sc in SCENARIOS:
        # keep feeding 2000 records after the final event, restarting first: nothing comes
        events = play(sc, after_final=2000)
        assert [e.action for e in events][-1] in FINAL
        assert sum(e.action in FINAL for e in events) == 1, sc.name


@pytest.mark.parametrize("every", [997, 4096])
def test_restart_from_saved_state_emits_exactly_the_same_events(played, every):
    for sc in SCENARIOS:
        restarted = play(sc, restart_every=every)
        assert [encode(e) for e in restarted] == [encode(e) for e in played[sc.name]], sc.name


def is_one_sentence(text: str) -> bool:
    """Ends with a full stop, no line break, no full stop (or ! ?) followed by a space inside."""
    return text.endswith(".") and "\n" not in text and not re.search(r"[.!?]\s", text[:-1])


def test_every_reason_is_one_sentence_naming_the_metric_that_decided(played):
    for sc in SCENARIOS:
        for e in played[sc.name]:
            assert is_one_sentence(e.reason), (sc.name, e.reason)
            if e.action != "start":  # an allocation names the rewards, a drop the metric
                named = sc.named[e.action]
                assert any(n in e.reason for n in (named if isinstance(named, tuple)
                                                  else (named,))), (sc.name, e.reason)


def test_evidence_is_json_with_n_estimates_bounds_alpha_and_guardrails(played):
    for sc in SCENARIOS:
        exp = sc.exp
        for e in played[sc.name]:
            json.dumps(e.evidence, allow_nan=False)     # strict JSON: no NaN, no Infinity
            assert decode_control(encode(e)) == e       # and a valid control event
            ev = e.evidence
            assert ev["alpha"] == exp.alpha and ev["metric"] == "accuracy"
            assert ev["margin"] == exp.primary.margin
            assert set(ev["candidates"]) == set(exp.candidates)
            for arm, c in ev["candidates"].items():
                assert c["alpha"] == pytest.approx(exp.alpha / len(exp.candidates))
                assert set(c["n"]) == {exp.champion, arm}
                assert all(isinstance(v, int) for v in c["n"].values())
                assert {"estimate", "lower", "upper", "margin"} <= set(c["delta"])
                assert len(c["guardrails"]) == sum(g.metric != "srm" for g in exp.guardrails)
                for g in c["guardrails"]:
                    assert g["status"] in ("pass", "fail", "undecided") and g["guardrail"]
                    # guardrails run at the candidate's α, like its primary metric
                    assert g["alpha"] == pytest.approx(c["alpha"])
            if e.action in ("promote", "rollback") and "srm" not in e.reason and \
                    exp.mode != "bandit":
                decided = [c for c in ev["candidates"].values() if c["n"][exp.champion] > 0]
                assert decided and all(c["delta"]["estimate"] is not None for c in decided)
                assert all(c["delta"]["lower"] is not None and c["delta"]["upper"] is not None
                           for c in decided)
            if any(g.metric == "srm" for g in exp.guardrails):
                assert "srm" in ev


def test_promote_names_the_new_champion_and_the_others_keep_the_old(played):
    for sc in SCENARIOS:
        for e in played[sc.name]:
            if e.action == "promote":
                winner = e.champion
                assert winner in sc.exp.candidates
                assert e.traffic == {winner: 1.0} and e.shadow == []
            else:
                assert e.champion == sc.exp.champion
                if e.action in FINAL:
                    assert e.traffic == {sc.exp.champion: 1.0} and e.shadow == []


def test_policy_status_after_promotion_reports_the_new_champion(played):
    sc = SCENARIOS[0]
    policy, events = run(sc.exp, sc.arms, sc.n, sc.seed)
    assert events[-1].action == "promote"
    assert policy.status()["champion"] == "m:2" and policy.status()["final"]["action"] == "promote"
