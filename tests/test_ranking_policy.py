"""Rankers end to end in the pure core, with known truth (rollguard.synth_ranking): a
catalogue, rankers whose quality is set by construction, and users who click by a cascade or
position-based model.

- Interleaving promotes a better ranker and rolls back a worse one, with far fewer users
  than an A/B test of the same two rankers decides with.
- With equal rankers, the rate of any decision stays within α however often the policy looks
  (it looks after every request), where a fixed-horizon test peeked at as often does not.
- A/B, bandit and shadow (labels independent of serving) work on the ranking metrics;
  ranking guardrails, per segment too; the contract's events go through the real join.
"""

from __future__ import annotations

import json
import statistics
from itertools import islice

import msgspec
import pytest
from scipy.stats import norm

from rollguard.decisions.policy import Policy
from rollguard.replay import Replay
from rollguard.schemas import parse_experiments
from rollguard.streams.aggregate import ExperimentStats
from rollguard.streams.records import OUTCOME, ArmView, JoinedRecord
from rollguard.synth_ranking import (Catalogue, Ranker, ab_records, interleave_events,
                                     interleave_records, preference_of, sessions)

CATALOGUE = Catalogue(items=200, seed=1)
SMALL = Catalogue(items=100, seed=2)
CHAMPION = Ranker("recs:1", noise=2.0)
BETTER = Ranker("recs:2", noise=1.0)
EQUAL = Ranker("recs:2", noise=2.0)
WORSE = Ranker("recs:2", noise=3.0)


def experiment(mode: str, metric: str, *, min_samples: int = 50, extra: str = "",
               alpha: float = 0.05, ranking: str = "k: 10"):
    [exp] = parse_experiments(
        f"{{name: e, task: ranking, mode: {mode}, champion: recs:1, candidates: [recs:2], "
        f"primary: {{metric: {metric}}}, min_samples: {min_samples}, alpha: {alpha}, "
        f"ranking: {{{ranking}}}{extra}}}", "test.yaml")
    return exp


def decide(exp, records) -> tuple[str | None, int, Policy]:
    """The first decision and the number of users (requests) it took."""
    policy = Policy(exp)
    users = 0
    for record in records:
        users += record.kind == OUTCOME
        for event in policy.on_record(record):
            if event.action not in ("start", "set_traffic"):
                return event.action, users, policy
    return None, users, policy


def test_interleaving_promotes_the_better_ranker_and_rolls_back_the_worse():
    exp = experiment("interleave", "preference")
    for seed in range(4):
        action, users, policy = decide(exp, interleave_records(CHAMPION, BETTER, CATALOGUE,
                                                               20_000, seed))
        assert action == "promote", (seed, users)
        tally = policy.mode.tally["recs:2"]
        assert tally["wins"] > tally["losses"] and tally["one_list"] == 0
        action, users, _ = decide(exp, interleave_records(CHAMPION, WORSE, CATALOGUE, 20_000,
                                                          seed))
        assert action == "rollback", (seed, users)


def test_interleaving_needs_far_fewer_users_than_ab_for_the_same_rankers():
    """The same two rankers, the same users' behaviour: users until the decision. The
    benchmark (bench/bench_interleaving.py) measures the ratio over more runs and effects."""
    interleaved, split = [], []
    for seed in range(4):
        action, users, _ = decide(experiment("interleave", "preference"),
                                  interleave_records(CHAMPION, BETTER, CATALOGUE, 30_000, seed))
        assert action == "promote"
        interleaved.append(users)
        action, users, _ = decide(experiment("ab", "hit_rate_at_k"),
                                  ab_records(CHAMPION, BETTER, CATALOGUE, 30_000, seed))
        assert action == "promote"
        split.append(users)
    ratio = statistics.median(split) / statistics.median(interleaved)
    assert ratio >= 4, (interleaved, split)


def test_equal_rankers_are_rarely_told_apart_under_continuous_monitoring():
    """60 runs of 1,200 users with equal rankers, α = 0.1, a look after every user. A wrong
    decision (either way) has chance ≤ α per run, so 60 runs make at most 13 with
    probability 0.99 when the bound holds (4 of 100 runs in development). Peeking at a
    fixed-horizon z-test as often (every 25 requests with a click) errs in far more runs."""
    exp = experiment("interleave", "preference", min_samples=1, alpha=0.1, ranking="k: 5")
    wrong = peeking_wrong = 0
    z = norm.ppf(1 - 0.1 / 2)
    for seed in range(60):
        records = list(interleave_records(CHAMPION, EQUAL, SMALL, 1200, 1000 + seed, k=5))
        action, _, _ = decide(exp, iter(records))
        wrong += action is not None
        values = [v for r in records if r.kind == OUTCOME
                  if (v := preference_of(r)) is not None]
        for n in range(25, len(values) + 1, 25):
            mean = sum(values[:n]) / n
            sd = statistics.pstdev(values[:n]) or 1.0
            if abs(mean) > z * sd / n ** 0.5:
                peeking_wrong += 1
                break
    assert wrong <= 13, wrong
    assert peeking_wrong >= 2 * max(wrong, 6), (peeking_wrong, wrong)


