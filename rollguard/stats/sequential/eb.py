"""Empirical-Bernstein confidence sequence for the mean of bounded values.

Waudby-Smith & Ramdas (2023), "Estimating means of bounded random variables by betting",
JRSS-B 86(1), Theorem 2 and Section 3.3: the *predictable plug-in empirical-Bernstein* (PrPl-EB)
confidence sequence. With values rescaled to ``y`` in [0, 1], predictable bets ``λ_i`` and
predictable centres ``c_{i-1}``, for every true mean ``μ``

    M_t(μ) = Π_{i≤t} exp( λ_i (y_i − μ) − (y_i − c_{i−1})² ψ_E(λ_i) ),   ψ_E(λ) = −log(1−λ) − λ

is a test supermartingale (Fan et al. 2015's inequality), so by Ville's inequality the set of μ
where it stays below 2/α is, at every time at once, a (1−α/2) lower bound; the same on
``1 − y`` gives the upper bound. Closed form::

    lower_t = Σλ_i y_i / Σλ_i − (log(2/α) + Σ (y_i − c_{i−1})² ψ_E(λ_i)) / Σλ_i

The variance term uses the squared deviations actually observed, so the width follows the
observed variance, not the worst case ¼ (docs/design.md: a worst-case bound decides far too late).

Choices (each keeps validity; only efficiency depends on them):

* bets from ``g_t = sqrt(2 log(2/α) / (σ̂²_{t−1} · h_t))`` with the paper's regularised
  variance ``σ̂²_t = (¼ + Σ (y_i − μ̂_i)²)/(t+1)``, ``μ̂_t = (½ + Σ y_i)/(t+1)``.
  ``tuned_n=None``: the paper's schedule exactly, ``h_t = t log(1+t)``, ``λ_t = min(c, g_t)``.
  ``tuned_n=n*``: ``h_t = max(t, n*)`` and ``λ_t = min(c, g_t/(1 + g_t))``. Up to ``n*`` the bet
  is constant, like a sequential probability ratio test's bet on the effect ε that a
  fixed-horizon test of ``n*`` samples detects (``g ≈ ε/σ²``), so the bound is tightest there;
  afterwards it shrinks like 1/sqrt(t) so the width keeps falling. ``g/(1+g)`` rather than
  ``g``: it maximises the expected log-growth ``λε − σ²ψ_E(λ)`` of this supermartingale (the
  maximiser of which is ``(ε/σ²)/(1 + ε/σ²)``); ``g`` alone maximises its Gaussian
  approximation. They agree for small bets; for large ones (low variance relative to the
  range, e.g. two classifiers that mostly agree) the growth-optimal bet decides sooner (in our
  simulation of such classifiers at ε = 0.02, mean stopping time 1.23 instead of 1.41 × the
  fixed-horizon size).
* centres ``c_{i−1}`` = mean of the previous values (0 before the first, on ``y`` for the lower
  bound and on ``1 − y`` for the upper), as in the authors' reference implementation
  (``confseq.predmix``), so the figures can be checked against it exactly.
* the running intersection of the bounds (valid, since every bound holds at all times at once).

Merge: the sums of two partials add, which is the product of their two supermartingales. When
the partials saw disjoint sub-streams of the same stream (each bet predictable in its own
sub-stream), that product is still a test supermartingale, so the merged object is a valid CS
for the union — not the one a single object fed the whole stream would give (its bets differ).
The running intersection restarts at the merged bounds.

>>> cs = EmpiricalBernsteinCS(alpha=0.05, lower=0.0, upper=1.0, tuned_n=200)
>>> for i in range(400):
...     _ = cs.update(1.0 if i % 5 else 0.0)     # 80 % correct
>>> cs.n, round(cs.mean, 3)
(400, 0.8)
>>> lo, hi = cs.interval()
>>> lo < 0.8 < hi and hi - lo < 0.25
True
>>> EmpiricalBernsteinCS.from_dict(cs.to_dict()) == cs
True
"""

from __future__ import annotations

import math
from typing import Any, Self

from rollguard.stats.sequential._base import (
    SequentialTest,
    check_alpha,
    check_bounds,
    check_finite,
    check_tuned_n,
    clamp,
)

#: Values this far outside [lower, upper] (relative to the range) are rounding, not errors.
_RANGE_SLACK = 1e-9


def scale_to_unit(x: float, lower: float, upper: float) -> float:
    """``x`` in ``[lower, upper]`` mapped to [0, 1]; a ValueError outside (beyond rounding).

    >>> scale_to_unit(0.5, -1.0, 1.0)
    0.75
    """
    y = (check_finite(x) - lower) / (upper - lower)
    if y < -_RANGE_SLACK or y > 1.0 + _RANGE_SLACK:
        raise ValueError(f"observation {x!r} outside [{lower}, {upper}]")
    return clamp(y, 0.0, 1.0)


