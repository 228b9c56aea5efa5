"""The sequential objects as objects: saved state, merging, twins, bookkeeping, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rollguard.stats.sequential import (
    AsymptoticCS,
    DiffMeansCS,
    DiffThresholdTest,
    EmpiricalBernsteinCS,
    MeanCS,
    PairedMeanCS,
    QuantileCS,
    QuantileRatioGuardrail,
    SRMTest,
    ThresholdTest,
    from_dict,
)
from rollguard.stats.sequential.batch import (
    AsymptoticBatch,
    EmpiricalBernsteinBatch,
    quantile_rank_paths,
)

JSON_TYPES = (dict, list, str, int, float, bool, type(None))


def _json_safe(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_safe(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_safe(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, JSON_TYPES)


def _fed(obj, rng: np.random.Generator, n: int = 700):
    """``obj`` after ``n`` random observations of the kind it takes."""
    for _ in range(n):
        u = float(rng.random())
        if isinstance(obj, (DiffMeansCS, DiffThresholdTest)):
            obj.update("candidate" if u < 0.3 else "champion", float(rng.random() < 0.8))
        elif isinstance(obj, QuantileRatioGuardrail):
            obj.update("candidate" if u < 0.5 else "champion", float(rng.lognormal(3, 0.5)))
        elif isinstance(obj, QuantileCS):
            obj.update(float(rng.lognormal(3, 0.5)))
        elif isinstance(obj, SRMTest):
            obj.update("m:2" if u < 0.12 else "m:1")
        elif isinstance(obj, (AsymptoticCS,)) or (isinstance(obj, MeanCS) and obj.method == "asymptotic"):
            obj.update(float(rng.normal()))
        else:
            obj.update(float(rng.random() < 0.8))
    return obj


def _fresh_objects():
    return [
        EmpiricalBernsteinCS(alpha=0.05, lower=0.0, upper=1.0, tuned_n=300),
        EmpiricalBernsteinCS(alpha=0.1, lower=0.0, upper=1.0, tuned_n=None,
                             running_intersection=False),
        AsymptoticCS(alpha=0.05, tuned_n=300),
        MeanCS(alpha=0.05, lower=0.0, upper=1.0),
        MeanCS(alpha=0.05),
        PairedMeanCS(alpha=0.05, lower=-1.0, upper=1.0),
        PairedMeanCS(alpha=0.05, lower=-1.0, upper=1.0, test_points=(-0.01,)),
        DiffMeansCS(alpha=0.05, lower=0.0, upper=1.0, tuned_n=200),
        DiffMeansCS(alpha=0.05, lower=0.0, upper=1.0, tuned_n=200, test_points=(0.0, -0.05)),
        DiffMeansCS(alpha=0.05),
        ThresholdTest(alpha=0.05, lower=0.0, upper=1.0, min=0.95),
        DiffThresholdTest(alpha=0.05, lower=0.0, upper=1.0, max=0.01),
        QuantileCS(alpha=0.05, q=0.9, tuned_n=300),
        QuantileRatioGuardrail(alpha=0.05, q=0.95, max_ratio=1.2, tuned_n=300),
        SRMTest(alpha=0.05, shares={"m:1": 0.9, "m:2": 0.1}),
    ]


@pytest.mark.parametrize("fresh", _fresh_objects(), ids=lambda o: type(o).__name__)
def test_state_round_trips_through_json_exactly(fresh):
    obj = _fed(fresh, np.random.default_rng(0))
    state = obj.to_dict()
    assert _json_safe(state)
    restored = from_dict(json.loads(json.dumps(state)))
    assert type(restored) is type(obj)
    assert restored.to_dict() == state
    # a restarted worker continues exactly as if it had never stopped
    _fed(obj, np.random.default_rng(1), 300)
    _fed(restored, np.random.default_rng(1), 300)
    assert restored.to_dict() == obj.to_dict()
    evidence = obj.evidence()
    assert _json_safe(json.loads(json.dumps(evidence, allow_nan=False)))


@pytest.mark.parametrize("fresh", _fresh_objects(), ids=lambda o: type(o).__name__)
def test_merge_leaves_other_unchanged_and_plus_copies(fresh):
    a = _fed(fresh.copy(), np.random.default_rng(2), 400)
    b = _fed(fresh.copy(), np.random.default_rng(3), 400)
    before_a, before_b = a.to_dict(), b.to_dict()
    c = a + b
    assert a.to_dict() == before_a and b.to_dict() == before_b
    a += b
    assert a.to_dict() == c.to_dict()
    assert b.to_dict() == before_b


def test_merge_refuses_other_settings():
    with pytest.raises(ValueError):
        EmpiricalBernsteinCS(alpha=0.05) + EmpiricalBernsteinCS(alpha=0.1)
    with pytest.raises(TypeError):
        AsymptoticCS() + EmpiricalBernsteinCS()
    with pytest.raises(ValueError):
        SRMTest(0.05, {"a": 0.5, "b": 0.5}) + SRMTest(0.05, {"a": 0.9, "b": 0.1})


def test_exact_merges_equal_the_whole_stream():
    rng = np.random.default_rng(4)
    xs = rng.lognormal(2.0, 1.0, 3000)
    whole_q, parts_q = QuantileCS(q=0.99), [QuantileCS(q=0.99) for _ in range(3)]
    whole_a, parts_a = AsymptoticCS(), [AsymptoticCS() for _ in range(3)]
    for i, x in enumerate(xs):
        whole_q.update(x)
        parts_q[i % 3].update(x)
        whole_a.update(x)
        parts_a[i % 3].update(x)
    merged_q = parts_q[0] + parts_q[1] + parts_q[2]
    assert merged_q.interval() == whole_q.interval()
    assert merged_q.to_dict() == whole_q.to_dict()  # same counts, same ranks
    merged_a = parts_a[0] + parts_a[1] + parts_a[2]
    assert merged_a.interval() == pytest.approx(whole_a.interval(), rel=1e-12)
    whole_s, parts_s = SRMTest(0.05, {"a": 0.5, "b": 0.5}), [SRMTest(0.05, {"a": 0.5, "b": 0.5})
                                                             for _ in range(2)]
    for i, u in enumerate(rng.random(2000)):
        arm = "a" if u < 0.55 else "b"
        whole_s.update(arm)
        parts_s[i % 2].update(arm)
    merged_s = parts_s[0] + parts_s[1]
    assert merged_s.log_e_value == pytest.approx(whole_s.log_e_value, rel=1e-9)


def test_eb_merge_is_the_product_of_the_parts():
    # the merged sums are the sums of the parts: its log-supermartingale at any mean is the
    # sum of theirs, so its interval is where that sum stays below log(2/alpha)
    rng = np.random.default_rng(5)
    a, b = EmpiricalBernsteinCS(tuned_n=200), EmpiricalBernsteinCS(tuned_n=200)
    for x in rng.random(500):
        a.update(x)
    for x in rng.random(300):
        b.update(x)
    merged = a + b
    assert merged.n == 800
    lo, hi = merged.interval()
    assert 0.0 < lo < 0.5 < hi < 1.0
    lam = a._sum_lam + b._sum_lam
    centre = (a._sum_lam_y + b._sum_lam_y) / lam
    expected_lo = centre - (math.log(40) + a._sum_vpsi_lo + b._sum_vpsi_lo) / lam
    assert lo == pytest.approx(expected_lo, abs=1e-12)


def test_eb_batch_twin_equals_the_object():
    rng = np.random.default_rng(6)
    xs = rng.random((3, 400))
    for tuned_n in (None, 150):
        twin = EmpiricalBernsteinBatch(3, alpha=0.05, lower=0.0, upper=1.0, tuned_n=tuned_n)
        objects = [EmpiricalBernsteinCS(alpha=0.05, lower=0.0, upper=1.0, tuned_n=tuned_n)
                   for _ in range(3)]
        for t in range(400):
            twin.update(xs[:, t])
            for r, obj in enumerate(objects):
                obj.update(xs[r, t])
            if t % 37 == 0 or t == 399:
                lo, hi = twin.interval()
                for r, obj in enumerate(objects):
                    assert (lo[r], hi[r]) == pytest.approx(obj.interval(), rel=1e-12, abs=1e-12)


def test_asymptotic_batch_twin_equals_the_object():
    rng = np.random.default_rng(7)
    xs = rng.standard_t(5, (2, 300))
    twin = AsymptoticBatch(2, alpha=0.05, tuned_n=100)
    objects = [AsymptoticCS(alpha=0.05, tuned_n=100) for _ in range(2)]
    for t in range(300):
        twin.update(xs[:, t])
        for r, obj in enumerate(objects):
            obj.update(xs[r, t])
    lo, hi = twin.interval()
    for r, obj in enumerate(objects):
        assert (lo[r], hi[r]) == pytest.approx(obj.interval(), rel=1e-12)


def test_quantile_bounds_are_the_order_statistics_at_the_mixture_ranks():
    rng = np.random.default_rng(8)
    xs = rng.lognormal(3.0, 0.7, 4000)
    cs = QuantileCS(alpha=0.05, q=0.95, tuned_n=500, rel_width=0.01)
    s_low, r_up = quantile_rank_paths(4000, 0.95, 0.05, 500)
    for t, x in enumerate(xs, start=1):
        cs.update(x)
        if t % 250 == 0:
            order = np.sort(xs[:t])
            assert (cs.s_low, cs.r_up) == (s_low[t - 1], r_up[t - 1])
            lo, hi = cs.interval()
            if cs.s_low >= 0:
                exact = order[cs.s_low]  # rank s_low + 1, 1-based
                assert lo <= exact <= lo * 1.0101  # the bin's lower edge, within 1 %
            if cs.r_up <= t:
                exact = order[cs.r_up - 1]
                assert hi / 1.0101 <= exact <= hi
            # and the ranks bracket t*q as a CS should, tighter as t grows
            assert cs.s_low < t * 0.95 < cs.r_up
    assert cs.interval()[1] < math.inf and cs.interval()[0] > 0


def test_quantile_ranks_narrow_like_sqrt_t():
    s_low, r_up = quantile_rank_paths(20000, 0.5, 0.05, 1000)
    width_1k = (r_up[999] - s_low[999]) / 1000
    width_20k = (r_up[19999] - s_low[19999]) / 20000
    # a fixed-n 95 % interval is ±1.96 sd of a proportion (0.062 wide at n = 1000); the
    # time-uniform one tuned at 1000 pays about ±3 sd there (0.096 observed)
    assert 0.062 < width_1k < 0.12
    assert width_20k < width_1k / 3  # shrinks ~ sqrt(log t / t)


def test_diff_blocks_follow_the_arrival_ratio_and_use_every_outcome():
    cs = DiffMeansCS(alpha=0.05, lower=0.0, upper=1.0)
    rng = np.random.default_rng(9)
    steps = [(0.05, 4000), (0.25, 4000), (0.5, 4000)]  # a canary's steps
    for share, n in steps:
        for u in rng.random(n):
            cs.update("candidate" if u < share else "champion", float(rng.random() < 0.8))
    counts = cs.counts()
    assert counts["champion"] + counts["candidate"] == 12000
    pending = cs.evidence()["pending"]
    assert pending < 60  # outcomes waiting in open blocks: a few blocks' worth
    assert len(cs._open) < 20  # the state stays small
    # blocks ≈ candidate outcomes: one per candidate while it is the minority
    assert 0.8 * counts["candidate"] < cs.n_blocks <= counts["candidate"]


def test_diff_blocks_are_unbiased_under_a_reactive_allocation():
    # a bandit-like allocation that reacts to every outcome (more candidate traffic after a
    # candidate success) must not bias the block differences: mean of d_j ≈ Δ
    rng = np.random.default_rng(10)
    block_means = []
    for _ in range(200):
        cs = DiffMeansCS(alpha=0.05, lower=0.0, upper=1.0, tuned_n=100)
        share = 0.5
        for _ in range(400):
            arm = "candidate" if rng.random() < share else "champion"
            x = float(rng.random() < (0.6 if arm == "candidate" else 0.5))
            cs.update(arm, x)
            if arm == "candidate":
                share = min(0.9, max(0.1, share + (0.05 if x else -0.05)))
        core = cs.blocks_cs.core
        block_means.append(core.mean)
    estimate = float(np.mean(block_means))
    standard_error = float(np.std(block_means) / math.sqrt(len(block_means)))
    assert abs(estimate - 0.1) < 3.5 * standard_error  # Δ = 0.1 within 3.5 standard errors


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        EmpiricalBernsteinCS(lower=0.0, upper=1.0).update(1.5)
    with pytest.raises(ValueError):
        EmpiricalBernsteinCS().update(float("nan"))
    with pytest.raises(ValueError):
        MeanCS(alpha=0.05, lower=0.0)  # one bound only
    with pytest.raises(ValueError):
        MeanCS(alpha=1.5)
    with pytest.raises(ValueError):
        DiffMeansCS(lower=0.0, upper=1.0).update("b", 1.0)
    with pytest.raises(ValueError):
        SRMTest(0.05, {"a": 0.5, "b": 0.6})
    with pytest.raises(ValueError):
        ThresholdTest(0.05, 0.0, 1.0)  # no limit
    with pytest.raises(ValueError):
        QuantileRatioGuardrail(0.05).update("canary", 1.0)
    with pytest.raises(ValueError):
        from_dict({"type": "builtins.eval"})


def test_srm_unexpected_arm_fails_at_once():
    srm = SRMTest(0.05, {"m:1": 1.0, "m:2": 0.0})
    srm.update("m:1").update("m:2")
    assert srm.status() == "fail"
    assert srm.p_value == 0.0
    assert srm.evidence()["unexpected"] == 1


def test_quantile_rank_search_equals_the_incremental_ranks():
    for q, tuned_n in ((0.5, 1000), (0.99, 300), (0.05, 2000)):
        s_low, r_up = quantile_rank_paths(3000, q, 0.025, tuned_n)
        cs = QuantileCS(alpha=0.025, q=q, tuned_n=tuned_n)
        for t in (1, 7, 50, 333, 1000, 2999, 3000):
            cs._search_ranks(t)
            assert (cs.s_low, cs.r_up) == (s_low[t - 1], r_up[t - 1])
