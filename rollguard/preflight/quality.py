"""Checks ``non_inferiority`` and ``threshold``: the candidate's primary metric on the holdout.

The primary metric is the live experiment's (``primary``: metric, margin, clip), computed
per row as the live worker does (binary accuracy compares the positive class of the label
and of the prediction, ``positive_label``), so a preflight pass means what a live promotion
means, on the holdout instead of live traffic:

- ``non_inferiority``: Δ = candidate − champion (higher is better; for a loss, the
  champion's loss minus the candidate's) on the same holdout rows, with a paired t-test:
  it passes when the lower bound of the two-sided (1 − α) interval of Δ is above −margin,
  a one-sided test at α/2 as the live experiment's promotion. Each model's metric is shown
  with its (1 − α) interval (Wilson for accuracy, Student t for the losses).
- ``threshold``: the candidate's metric against a fixed minimum (``threshold.min``; for a
  loss ``threshold.max``) or the champion's live metric over a recent window of the stats
  topic minus ``threshold.live.tolerance``; judged on the point estimate (``on: estimate``,
  the default) or on the interval's bound (``on: lower``: with confidence).

>>> losses = row_losses("accuracy", "binary", [1, 0, 1], [(1, None), (1, None), (1, None)],
...                     positive=lambda v: v == 1)
>>> losses
[0.0, 1.0, 0.0]
>>> metric_summary("accuracy", losses, 0.05)["value"]
0.666667
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from rollguard.preflight.base import FAIL, PASS, SKIPPED, CheckResult, Context
from rollguard.preflight.config import PreflightInputError
from rollguard.preflight.statistics import mean_interval, paired_noninferiority, wilson_interval

__all__ = ["NonInferiorityCheck", "ThresholdCheck", "row_losses", "metric_summary",
           "predictions", "metric_value", "HIGHER_IS_BETTER"]

HIGHER_IS_BETTER = {"accuracy": True, "log_loss": False, "brier": False, "abs_error": False,
                    "sq_error": False}
_CLIP = 1e-15


def row_losses(metric: str, task: str, labels: Sequence[Any], pairs: Sequence[tuple[Any, Any]],
               positive: Callable[[Any], bool], clip: float | None = None
               ) -> list[float | None]:
    """The primary metric's loss per row (None when a row has no usable prediction/score)."""
    out: list[float | None] = []
    for label, (prediction, score) in zip(labels, pairs):
        loss: float | None
        try:
            if metric == "accuracy":
                if prediction is None:
                    loss = None
                elif task == "binary":
                    loss = 0.0 if positive(label) == positive(prediction) else 1.0
                else:
                    loss = 0.0 if label == prediction else 1.0
            elif metric in ("log_loss", "brier"):
                if not _probability(score):
                    loss = None
                elif metric == "log_loss":
                    p = score if positive(label) else 1.0 - score
                    loss = -math.log(min(max(p, _CLIP), 1.0 - _CLIP))
                else:
                    loss = (score - (1.0 if positive(label) else 0.0)) ** 2
            else:
                gap = float(prediction) - float(label)
                loss = abs(gap) if metric == "abs_error" else gap * gap
                if not math.isfinite(loss):
                    loss = None
        except (TypeError, ValueError):
            loss = None
        if loss is not None and clip is not None:
            loss = min(loss, clip)
        out.append(loss)
    return out


def _probability(score: Any) -> bool:
    return isinstance(score, (int, float)) and not isinstance(score, bool) \
        and math.isfinite(score) and 0.0 <= score <= 1.0


def metric_value(metric: str, mean_loss: float) -> float:
    return 1.0 - mean_loss if metric == "accuracy" else mean_loss


def metric_summary(metric: str, losses: Sequence[float], alpha: float) -> dict[str, Any]:
    """The metric and its two-sided (1 − α) interval: Wilson (accuracy) or Student t."""
    n = len(losses)
    if metric == "accuracy":
        correct = int(round(n - sum(losses)))
        lo, hi = wilson_interval(correct, n, alpha)
        value = correct / n if n else math.nan
        method = "Wilson score interval"
    else:
        value, lo, hi = mean_interval(losses, alpha)
        method = "Student t-interval (asymptotic)"
    return {"value": round(value, 6), "lower": round(lo, 6), "upper": round(hi, 6), "n": n,
            "confidence": 1 - alpha, "method": method}


