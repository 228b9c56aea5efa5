"""Check ``drift``: the training set against the production window, feature by feature.

- **Numeric** features: PSI as the live worker computes it (:class:`rollguard.stats.Drift`,
  10 bins at the training set's deciles), a point estimate without an error guarantee; and
  the KS distance with a confidence interval (:func:`~rollguard.preflight.statistics.ks_bounds`,
  at α/k for k numeric features, so that all hold together with chance ≥ 1 − α). A feature
  fails when its PSI exceeds ``drift.psi_max`` (by its point estimate) or when its KS
  distance exceeds ``drift.ks_max`` with confidence (the interval's lower bound).
- **Categorical** features: PSI over the categories and the share of production values
  the training set never had (unseen categories), both point estimates; a feature fails when
  the PSI exceeds ``psi_max`` or the unseen share exceeds ``drift.unseen_max``.

Values of the wrong kind (a string in a numeric feature) are left to the ``constraints``
check; missing values to ``missing``.

>>> from rollguard.preflight.data import Feature
>>> train = {"x": [float(i % 100) for i in range(1000)]}
>>> prod = {"x": [float(i % 100) + 60 for i in range(1000)]}
>>> rows = compare_feature(Feature("x", "numeric"), train["x"], prod["x"],
...                        alpha=0.05, k=1, limits=DriftLimits())
>>> rows["status"], rows["ks"], rows["psi"] > 0.2
('fail', 0.6, True)
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rollguard.preflight.base import FAIL, PASS, SKIPPED, CheckResult, Context, Plot
from rollguard.preflight.data import Feature, is_missing, is_number
from rollguard.preflight.statistics import categorical_psi, histogram, ks_bounds

__all__ = ["DriftCheck", "DriftLimits", "compare_feature"]

#: PSI has no error guarantee, and psi_max is a rule of thumb (< 0.1 stable, > 0.25 major)
PSI_NOTE = "point estimate; the limit is a rule of thumb"


@dataclass(frozen=True)
class DriftLimits:
    psi_max: float = 0.2
    ks_max: float = 0.1
    unseen_max: float = 0.01
    min_rows: int = 100


def _numbers(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if is_number(v) and math.isfinite(v)]


def compare_feature(feature: Feature, train: Sequence[Any], production: Sequence[Any], *,
                    alpha: float, k: int, limits: DriftLimits) -> dict[str, Any]:
    """One feature's drift figures and status (``pass``, ``fail`` or ``skipped``)."""
    out: dict[str, Any] = {"feature": feature.name, "kind": feature.kind}
    if feature.kind == "numeric":
        from rollguard.stats import Drift

        ref, cur = _numbers(train), _numbers(production)
        out.update(train_n=len(ref), production_n=len(cur))
        if len(cur) < limits.min_rows or len(ref) < limits.min_rows:
            out.update(status=SKIPPED, why=f"fewer than {limits.min_rows} numeric values")
            return out
        drift = Drift(reference=ref)
        for x in cur:
            drift.update(x)
        psi = drift.get()["psi"]
        level = alpha / k
        ks, lower, upper = ks_bounds(ref, cur, level)
        out.update(psi=round(psi, 6), ks=round(ks, 6), ks_lower=round(lower, 6),
                   ks_upper=round(upper, 6), ks_confidence=1 - level,
                   train_median=_median(ref), production_median=_median(cur))
        reasons = []
        if psi > limits.psi_max:
            reasons.append(f"PSI {psi:.3g} > {limits.psi_max:g} ({PSI_NOTE})")
        if lower > limits.ks_max:
            reasons.append(f"KS distance ≥ {lower:.3g} > {limits.ks_max:g} with "
                           f"{100 * (1 - level):.4g}% confidence (estimate {ks:.3g})")
        out.update(status=FAIL if reasons else PASS, reasons=reasons)
        return out
    ref_counts = Counter(v for v in train if not is_missing(v))
    cur_counts = Counter(v for v in production if not is_missing(v))
    n_cur = sum(cur_counts.values())
    out.update(train_n=sum(ref_counts.values()), production_n=n_cur)
    if n_cur < limits.min_rows or not ref_counts:
        out.update(status=SKIPPED, why=f"fewer than {limits.min_rows} values")
        return out
    unseen = {key: c for key, c in cur_counts.items() if key not in ref_counts}
    unseen_share = sum(unseen.values()) / n_cur
    psi = categorical_psi(ref_counts, cur_counts)
    top_unseen = sorted(unseen.items(), key=lambda kv: -kv[1])[:5]
    out.update(psi=round(psi, 6), categories=len(ref_counts), unseen_share=round(unseen_share, 6),
               unseen_examples=[_shown(key) for key, _ in top_unseen])
    reasons = []
    if psi > limits.psi_max:
        reasons.append(f"PSI {psi:.3g} > {limits.psi_max:g} ({PSI_NOTE})")
    if unseen_share > limits.unseen_max:
        examples = ", ".join(_shown(key) for key, _ in top_unseen[:3])
        reasons.append(f"{100 * unseen_share:.3g}% of production values are categories the "
                       f"training set never had (> {100 * limits.unseen_max:g}%; e.g. "
                       f"{examples})")
    out.update(status=FAIL if reasons else PASS, reasons=reasons)
    return out


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


