"""Asymptotic confidence sequence for the mean of unbounded values (abs_error, sq_error).

Waudby-Smith, Arnold, Wu, Chugg & Ramdas (2024), "Time-uniform central limit theory and
asymptotic confidence sequences", Annals of Statistics 52(6), Theorem 2.2::

    μ̂_t ± σ̂_t · sqrt( 2(tρ² + 1)/(t²ρ²) · log( sqrt(tρ² + 1)/α ) )

with the sample mean μ̂_t and the sample standard deviation σ̂_t (divisor t). It is Robbins'
two-sided normal-mixture boundary applied, through a strong Gaussian approximation, to data that
only need finite moments a little beyond the second: the coverage is asymptotic (it holds
uniformly over all times from some point on), so a policy should not decide on a handful of
samples (``min_samples``). The bound adapts to the observed variance through σ̂_t.
``ρ`` is chosen so that the boundary is tightest at ``t = tuned_n``:
``ρ² = (2 log(1/α) + log(1 + 2 log(1/α))) / tuned_n`` (the paper's Eq. 15; the same ``ρ`` as
``best_rho`` of Howard et al.'s ``confseq`` normal mixture, whose bound this equals).

It needs only ``n``, the mean and the sum of squared deviations, which merge exactly (Chan,
Golub & LeVeque 1983): the merged object is exactly the whole-stream statistic. For the same
reason no running intersection is kept: early bounds, the least reliable under an asymptotic
guarantee, would otherwise be kept forever.

>>> cs = AsymptoticCS(alpha=0.05, tuned_n=500)
>>> for i in range(1000):
...     _ = cs.update(float(i % 10))          # mean 4.5, sd 2.87
>>> lo, hi = cs.interval()
>>> round(cs.mean, 2), lo < 4.5 < hi, round(hi - lo, 2)
(4.5, True, 0.56)
>>> a, b = AsymptoticCS(tuned_n=500), AsymptoticCS(tuned_n=500)
>>> for i in range(1000):
...     _ = (a if i < 300 else b).update(float(i % 10))
>>> merged = (a + b).interval()
>>> all(abs(m - s) < 1e-12 for m, s in zip(merged, cs.interval()))   # equal up to rounding
True
"""

from __future__ import annotations

import math
from typing import Any, Self

from rollguard.stats.sequential._base import (
    SequentialTest,
    check_alpha,
    check_finite,
    check_tuned_n,
)


def normal_mixture_rho(tuned_n: float, alpha: float) -> float:
    """``1/ρ²`` of the two-sided normal mixture tightest at ``tuned_n`` (WS et al. 2024, Eq. 15).

    >>> round(normal_mixture_rho(1000, 0.05), 2)
    126.01
    """
    log_inv = math.log(1.0 / alpha)
    return tuned_n / (2.0 * log_inv + math.log1p(2.0 * log_inv))


def normal_mixture_radius(intrinsic_time: float, rho: float, alpha: float) -> float:
    """Two-sided normal-mixture boundary for a sum with variance ``intrinsic_time`` (in σ units).

    ``sqrt((v + ρ)(log(1 + v/ρ) + 2 log(1/α)))`` (Robbins 1970; Howard et al. 2021, Eq. (14)).
    """
    v = intrinsic_time
    return math.sqrt((v + rho) * (math.log1p(v / rho) + 2.0 * math.log(1.0 / alpha)))


class AsymptoticCS(SequentialTest):
    """Asymptotic (1−α) confidence sequence for a mean (Waudby-Smith et al. 2024, Thm 2.2).

    See the module docstring. ``interval()`` is ``(-inf, inf)`` until two observations.
    """

    TYPE = "sequential.AsymptoticCS"

    def __init__(self, alpha: float = 0.05, tuned_n: float = 1000) -> None:
        self.alpha = check_alpha(alpha)
        self.tuned_n = check_tuned_n(tuned_n)
        self._rho = normal_mixture_rho(self.tuned_n, self.alpha)
        self._two_log_inv_alpha = 2.0 * math.log(1.0 / self.alpha)
        self.n = 0
        self._mean = 0.0
        self._m2 = 0.0  # Σ (x_i − mean)²

    def update(self, x: float) -> Self:
        """Add one observation (Welford's update)."""
        x = check_finite(x)
        self.n += 1
        delta = x - self._mean
        self._mean += delta / self.n
        self._m2 += delta * (x - self._mean)
        return self

    @property
    def mean(self) -> float | None:
        """The sample mean (None before any observation)."""
        return self._mean if self.n else None

    @property
    def variance(self) -> float | None:
        """The sample variance with divisor n, as in the paper (None before two observations)."""
        return self._m2 / self.n if self.n >= 2 else None

    def radius(self) -> float:
        """Half-width of the current interval (inf before two observations)."""
        n = self.n
        if n < 2:
            return math.inf
        variance = self._m2 / n
        return math.sqrt(
            variance * (n + self._rho) * (math.log1p(n / self._rho) + self._two_log_inv_alpha)
        ) / n

    def interval(self) -> tuple[float, float]:
        """``(L_t, U_t)``, asymptotically covering the mean at every ``t`` at once w.p. ≥ 1−α."""
        r = self.radius()
        if math.isinf(r):
            return -math.inf, math.inf
        return self._mean - r, self._mean + r

    def get(self) -> tuple[float, float]:
        """Same as :meth:`interval`."""
        return self.interval()

    def evidence(self) -> dict[str, Any]:
        lo, hi = self.interval()
        return {
            "method": "asymptotic CS (Waudby-Smith, Arnold, Wu, Chugg & Ramdas 2024)",
            "n": self.n,
            "estimate": self.mean,
            "lower": lo if math.isfinite(lo) else None,
            "upper": hi if math.isfinite(hi) else None,
            "alpha": self.alpha,
            "tuned_n": self.tuned_n,
        }

    def merge(self, other: AsymptoticCS) -> Self:
        """Add a partial: exactly the statistic of the concatenated streams."""
        self._check_same_kind(other, "alpha", "tuned_n")
        if other.n == 0:
            return self
        n = self.n + other.n
        delta = other._mean - self._mean
        self._m2 += other._m2 + delta * delta * self.n * other.n / n
        self._mean += delta * other.n / n
        self.n = n
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "alpha": self.alpha,
            "tuned_n": self.tuned_n,
            "n": self.n,
            "mean": self._mean,
            "m2": self._m2,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type(d)
        obj = cls(alpha=d["alpha"], tuned_n=d["tuned_n"])
        obj.n = int(d["n"])
        obj._mean = float(d["mean"])
        obj._m2 = float(d["m2"])
        return obj