def plug_in_rate(log_term: float, sum_sq_reg, t: int, tuned_n: float | None):
    """The predictable plug-in bet ``g_t = sqrt(2 log(2/α) / (σ̂²_{t−1} h_t))`` before capping.

    ``sum_sq_reg`` is Σ (y_i − μ̂_i)² over the first ``t − 1`` values (regularised variance
    ``σ̂² = (¼ + sum_sq_reg)/t``); ``h_t = t log(1+t)`` untuned, ``max(t, tuned_n)`` tuned
    (see the module docstring).

    >>> round(plug_in_rate(math.log(40), 0.0, 1, 100), 3)      # first bet, σ̂² = ¼
    0.543
    """
    variance = (0.25 + sum_sq_reg) / t
    horizon = t * math.log1p(t) if tuned_n is None else max(t, tuned_n)
    return (2.0 * log_term / (horizon * variance)) ** 0.5  # ** not math.sqrt: arrays too


class PlugInBets(SequentialTest):
    """What the bounded sequences of this package share: settings, the running sums behind the
    predictable plug-in bets (:func:`plug_in_rate`), the sample mean, and saving by name.

    Subclasses list their settings (``_SETTINGS``, constructor arguments), float state
    (``_FLOATS``) and per-test-point lists (``_LISTS``); ``to_dict``/``from_dict`` follow.
    """

    _SETTINGS: tuple[str, ...] = ()
    _SUMS: tuple[str, ...] = ()  # what a merge adds
    _FLOATS: tuple[str, ...] = ()
    _LISTS: tuple[str, ...] = ()

    def __init__(self, alpha: float, lower: float, upper: float, tuned_n: float | None,
                 truncation: float) -> None:
        self.alpha = check_alpha(alpha)
        lo, hi = check_bounds(lower, upper)
        if lo is None or hi is None:
            raise ValueError(f"{type(self).__name__} needs finite bounds")
        self.lower, self.upper = lo, hi
        self.tuned_n = None if tuned_n is None else check_tuned_n(tuned_n)
        if not 0.0 < truncation < 1.0:
            raise ValueError(f"truncation must be in (0, 1), got {truncation!r}")
        self.truncation = float(truncation)
        self._log_term = math.log(2.0 / self.alpha)  # log(1/(α/2)): each side at α/2
        self.n = 0
        self._sum_y = 0.0  # Σ y_i
        self._sum_sq_reg = 0.0  # Σ (y_i − μ̂_i)², μ̂_i regularised and including y_i

    def _rate(self) -> float:
        """The next bet's rate ``g_t`` (before the subclass shapes and caps it)."""
        return plug_in_rate(self._log_term, self._sum_sq_reg, self.n + 1, self.tuned_n)

    def _count(self, y: float) -> None:
        """Record ``y`` (on the [0, 1] scale) in the sums the bets are made from."""
        t = self.n = self.n + 1
        self._sum_y += y
        self._sum_sq_reg += (y - (0.5 + self._sum_y) / (t + 1)) ** 2

    def _add_sums(self, other: PlugInBets) -> bool:
        """Merge's common part: check ``other`` is alike, add its sums; False if it is empty."""
        self._check_same_kind(other, *self._SETTINGS)
        if other.n == 0:
            return False
        self.n += other.n
        for name in self._SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return True

    @property
    def mean(self) -> float | None:
        """The plain sample mean (None before any observation)."""
        if self.n == 0:
            return None
        return self.lower + (self.upper - self.lower) * self._sum_y / self.n

    def get(self) -> tuple[float, float]:
        """Same as ``interval()``."""
        return self.interval()  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"type": self.TYPE, "n": self.n}
        for name in self._SETTINGS:
            value = getattr(self, name)
            state[name] = list(value) if isinstance(value, list) else value
        for name in self._FLOATS:
            state[name.lstrip("_")] = getattr(self, name)
        for name in self._LISTS:
            state[name.lstrip("_")] = list(getattr(self, name))
        return state

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type(d)
        obj = cls(**{name: d[name] for name in cls._SETTINGS})
        obj.n = int(d["n"])
        for name in cls._FLOATS:
            setattr(obj, name, float(d[name.lstrip("_")]))
        for name in cls._LISTS:
            values = [float(v) for v in d[name.lstrip("_")]]
            if len(values) != len(getattr(obj, name)):
                raise ValueError(f"{cls.__name__} state: {name.lstrip('_')} needs one value "
                                 "per test point")
            setattr(obj, name, values)
        return obj


