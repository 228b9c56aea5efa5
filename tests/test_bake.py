"""The bake window after a promotion (decisions/bake.py): the new champion keeps being
compared with the former one, anytime-valid from the promotion on; a breach rolls back to
the former champion at once, and passing the window completes the experiment."""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from rollguard.decisions.policy import FINAL, Policy
from rollguard.schemas.events import ControlEvent, encode
from rollguard.streams.records import OUTCOME, JoinedRecord
from rollguard.synth import Arm
from tests.test_policy_simulation import (
    ALPHA,
    BETTER,
    CHAMPION,
    MARGIN,
    MUCH_BETTER,
    experiment,
    stream,
    three_se,
)

#: worse than the former champion (0.8) by far more than the margin: a breach
DEGRADED = Arm("m:2", 0.65)
#: exactly at −margin from the former champion after the promotion
AT_MARGIN = Arm("m:2", 0.8 - MARGIN)


def baking(mode: str, **bake) -> object:
    return experiment(mode=mode, bake={"duration": "3000s", "min_samples": 1000, **bake})


def phases(policy: Policy, parts: list[tuple[Arm, int]], seed: int,
           outcomes_only: bool = False) -> Iterator[JoinedRecord]:
    """The candidate behaves as each part's arm for that many requests, one after the other
    (event time runs on; request ids stay unique)."""
    offset = 0.0
    for k, (arm, n) in enumerate(parts):
        for rec in stream(policy, CHAMPION, [arm], n, seed + 1000 * k):
            if outcomes_only and rec.kind != OUTCOME:
                continue
            yield msgspec.structs.replace(rec, ts=rec.ts + offset,
                                          request_id=f"p{k}-{rec.request_id}")
        offset += n


def play(policy: Policy, records: Iterator[JoinedRecord]) -> list[ControlEvent]:
    events: list[ControlEvent] = []
    for rec in records:
        events += policy.on_record(rec)
        if policy.final is not None:
            break
    return events


def test_a_good_promotion_bakes_with_a_holdback_then_completes():
    exp = baking("ab", holdback=0.1)
    policy = Policy(exp)
    events = play(policy, phases(policy, [(MUCH_BETTER, 30000)], seed=1))
    assert [e.action for e in events] == ["start", "promote", "complete"]
    _, promote, complete = events
    # promoted: the new champion serves, the former keeps its holdback share
    assert promote.champion == "m:2" and promote.traffic == {"m:2": 0.9, "m:1": 0.1}
    assert "bakes for 3000 s" in promote.reason and "m:1 keeps 10% of traffic" in promote.reason
    # the window: its duration of event time and min_samples of the new champion, no breach
    bake = complete.evidence["bake"]
    assert complete.ts - promote.ts >= 3000 and bake["since"] == promote.ts
    assert bake["n"]["m:2"] >= 1000 and bake["delta"]["upper"] > -MARGIN
    assert complete.champion == "m:2" and complete.traffic == {"m:2": 1.0}
    assert complete.shadow == [] and "no breach" in complete.reason
    assert policy.final["action"] == "complete" and policy.on_record(
        next(phases(policy, [(MUCH_BETTER, 1)], seed=9))) == []


def test_a_new_champion_that_degrades_is_rolled_back_to_the_former_at_once():
    exp = baking("shadow", duration="10000s")
    policy = Policy(exp)
    events = play(policy, phases(policy, [(BETTER, 1000), (DEGRADED, 20000)], seed=2))
    assert [e.action for e in events] == ["start", "promote", "rollback"]
    _, promote, rollback = events
    assert promote.ts < 1000, "promoted in the first phase"
    # shadow mode: the former champion scores every request while the new one serves
    assert promote.traffic == {"m:2": 1.0} and promote.shadow == ["m:1"]
    assert rollback.champion == "m:1" and rollback.traffic == {"m:1": 1.0}
    assert rollback.shadow == []
    assert rollback.reason.startswith("m:2 is rolled back to m:1 during its bake window")
    assert rollback.evidence["bake"]["delta"]["upper"] < -MARGIN
    # at once: long before the window's duration was over
    assert rollback.ts - promote.ts < 3000


