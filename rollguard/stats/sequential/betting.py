"""Betting confidence sequence for a bounded mean, exact at the values where decisions are made.

Waudby-Smith & Ramdas (2023), "Estimating means of bounded random variables by betting",
JRSS-B 86(1), Sections 4–5: with values rescaled to ``y`` in [0, 1] and predictable bets
``λ_i`` in [0, 1) that do not depend on ``m``, the capitals

    K⁺_t(m) = Π_{i≤t} (1 + λ_i (y_i − m)),        K⁻_t(m) = Π_{i≤t} (1 − λ_i (y_i − m))

are nonnegative martingales when the true mean is ``m``, so by Ville's inequality the chance
that either ever reaches 2/α is at most α/2: ``{m : K⁺_t(m) < 2/α and K⁻_t(m) < 2/α}`` is a
(1−α) confidence sequence. Its edges need every value seen, so it is not O(1) in general. The
policy, though, only ever asks one question per experiment: is Δ above or below −margin? This
object keeps both capitals *exactly* at a few fixed ``test_points`` (O(1) per point and
update), and for the edges of the interval it reports a certified outer bound:

* ``K⁺_t(m)`` decreases in ``m`` (every factor does), so once a test point is rejected from
  above, every smaller value is too, and a little more (:meth:`BettingCS._beyond`): the lower
  bound is above that test point;
* Fan et al.'s inequality ``log(1 + λx) ≥ λx − ψ_E(λ)x²`` (``x ≥ −1``, ``ψ_E(λ) = −log(1−λ) −
  λ``) bounds ``log K⁺_t(m)`` from below by a quadratic in ``m`` kept in five running sums; the
  largest ``m`` where that quadratic reaches ``log(2/α)`` is certified rejected, with every
  smaller value. The same on the other side gives the upper bound.

The interval is computed when read, from the current sums (O(1)); only the test points keep
their running maxima (and how far past them the rejection reached), so an update costs a few
multiplications and two logarithms per point.
It is never narrower than the true betting CS (about 1.5 × its width, near the
empirical-Bernstein CS's own: tests/test_sequential_betting.py), and at a test point the
decision is the exact betting test, whose growth is close to the Kullback-Leibler optimum.
Why not the empirical-Bernstein CS (:mod:`.eb`) alone: it pays ``ψ_E(λ)`` per unit of squared
deviation, which for large bets (differences of two classifiers that mostly agree, a large
effect) costs it about 40 % of its growth rate (bench/RESULTS-sequential.md: 1.78 × the
fixed-horizon sample size at ε = 0.06, against 1.15 × here).

Bets: the predictable plug-in rate of :func:`.eb.plug_in_rate` on the regularised running
variance, constant up to ``tuned_n`` like a sequential probability ratio test's bet on the
effect a fixed-horizon test of ``tuned_n`` samples detects (about Kelly's ``ε/σ²``), then
shrinking; capped at ``truncation`` (¾, as in the paper) so a factor never falls below ¼.

Merge: capitals and sums of two partials from disjoint sub-streams multiply and add (a product
of test supermartingales), so the merged object is a valid CS for the union; the running maxima
at the test points restart at the merged capitals, as the running intersection does in
:mod:`.eb`.

>>> cs = BettingCS(alpha=0.05, lower=-1.0, upper=1.0, tuned_n=400, test_points=(-0.01,))
>>> pattern = [0.0] * 18 + [1.0, 1.0]            # candidate right where champion wrong: 10 %
>>> for i in range(600):
...     _ = cs.update(pattern[i % 20])
>>> cs.side_of(-0.01)                            # the whole sequence is above −0.01
1
>>> lo, hi = cs.interval()
>>> -0.01 <= lo < 0.1 < hi
True
>>> BettingCS.from_dict(cs.to_dict()) == cs
True
"""

from __future__ import annotations

import math
from typing import Any, Self

from rollguard.stats.sequential._base import interval_side
from rollguard.stats.sequential.eb import PlugInBets, scale_to_unit

#: Two test points closer than this (on the [0, 1] scale) are the same point.
_SAME_POINT = 1e-12


def _larger_root(a: float, b: float, c: float) -> float | None:
    """Larger root of ``a m² + b m − c = 0`` (``a > 0``), or None; stable for either sign of b."""
    disc = b * b + 4.0 * a * c
    if disc < 0.0:
        return None
    root = math.sqrt(disc)
    if b > 0.0:
        return 2.0 * c / (b + root) if b + root > 0.0 else None
    return (-b + root) / (2.0 * a)