@pytest.mark.parametrize("model", ["cascade", "position"])
def test_ab_canary_and_bandit_decide_on_a_ranking_metric_of_the_served_list(model):
    for mode, metric, extra in (("ab", "ndcg_at_k", ""),
                                ("canary", "reciprocal_rank",
                                 ", canary: {steps: [0.2, 0.5], step_samples: 50}"),
                                ("bandit", "reward", ", bandit: {update_every: 100}")):
        exp = experiment(mode, metric, extra=extra)
        records = ab_records(CHAMPION, Ranker("recs:2", noise=0.3), CATALOGUE, 40_000, 5,
                             model=model, share=0.5)
        action, users, policy = decide(exp, records)
        assert action == "promote", (mode, metric, users)
        lo, _ = policy.tracks["recs:2"].delta.interval()
        assert lo > 0


def purchases(n: int, seed: int):
    """Shadow records whose labels do not depend on what was shown: what each user buys from
    the catalogue (each item of either list with its attractiveness), whoever served."""
    for s in sessions(CATALOGUE, [CHAMPION, BETTER], n, seed):
        views = (ArmView("recs:1", True, s.lists["recs:1"], None, 1.0, None, float(s.index)),
                 ArmView("recs:2", False, s.lists["recs:2"], None, 1.0, None, float(s.index)))
        bought = sorted(item for i, item in enumerate(sorted(s.attraction))
                        if s.u[i % len(s.u)] < s.attraction[item])
        yield JoinedRecord(OUTCOME, s.index + 0.5, s.request_id, "e", s.unit,
                           {"tier": "vip" if s.index % 4 == 0 else "std"}, views, bought)


def test_shadow_mode_judges_rankers_when_labels_do_not_depend_on_serving():
    exp = experiment("shadow", "ndcg_at_k", ranking="k: 10, labels_independent_of_serving: true")
    action, _, policy = decide(exp, purchases(6000, 9))
    assert action == "promote" and policy.tracks["recs:2"].delta.paired


def test_a_ranking_guardrail_in_a_segment_rolls_back():
    exp = experiment("shadow", "ndcg_at_k",
                     ranking="k: 10, labels_independent_of_serving: true",
                     extra=", guardrails: [{metric: hit_rate_at_k, min: 0.99, segment: "
                           "{tier: vip}}]")
    action, _, policy = decide(exp, purchases(6000, 9))
    assert action == "rollback"
    [monitor] = policy.tracks["recs:2"].monitors
    assert monitor.name == "hit_rate_at_k[tier=vip] >= 0.99" and monitor.status() == "fail"
    assert monitor.test.n < 6000 / 3, "only the vip requests feed it"


def test_the_contract_events_go_through_the_join_to_a_decision():
    """Predictions with items and labels with engaged items, as a replay file: the real join,
    the statistics, the decision; a ranking that is not a list of ids is a dead letter."""
    [exp] = parse_experiments(
        "{name: recs-v2, task: ranking, mode: interleave, champion: recs:1, "
        "candidates: [recs:2], primary: {metric: preference}, min_samples: 50, "
        "allowed_lateness: 1s, label_ttl: 60s}", "test.yaml")
    events = list(interleave_events(CHAMPION, BETTER, CATALOGUE, 3000, 4,
                                    experiment="recs-v2"))
    lines = [json.dumps(e).encode() for e in events]
    bad = dict(events[0], request_id="bad-1", items="item-0001, item-0002")
    lines.insert(10, json.dumps(bad).encode())
    replay = Replay([exp])
    decisions = replay.run_lines(lines)
    assert [e.action for e in decisions] == ["start", "promote"]
    assert decisions[1].champion == "recs:2" and decisions[1].mode == "interleave"
    assert "interleaved lists" in decisions[1].reason
    evidence = decisions[1].evidence
    assert evidence["interleaving"]["recs:2"]["wins"] > evidence["interleaving"]["recs:2"]["losses"]
    [(line, reason)] = replay.bad_lines
    assert line == 11 and reason == ("prediction rejected: field 'items' must be a list of "
                                     "non-empty strings of 1 to 1000 items, got the string "
                                     '"item-0001, item-0002".')
    stats = replay.evaluators["recs-v2"].totals.get()
    tally = stats["interleaving"]["recs:2"]
    assert tally["wins"] > tally["losses"] and tally["compared"] > 50
    champion = stats["arms"]["recs:1"]["outcomes"]
    assert champion["count"] > 1000 and 0 < champion["hit_rate_at_k"] < 1
    assert set(champion) >= {"ndcg_at_k", "reciprocal_rank", "precision_at_k", "reward"}


def test_statistics_per_arm_and_segment_merge_and_save():
    exp = experiment("ab", "reward")
    records = list(ab_records(CHAMPION, BETTER, CATALOGUE, 400, 3))
    whole, left, right = (ExperimentStats(exp) for _ in range(3))
    for i, record in enumerate(records):
        tier = "vip" if int(record.ts) % 2 else "std"
        segmented = msgspec.structs.replace(record, segments={"tier": tier})
        whole.on_record(segmented)
        (left if i < 300 else right).on_record(segmented)
    left.merge(ExperimentStats.from_dict(exp, right.to_dict()))
    assert _close(left.get(), whole.get())
    figures = whole.get()
    served = figures["arms"]["recs:2"]["outcomes"]
    assert served["count"] > 100 and served["reward"] is None, "no reward was given"
    vip, std = (figures["segments"]["tier"][t]["recs:2"]["count"] for t in ("vip", "std"))
    assert vip + std == served["count"] and min(vip, std) > 50


def _close(a, b) -> bool:
    """Equal figures, floats within 1e-12 (partials add their sums in another order)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return a == pytest.approx(b, rel=1e-12, abs=1e-12)
    return a == b
