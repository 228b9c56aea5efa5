"""Guardrails and several candidates: their error guarantees, by simulation (fixed seeds).

Each assertion states its tolerance: 3 Monte-Carlo standard errors above the documented bound
for error rates, a stated fraction of runs for power. Vectorised twins
(``rollguard.stats.sequential.batch``) run thousands of streams at once; a few checks use the
objects end to end.
"""

from __future__ import annotations

import math

import numpy as np

from rollguard.stats.sequential import (
    DiffThresholdTest,
    QuantileRatioGuardrail,
    SRMTest,
    ThresholdTest,
    bound_status,
    per_candidate_alpha,
)
from rollguard.stats.sequential.batch import (
    AsymptoticBatch,
    BettingBatch,
    EmpiricalBernsteinBatch,
    SRMBatch,
    quantile_rank_paths,
)

ALPHA = 0.05


def three_standard_errors(p: float, runs: int) -> float:
    return 3.0 * math.sqrt(p * (1.0 - p) / runs)


def run_threshold(rate: float, runs: int, steps: int, seed: int, *, max=None, min=None,
                  tuned_n: float = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Whether each run's ThresholdTest ever said "pass" / ever said "fail" (Bernoulli data).

    The test's sequence is the betting CS with its capitals kept at the limit: its twin."""
    rng = np.random.default_rng(seed)
    limit = max if max is not None else min
    cs = BettingBatch(runs, ALPHA, 0.0, 1.0, tuned_n=tuned_n, test_point=limit)
    passed = np.zeros(runs, dtype=bool)
    failed = np.zeros(runs, dtype=bool)
    for _ in range(steps):
        cs.update((rng.random(runs) < rate).astype(float))
        above = cs.side_of(limit)  # 1: the rate is above the limit with confidence
        if max is not None:
            failed |= above > 0
            passed |= above < 0
        else:
            failed |= above < 0
            passed |= above > 0
    return passed, failed


# -- absolute thresholds ----------------------------------------------------------------------
def test_threshold_status_is_the_twins_answer_at_the_limit():
    # ThresholdTest is a betting CS tested at its limit: the simulations below use the twin
    rng = np.random.default_rng(0)
    test = ThresholdTest(ALPHA, 0.0, 1.0, max=0.05, tuned_n=500)
    twin = BettingBatch(1, ALPHA, 0.0, 1.0, tuned_n=500, test_point=0.05)
    for x in (rng.random(3000) < 0.02).astype(float):
        test.update(x)
        twin.update(np.array([x]))
        expected = {1: "fail", -1: "pass", 0: "undecided"}[int(twin.side_of(0.05)[0])]
        assert test.status() == expected
    assert test.status() == "pass"


def test_threshold_with_both_limits_and_an_unbounded_one():
    # both limits: "pass" only when inside both; unbounded values: the asymptotic CS's interval
    rng = np.random.default_rng(10)
    band = ThresholdTest(ALPHA, 0.0, 1.0, min=0.7, max=0.9, tuned_n=500)
    for x in (rng.random(4000) < 0.8).astype(float):
        band.update(x)
    assert band.status() == "pass"
    below = ThresholdTest(ALPHA, 0.0, 1.0, min=0.85, max=0.95, tuned_n=500)
    for x in (rng.random(4000) < 0.8).astype(float):
        below.update(x)
    assert below.status() == "fail"
    latency = ThresholdTest(ALPHA, max=60.0, tuned_n=500)  # ms, unbounded
    for x in rng.normal(50.0, 10.0, 2000):
        latency.update(float(x))
    lo, hi = latency.interval()
    assert latency.status() == bound_status(lo, hi, max=60.0) == "pass"


def test_error_rate_at_the_limit_neither_fails_nor_passes_beyond_alpha():
    runs = 2000
    passed, failed = run_threshold(0.01, runs, 20000, seed=1, max=0.01, tuned_n=5000)
    tolerance = three_standard_errors(ALPHA / 2, runs)  # 0.010
    assert failed.mean() <= ALPHA / 2 + tolerance  # false alarm (observed 0.021)
    assert passed.mean() <= ALPHA / 2 + tolerance  # "pass" claims rate < limit (observed 0.025)


def test_error_rate_clearly_below_passes_and_clearly_above_fails():
    good_pass, good_fail = run_threshold(0.002, 1000, 5000, seed=2, max=0.01, tuned_n=2000)
    assert good_fail.sum() == 0 and good_pass.mean() >= 0.99
    bad_pass, bad_fail = run_threshold(0.03, 1000, 5000, seed=3, max=0.01, tuned_n=2000)
    assert bad_pass.sum() == 0 and bad_fail.mean() >= 0.99


def test_precision_minimum_on_the_predicted_positive_substream():
    # the test sees only predicted positives (their `correct`): that sub-stream is i.i.d.
    # Bernoulli(precision) whatever the full stream does, so it is simulated directly
    runs = 2000
    passed, failed = run_threshold(0.95, runs, 5000, seed=4, min=0.95)
    tolerance = three_standard_errors(ALPHA / 2, runs)
    # observed: fail 0.019, pass 0.026 (tolerance 0.010 above α/2)
    assert failed.mean() <= ALPHA / 2 + tolerance and passed.mean() <= ALPHA / 2 + tolerance
    good_pass, good_fail = run_threshold(0.99, 1000, 3000, seed=5, min=0.95)
    assert good_fail.sum() == 0 and good_pass.mean() >= 0.99
    bad_pass, bad_fail = run_threshold(0.85, 1000, 3000, seed=6, min=0.95)
    assert bad_pass.sum() == 0 and bad_fail.mean() >= 0.99


# -- relative to the champion (independent arms) ----------------------------------------------
def run_diff_threshold(err_champ: float, err_cand: float, runs: int, steps: int, seed: int,
                       max_diff: float) -> np.ndarray:
    """First non-undecided answer of each run's DiffThresholdTest ("" if none)."""
    rng = np.random.default_rng(seed)
    first = np.full(runs, "", dtype=object)
    for r in range(runs):
        g = DiffThresholdTest(ALPHA, 0.0, 1.0, max=max_diff, tuned_n=500)
        arms = rng.random(steps) < 0.5
        u = rng.random(steps)
        for t in range(steps):
            cand = bool(arms[t])
            g.update("candidate" if cand else "champion",
                     float(u[t] < (err_cand if cand else err_champ)))
            status = g.status()
            if status != "undecided":
                first[r] = status
                break
    return first


def test_relative_error_rate_at_the_limit_false_alarm_at_most_alpha():
    runs = 300
    first = run_diff_threshold(0.02, 0.03, runs, 3000, seed=7, max_diff=0.01)
    # 3 SE = 0.027 with 300 runs (observed 0.010)
    assert (first == "fail").mean() <= ALPHA / 2 + three_standard_errors(ALPHA / 2, runs)


def test_relative_error_rate_clear_breach_fails():
    first = run_diff_threshold(0.02, 0.10, 100, 4000, seed=8, max_diff=0.01)
    assert (first == "fail").mean() >= 0.99 and (first == "pass").sum() == 0


# -- sample-ratio mismatch --------------------------------------------------------------------
CANARY = [((0.95, 0.05), 2000), ((0.75, 0.25), 2000), ((0.5, 0.5), 12000)]


def test_srm_twin_equals_the_object():
    rng = np.random.default_rng(9)
    twin = SRMBatch(2, ALPHA, [0.9, 0.1])
    objects = [SRMTest(ALPHA, {"a": 0.9, "b": 0.1}) for _ in range(2)]
    for shares, n in [((0.9, 0.1), 500), ((0.5, 0.5), 500)]:
        twin.set_shares(shares)
        for obj in objects:
            obj.set_shares({"a": shares[0], "b": shares[1]})
        for _ in range(n):
            arm = (rng.random(2) < 0.3).astype(int)
            twin.update(arm)
            for r, obj in enumerate(objects):
                obj.update("ab"[arm[r]])
    for r, obj in enumerate(objects):
        assert obj.log_e_value == np.float64(twin.past_log_e[r] + twin.log_e[r])
        assert obj.max_log_e == twin.max_log_e[r]


def run_srm(served, runs: int, seed: int) -> np.ndarray:
    """Alarm per run; ``served(t, shares)`` gives the candidate's actual share."""
    rng = np.random.default_rng(seed)
    srm = SRMBatch(runs, ALPHA, CANARY[0][0])
    for shares, n in CANARY:
        srm.set_shares(shares)
        for _ in range(n):
            srm.update((rng.random(runs) < served(shares[1])).astype(int))
    return srm.failed()


def test_srm_no_false_alarm_beyond_alpha_through_canary_steps():
    runs = 4000
    alarms = run_srm(lambda share: share, runs, seed=10)
    # served exactly as configured, shares changing twice: 3 SE = 0.010 (observed 0.035)
    assert alarms.mean() <= ALPHA + three_standard_errors(ALPHA, runs)


def test_srm_detects_a_ten_percent_mismatch():
    # the candidate gets 10 % less than its configured share at every step (45 % of 50 %, …)
    alarms = run_srm(lambda share: 0.9 * share, 1000, seed=11)
    assert alarms.mean() >= 0.99


# -- latency quantiles ------------------------------------------------------------------------
def one_sided_miss_rates(q: float, alpha: float, runs: int, steps: int, seed: int):
    """P(∃t: lower bound above Q) and P(∃t: upper bound below Q) for one arm's QuantileCS.

    Whether a bound misses depends only on how many values fall below Q (ranks, not values):
    a Bernoulli(q) walk against the CS's rank paths, exact for continuous latencies (the
    histogram's bin edges only widen the bounds).
    """
    s_low, r_up = quantile_rank_paths(steps, q, alpha, tuned_n=1000)
    rng = np.random.default_rng(seed)
    low_miss = np.zeros(runs, dtype=bool)
    up_miss = np.zeros(runs, dtype=bool)
    at_most, below = np.zeros(runs, dtype=np.int64), np.zeros(runs, dtype=np.int64)
    chunk = 2000
    for start in range(0, steps, chunk):
        walk = at_most[:, None] + np.cumsum(rng.random((runs, chunk)) < q, axis=1)
        at_most = walk[:, -1]
        low_miss |= (walk <= s_low[None, start:start + chunk]).any(axis=1)
        walk = below[:, None] + np.cumsum(rng.random((runs, chunk)) < q, axis=1)
        below = walk[:, -1]
        up_miss |= (walk >= r_up[None, start:start + chunk]).any(axis=1)
    return low_miss.mean(), up_miss.mean()


def test_latency_false_alarm_at_most_alpha_at_the_ratio_limit():
    # The two per-arm quantile CSs at α/2 (the ratio rule before the two-sample test of
    # tests/test_latency_ratio_guardrail.py; still the sequences of LatencyMax): candidate
    # quantile = max_ratio × champion's. A "fail" needs the candidate's lower bound
    # above its quantile or the champion's upper bound below its own (else lower_cand ≤ Q_cand
    # = max_ratio·Q_champ ≤ max_ratio·upper_champ): each arm's CS has level 1 − α/2.
    runs = 2000
    for q in (0.5, 0.99):
        cand_low_miss, _ = one_sided_miss_rates(q, ALPHA / 2, runs, 10000, seed=12)
        _, champ_up_miss = one_sided_miss_rates(q, ALPHA / 2, runs, 10000, seed=13)
        # observed: q = 0.5, 0.011 + 0.011; q = 0.99, 0.003 + 0.013; tolerance 3 SE per arm
        tolerance = 2 * three_standard_errors(ALPHA / 2, runs)
        assert cand_low_miss + champ_up_miss <= ALPHA + tolerance


def run_latency(ratio: float, q: float, runs: int, steps: int, seed: int) -> list[str]:
    """First non-undecided answer per run of the guardrail, end to end (lognormal latencies)."""
    rng = np.random.default_rng(seed)
    answers = []
    for _ in range(runs):
        g = QuantileRatioGuardrail(ALPHA, q=q, max_ratio=1.2, tuned_n=1000)
        champ = rng.lognormal(3.0, 0.5, steps)
        cand = rng.lognormal(3.0 + math.log(ratio), 0.5, steps)  # every quantile × ratio
        answer = ""
        for i in range(steps):
            g.update("champion", champ[i]).update("candidate", cand[i])
            status = g.status()
            if status != "undecided":
                answer = status
                break
        answers.append(answer)
    return answers


def test_latency_guardrail_end_to_end():
    boundary = run_latency(1.2, 0.99, 40, 2000, seed=14)
    # bound α (observed 0 of 40); with 40 runs this only rules out gross failures
    assert boundary.count("fail") <= 2
    slower = run_latency(2.0, 0.99, 40, 3000, seed=15)
    assert slower.count("fail") == 40  # twice as slow at p99: caught in every run
    same = run_latency(1.0, 0.5, 20, 3000, seed=16)
    assert same.count("pass") == 20  # equal medians pass the 1.2 ratio (median ~450 per arm)


# -- several candidates -----------------------------------------------------------------------
def test_family_wise_error_with_three_candidates_at_the_boundary():
    # shadow mode, one champion, three candidates each exactly at the margin, all scored on the
    # same requests (dependent through the champion); Bonferroni α/3 each
    runs, steps, margin = 3000, 4000, 0.01
    alphas = per_candidate_alpha(ALPHA, ["c1", "c2", "c3"])
    rng = np.random.default_rng(17)
    f0, f1 = (0.1 - margin) / 0.4, (0.1 + margin) / 1.6  # flip probs giving Δ = −margin
    tests = [BettingBatch(runs, alphas[c], -1.0, 1.0, tuned_n=1000, test_point=-margin)
             for c in alphas]  # the policy's paired test
    unpaired_asym = [AsymptoticBatch(runs, alphas[c], tuned_n=1000) for c in alphas]
    any_promoted = np.zeros(runs, dtype=bool)
    any_promoted_asym = np.zeros(runs, dtype=bool)
    e_champ = np.zeros(runs)
    for t in range(1, steps + 1):
        champ = rng.random(runs) < 0.8
        e_champ = rng.standard_normal(runs)
        for cs, asym in zip(tests, unpaired_asym, strict=True):
            flip = rng.random(runs) < np.where(champ, f1, f0)
            d = np.where(flip, np.where(champ, -1.0, 1.0), 0.0)
            cs.update(d)
            e_cand = (1 + margin / math.sqrt(2 / math.pi)) * (
                0.7 * e_champ + math.sqrt(1 - 0.49) * rng.standard_normal(runs))
            asym.update(np.abs(e_champ) - np.abs(e_cand))
            if t >= 100:
                any_promoted |= cs.side_of(-margin) > 0
                any_promoted_asym |= asym.interval()[0] > -margin
    tolerance = three_standard_errors(ALPHA / 2, runs)  # 0.0086
    assert any_promoted.mean() <= ALPHA / 2 + tolerance  # observed 0.018
    assert any_promoted_asym.mean() <= ALPHA / 2 + tolerance
