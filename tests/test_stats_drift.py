"""Drift (PSI, KS) against scipy's exact KS and a numpy PSI, and the reference's meaning."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from rollguard.stats import Drift, FeatureDrift


def fed(values_ref, values_cur, **kwargs) -> Drift:
    drift = Drift(reference=[float(x) for x in values_ref], **kwargs)
    for x in values_cur:
        drift.update(float(x))
    return drift


def numpy_psi(ref: np.ndarray, cur: np.ndarray, bins: int = 10, eps: float = 1e-4) -> float:
    """PSI on the exact deciles of the reference (the textbook computation)."""
    edges = np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1])
    p_ref = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=bins) / len(ref)
    p_cur = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=bins) / len(cur)
    p_ref, p_cur = np.maximum(p_ref, eps), np.maximum(p_cur, eps)
    return float(np.sum((p_cur - p_ref) * np.log(p_cur / p_ref)))


def exact_ks(ref, cur) -> float:
    """sup |F_ref - F_cur| over the pooled sample (scipy's statistic, without its p-value,
    whose computation warns on tiny samples)."""
    ref, cur = np.sort(ref), np.sort(cur)
    pooled = np.concatenate([ref, cur])
    cdf_ref = np.searchsorted(ref, pooled, side="right") / len(ref)
    cdf_cur = np.searchsorted(cur, pooled, side="right") / len(cur)
    return float(np.max(np.abs(cdf_ref - cdf_cur)))


SCENARIOS = {
    "same distribution": (lambda rng: rng.normal(0, 1, 4000), lambda rng: rng.normal(0, 1, 4000)),
    "mean shift 0.3 sd": (lambda rng: rng.normal(0, 1, 4000), lambda rng: rng.normal(0.3, 1, 4000)),
    "scale x2": (lambda rng: rng.normal(5, 1, 4000), lambda rng: rng.normal(5, 2, 4000)),
    "scores drift": (lambda rng: rng.beta(2, 5, 4000), lambda rng: rng.beta(3, 4, 4000)),
    "latency tail": (
        lambda rng: rng.lognormal(3, 0.5, 4000),
        lambda rng: rng.lognormal(3.1, 0.7, 4000),
    ),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_ks_is_within_its_reported_error_of_scipys_exact_ks(scenario):
    rng = np.random.default_rng(21)
    make_ref, make_cur = SCENARIOS[scenario]
    ref, cur = make_ref(rng), make_cur(rng)
    got = fed(ref, cur).get()
    exact = scipy_stats.ks_2samp(ref, cur).statistic
    assert exact == pytest.approx(exact_ks(ref, cur), abs=1e-12)
    assert got["ks"] <= exact + 1e-12
    assert got["ks"] >= exact - got["ks_max_error"] - 1e-12
    # the error bound is the largest share of one sample in one bucket: buckets are 2% of
    # |x| wide, so it is largest where values are far from 0 relative to their spread
    # (5 ± 1 here: ~0.024); it stays below 0.05 in all these scenarios
    assert got["ks_max_error"] < 0.05


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_psi_is_close_to_the_psi_on_exact_deciles(scenario):
    rng = np.random.default_rng(22)
    make_ref, make_cur = SCENARIOS[scenario]
    ref, cur = make_ref(rng), make_cur(rng)
    got = fed(ref, cur).get()
    # bin cuts fall on bucket edges (1% relative) instead of the exact deciles: with 4000
    # values a sample, the PSI moves by less than 0.01 + 5% of its value
    expected = numpy_psi(ref, cur)
    assert abs(got["psi"] - expected) <= 0.01 + 0.05 * expected


def test_psi_and_ks_separate_stable_from_shifted_streams():
    # simulation over 10 seeds, 2000 reference + 2000 current values: the same distribution
    # gives PSI ~ 9 * (1/2000 + 1/2000) ≈ 0.01 (bound 0.05) and KS below the 1% critical
    # value 1.63 * sqrt(2/2000) ≈ 0.052; a shift of one standard deviation gives PSI ≈ 1
    # (bound 0.25, "major shift") and KS ≈ 0.38 (bound 0.3)
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        stable = Drift(reference_size=2000)
        shifted = Drift(reference_size=2000)
        for x in rng.normal(0, 1, 2000):
            stable.update(float(x))
            shifted.update(float(x))
        for x in rng.normal(0, 1, 2000):
            stable.update(float(x))
        for x in rng.normal(1, 1, 2000):
            shifted.update(float(x))
        assert stable.get()["psi"] < 0.05 and stable.get()["ks"] < 0.052
        assert shifted.get()["psi"] > 0.25 and shifted.get()["ks"] > 0.3


@settings(max_examples=100, deadline=None)
@given(
    ref=st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=60),
    cur=st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=60),
)
def test_ks_bounds_hold_for_any_samples(ref, cur):
    got = fed(ref, cur).get()
    exact = exact_ks(ref, cur)
    assert exact - got["ks_max_error"] - 1e-12 <= got["ks"] <= exact + 1e-12
    assert math.isfinite(got["psi"]) and got["psi"] >= 0.0


def test_the_first_n_values_are_the_reference():
    drift = Drift(reference_size=3)
    for x in [1.0, 2.0, 3.0, 10.0, 20.0]:
        drift.update(x)
    assert drift.reference.count == 3 and drift.current.count == 2
    assert drift.current.get()["min"] == 10.0
    got = drift.get()
    assert (got["reference"], got["current"], got["ks"]) == (3, 2, 1.0)
    assert Drift().update(1.0).get()["psi"] is None  # no current values yet


def test_an_explicit_reference_is_shared_not_added_up_when_merging():
    reference = [0.1, 0.2, 0.3]
    a = Drift(reference=reference).update(0.5)
    b = Drift(reference=reference).update(0.6)
    a += b
    assert a.reference.count == 3 and a.current.count == 2
    with pytest.raises(ValueError, match="different explicit references"):
        a.merge(Drift(reference=[0.9]))
    with pytest.raises(ValueError, match="fixed_reference"):
        a.merge(Drift(reference_size=3))


def test_feature_drift_tracks_numeric_features_only():
    fd = FeatureDrift(reference_size=2, max_features=2)
    fd.update({"age": 30, "vip": True, "country": "DE", "income": float("nan"), "score": None})
    fd.update({"age": 31.0, "income": 1000.0, "height": 1.8})  # height: past max_features
    fd.update({"age": 50.0, "income": 2000.0})
    assert sorted(fd.features) == ["age", "income"]
    got = fd.get()
    assert (got["age"]["reference"], got["age"]["current"]) == (2, 1)
    assert (got["income"]["reference"], got["income"]["current"]) == (2, 0)


def test_feature_drift_with_references_tracks_exactly_those_features():
    fd = FeatureDrift(references={"age": [30.0, 40.0, 50.0]})
    fd.update({"age": 45.0, "income": 10.0})
    assert list(fd.get()) == ["age"]
    assert fd.get()["age"]["reference"] == 3 and fd.get()["age"]["current"] == 1