def test_a_guardrail_breach_during_the_bake_rolls_back():
    exp = experiment(mode="ab", bake={"duration": "10000s", "min_samples": 1000},
                     guardrails=[{"metric": "error_rate", "max": 0.05}])
    policy = Policy(exp)
    broken = Arm("m:2", 0.9, error_rate=0.2)
    events = play(policy, phases(policy, [(MUCH_BETTER, 600), (broken, 20000)], seed=3))
    assert [e.action for e in events] == ["start", "promote", "rollback"]
    assert "guardrail error_rate" in events[-1].reason and events[-1].champion == "m:1"


def test_a_latency_regression_that_begins_after_the_promotion_rolls_back():
    # promoted while as fast as the champion, then 1.6 × slower (a dependency that degrades
    # under full traffic): the window's latency test started at the promotion catches it
    exp = experiment(bake={"duration": "10000s", "min_samples": 1000},
                     guardrails=[{"metric": "latency_p95_ms", "max_ratio": 1.1}])
    policy = Policy(exp)
    slow = Arm("m:2", BETTER.accuracy, latency_ms=(16.0, 0.3))
    events = play(policy, phases(policy, [(BETTER, 6000), (slow, 20000)], seed=5))
    assert [e.action for e in events] == ["start", "promote", "rollback"]
    promote, rollback = events[1:]
    assert promote.ts < 6000 and "guardrail latency_p95_ms" in rollback.reason
    assert rollback.champion == "m:1" and rollback.ts - promote.ts < 10000


BAKE_RUNS = 150


def test_a_new_champion_at_the_margin_is_rolled_back_in_at_most_half_alpha_of_runs():
    """After the promotion the new champion is exactly −δ from the former one; the bake
    looks after every outcome until it completes. A false rollback is the sequence's error
    on one side: ≤ α/2, however often it looks (tolerance: 3 Monte-Carlo standard errors)."""
    exp = experiment(bake={"duration": "1500s", "min_samples": 1500})
    rolled_back = completed = 0
    for seed in range(BAKE_RUNS):
        policy = Policy(exp)
        events = play(policy, phases(policy, [(BETTER, 2000), (AT_MARGIN, 3000)], seed,
                                     outcomes_only=True))
        actions = [e.action for e in events]
        assert "promote" in actions, (seed, actions)
        rolled_back += actions[-1] == "rollback"
        completed += actions[-1] == "complete"
    limit = ALPHA / 2 + three_se(ALPHA / 2, BAKE_RUNS)
    assert rolled_back / BAKE_RUNS <= limit, (rolled_back, BAKE_RUNS)
    assert completed >= BAKE_RUNS * 0.9, completed  # the rest ran out of records


def test_a_restart_during_the_bake_gives_the_same_events():
    """The worker checkpoints the policy; restored mid-window it decides exactly the same."""
    exp = baking("ab", duration="10000s", holdback=0.3)
    reference = Policy(exp)
    expected = play(reference, phases(reference, [(MUCH_BETTER, 600), (DEGRADED, 20000)], 4))
    assert [e.action for e in expected][-2:] == ["promote", "rollback"]
    class Restarted:  # routes by whichever policy is current, as the serving layer would
        policy = Policy(exp)
        mode = property(lambda self: self.policy.mode)
        traffic = property(lambda self: self.policy.traffic)

    current, events = Restarted(), []
    for i, rec in enumerate(phases(current, [(MUCH_BETTER, 600), (DEGRADED, 20000)], 4)):
        if i % 997 == 0:
            current.policy = Policy.from_dict(exp, msgspec.json.decode(
                msgspec.json.encode(current.policy.to_dict())))
        events += current.policy.on_record(rec)
        if current.policy.final is not None:
            break
    assert [encode(e) for e in events] == [encode(e) for e in expected]
    assert "complete" in FINAL