class BettingCS(PlugInBets):
    """Anytime-valid (1−α) betting CS for the mean of values in ``[lower, upper]``.

    ``test_points`` (in the values' units) are where the capitals are kept exactly; ask
    :meth:`side_of` there. See the module docstring.
    """

    TYPE = "sequential.BettingCS"

    def __init__(
        self,
        alpha: float = 0.05,
        lower: float = 0.0,
        upper: float = 1.0,
        tuned_n: float | None = 1000,
        truncation: float = 0.75,
        test_points: tuple[float, ...] | list[float] = (),
    ) -> None:
        super().__init__(alpha, lower, upper, tuned_n, truncation)
        lo, hi = self.lower, self.upper
        points = sorted({float(p) for p in test_points})
        for p in points:
            if not (math.isfinite(p) and lo <= p <= hi):
                raise ValueError(f"test point {p!r} outside [{lo}, {hi}]")
        self.test_points = points
        self._points = [(p - lo) / (hi - lo) for p in points]  # on the [0, 1] scale
        self._sum_lam = 0.0  # Σ λ_i
        self._sum_lam_y = 0.0  # Σ λ_i y_i
        self._sum_psi = 0.0  # Σ ψ_E(λ_i)
        self._sum_psi_y = 0.0  # Σ ψ_E(λ_i) y_i
        self._sum_psi_yy = 0.0  # Σ ψ_E(λ_i) y_i²
        k = len(points)
        self._log_up = [0.0] * k  # log K⁺_t(point): evidence the mean is above the point
        self._log_down = [0.0] * k  # log K⁻_t(point): evidence it is below
        self._max_up = [0.0] * k  # running maxima (Ville: the supremum is what counts)
        self._max_down = [0.0] * k
        # for the bound just past a rejected point (_beyond): Σ and max of λ_i / factor_i,
        # and how far past each point the rejection reached (as lower and upper bounds)
        self._slope_up, self._slope_down = [0.0] * k, [0.0] * k
        self._steep_up, self._steep_down = [0.0] * k, [0.0] * k
        self._past_up, self._past_down = [0.0] * k, [1.0] * k

    # -- updating ---------------------------------------------------------------------------
    def update(self, x: float) -> Self:
        """Add one observation (a value in ``[lower, upper]``)."""
        y = scale_to_unit(x, self.lower, self.upper)
        lam = self._rate()
        if lam > self.truncation:
            lam = self.truncation
        psi = -math.log1p(-lam) - lam
        for k, m in enumerate(self._points):
            factor_up, factor_down = 1.0 + lam * (y - m), 1.0 - lam * (y - m)
            rate_up, rate_down = lam / factor_up, lam / factor_down
            self._slope_up[k] += rate_up
            self._slope_down[k] += rate_down
            if rate_up > self._steep_up[k]:
                self._steep_up[k] = rate_up
            if rate_down > self._steep_down[k]:
                self._steep_down[k] = rate_down
            up = self._log_up[k] = self._log_up[k] + math.log(factor_up)
            down = self._log_down[k] = self._log_down[k] + math.log(factor_down)
            if up > self._max_up[k]:
                self._max_up[k] = up
                if up >= self._log_term:
                    self._past_up[k] = max(self._past_up[k], m + self._beyond(
                        up, self._slope_up[k], self._steep_up[k]))
            if down > self._max_down[k]:
                self._max_down[k] = down
                if down >= self._log_term:
                    self._past_down[k] = min(self._past_down[k], m - self._beyond(
                        down, self._slope_down[k], self._steep_down[k]))
        self._sum_lam += lam
        self._sum_lam_y += lam * y
        self._sum_psi += psi
        self._sum_psi_y += psi * y
        self._sum_psi_yy += psi * y * y
        self._count(y)
        return self

    def _beyond(self, log_capital: float, slope: float, steep: float) -> float:
        """How far past a test point its rejection reaches now ([0, 1] scale).

        At ``m = point + h`` each factor of K⁺ is ``f_i (1 − u_i)`` with ``f_i`` its factor at
        the point and ``u_i = h λ_i / f_i ≤ h q`` (``q = steep``, the largest ``λ_i / f_i``);
        as ``−log(1 − u) ≤ u / (1 − u)``, ``log K⁺(m) ≥ log K⁺(point) − h D / (1 − h q)``
        with ``D = slope = Σ λ_i / f_i``. With ``E = log K⁺(point) − log(2/α) ≥ 0`` every
        ``h ≤ E / (D + E q)`` is still rejected: the lower bound is strictly above a point the
        test rejects with room to spare. The same, mirrored, for K⁻ and the upper bound. It is
        taken at each new maximum of the capital and kept (a running intersection).
        """
        room = log_capital - self._log_term
        return room / (slope + room * steep)

    def _certified(self) -> tuple[float, float]:
        """Bounds from the quadratic lower bounds of log K⁺ and log K⁻ ([0, 1] scale)."""
        a = self._sum_psi
        if a <= 0.0:
            return 0.0, 1.0
        # log K⁺(m) ≥ Σλ(y−m) − Σψ(y−m)²; rejected where ≥ T: a m² + b m − c ≤ 0
        b = self._sum_lam - 2.0 * self._sum_psi_y
        c = self._sum_lam_y - self._sum_psi_yy - self._log_term
        lo = _larger_root(a, b, c)
        # log K⁻(m) ≥ Σλ(m−y) − Σψ(y−m)²; mirrored (m → −m) so the smaller root is −larger
        b = -(self._sum_lam + 2.0 * self._sum_psi_y)
        c = -(self._sum_lam_y + self._sum_psi_yy + self._log_term)
        neg_hi = _larger_root(a, -b, c)
        lo = 0.0 if lo is None or lo < 0.0 else min(lo, 1.0)
        hi = 1.0 if neg_hi is None or -neg_hi > 1.0 else max(-neg_hi, 0.0)
        return lo, hi

    # -- reading ----------------------------------------------------------------------------
    def interval(self) -> tuple[float, float]:
        """``(L_t, U_t)``: outer bounds of the betting CS, exact at rejected test points."""
        lo, hi = self._certified()
        width = self.upper - self.lower
        lo = self.lower + width * max([lo, *self._past_up])
        hi = self.lower + width * min([hi, *self._past_down])
        for k, point in enumerate(self.test_points):  # in the values' units: no rounding
            if self._max_up[k] >= self._log_term and point > lo:
                lo = point
            if self._max_down[k] >= self._log_term and point < hi:
                hi = point
        return lo, hi

    def side_of(self, value: float) -> int:
        """1 if the mean is above ``value`` with confidence, −1 if below, else 0.

        Exact betting test when ``value`` is a test point; from the certified bounds otherwise.
        """
        m = (value - self.lower) / (self.upper - self.lower)
        for k, point in enumerate(self._points):
            if abs(point - m) <= _SAME_POINT:
                if self._max_down[k] >= self._log_term:
                    return -1
                return 1 if self._max_up[k] >= self._log_term else 0
        return interval_side(*self.interval(), value)

    def evidence(self) -> dict[str, Any]:
        lo, hi = self.interval()
        return {
            "method": "betting CS (Waudby-Smith & Ramdas 2023)" + (
                f", exact at {', '.join(f'{p:g}' for p in self.test_points)}"
                if self.test_points else ""),
            "n": self.n,
            "estimate": self.mean,
            "lower": lo,
            "upper": hi,
            "alpha": self.alpha,
            "tuned_n": self.tuned_n,
            # the largest capital each side reached, vs the 2/α that rejects: the e-values
            "tests": [
                {"value": p, "capital_above": math.exp(min(up, 700.0)),
                 "capital_below": math.exp(min(down, 700.0)), "threshold": 2.0 / self.alpha}
                for p, up, down in zip(self.test_points, self._max_up, self._max_down)
            ],
        }

    # -- merging and saving -----------------------------------------------------------------
    _SETTINGS = ("alpha", "lower", "upper", "tuned_n", "truncation", "test_points")
    _SUMS = ("_sum_y", "_sum_sq_reg", "_sum_lam", "_sum_lam_y", "_sum_psi", "_sum_psi_y",
             "_sum_psi_yy")
    _FLOATS = _SUMS
    _LISTS = ("_log_up", "_log_down", "_max_up", "_max_down", "_slope_up", "_slope_down",
              "_steep_up", "_steep_down", "_past_up", "_past_down")

    def merge(self, other: BettingCS) -> Self:
        """Add a partial from a disjoint sub-stream (product of the two capitals)."""
        if not self._add_sums(other):
            return self
        self._log_up = [a + b for a, b in zip(self._log_up, other._log_up)]
        self._log_down = [a + b for a, b in zip(self._log_down, other._log_down)]
        self._max_up = [max(v, 0.0) for v in self._log_up]
        self._max_down = [max(v, 0.0) for v in self._log_down]
        self._slope_up = [a + b for a, b in zip(self._slope_up, other._slope_up)]
        self._slope_down = [a + b for a, b in zip(self._slope_down, other._slope_down)]
        self._steep_up = [max(a, b) for a, b in zip(self._steep_up, other._steep_up)]
        self._steep_down = [max(a, b) for a, b in zip(self._steep_down, other._steep_down)]
        self._past_up = [m + self._beyond(c, d, q) if c >= self._log_term else 0.0 for m, c, d, q
                         in zip(self._points, self._log_up, self._slope_up, self._steep_up)]
        self._past_down = [m - self._beyond(c, d, q) if c >= self._log_term else 1.0
                           for m, c, d, q in zip(self._points, self._log_down, self._slope_down,
                                                 self._steep_down)]
        return self
