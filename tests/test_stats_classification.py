"""Classification statistics against scikit-learn (and River) on the same outcomes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from river import metrics as river_metrics
from sklearn import metrics as sk
from sklearn.calibration import calibration_curve

from rollguard.stats import (
    BinaryConfusion,
    BinnedROCAUC,
    Brier,
    Calibration,
    ClassificationStats,
    LogLoss,
    MulticlassConfusion,
)

FLOAT_TOL = 1e-12  # same formula, different summation order


def binary_outcomes(seed: int, n: int = 3000, positive_rate: float = 0.3):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < positive_rate
    score = np.clip(rng.normal(np.where(y, 0.65, 0.35), 0.2), 0.001, 0.999)
    return y, score >= 0.5, score


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_confusion_figures_match_scikit_learn(seed):
    y, pred, _ = binary_outcomes(seed)
    confusion = BinaryConfusion()
    for t, p in zip(y, pred):
        confusion.update(bool(t), bool(p))
    got = confusion.get()
    assert got["count"] == len(y)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=FLOAT_TOL)
    assert got["precision"] == pytest.approx(sk.precision_score(y, pred), abs=FLOAT_TOL)
    assert got["recall"] == pytest.approx(sk.recall_score(y, pred), abs=FLOAT_TOL)
    assert got["f1"] == pytest.approx(sk.f1_score(y, pred), abs=FLOAT_TOL)


def test_undefined_figures_are_none_not_nan():
    # no predicted positive: precision undefined; no actual positive: recall undefined
    got = BinaryConfusion().update(False, False).update(False, False).get()
    assert got == {"count": 2, "accuracy": 1.0, "precision": None, "recall": None, "f1": None}
    assert BinaryConfusion().get()["accuracy"] is None
    empty = ClassificationStats().get()
    assert empty["log_loss"] is None and empty["brier"] is None and empty["roc_auc"] is None
    assert empty["calibration"]["ece"] is None


@pytest.mark.parametrize("seed", [4, 5])
def test_log_loss_and_brier_match_scikit_learn_and_river(seed):
    y, _, score = binary_outcomes(seed)
    log_loss, brier, river_log_loss = LogLoss(), Brier(), river_metrics.LogLoss()
    for t, s in zip(y, score):
        log_loss.update(bool(t), float(s))
        brier.update(bool(t), float(s))
        river_log_loss.update(bool(t), float(s))
    assert log_loss.get() == pytest.approx(sk.log_loss(y, score, labels=[False, True]), rel=1e-12)
    assert log_loss.get() == pytest.approx(river_log_loss.get(), rel=1e-12)
    assert brier.get() == pytest.approx(sk.brier_score_loss(y, score), rel=1e-12)


def test_log_loss_clips_certain_wrong_scores_to_a_finite_loss():
    # clipped to [1e-15, 1 - 1e-15]: a certain, wrong prediction costs -log(1e-15) ≈ 34.54
    assert LogLoss().update(True, 0.0).get() == pytest.approx(-math.log(1e-15))
    assert LogLoss().update(False, 1.0).get() == pytest.approx(-math.log(1e-15), rel=1e-3)
    assert LogLoss().update(True, 1.0).get() == pytest.approx(0.0, abs=1e-14)


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_binned_auc_is_within_its_stated_bound_of_the_exact_auc(seed):
    y, _, score = binary_outcomes(seed, n=5000)
    auc = BinnedROCAUC(bins=1000)
    for t, s in zip(y, score):
        auc.update(bool(t), float(s))
    exact = sk.roc_auc_score(y, score)
    bound = auc.error_bound()
    assert abs(auc.get() - exact) <= bound + 1e-12
    # and the bound itself is small for continuous scores: ~1/(2 * bins) at most here
    assert bound < 1e-3


def test_coarse_bins_give_a_larger_but_still_honest_bound():
    y, _, score = binary_outcomes(9, n=5000)
    auc = BinnedROCAUC(bins=10)
    for t, s in zip(y, score):
        auc.update(bool(t), float(s))
    exact = sk.roc_auc_score(y, score)
    assert abs(auc.get() - exact) <= auc.error_bound() + 1e-12
    assert auc.error_bound() > 0.01  # 10 bins: the bound is really needed


def test_tied_scores_on_the_bin_grid_give_the_exact_auc():
    rng = np.random.default_rng(10)
    y = rng.random(2000) < 0.4
    score = np.round(np.clip(rng.normal(np.where(y, 0.6, 0.4), 0.2), 0, 1), 1)  # many ties
    auc = BinnedROCAUC(bins=1000)
    for t, s in zip(y, score):
        auc.update(bool(t), float(s))
    assert auc.get() == pytest.approx(sk.roc_auc_score(y, score), abs=1e-12)


def test_auc_needs_both_classes():
    assert BinnedROCAUC().update(True, 0.3).get() is None
    assert BinnedROCAUC().update(True, 0.3).error_bound() is None


@pytest.mark.parametrize("seed", [11, 12])
def test_calibration_bins_match_scikit_learn_calibration_curve(seed):
    y, _, score = binary_outcomes(seed)
    cal = Calibration(bins=10)
    for t, s in zip(y, score):
        cal.update(bool(t), float(s))
    got = cal.get()
    prob_true, prob_pred = calibration_curve(y, score, n_bins=10, strategy="uniform")
    filled = [b for b in got["bins"] if b["count"]]
    assert [b["positive_rate"] for b in filled] == pytest.approx(list(prob_true), abs=FLOAT_TOL)
    assert [b["mean_score"] for b in filled] == pytest.approx(list(prob_pred), abs=FLOAT_TOL)
    counts = np.array([b["count"] for b in filled])
    expected_ece = float(np.sum(counts / counts.sum() * np.abs(prob_true - prob_pred)))
    assert got["ece"] == pytest.approx(expected_ece, abs=FLOAT_TOL)


def test_a_calibrated_model_has_a_small_ece_and_a_miscalibrated_one_does_not():
    # simulation: y ~ Bernoulli(score). Calibrated: each bin's positive rate has a standard
    # error of ~0.011 (2000 outcomes a bin), so ECE is about 0.009; tolerance 0.02.
    # Overconfident (scores stretched by 1.5 around 0.5, clipped): the gap is |s' - 0.5| / 3
    # inside (0, 1) plus 1/12 on the clipped sixth at each end, an ECE of about 0.08.
    rng = np.random.default_rng(13)
    score = rng.random(20_000)
    y = rng.random(20_000) < score
    calibrated, overconfident = Calibration(), Calibration()
    for t, s in zip(y, score):
        calibrated.update(bool(t), float(s))
        overconfident.update(bool(t), float(min(1.0, max(0.0, 0.5 + 1.5 * (s - 0.5)))))
    assert calibrated.get()["ece"] < 0.02
    assert overconfident.get()["ece"] > 0.06


@pytest.mark.parametrize("seed", [14, 15])
def test_multiclass_figures_match_scikit_learn_macro_averages(seed):
    rng = np.random.default_rng(seed)
    classes = ["cat", "dog", "bird", "fish"]
    y = rng.choice(classes, 2000, p=[0.5, 0.3, 0.15, 0.05])
    noise = rng.random(2000) < 0.3
    pred = np.where(noise, rng.choice(classes[:3], 2000), y)  # "fish" is never predicted
    stats = ClassificationStats("multiclass")
    for t, p in zip(y, pred):
        stats.update(str(t), str(p))
    got = stats.get()
    assert got["count"] == 2000 and got["classes"] == 4
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=FLOAT_TOL)
    for name, fn in [
        ("precision", sk.precision_score),
        ("recall", sk.recall_score),
        ("f1", sk.f1_score),
    ]:
        assert got[name] == pytest.approx(
            fn(y, pred, average="macro", zero_division=np.nan), abs=FLOAT_TOL
        )


def test_classes_beyond_the_bound_share_the_other_class():
    m = MulticlassConfusion(max_classes=2)
    for t, p in [("a", "a"), ("b", "a"), ("c", "c"), ("d", "e"), ("a", "d")]:
        m.update(t, p)
    assert set(m.classes) == {"a", "b", None}
    assert m.classes[None] == [1, 3, 2]  # c->c counts as a true positive of "other"; d, e, d
    got = m.get()
    assert got["count"] == 5 and got["accuracy"] == pytest.approx(2 / 5) and got["classes"] == 3


def test_binary_stats_gather_every_figure_and_use_only_scored_outcomes_for_scores():
    y, pred, score = binary_outcomes(16, n=1000)
    stats = ClassificationStats("binary")
    for i, (t, p, s) in enumerate(zip(y, pred, score)):
        stats.update(bool(t), bool(p), float(s) if i % 2 == 0 else None)
    got = stats.get()
    assert got["count"] == 1000 and got["scored"] == 500
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert got["log_loss"] == pytest.approx(
        sk.log_loss(y[::2], score[::2], labels=[False, True]), rel=1e-12
    )
    assert got["brier"] == pytest.approx(sk.brier_score_loss(y[::2], score[::2]), rel=1e-12)
    assert (
        abs(got["roc_auc"] - sk.roc_auc_score(y[::2], score[::2]))
        <= stats.roc_auc.error_bound() + 1e-12
    )
    assert len(got["calibration"]["bins"]) == 10


def test_multiclass_ignores_scores_and_refuses_unknown_tasks():
    stats = ClassificationStats("multiclass").update("a", "a", 0.9)
    assert "log_loss" not in stats.get()
    with pytest.raises(ValueError):
        ClassificationStats("regression")
    with pytest.raises(ValueError, match="task"):
        ClassificationStats("binary").merge(ClassificationStats("multiclass"))


@pytest.mark.parametrize("bad", [float("nan"), -0.1, 1.5])
def test_a_score_that_is_no_probability_is_refused_and_changes_nothing(bad):
    stats = ClassificationStats("binary").update(True, True, 0.9)
    before = stats.to_dict()
    with pytest.raises(ValueError, match="probability"):
        stats.update(False, True, bad)
    assert stats.to_dict() == before
    for part in (LogLoss(), Brier(), BinnedROCAUC(), Calibration()):
        with pytest.raises(ValueError, match="probability"):
            part.update(True, bad)
        assert part == type(part)()