def predictions(context: Context, model: Any, table: Any) -> tuple[list[tuple[Any, Any]] | None,
                                                                      str | None]:
    """``model``'s predictions on ``table`` (cached), or None and why it failed."""
    key = f"predictions:{model.role}:{table.name}"
    if key not in context.cache:
        rows = context.features(table)
        try:
            context.cache[key] = (model.predict_many(rows, context.config.batch_size), None)
        except Exception as bad:  # noqa: BLE001 - the user's model: reported, never raised
            text = str(bad).strip().splitlines()
            context.cache[key] = (None, f"{type(bad).__name__}: "
                                        f"{(text[0] if text else 'no message')[:200]}")
    return context.cache[key]


def losses_of(context: Context, model: Any, table: Any) -> tuple[list[float | None] | None,
                                                                   str | None]:
    pairs, error = predictions(context, model, table)
    if pairs is None:
        return None, error
    config = context.config
    return row_losses(config.primary.metric, config.task, context.labels(table), pairs,
                      config.is_positive, config.primary.clip), None


def _unusable(losses: Sequence[float | None]) -> int:
    return sum(loss is None for loss in losses)


def _as_counted(metric: str, losses: Sequence[float | None]) -> list[float] | None:
    """Accuracy counts a missing prediction as wrong; other metrics cannot count it."""
    if metric == "accuracy":
        return [1.0 if loss is None else loss for loss in losses]
    return None if _unusable(losses) else [float(loss) for loss in losses]  # type: ignore[arg-type]


def _signed(x: float) -> str:
    return f"{x:+.4g}"


class NonInferiorityCheck:
    name = "non_inferiority"
    title = "Non-inferiority to the champion on the holdout"

    def run(self, context: Context) -> CheckResult:
        started = time.perf_counter()
        config = context.config
        metric, margin, alpha = config.primary.metric, config.primary.margin, config.alpha
        figures: dict[str, Any] = {"metric": metric, "margin": margin, "alpha": alpha,
                                   "holdout": context.holdout.source}
        per_model = {}
        for model in (context.candidate, context.champion):
            losses, error = losses_of(context, model, context.holdout)
            if losses is None and model.role == "champion":
                raise PreflightInputError(f"The champion {model.name} failed on the holdout "
                                          f"set ({error}): fix it or name another champion")
            if losses is None:
                return self._done(FAIL, [f"The candidate {model.name} failed on the holdout "
                                         f"set ({error}): it cannot be compared."], figures,
                                  started)
            counted = _as_counted(metric, losses)
            if counted is None:
                return self._done(FAIL, [f"The {model.role} {model.name} gave no usable "
                                         f"prediction or score for {_unusable(losses)} holdout "
                                         f"rows, which {metric} needs."], figures, started)
            per_model[model.role] = counted
            figures[model.role] = {**metric_summary(metric, counted, alpha),
                                   "unusable_rows": _unusable(losses)}
        if len(per_model["candidate"]) < 30:
            return self._done(SKIPPED, ["The holdout has fewer than 30 rows: too few for the "
                                        "test."], figures, started)
        test = paired_noninferiority(per_model["champion"], per_model["candidate"], margin,
                                     alpha)
        figures["delta"] = {k: (round(v, 6) if isinstance(v, float) else v)
                            for k, v in test.items()}
        cand, champ = figures["candidate"], figures["champion"]
        conf = f"{100 * (1 - alpha):g}%"
        direction = "" if HIGHER_IS_BETTER[metric] else " (champion's loss − candidate's)"
        sentences = [
            f"{metric} on {cand['n']} holdout rows: candidate {cand['value']:.4g} "
            f"[{cand['lower']:.4g}, {cand['upper']:.4g}], champion {champ['value']:.4g} "
            f"[{champ['lower']:.4g}, {champ['upper']:.4g}] ({conf} {cand['method']}s)."]
        lower, upper, estimate = test["lower"], test["upper"], test["estimate"]
        one_sided = f"{100 * (1 - alpha / 2):g}% confidence"
        how = (f"{conf} paired t-interval; a one-sided test at α/2 = {alpha / 2:g}, as the live "
               f"promotion; asymptotic, n = {test['n']}")
        if test["passed"]:
            sentences.append(f"The candidate's {metric} is at least the champion's minus the "
                             f"margin {margin:g}, with {one_sided}: Δ{direction} ≥ "
                             f"{_signed(lower)}, the lower bound ({how}); estimate "
                             f"{_signed(estimate)}.")
        elif upper < -margin:
            sentences.append(f"The candidate's {metric} is worse than the champion's by more "
                             f"than the margin {margin:g}, with {one_sided}: Δ{direction} ≤ "
                             f"{_signed(upper)}, the upper bound ({how}); estimate "
                             f"{_signed(estimate)}.")
        else:
            sentences.append(f"The holdout does not show the candidate's {metric} within the "
                             f"margin {margin:g} of the champion's: Δ{direction} in "
                             f"[{_signed(lower)}, {_signed(upper)}] ({how}); estimate "
                             f"{_signed(estimate)}; a larger holdout may decide.")
        if cand["unusable_rows"]:
            sentences.append(f"{cand['unusable_rows']} holdout rows got no prediction from the "
                             "candidate and count as wrong.")
        return self._done(PASS if test["passed"] else FAIL, sentences, figures, started)

    def _done(self, status: str, sentences: list[str], figures: dict, started: float
              ) -> CheckResult:
        return CheckResult(self.name, status, self.title, sentences, figures,
                           seconds=time.perf_counter() - started)


