"""Moments, regression, serving, shadow pairs, label delays and per-request losses against
numpy / scikit-learn / exact formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as sk

from rollguard.stats import (
    LOSSES,
    Average,
    Correlation,
    DelayStats,
    MeanVariance,
    PairStats,
    Proportion,
    RegressionStats,
    ServingStats,
    per_request_loss,
    served_shares,
)

FLOAT_TOL = 1e-9  # online (Welford) vs two-pass numpy: rounding only


def test_mean_variance_matches_numpy():
    rng = np.random.default_rng(1)
    values = rng.normal(100.0, 3.0, 5000)
    mv = MeanVariance()
    for x in values:
        mv.update(float(x))
    got = mv.get()
    assert got["n"] == 5000
    assert got["mean"] == pytest.approx(values.mean(), rel=FLOAT_TOL)
    assert got["variance"] == pytest.approx(values.var(ddof=1), rel=FLOAT_TOL)
    assert MeanVariance().get() == {"n": 0, "mean": None, "variance": None}
    assert MeanVariance().update(3.0).get() == {"n": 1, "mean": 3.0, "variance": None}


def test_correlation_matches_numpy_and_is_none_when_undefined():
    rng = np.random.default_rng(2)
    x = rng.random(3000)
    y = 0.6 * x + 0.4 * rng.random(3000)
    r = Correlation()
    for a, b in zip(x, y):
        r.update(float(a), float(b))
    assert r.get() == pytest.approx(np.corrcoef(x, y)[0, 1], rel=FLOAT_TOL)
    assert Correlation().update(0.1, 0.2).get() is None  # one pair
    assert Correlation().update(0.5, 0.1).update(0.5, 0.9).get() is None  # constant x


def test_proportion_and_average_are_exact_on_counts():
    p = Proportion()
    for hit in [True, False, False, True, True]:
        p.update(hit)
    assert (p.hits, p.n, p.get()) == (3, 5, 0.6)
    assert Average().get() is None
    assert Average().update(1.0).update(4.0).get() == 2.5


def test_regression_stats_match_scikit_learn():
    rng = np.random.default_rng(3)
    y = rng.normal(10.0, 3.0, 4000)
    pred = y + rng.normal(0.5, 1.0, 4000)
    reg = RegressionStats()
    for t, p in zip(y, pred):
        reg.update(float(t), float(p))
    got = reg.get()
    assert got["count"] == 4000
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(y, pred), rel=FLOAT_TOL)
    assert got["mse"] == pytest.approx(sk.mean_squared_error(y, pred), rel=FLOAT_TOL)
    assert got["rmse"] == pytest.approx(math.sqrt(sk.mean_squared_error(y, pred)), rel=FLOAT_TOL)
    assert got["mean_true"] == pytest.approx(y.mean(), rel=FLOAT_TOL)
    assert got["mean_pred"] == pytest.approx(pred.mean(), rel=FLOAT_TOL)
    assert RegressionStats().get()["rmse"] is None


def test_serving_stats_latency_quantiles_error_rate_and_served_shares():
    rng = np.random.default_rng(4)
    latencies = rng.lognormal(3.0, 0.6, 10_000)
    failed = rng.random(10_000) < 0.02
    champion, candidate = ServingStats(), ServingStats()
    for i, (ms, err) in enumerate(zip(latencies, failed)):
        # a failed call may have no latency; the champion serves 3 in 4 requests
        champion.update(latency_ms=None if err else float(ms), error=bool(err), served=i % 4 != 0)
        candidate.update(latency_ms=float(ms) * 1.3, served=i % 4 == 0)
    got = champion.get()
    assert got["count"] == 10_000 and got["errors"] == failed.sum()
    assert got["error_rate"] == failed.sum() / 10_000
    assert got["latency_count"] == 10_000 - failed.sum()
    ok = latencies[~failed]
    for q, key in [(0.5, "latency_p50_ms"), (0.95, "latency_p95_ms"), (0.99, "latency_p99_ms")]:
        exact = float(np.quantile(ok, q, method="lower"))
        assert abs(got[key] - exact) <= 0.01 * exact * (1 + 1e-12)  # the sketch's 1% guarantee
    shares = served_shares({"m:1": champion, "m:2": candidate})
    assert shares == {"m:1": 0.75, "m:2": 0.25}
    assert (
        ServingStats().get()["latency_p99_ms"] is None
        and ServingStats().get()["error_rate"] is None
    )


def test_pair_stats_agreement_correlation_and_oriented_loss_differences():
    rng = np.random.default_rng(5)
    n = 2000
    y = rng.random(n) < 0.4
    champion_score = np.clip(rng.normal(np.where(y, 0.6, 0.4), 0.2), 0, 1)
    candidate_score = np.clip(champion_score + rng.normal(0.03 * np.where(y, 1, -1), 0.05), 0, 1)
    pair = PairStats()
    differences = []
    for t, cs, ch in zip(y, candidate_score, champion_score):
        pair.update(bool(cs >= 0.5), bool(ch >= 0.5), float(cs), float(ch))
        cand_loss = per_request_loss("brier", bool(t), score=float(cs))
        champ_loss = per_request_loss("brier", bool(t), score=float(ch))
        pair.update_outcome(cand_loss, champ_loss)
        differences.append(champ_loss - cand_loss)
    got = pair.get()
    assert got["pairs"] == n and got["score_pairs"] == n and got["outcomes"] == n
    assert got["agreement"] == np.mean((candidate_score >= 0.5) == (champion_score >= 0.5))
    assert got["score_correlation"] == pytest.approx(
        np.corrcoef(candidate_score, champion_score)[0, 1], rel=FLOAT_TOL
    )
    assert got["difference_mean"] == pytest.approx(np.mean(differences), rel=FLOAT_TOL)
    assert got["difference_variance"] == pytest.approx(np.var(differences, ddof=1), rel=FLOAT_TOL)
    # the candidate moves scores toward the truth: its Brier loss is lower, so the
    # difference (higher is better for the candidate) is positive
    assert got["difference_mean"] > 0


def test_pair_stats_correlate_only_pairs_with_both_scores():
    pair = PairStats().update("a", "a", 0.2, None).update("a", "b").update("b", "b", 0.3, 0.4)
    got = pair.get()
    assert (
        got["pairs"] == 3 and got["score_pairs"] == 1 and got["agreement"] == pytest.approx(2 / 3)
    )


def test_delay_stats_quantiles_and_counts():
    rng = np.random.default_rng(6)
    delays = rng.exponential(3600.0, 5000)
    stats = DelayStats()
    for d in delays:
        stats.update(float(d))
    stats.record_late().record_late().record_expired().record_duplicate()
    got = stats.get()
    assert (got["labels"], got["late"], got["expired"], got["duplicates"]) == (5000, 2, 1, 1)
    for q, key in [(0.5, "delay_p50_s"), (0.9, "delay_p90_s"), (0.99, "delay_p99_s")]:
        exact = float(np.quantile(delays, q, method="lower"))
        assert abs(got[key] - exact) <= 0.01 * exact * (1 + 1e-12)
    assert got["delay_max_s"] == delays.max()
    assert DelayStats().get()["delay_p50_s"] is None


def test_per_request_losses_follow_their_formulas():
    assert per_request_loss("accuracy", "a", "a") == 0.0
    assert per_request_loss("accuracy", "a", "b") == 1.0
    assert per_request_loss("log_loss", False, score=0.2) == pytest.approx(-math.log(0.8))
    assert per_request_loss("log_loss", True, score=0.0) == pytest.approx(-math.log(1e-15))
    assert per_request_loss("brier", True, score=0.7) == pytest.approx(0.09)
    assert per_request_loss("abs_error", 2.0, 3.5) == 1.5
    assert per_request_loss("sq_error", 2.0, 3.5) == 2.25
    assert set(LOSSES) == {"accuracy", "log_loss", "brier", "abs_error", "sq_error"}
    with pytest.raises(ValueError, match="unknown metric"):
        per_request_loss("auc", True, True)
    with pytest.raises(ValueError, match="needs a score"):
        per_request_loss("brier", True, True)
