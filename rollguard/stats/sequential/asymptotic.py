"""Asymptotic confidence sequence for the mean of unbounded values (abs_error, sq_error).

Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas (2024), "Time-uniform central limit theory and
asymptotic confidence sequences", Annals of Statistics 52(6) (arXiv:2103.06476), the
Gaussian-mixture asymptotic CS::

    μ̂_t ± σ̂_t · sqrt( 2(tρ² + 1)/(t²ρ²) · log( sqrt(tρ² + 1)/α ) )

with the sample mean μ̂_t and the sample standard deviation σ̂_t (divisor t). It is Robbins'
two-sided normal-mixture boundary applied, through a strong Gaussian approximation, to data that
only need finite moments a little beyond the second. The bound adapts to the observed variance
through σ̂_t. ``ρ`` is chosen so that the boundary is tightest at ``t = tuned_n``:
``ρ² = (2 log(1/α) + log(1 + 2 log(1/α))) / tuned_n`` (the paper's Eq. 15; the same ``ρ`` as
``best_rho`` of Howard et al.'s ``confseq`` normal mixture, whose bound this equals).

*Burn-in.* The coverage is asymptotic: the paper's time-uniform guarantee is about the times
``t ≥ m`` as the start ``m`` grows, and says nothing about the first few observations. There the
plug-in σ̂_t is at its worst: with ties (integer losses, losses that are often 0) it is exactly 0
and the interval has zero width, so two equal differences below −margin rolled a candidate back
(equal models, losses in {0, 1, 2, 3}, margin 0, a look after every pair: 6.6–11 % of runs, most
at t = 2, against α/2 = 2.5 %). So the sequence gives no finite bound (``(-inf, inf)``:
undecided, as before any observation) while ``t < burn_in``; it starts at ``m = burn_in``.

``burn_in`` defaults to 30. In simulations of equal models under continuous monitoring to 5000
observations (integer losses with ties, Poisson, normal and t₃ differences; ``tuned_n`` from 2 to
1000) 30 keeps the chance of ever excluding the mean from one side at or below α/2 (at most
2.4 %, with ``tuned_n`` near 200; a burn-in of 20 reached 2.65 %), while a clearly worse
candidate is still rolled back at t = 30 (tests/test_unbounded_rollback.py). A burn-in rather
than a variance floor: an unbounded metric has no known scale (abs_error in cents or in
millions), so no prior variance suits every metric, and ties are only the visible case of σ̂_t
being too small at small t; the burn-in needs no scale, and promotion waits for
``min_samples`` anyway. No method is valid from the first observation for unbounded values
without assuming a scale; clip the loss (``primary.clip``) for the nonasymptotic betting
sequence. Strongly skewed losses (rare, very large values) need more than 30 observations for
the normal approximation: the burn-in does not replace ``min_samples``.

It needs only ``n``, the mean and the sum of squared deviations, which merge exactly (Chan,
Golub & LeVeque 1983): the merged object is exactly the whole-stream statistic, burn-in
included (it counts the merged ``n``). For the same reason no running intersection is kept:
early bounds, the least reliable under an asymptotic guarantee, would otherwise be kept forever.

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
>>> tied = AsymptoticCS(alpha=0.05, tuned_n=200)
>>> for _ in range(29):
...     _ = tied.update(-1.0)                 # ties: σ̂ = 0, but no bound before the burn-in
>>> tied.interval()
(-inf, inf)
>>> lo, hi = tied.update(0.0).interval()       # t = 30: bounds from the data's own spread
>>> round(tied.mean, 3), round(lo, 2), round(hi, 2)
(-0.967, -1.08, -0.85)
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

#: Observations before the first finite bound (see the module docstring for the choice).
DEFAULT_BURN_IN = 30


def check_burn_in(burn_in: int) -> int:
    """The burn-in, an integer ≥ 2 (σ̂ needs two observations), or a ValueError.

    >>> check_burn_in(1)
    Traceback (most recent call last):
    ...
    ValueError: burn_in must be an integer >= 2, got 1
    """
    if isinstance(burn_in, bool) or int(burn_in) != burn_in or burn_in < 2:
        raise ValueError(f"burn_in must be an integer >= 2, got {burn_in!r}")
    return int(burn_in)


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

    See the module docstring. ``interval()`` is ``(-inf, inf)`` until ``burn_in``
    observations (default 30): the asymptotic guarantee starts there, not at two.
    """

    TYPE = "sequential.AsymptoticCS"

    def __init__(self, alpha: float = 0.05, tuned_n: float = 1000,
                 burn_in: int = DEFAULT_BURN_IN) -> None:
        self.alpha = check_alpha(alpha)
        self.tuned_n = check_tuned_n(tuned_n)
        self.burn_in = check_burn_in(burn_in)
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
        """Half-width of the current interval (inf before ``burn_in`` observations)."""
        n = self.n
        if n < self.burn_in:
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
            "method": "asymptotic CS (Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas 2024)",
            "n": self.n,
            "estimate": self.mean,
            "lower": lo if math.isfinite(lo) else None,
            "upper": hi if math.isfinite(hi) else None,
            "alpha": self.alpha,
            "tuned_n": self.tuned_n,
            "burn_in": self.burn_in,
        }

    def merge(self, other: AsymptoticCS) -> Self:
        """Add a partial: exactly the statistic of the concatenated streams."""
        self._check_same_kind(other, "alpha", "tuned_n", "burn_in")
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
            "burn_in": self.burn_in,
            "n": self.n,
            "mean": self._mean,
            "m2": self._m2,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type(d)
        # a state saved before the burn-in existed gets the default: the rule of this version
        obj = cls(alpha=d["alpha"], tuned_n=d["tuned_n"],
                  burn_in=d.get("burn_in", DEFAULT_BURN_IN))
        obj.n = int(d["n"])
        obj._mean = float(d["mean"])
        obj._m2 = float(d["m2"])
        return obj