class EmpiricalBernsteinCS(PlugInBets):
    """Anytime-valid (1−α) confidence sequence for the mean of values in ``[lower, upper]``.

    Predictable plug-in empirical Bernstein (Waudby-Smith & Ramdas 2023, Thm 2); see the module
    docstring. ``tuned_n`` is the sample size at which the bound is tightest (None: the paper's
    untuned ``t log(1+t)`` schedule). ``truncation`` caps the bets (the paper uses ½ or ¾).
    """

    TYPE = "sequential.EmpiricalBernsteinCS"

    def __init__(
        self,
        alpha: float = 0.05,
        lower: float = 0.0,
        upper: float = 1.0,
        tuned_n: float | None = 1000,
        truncation: float = 0.5,
        running_intersection: bool = True,
    ) -> None:
        super().__init__(alpha, lower, upper, tuned_n, truncation)
        self.running_intersection = bool(running_intersection)
        self._sum_lam = 0.0  # Σ λ_i
        self._sum_lam_y = 0.0  # Σ λ_i y_i
        self._sum_vpsi_lo = 0.0  # Σ (y_i − c_{i−1})² ψ_E(λ_i), lower side
        self._sum_vpsi_hi = 0.0  # the same on 1 − y, upper side
        self._run_lo = 0.0  # running intersection, on the [0, 1] scale
        self._run_hi = 1.0

    # -- updating ---------------------------------------------------------------------------
    def update(self, x: float) -> Self:
        """Add one observation (a value in ``[lower, upper]``)."""
        y = scale_to_unit(x, self.lower, self.upper)
        n = self.n
        lam = self._rate()
        if self.tuned_n is not None:
            lam = lam / (1.0 + lam)  # growth-optimal bet for ψ_E (module docstring)
        if lam > self.truncation:
            lam = self.truncation
        psi = -math.log1p(-lam) - lam
        centre = self._sum_y / n if n else 0.0
        centre_flipped = 1.0 - centre if n else 0.0
        self._sum_vpsi_lo += (y - centre) ** 2 * psi
        self._sum_vpsi_hi += ((1.0 - y) - centre_flipped) ** 2 * psi
        self._sum_lam += lam
        self._sum_lam_y += lam * y
        self._count(y)
        if self.running_intersection:
            lo, hi = self._raw_unit_interval()
            if lo > self._run_lo:
                self._run_lo = lo
            if hi < self._run_hi:
                self._run_hi = hi
        return self

    # -- reading ----------------------------------------------------------------------------
    def _raw_unit_interval(self) -> tuple[float, float]:
        if self._sum_lam <= 0.0:
            return 0.0, 1.0
        centre = self._sum_lam_y / self._sum_lam
        lo = centre - (self._log_term + self._sum_vpsi_lo) / self._sum_lam
        hi = centre + (self._log_term + self._sum_vpsi_hi) / self._sum_lam
        return (lo if lo > 0.0 else 0.0), (hi if hi < 1.0 else 1.0)

    def _unit_interval(self) -> tuple[float, float]:
        if self.running_intersection:
            return self._run_lo, self._run_hi
        return self._raw_unit_interval()

    def interval(self) -> tuple[float, float]:
        """``(L_t, U_t)``: with probability ≥ 1−α the mean is inside at every ``t`` at once."""
        lo, hi = self._unit_interval()
        width = self.upper - self.lower
        return self.lower + width * lo, self.lower + width * hi

    def evidence(self) -> dict[str, Any]:
        lo, hi = self.interval()
        return {
            "method": "empirical-Bernstein CS (Waudby-Smith & Ramdas 2023)",
            "n": self.n,
            "estimate": self.mean,
            "lower": lo,
            "upper": hi,
            "alpha": self.alpha,
            "tuned_n": self.tuned_n,
        }

    # -- merging and saving -----------------------------------------------------------------
    _SETTINGS = ("alpha", "lower", "upper", "tuned_n", "truncation", "running_intersection")
    _SUMS = (
        "_sum_y",
        "_sum_sq_reg",
        "_sum_lam",
        "_sum_lam_y",
        "_sum_vpsi_lo",
        "_sum_vpsi_hi",
    )
    _FLOATS = (*_SUMS, "_run_lo", "_run_hi")

    def merge(self, other: EmpiricalBernsteinCS) -> Self:
        """Add a partial from a disjoint sub-stream (product of the two supermartingales)."""
        if not self._add_sums(other):
            return self
        self._run_lo, self._run_hi = self._raw_unit_interval()
        return self
