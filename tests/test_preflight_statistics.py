"""The statistical claims of `rollguard preflight`, checked by simulation (fixed seeds).

- The non-inferiority test (paired t-test, one-sided at α/2 as the live promotion) passes a
  candidate exactly at the margin (Δ = −δ) in at most α/2 of holdouts, within three
  simulation standard errors, for accuracy (paired 0/1 losses) and for a skewed continuous
  loss; it passes a clearly better candidate nearly always.
- The KS interval of the drift check covers the true distance in at least 1 − α of runs, so
  a feature whose true KS distance is exactly ``ks_max`` is called drifted in at most α.
- The Wilson interval of a holdout accuracy covers the true accuracy in about 1 − α of runs.
- PSI of the drift check is rollguard's live PSI (:class:`rollguard.stats.Drift`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from rollguard.preflight.statistics import (categorical_psi, ks_bounds, ks_distance,
                                            paired_noninferiority, wilson_interval)

ALPHA = 0.05


def _rate_bound(p: float, runs: int) -> float:
    """p plus three standard errors of a rate estimated from ``runs`` runs."""
    return p + 3 * math.sqrt(p * (1 - p) / runs)


@pytest.mark.parametrize("n", [200, 2000])
def test_a_candidate_at_the_margin_passes_in_at_most_half_alpha_accuracy(n):
    rng = np.random.default_rng(20260 + n)
    runs, margin = 6000, 0.01
    # discordant pairs: champion right and candidate wrong 8% of rows, the reverse 7%:
    # Δ (accuracy, candidate − champion) = 0.07 − 0.08 = −0.01 = −margin
    counts = rng.multinomial(n, [0.07, 0.08, 0.85], size=runs)
    passed = 0
    for better, worse, _ in counts:
        champion = np.r_[np.ones(better), np.zeros(worse), np.zeros(n - better - worse)]
        candidate = np.r_[np.zeros(better), np.ones(worse), np.zeros(n - better - worse)]
        passed += paired_noninferiority(champion, candidate, margin, ALPHA)["passed"]
    rate = passed / runs
    assert rate <= _rate_bound(ALPHA / 2, runs), rate
    assert rate >= 0.01  # not absurdly conservative either


def test_a_candidate_at_the_margin_passes_in_at_most_half_alpha_skewed_loss():
    rng = np.random.default_rng(99)
    runs, n, margin = 6000, 500, 0.05
    passed = 0
    for _ in range(runs):
        champion = rng.exponential(0.5, n)
        # candidate loss = champion's + margin + centred skewed noise: E[Δ] = −margin exactly
        candidate = champion + margin + (rng.exponential(0.3, n) - 0.3)
        passed += paired_noninferiority(champion, candidate, margin, ALPHA)["passed"]
    assert passed / runs <= _rate_bound(ALPHA / 2, runs), passed / runs


def test_a_clearly_better_candidate_passes_nearly_always():
    rng = np.random.default_rng(5)
    runs, n = 1000, 2000
    counts = rng.multinomial(n, [0.10, 0.06, 0.84], size=runs)  # Δ = +0.04
    passed = sum(paired_noninferiority(
        np.r_[np.ones(b), np.zeros(w), np.zeros(n - b - w)],
        np.r_[np.zeros(b), np.ones(w), np.zeros(n - b - w)], 0.01, ALPHA)["passed"]
        for b, w, _ in counts)
    assert passed / runs >= 0.99


def test_the_ks_interval_covers_the_true_distance_and_a_drift_at_the_limit_rarely_fails():
    rng = np.random.default_rng(11)
    runs, n, ks_max = 1500, 1000, 0.1
    shift = 2 * norm.ppf(0.5 + ks_max / 2)  # N(0,1) vs N(shift,1): KS distance exactly 0.1
    covered = failed = 0
    for _ in range(runs):
        d, lower, upper = ks_bounds(rng.normal(0, 1, n), rng.normal(shift, 1, n), ALPHA)
        covered += lower <= ks_max <= upper
        failed += lower > ks_max
    assert covered / runs >= 1 - ALPHA
    assert failed / runs <= ALPHA
    # and a real drift (true distance 0.4) is caught
    caught = sum(ks_bounds(rng.normal(0, 1, n), rng.normal(2 * norm.ppf(0.7), 1, n),
                           ALPHA)[1] > ks_max for _ in range(200))
    assert caught == 200


def test_the_wilson_interval_covers_a_holdout_accuracy():
    rng = np.random.default_rng(3)
    runs, n, p = 4000, 300, 0.9
    hits = rng.binomial(n, p, size=runs)
    covered = sum(lo <= p <= hi for lo, hi in (wilson_interval(int(k), n, ALPHA) for k in hits))
    assert abs(covered / runs - (1 - ALPHA)) <= 0.015


def test_ks_distance_is_scipys():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 300), rng.normal(0.3, 1.2, 500)
    assert ks_distance(a, b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)
    assert ks_distance([1, 1, 2], [1, 2, 2]) == pytest.approx(1 / 3)


def test_the_drift_psi_is_the_live_workers_and_the_categorical_psi_matches_its_formula():
    from rollguard.preflight.data import Feature
    from rollguard.preflight.drift import DriftLimits, compare_feature
    from rollguard.stats import Drift

    rng = np.random.default_rng(2)
    train, prod = rng.lognormal(0, 1, 2000).tolist(), rng.lognormal(0.2, 1, 1500).tolist()
    row = compare_feature(Feature("x", "numeric"), train, prod, alpha=ALPHA, k=1,
                          limits=DriftLimits())
    live = Drift(reference=train)
    for x in prod:
        live.update(x)
    assert row["psi"] == pytest.approx(live.get()["psi"], abs=1e-6)
    ref, cur = {"a": 60, "b": 40}, {"a": 30, "b": 50, "z": 20}
    expected = sum((q - p) * math.log(q / p) for p, q in
                   [(0.6, 0.3), (0.4, 0.5), (1e-4, 0.2)])
    assert categorical_psi(ref, cur) == pytest.approx(expected)