class ThresholdCheck:
    name = "threshold"
    title = "Minimum quality threshold"

    def run(self, context: Context) -> CheckResult:
        started = time.perf_counter()
        config = context.config
        threshold = config.threshold
        metric, alpha = config.primary.metric, config.alpha
        if threshold is None:
            return CheckResult(self.name, SKIPPED, self.title,
                               ["No threshold is set (threshold: {min: …} or {live: …})."], {})
        higher = HIGHER_IS_BETTER[metric]
        figures: dict[str, Any] = {"metric": metric, "on": threshold.on}
        if threshold.live is not None:
            live = context.live or {}
            value = live.get("value")
            if value is None:
                return CheckResult(self.name, FAIL, self.title, [
                    f"The champion's live {metric} is not known "
                    f"({context.live_error or 'no labelled outcome in the window'})."],
                    figures, seconds=time.perf_counter() - started)
            tol = threshold.live.tolerance
            limit = value - tol if higher else value + tol
            figures["live"] = live
            origin = (f"the champion {live.get('arm')}'s live {metric} {value:.4g} over "
                      f"{live.get('n')} labelled outcomes ({live.get('window_text')}; an "
                      f"estimate)" + (f" minus the tolerance {tol:g}" if higher and tol else
                                      f" plus the tolerance {tol:g}" if tol else ""))
        else:
            limit = threshold.min if higher else threshold.max
            origin = f"the fixed {'minimum' if higher else 'maximum'} {limit:g}"
        figures["threshold"] = limit
        losses, error = losses_of(context, context.candidate, context.holdout)
        counted = _as_counted(metric, losses) if losses is not None else None
        if counted is None:
            return CheckResult(self.name, FAIL, self.title, [
                f"The candidate gave no usable {metric} on the holdout "
                f"({error or 'rows without a prediction or score'})."], figures,
                seconds=time.perf_counter() - started)
        summary = metric_summary(metric, counted, alpha)
        figures["candidate"] = summary
        if threshold.on == "lower":
            judged = summary["lower"] if higher else summary["upper"]
            what = (f"the {'lower' if higher else 'upper'} bound {judged:.4g} of its "
                    f"{100 * (1 - alpha):g}% interval (estimate {summary['value']:.4g})")
        else:
            judged = summary["value"]
            what = f"its point estimate {judged:.4g}"
        passed = judged >= limit if higher else judged <= limit
        figures["judged"] = judged
        verb = ("reaches" if passed else "falls short of") if higher else \
            ("stays within" if passed else "exceeds")
        sentence = f"The candidate's holdout {metric}, by {what}, {verb} {origin}"
        if threshold.live is not None:
            sentence += f": the threshold is {limit:.4g}"
        return CheckResult(self.name, PASS if passed else FAIL, self.title, [sentence + "."],
                           figures, seconds=time.perf_counter() - started)
