"""Vectorised twins of the sequences, for simulations: many independent runs in one array.

Each twin holds one state per run (numpy arrays of shape ``(runs,)``) and applies exactly the
recursion of its scalar object, one time step for all runs at once; tests check both agree on
a few streams. They exist for the simulations in ``tests/`` and ``bench/`` (thousands of runs ×
thousands of steps in seconds); the policy uses the scalar objects.

>>> import numpy as np
>>> from rollguard.stats.sequential.eb import EmpiricalBernsteinCS
>>> twin = EmpiricalBernsteinBatch(runs=2, alpha=0.05, lower=0.0, upper=1.0, tuned_n=50)
>>> one = EmpiricalBernsteinCS(alpha=0.05, lower=0.0, upper=1.0, tuned_n=50)
>>> for x in (0.2, 0.9, 0.4, 0.7):
...     _ = twin.update(np.array([x, 1.0 - x]))
...     _ = one.update(x)
>>> lo, hi = twin.interval()
>>> bool(np.isclose(lo[0], one.interval()[0])) and bool(np.isclose(hi[0], one.interval()[1]))
True
>>> s_low, r_up = quantile_rank_paths(t_max=2000, q=0.5, alpha=0.05, tuned_n=500)
>>> int(s_low[999]) < 500 < int(r_up[999])       # ranks of the bounds after 1000 values
True
"""

from __future__ import annotations

import math

import numpy as np

from rollguard.stats.sequential._base import check_alpha, check_bounds
from rollguard.stats.sequential.asymptotic import (
    DEFAULT_BURN_IN,
    check_burn_in,
    normal_mixture_rho,
)
from rollguard.stats.sequential.eb import plug_in_rate
from rollguard.stats.sequential.quantile import QuantileCS

__all__ = [
    "AsymptoticBatch",
    "BettingBatch",
    "EmpiricalBernsteinBatch",
    "SRMBatch",
    "quantile_rank_paths",
]


class EmpiricalBernsteinBatch:
    """Twin of :class:`~.eb.EmpiricalBernsteinCS` over ``runs`` parallel streams."""

    def __init__(
        self,
        runs: int,
        alpha: float = 0.05,
        lower: float = 0.0,
        upper: float = 1.0,
        tuned_n: float | None = 1000,
        truncation: float = 0.5,
        running_intersection: bool = True,
    ) -> None:
        self.alpha = check_alpha(alpha)
        lo, hi = check_bounds(lower, upper)
        assert lo is not None and hi is not None
        self.lower, self.upper = lo, hi
        self.tuned_n, self.truncation = tuned_n, truncation
        self.running_intersection = running_intersection
        self._log_term = math.log(2.0 / self.alpha)
        self.n = 0
        z = np.zeros(runs)
        self._sum_y, self._sum_sq_reg = z.copy(), z.copy()
        self._sum_lam, self._sum_lam_y = z.copy(), z.copy()
        self._sum_vpsi_lo, self._sum_vpsi_hi = z.copy(), z.copy()
        self._run_lo, self._run_hi = z.copy(), np.ones(runs)

    def update(self, x: np.ndarray) -> EmpiricalBernsteinBatch:
        """One observation for every run (``x`` of shape ``(runs,)``)."""
        y = np.clip((np.asarray(x, dtype=float) - self.lower) / (self.upper - self.lower), 0, 1)
        n = self.n
        t = n + 1
        variance = (0.25 + self._sum_sq_reg) / t
        horizon = t * math.log1p(t) if self.tuned_n is None else max(t, self.tuned_n)
        lam = np.sqrt(2.0 * self._log_term / (horizon * variance))
        if self.tuned_n is not None:
            lam = lam / (1.0 + lam)
        lam = np.minimum(lam, self.truncation)
        psi = -np.log1p(-lam) - lam
        if n:
            centre = self._sum_y / n
            centre_flipped = 1.0 - centre
        else:
            centre = centre_flipped = 0.0
        self._sum_vpsi_lo += (y - centre) ** 2 * psi
        self._sum_vpsi_hi += ((1.0 - y) - centre_flipped) ** 2 * psi
        self._sum_lam += lam
        self._sum_lam_y += lam * y
        self.n = t
        self._sum_y += y
        self._sum_sq_reg += (y - (0.5 + self._sum_y) / (t + 1)) ** 2
        if self.running_intersection:
            lo, hi = self._raw_unit_interval()
            np.maximum(self._run_lo, lo, out=self._run_lo)
            np.minimum(self._run_hi, hi, out=self._run_hi)
        return self

    def _raw_unit_interval(self) -> tuple[np.ndarray, np.ndarray]:
        centre = self._sum_lam_y / self._sum_lam
        lo = centre - (self._log_term + self._sum_vpsi_lo) / self._sum_lam
        hi = centre + (self._log_term + self._sum_vpsi_hi) / self._sum_lam
        return np.maximum(lo, 0.0), np.minimum(hi, 1.0)

    def interval(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of every run."""
        if self.running_intersection:
            lo, hi = self._run_lo, self._run_hi
        else:
            lo, hi = self._raw_unit_interval()
        width = self.upper - self.lower
        return self.lower + width * lo, self.lower + width * hi


def _larger_roots(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Larger root of ``a m² + b m − c = 0`` per run (``a > 0``), NaN where there is none."""
    disc = b * b + 4.0 * a * c
    root = np.sqrt(np.where(disc >= 0.0, disc, np.nan))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0.0, 2.0 * c / (b + root), (-b + root) / (2.0 * a))


