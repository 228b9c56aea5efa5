"""The fixed-sample statistics of preflight (numpy and scipy): intervals, tests, distances.

Preflight looks at its data once, so its tests are classical fixed-sample (batch) tests, not
the live worker's anytime-valid sequences:

- :func:`paired_noninferiority`: a paired Student t-test of Δ = mean(champion loss −
  candidate loss) (higher is better for the candidate, as rollguard's live Δ) against −δ.
  It passes when the lower bound of the two-sided (1 − α) t-interval is above −δ: a
  one-sided test at α/2, the level at which the live experiment promotes. At Δ = −δ it
  passes in at most α/2 of holdouts, asymptotically (simulated in
  ``tests/test_preflight_statistics.py``).
- :func:`wilson_interval` (accuracy) and :func:`mean_interval` (other losses: t-interval).
- :func:`ks_bounds`: the exact two-sample KS distance and a confidence interval for the
  distance between the two distributions: each empirical CDF is within the DKW radius
  (Massart's constant) of its distribution with chance 1 − α/2, so the true distance is
  within the sum of the two radii of the estimate with chance ≥ 1 − α.
- :func:`categorical_psi`: PSI over categories, with unseen categories in one bin.

>>> d, lower, upper = ks_bounds([0.1, 0.2, 0.3, 0.4], [0.15, 0.25, 0.35, 0.9], alpha=0.05)
>>> d, lower
(0.25, 0.0)
>>> round(wilson_interval(90, 100, 0.05)[0], 4)
0.8256
>>> r = paired_noninferiority([0, 1, 0, 0] * 50, [0, 0, 0, 1] * 50, margin=0.01, alpha=0.05)
>>> r["estimate"], r["passed"]
(0.0, False)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rollguard.stats.sequential.cdf_distance import dkw_radius

__all__ = ["ks_distance", "ks_bounds", "categorical_psi", "wilson_interval", "mean_interval",
           "paired_noninferiority", "histogram", "scale_values", "unscale", "PSI_EPSILON", "NONINFERIORITY_METHOD"]

#: shares below it count as it in PSI (as rollguard.stats.Drift)
PSI_EPSILON = 1e-4
NONINFERIORITY_METHOD = ("paired Student t-test on the holdout (fixed sample, asymptotic), "
                         "one-sided at α/2")


def ks_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """sup |F_a − F_b| of two samples (exact).

    >>> ks_distance([1, 2, 3], [1, 2, 3]), ks_distance([1, 2], [3, 4])
    (0.0, 1.0)
    """
    x, y = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    if not len(x) or not len(y):
        return math.nan
    grid = np.concatenate([x, y])
    fx = np.searchsorted(x, grid, side="right") / len(x)
    fy = np.searchsorted(y, grid, side="right") / len(y)
    return float(np.max(np.abs(fx - fy)))


def ks_bounds(a: Sequence[float], b: Sequence[float], alpha: float
              ) -> tuple[float, float, float]:
    """(estimate, lower, upper) of the KS distance between the distributions a and b come
    from, the bounds holding together with chance ≥ 1 − α (DKW at α/2 for each sample)."""
    d = ks_distance(a, b)
    radius = dkw_radius(len(a), alpha / 2) + dkw_radius(len(b), alpha / 2)
    return d, max(0.0, d - radius), min(1.0, d + radius)


def categorical_psi(reference: Mapping[Any, int], current: Mapping[Any, int],
                    epsilon: float = PSI_EPSILON) -> float:
    """PSI between two category counts; categories the reference lacks share one bin.

    >>> round(categorical_psi({"a": 50, "b": 50}, {"a": 80, "b": 20}), 4)
    0.4159
    """
    n_ref, n_cur = sum(reference.values()), sum(current.values())
    if not n_ref or not n_cur:
        return math.nan
    unseen = sum(c for k, c in current.items() if k not in reference)
    pairs = [(reference[k], current.get(k, 0)) for k in reference] + [(0, unseen)]
    psi = 0.0
    for r, c in pairs:
        p, q = max(r / n_ref, epsilon), max(c / n_cur, epsilon)
        psi += (q - p) * math.log(q / p)
    return psi


def wilson_interval(successes: int, n: int, alpha: float) -> tuple[float, float]:
    """Wilson score interval of a proportion at level 1 − α (two-sided)."""
    from scipy.stats import norm

    if n <= 0:
        return (math.nan, math.nan)
    z = float(norm.ppf(1 - alpha / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float], alpha: float) -> tuple[float, float, float]:
    """(mean, lower, upper): Student t-interval of a mean at level 1 − α (two-sided)."""
    from scipy.stats import t

    x = np.asarray(values, float)
    n = len(x)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return (mean, -math.inf, math.inf)
    half = float(t.ppf(1 - alpha / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return (mean, mean - half, mean + half)


def paired_noninferiority(champion_losses: Sequence[float], candidate_losses: Sequence[float],
                          margin: float, alpha: float) -> dict[str, Any]:
    """The candidate is at most ``margin`` worse than the champion (Δ > −margin)?

    Δ = champion loss − candidate loss per row, oriented with higher better (rollguard's
    live Δ). Returns ``estimate``, ``lower``, ``upper`` (two-sided 1 − α t-interval), ``n``,
    ``p_value`` (one-sided, H0: Δ ≤ −margin), ``level`` (α/2) and ``passed`` (lower > −margin).
    """
    from scipy.stats import t

    d = np.asarray(champion_losses, float) - np.asarray(candidate_losses, float)
    n = len(d)
    estimate = float(d.mean()) if n else math.nan
    out: dict[str, Any] = {"n": n, "estimate": estimate, "margin": margin, "alpha": alpha,
                           "level": alpha / 2, "method": NONINFERIORITY_METHOD}
    if n < 2:
        out.update(lower=None, upper=None, p_value=None, passed=False)
        return out
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    quantile = float(t.ppf(1 - alpha / 2, n - 1))
    if se == 0.0:
        lower = upper = estimate
        p_value = 0.0 if estimate > -margin else 1.0
    else:
        lower, upper = estimate - quantile * se, estimate + quantile * se
        p_value = float(t.sf((estimate + margin) / se, n - 1))
    out.update(lower=lower, upper=upper, p_value=p_value, passed=bool(lower > -margin))
    return out


def scale_values(values: Any, scale: str) -> np.ndarray:
    """Values on a plot's x scale: ``linear``, ``log10`` (positive values) or ``signed-log``
    (sign(x)·log10(1 + |x|), for values of both signs spanning orders of magnitude)."""
    a = np.asarray(values, float)
    if scale == "log10":
        return np.log10(np.maximum(a, 1e-9))
    if scale == "signed-log":
        return np.sign(a) * np.log10(1 + np.abs(a))
    return a


def unscale(x: float, scale: str) -> float:
    """The value at position ``x`` of a scale (the inverse of :func:`scale_values`).

    >>> unscale(2.0, "log10"), unscale(-1.0, "signed-log"), unscale(3.0, "linear")
    (100.0, -9.0, 3.0)
    """
    if scale == "log10":
        return 10.0 ** x
    if scale == "signed-log":
        return math.copysign(10.0 ** abs(x) - 1, x)
    return x


def histogram(samples: Mapping[str, Sequence[float]], bins: int = 30, scale: str | None = None
              ) -> tuple[list[float], dict[str, list[float]], str]:
    """Shares per bin of several samples over common edges, on a linear scale or (``scale``
    None: when the values span several orders of magnitude) a signed log scale. Returns
    (edges on the scale, shares, scale)."""
    arrays = {k: np.asarray([v for v in vals if math.isfinite(v)], float)
              for k, vals in samples.items()}
    every = np.concatenate([a for a in arrays.values() if len(a)]) if any(
        len(a) for a in arrays.values()) else np.zeros(1)
    if scale is None:
        spread = np.abs(every)
        wide = bool(spread.max() > 100 and np.quantile(spread, 0.99) > 1000 * max(
            np.quantile(spread, 0.5), 1e-12))
        tops = [np.quantile(np.abs(a), 0.99) for a in arrays.values() if len(a)]
        wide = wide or bool(len(tops) > 1 and min(tops) > 0 and max(tops) / min(tops) > 100)
        scale = "signed-log" if wide else "linear"
    scaled = scale_values(every, scale)
    lo, hi = float(scaled.min()), float(scaled.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    shares = {}
    for name, a in arrays.items():
        counts, _ = np.histogram(scale_values(a, scale), bins=edges)
        shares[name] = (counts / max(1, len(a))).round(6).tolist()
    return edges.round(6).tolist(), shares, scale
