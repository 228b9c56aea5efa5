"""Check ``overfitting``: the candidate on its training set against the holdout.

- **Train/holdout gap** (always): the candidate's primary metric on the training set minus
  the holdout's (for a loss: the holdout's minus the training set's). It fails above
  ``overfitting.max_gap`` (default 0.05 for accuracy, 0.03 for brier, 0.1 for log_loss);
  for the regression losses, when the holdout loss exceeds ``overfitting.max_ratio`` times
  the training loss (default 1.5 for abs_error, 2.25 for sq_error). Point estimates.
- **Learning curve and k-fold cross-validation**, when the candidate exposes ``fit``: the
  candidate is trained again on growing shares of the training set (``learning_curve``,
  each with at least 30 rows and, for classes, two of them: where the training set allows
  it) and scored on that share and on the holdout; then ``folds``-fold cross-validation on
  the training set gives the mean validation metric, its spread across folds, and the
  cross-validated gap (mean training-fold metric minus mean validation-fold metric), judged
  by the same limit.

>>> gap_of("accuracy", train=0.99, holdout=0.90)
0.09
>>> limit_for("accuracy", None, None), limit_for("sq_error", None, None)
(('gap', 0.05), ('ratio', 2.25))
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

from rollguard.preflight.base import FAIL, PASS, CheckResult, Context, Plot
from rollguard.preflight.quality import (_as_counted, losses_of, metric_value, row_losses)

__all__ = ["OverfittingCheck", "gap_of", "limit_for"]

DEFAULT_LIMITS = {"accuracy": ("gap", 0.05), "brier": ("gap", 0.03), "log_loss": ("gap", 0.1),
                  "abs_error": ("ratio", 1.5), "sq_error": ("ratio", 2.25)}
MIN_ROWS = 30


def gap_of(metric: str, train: float, holdout: float) -> float:
    """How much better the model does on its training data (higher: more overfit)."""
    gap = train - holdout if metric == "accuracy" else holdout - train
    return round(gap, 6)


def limit_for(metric: str, max_gap: float | None, max_ratio: float | None) -> tuple[str, float]:
    if max_gap is not None:
        return ("gap", max_gap)
    if max_ratio is not None:
        return ("ratio", max_ratio)
    return DEFAULT_LIMITS[metric]


def _exceeds(kind: str, limit: float, metric: str, train: float, holdout: float
             ) -> tuple[bool, str]:
    if kind == "gap":
        gap = gap_of(metric, train, holdout)
        return gap > limit, f"gap {gap:+.4g} ({'>' if gap > limit else '≤'} {limit:g})"
    ratio = holdout / train if train > 0 else float("inf") if holdout > 0 else 1.0
    return ratio > limit, (f"holdout/train loss ratio {ratio:.4g} "
                           f"({'>' if ratio > limit else '≤'} {limit:g})")


def _mean_metric(metric: str, losses: Sequence[float | None]) -> float | None:
    counted = _as_counted(metric, losses)
    if not counted:
        return None
    return metric_value(metric, sum(counted) / len(counted))


class OverfittingCheck:
    name = "overfitting"
    title = "Overfitting (training set vs holdout)"

    def run(self, context: Context) -> CheckResult:
        started = time.perf_counter()
        config = context.config
        metric = config.primary.metric
        kind, limit = limit_for(metric, config.overfitting.max_gap, config.overfitting.max_ratio)
        figures: dict[str, Any] = {"metric": metric, "limit": {kind: limit}}
        values = {}
        for table in (context.train, context.holdout):
            losses, error = losses_of(context, context.candidate, table)
            value = _mean_metric(metric, losses) if losses is not None else None
            if value is None:
                return CheckResult(self.name, FAIL, self.title, [
                    f"The candidate gave no usable {metric} on the {table.name} set "
                    f"({error or 'rows without a prediction or score'})."], figures,
                    seconds=time.perf_counter() - started)
            values[table.name] = value
        figures.update(train=round(values["train"], 6), holdout=round(values["holdout"], 6),
                       gap=gap_of(metric, values["train"], values["holdout"]))
        bad, said = _exceeds(kind, limit, metric, values["train"], values["holdout"])
        sentences = [f"The candidate's {metric} is {values['train']:.4g} on its {len(context.train)}"
                     f" training rows and {values['holdout']:.4g} on the {len(context.holdout)} "
                     f"holdout rows: {said}; point estimates."]
        if bad:
            sentences[0] = "It overfits: " + sentences[0][0].lower() + sentences[0][1:]
        plots: list[Plot] = []
        candidate = context.candidate
        if candidate.can_fit:
            curve, cv, notes = self._refit(context, kind, limit)
            figures["learning_curve"] = curve
            figures["cross_validation"] = cv
            sentences.extend(notes)
            if cv and cv.get("exceeds"):
                bad = True
            if curve:
                plots.append(Plot("lines", f"Learning curve ({metric})", {
                    "training share": [(p["rows"], p["train"]) for p in curve],
                    "holdout": [(p["rows"], p["holdout"]) for p in curve]},
                    x_label="training rows", y_label=metric))
        else:
            sentences.append("No learning curve or cross-validation: the candidate exposes no "
                             "fit (docs/preflight.md).")
        return CheckResult(self.name, FAIL if bad else PASS, self.title, sentences, figures,
                           plots, time.perf_counter() - started)

    def _refit(self, context: Context, kind: str, limit: float
               ) -> tuple[list[dict], dict | None, list[str]]:
        config = context.config
        metric = config.primary.metric
        rows = context.features(context.train)
        labels = context.labels(context.train)
        holdout_rows = context.features(context.holdout)
        holdout_labels = context.labels(context.holdout)
        order = list(range(len(rows)))
        random.Random(config.overfitting.seed).shuffle(order)
        notes: list[str] = []

        def score(model: Any, xs: list, ys: list) -> float | None:
            pairs = model.predict_many(xs, config.batch_size)
            return _mean_metric(metric, row_losses(metric, config.task, ys, pairs,
                                                   config.is_positive, config.primary.clip))

        def usable(ys: list) -> bool:
            return len(ys) >= MIN_ROWS and (config.task == "regression" or len(set(ys)) >= 2)

        curve: list[dict] = []
        try:
            for share in sorted(set(config.overfitting.learning_curve)):
                chosen = order[:max(1, round(share * len(order)))]
                xs, ys = [rows[i] for i in chosen], [labels[i] for i in chosen]
                if not usable(ys):
                    continue
                model = context.candidate.fit(xs, ys)
                curve.append({"share": share, "rows": len(xs), "train": _r(score(model, xs, ys)),
                              "holdout": _r(score(model, holdout_rows, holdout_labels))})
            k = config.overfitting.folds
            folds = [order[i::k] for i in range(k)]
            train_scores, valid_scores = [], []
            for i in range(k):
                held = set(folds[i])
                fit_idx = [j for j in order if j not in held]
                xs, ys = [rows[j] for j in fit_idx], [labels[j] for j in fit_idx]
                vx, vy = [rows[j] for j in folds[i]], [labels[j] for j in folds[i]]
                if not usable(ys) or not vy:
                    raise _TooFew()
                model = context.candidate.fit(xs, ys)
                train_scores.append(score(model, xs, ys))
                valid_scores.append(score(model, vx, vy))
        except _TooFew:
            notes.append(f"No {config.overfitting.folds}-fold cross-validation: the training "
                         "set is too small for it.")
            return curve, None, notes
        except Exception as bad:  # noqa: BLE001 - the user's fit: reported, never raised
            notes.append(f"Refitting the candidate failed ({type(bad).__name__}: "
                         f"{str(bad).strip()[:200]}): no learning curve or cross-validation.")
            return curve, None, notes
        if any(s is None for s in train_scores + valid_scores):
            notes.append("Cross-validation gave folds without a usable metric.")
            return curve, None, notes
        import statistics

        mean_train = statistics.fmean(train_scores)
        mean_valid = statistics.fmean(valid_scores)
        spread = statistics.stdev(valid_scores) if len(valid_scores) > 1 else 0.0
        exceeds, said = _exceeds(kind, limit, metric, mean_train, mean_valid)
        cv = {"folds": k, "train_mean": _r(mean_train), "validation_mean": _r(mean_valid),
              "validation_sd": _r(spread), "validation": [_r(s) for s in valid_scores],
              "gap": gap_of(metric, mean_train, mean_valid), "exceeds": exceeds}
        notes.append(f"{k}-fold cross-validation of the refitted candidate: {metric} "
                     f"{mean_valid:.4g} ± {spread:.2g} (sd across folds) on the validation "
                     f"folds, {mean_train:.4g} on the training folds: {said}"
                     f"{' — it overfits' if exceeds else ''}.")
        if curve:
            last = curve[-1]
            notes.append(f"Learning curve over {len(curve)} training sizes: holdout {metric} "
                         f"{curve[0]['holdout']:.4g} at {curve[0]['rows']} rows, "
                         f"{last['holdout']:.4g} at {last['rows']}.")
        return curve, cv, notes


class _TooFew(Exception):
    pass


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 6)