class BettingBatch:
    """Twin of :class:`~.betting.BettingCS` with one test point over ``runs`` parallel streams.

    The bet depends on the stream only through the shared time and each run's variance sum,
    so it is a per-run array; :meth:`side_of` answers at the test point like the object.
    """

    def __init__(
        self,
        runs: int,
        alpha: float = 0.05,
        lower: float = 0.0,
        upper: float = 1.0,
        tuned_n: float | None = 1000,
        truncation: float = 0.75,
        test_point: float = 0.0,
    ) -> None:
        self.alpha = check_alpha(alpha)
        lo, hi = check_bounds(lower, upper)
        assert lo is not None and hi is not None
        self.lower, self.upper = lo, hi
        self.tuned_n, self.truncation = tuned_n, truncation
        self.test_point = float(test_point)
        self._m = (self.test_point - lo) / (hi - lo)
        self._log_term = math.log(2.0 / self.alpha)
        self.n = 0
        z = np.zeros(runs)
        (self._sum_y, self._sum_sq_reg, self._sum_lam, self._sum_lam_y, self._sum_psi,
         self._sum_psi_y, self._sum_psi_yy) = (z.copy() for _ in range(7))
        self._log_up, self._log_down, self._max_up, self._max_down = (z.copy() for _ in range(4))
        self._slope_up, self._slope_down, self._steep_up, self._steep_down = (
            z.copy() for _ in range(4))
        self._past_up, self._past_down = z.copy(), np.ones(runs)

    def update(self, x: np.ndarray) -> BettingBatch:
        """One observation for every run (``x`` of shape ``(runs,)``)."""
        y = np.clip((np.asarray(x, dtype=float) - self.lower) / (self.upper - self.lower), 0, 1)
        t = self.n + 1
        # plug_in_rate on arrays: the same formula, per run
        lam = np.minimum(plug_in_rate(self._log_term, self._sum_sq_reg, t, self.tuned_n),
                         self.truncation)
        psi = -np.log1p(-lam) - lam
        up, down = 1.0 + lam * (y - self._m), 1.0 - lam * (y - self._m)
        self._slope_up += lam / up
        self._slope_down += lam / down
        np.maximum(self._steep_up, lam / up, out=self._steep_up)
        np.maximum(self._steep_down, lam / down, out=self._steep_down)
        self._log_up += np.log(up)
        self._log_down += np.log(down)
        T = self._log_term
        for log_c, max_c, slope, steep, past, sign in (
                (self._log_up, self._max_up, self._slope_up, self._steep_up, self._past_up, 1),
                (self._log_down, self._max_down, self._slope_down, self._steep_down,
                 self._past_down, -1)):
            new = (log_c > max_c) & (log_c >= T)  # a new maximum past the threshold
            room = np.where(new, log_c - T, 0.0)
            reach = self._m + sign * room / (slope + room * steep)
            past[:] = np.where(new, np.maximum(past, reach) if sign > 0
                               else np.minimum(past, reach), past)
            np.maximum(max_c, log_c, out=max_c)
        self._sum_lam += lam
        self._sum_lam_y += lam * y
        self._sum_psi += psi
        self._sum_psi_y += psi * y
        self._sum_psi_yy += psi * y * y
        self.n = t
        self._sum_y += y
        self._sum_sq_reg += (y - (0.5 + self._sum_y) / (t + 1)) ** 2
        return self

    def interval(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of every run."""
        a, T = self._sum_psi, self._log_term
        lo = _larger_roots(a, self._sum_lam - 2.0 * self._sum_psi_y,
                           self._sum_lam_y - self._sum_psi_yy - T)
        neg_hi = _larger_roots(a, self._sum_lam + 2.0 * self._sum_psi_y,
                               -(self._sum_lam_y + self._sum_psi_yy + T))
        lo = np.where(np.isnan(lo) | (lo < 0.0), 0.0, np.minimum(lo, 1.0))
        hi = np.where(np.isnan(neg_hi) | (-neg_hi > 1.0), 1.0, np.maximum(-neg_hi, 0.0))
        width = self.upper - self.lower
        lo = self.lower + width * np.maximum(lo, self._past_up)
        hi = self.lower + width * np.minimum(hi, self._past_down)
        lo = np.where(self._max_up >= self._log_term, np.maximum(lo, self.test_point), lo)
        hi = np.where(self._max_down >= self._log_term, np.minimum(hi, self.test_point), hi)
        return lo, hi

    def side_of(self, value: float) -> np.ndarray:
        """Per run: 1 above ``value`` with confidence, −1 below, 0 undecided (as the object)."""
        if abs(value - self.test_point) <= 1e-12 * (self.upper - self.lower):
            return np.where(self._max_down >= self._log_term, -1,
                            np.where(self._max_up >= self._log_term, 1, 0))
        lo, hi = self.interval()
        return np.where(hi < value, -1, np.where(lo > value, 1, 0))


class AsymptoticBatch:
    """Twin of :class:`~.asymptotic.AsymptoticCS` over ``runs`` parallel streams (the same
    ``burn_in``: no finite bound before it)."""

    def __init__(self, runs: int, alpha: float = 0.05, tuned_n: float = 1000,
                 burn_in: int = DEFAULT_BURN_IN) -> None:
        self.alpha = check_alpha(alpha)
        self.burn_in = check_burn_in(burn_in)
        self._rho = normal_mixture_rho(tuned_n, self.alpha)
        self._two_log_inv_alpha = 2.0 * math.log(1.0 / self.alpha)
        self.n = 0
        self._mean = np.zeros(runs)
        self._m2 = np.zeros(runs)

    def update(self, x: np.ndarray) -> AsymptoticBatch:
        x = np.asarray(x, dtype=float)
        self.n += 1
        delta = x - self._mean
        self._mean += delta / self.n
        self._m2 += delta * (x - self._mean)
        return self

    def interval(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.n
        if n < self.burn_in:
            inf = np.full_like(self._mean, np.inf)
            return -inf, inf
        radius = np.sqrt(
            self._m2 / n * (n + self._rho) * (math.log1p(n / self._rho) + self._two_log_inv_alpha)
        ) / n
        return self._mean - radius, self._mean + radius


class SRMBatch:
    """Twin of :class:`~.srm.SRMTest` over ``runs`` parallel streams; arms are indices into
    ``shares`` (a sequence of shares, all positive, summing to 1)."""

    def __init__(self, runs: int, alpha: float, shares, concentration: float = 100.0) -> None:
        self.alpha = check_alpha(alpha)
        self.concentration = float(concentration)
        self.past_log_e = np.zeros(runs)
        self.max_log_e = np.zeros(runs)
        self._start(shares, runs)

    def _start(self, shares, runs: int) -> None:
        self.shares = np.asarray(shares, dtype=float)
        self.counts = np.zeros((runs, len(self.shares)))
        self.n = 0
        self.log_e = np.zeros(runs)

    def set_shares(self, shares) -> SRMBatch:
        """Close the period; start another against ``shares``."""
        self.past_log_e += self.log_e
        self._start(shares, len(self.log_e))
        return self

    def update(self, arm: np.ndarray) -> SRMBatch:
        """One served request per run (``arm``: index of the serving arm)."""
        rows = np.arange(len(arm))
        share = self.shares[arm]
        count = self.counts[rows, arm]
        self.log_e += np.log((self.concentration * share + count)
                             / ((self.concentration + self.n) * share))
        self.counts[rows, arm] += 1
        self.n += 1
        np.maximum(self.max_log_e, self.past_log_e + self.log_e, out=self.max_log_e)
        return self

    def failed(self) -> np.ndarray:
        """Runs whose e-process has reached 1/α."""
        return self.max_log_e >= math.log(1.0 / self.alpha)


def quantile_rank_paths(
    t_max: int, q: float, alpha: float, tuned_n: float = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """The ranks behind :class:`~.quantile.QuantileCS`'s bounds for t = 1..t_max.

    ``s_low[t−1]`` (lower bound = value of rank ``s_low + 1``, or none if −1) and
    ``r_up[t−1]`` (upper bound = value of rank ``r_up``, or none if > t). They depend on t only,
    so the coverage of the quantile CS is that of a Bernoulli(q) walk against these ranks.
    """
    cs = QuantileCS(alpha=alpha, q=q, tuned_n=tuned_n)
    s_low = np.empty(t_max, dtype=np.int64)
    r_up = np.empty(t_max, dtype=np.int64)
    for t in range(1, t_max + 1):
        cs._move_ranks(t)
        s_low[t - 1], r_up[t - 1] = cs.s_low, cs.r_up
    return s_low, r_up