class DriftCheck:
    """Training data against the production window (see the module docstring)."""

    name = "drift"
    title = "Feature drift (training set vs production window)"

    def run(self, context: Context) -> CheckResult:
        started = time.perf_counter()
        config = context.config
        limits = DriftLimits(config.drift.psi_max, config.drift.ks_max,
                             config.drift.unseen_max, config.drift.min_rows)
        alpha = config.alpha
        k = max(1, sum(f.kind == "numeric" for f in context.schema.values()))
        rows = []
        plots: list[Plot] = []
        for feature in context.schema.values():
            train = context.train.column(feature.name)
            prod = context.production.column(feature.name)
            row = compare_feature(feature, train, prod, alpha=alpha, k=k, limits=limits)
            rows.append(row)
            if row["status"] == FAIL:
                plots.append(_plot(feature, train, prod))
        failed = [r for r in rows if r["status"] == FAIL]
        skipped = [r for r in rows if r["status"] == SKIPPED]
        sentences = []
        for r in failed:
            sentences.append(f"{r['feature']} drifted: {'; '.join(r['reasons'])}.")
        if skipped:
            sentences.append("Not compared (too few values): "
                             f"{', '.join(r['feature'] for r in skipped)}.")
        if not failed:
            sentences.insert(0, f"No feature drifted beyond PSI {limits.psi_max:g} (a rule of "
                             f"thumb), KS {limits.ks_max:g} (with confidence) or "
                             f"{100 * limits.unseen_max:g}% unseen categories, over "
                             f"{len(rows) - len(skipped)} features.")
        status = FAIL if failed else PASS if len(skipped) < len(rows) else SKIPPED
        figures = {"features": rows, "limits": limits.__dict__,
                   "ks_alpha_per_feature": alpha / k,
                   "method": "PSI: point estimate against a heuristic limit, no error "
                             "guarantee (10 bins at the training deciles, as the live worker); "
                             "KS: exact distance, DKW interval at α/k per feature"}
        return CheckResult(self.name, status, self.title, sentences, figures, plots,
                           time.perf_counter() - started)


def _plot(feature: Feature, train: Sequence[Any], prod: Sequence[Any]) -> Plot:
    if feature.kind == "numeric":
        edges, shares, scale = histogram({"training": _numbers(train),
                                          "production": _numbers(prod)})
        return Plot("histogram", feature.name, shares, x_label=feature.name + (
            " (log scale)" if scale != "linear" else ""), y_label="share of rows",
            edges=edges, x_scale=scale)
    ref = Counter(v for v in train if not is_missing(v))
    cur = Counter(v for v in prod if not is_missing(v))
    keys = [k for k, _ in (ref + cur).most_common(12)]
    n_ref, n_cur = max(1, sum(ref.values())), max(1, sum(cur.values()))
    return Plot("bars", feature.name, {
        "training": [round(ref.get(k, 0) / n_ref, 6) for k in keys],
        "production": [round(cur.get(k, 0) / n_cur, 6) for k in keys]},
        categories=[_shown(k) for k in keys], y_label="share of rows")
