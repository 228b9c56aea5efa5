"""Anytime-valid bounds on the Kolmogorov–Smirnov distance of a score stream from a reference.

The guardrail ``score_ks ≤ L`` is about ``D = sup_x |F(x) − G(x)|``, the KS distance between
the distribution F of the reference scores and the distribution G of the candidate's current
scores. With ``F_m`` the empirical CDF of the m reference scores and ``G_n`` that of the first n
current scores, the triangle inequality gives at every x

    | |F_m(x) − G_n(x)| − |F(x) − G(x)| |  ≤  ‖F_m − F‖∞ + ‖G_n − G‖∞,

so ``D̂ − ε ≤ D ≤ D̂ + ε`` with ``D̂ = sup_x |F_m(x) − G_n(x)|`` (the two-sample KS statistic)
whenever both samples' sup-norm deviations are within their radii, ``ε = ε_ref + ε_cur``.
α is split in two equal halves, one per sample (a union bound; the samples need not be
independent of each other, each must be i.i.d.):

* **Reference** (m fixed: frozen after the first ``reference_size`` scores, or given, e.g. from
  the experiment's reference file): the Dvoretzky–Kiefer–Wolfowitz inequality with Massart's
  tight constant (Massart 1990, "The tight constant in the Dvoretzky–Kiefer–Wolfowitz
  inequality", Ann. Probab. 18(3)), ``P(‖F_m − F‖∞ > ε) ≤ 2 exp(−2mε²)`` for every ε, so
  ``ε_ref = sqrt(ln(2 / (α/2)) / (2m))``.
* **Current** (n grows and is looked at after every score, stopped whenever): the time-uniform
  DKW inequality of Howard & Ramdas (2022), "Sequential estimation of quantiles with
  applications to A/B-testing and best-arm identification", Bernoulli 28(3), Theorem 2 (with
  ``t_min = 1``): for ``A > 1/√2``, ``C > 0`` and ``η > 1`` with
  ``γ² = (2/η)(A − sqrt(2(η − 1)/C))² > 1``,

      P(∃n ≥ 1: ‖G_n − G‖∞ > A sqrt((log log(e·n) + C) / n))
          ≤ 4 e^(−γ²C) (1 + 1 / ((γ² − 1) log η)).

  ``A = 0.85`` as in the paper; C is the smallest value whose right-hand side, at the η that
  minimises it, is α/2 (solved with scipy, as the authors' ``confseq`` library solves it). The
  paper's closed form ``C = 0.8 log(1612/α')`` is slightly larger, hence wider; a test checks
  that ours never exceeds it. Chosen over a union bound of fixed-n DKW over a geometric grid
  of sample sizes because such a grid covers only its own sizes, while the policy looks after
  every score: Theorem 2 holds at every n at once, at the optimal ``sqrt(log log n / n)`` rate
  with small constants.

Both inequalities hold for any distribution, with atoms too (the deviations are then no larger
than for a continuous one). So, at the candidate's α:

* ``"fail"`` when ``lower = D̂ − ε > L`` (D̂ read from the cells below, from beneath): a false
  failure (true D ≤ L) needs a radius to be exceeded, chance ≤ α/2 + α/2 = α however often
  one looks;
* ``"pass"`` when ``upper = D̂ + ε ≤ L`` (D̂ from above): a false pass (true D > L) likewise
  ≤ α;
* ``"undecided"`` otherwise; also while the reference is filling, or without current scores.

The reference's radius does not shrink as current scores come in: with m = 1000 reference
scores at α = 0.05 it is 0.047, so a limit of 0.05 can be failed but never passed; passing a
limit L needs ``ε_ref = sqrt(ln(4/α) / (2m))`` well below L (m = 10,000 gives 0.015: an
undrifted stream then passes L = 0.05 after about 15,000 current scores).

*Cells.* Storing every score would grow the state without bound, so scores (in [0, 1]) are
counted exactly in cells, and D̂ is bracketed from the counts. 0 and 1 are cells of their own;
a score x in (0, 0.5] goes to a cell by the exponent and the top ``precision`` mantissa bits of
its float (default 8: 256 cells per binade, each ≈ 0.4 % of the score wide), a score in
(0.5, 1) by those of ``1 − x`` (exact in floating point, Sterbenz's lemma). Resolution is thus
relative near 0 *and* near 1, where confident models put their scores. The mapping is monotone
and exact (integer bits, no logarithm), the same on every machine, so partials merge exactly.
Monotone means each cell's top is a point where both empirical CDFs are known exactly: the
maximum of ``|F_m − G_n|`` over cell tops, ``D̂_lo``, is at most D̂; inside a cell each CDF lies
between its values at the cell's top and at the previous occupied cell's top, so
``D̂ ≤ D̂_hi = max over cells of max(F_m(top) − G_n(prev), G_n(top) − F_m(prev))``. The bounds
are ``lower = D̂_lo − ε`` and ``upper = D̂_hi + ε``: the cells cost the upper bound at most the
largest share of one cell, never the guarantee. Written here rather than on
:class:`rollguard.stats.QuantileSketch` (DDSketch) because its logarithmic buckets have no
resolution near 1 and its collapsing of buckets past ``max_buckets`` would void the exact CDF
at bucket edges; no installed library offers a time-uniform two-sample KS bound.

*Reading cheaply.* Once the reference is frozen, j more current scores move every ``G_n(x)`` by
at most ``j / n``, so :meth:`KSDistanceCS.status` recomputes ``D̂`` only when that slack could
change its answer: the answer is that of a full recomputation at every look.

>>> import random
>>> rng = random.Random(1)
>>> same = KSDistanceCS(alpha=0.05, reference_size=2000, max=0.1)
>>> for _ in range(30000):
...     _ = same.update(rng.betavariate(2, 5))
>>> same.status(), same.interval()[1] <= 0.1
('pass', True)
>>> moved = KSDistanceCS(alpha=0.05, reference_size=2000, max=0.1)
>>> for i in range(6000):
...     _ = moved.update(rng.betavariate(2, 5) if i < 2000 else rng.betavariate(4, 5))
>>> moved.status(), moved.interval()[0] > 0.1
('fail', True)
>>> a = KSDistanceCS(alpha=0.05, reference=[0.1, 0.5, 0.9], max=0.2).update(0.2)
>>> b = KSDistanceCS(alpha=0.05, reference=[0.1, 0.5, 0.9], max=0.2).update(0.95)
>>> a += b
>>> a.counts(), KSDistanceCS.from_dict(a.to_dict()) == a
({'reference': 3, 'current': 2}, True)
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Iterable
from itertools import repeat
from typing import Any, Self

import numpy as np

from rollguard.stats.sequential._base import (
    FAIL,
    PASS,
    UNDECIDED,
    SequentialTest,
    bound_status,
    check_alpha,
    check_finite,
)

#: Howard & Ramdas' leading constant A of Theorem 2 (the value of their closed form).
HR_A = 0.85
#: Mantissa bits that pick a score's cell within its binade (2**8 = 256 cells per binade).
DEFAULT_PRECISION = 8
#: Added to the slack of the cheap status check, so float rounding in D̂ never decides alone.
_ROUNDING = 1e-12

_DOUBLE = struct.Struct("<d")
_INT64 = struct.Struct("<q")
_HALF_BITS = _INT64.unpack(_DOUBLE.pack(0.5))[0]


# -- radii ------------------------------------------------------------------------------------
def dkw_radius(m: int, alpha: float) -> float:
    """Fixed-sample DKW radius with Massart's constant: ``P(‖F_m − F‖∞ > r) ≤ alpha``.

    >>> round(dkw_radius(1000, 0.025), 4)
    0.0468
    """
    if m <= 0:
        return math.inf
    return math.sqrt(math.log(2.0 / alpha) / (2.0 * m))


def _theorem2_error(c: float, eta: float, a: float) -> float:
    """Right-hand side of Howard & Ramdas (2022) Theorem 2 for constants C, η and A."""
    gamma_sq = 2.0 / eta * (a - math.sqrt(2.0 * (eta - 1.0) / c)) ** 2
    if gamma_sq <= 1.0 or eta <= 1.0:
        return math.inf
    return 4.0 * math.exp(-gamma_sq * c) * (1.0 + 1.0 / ((gamma_sq - 1.0) * math.log(eta)))


@functools.lru_cache(maxsize=64)
def lil_constant(alpha: float, a: float = HR_A) -> float:
    """The C of Theorem 2 whose crossing probability is at most ``alpha`` (numerically tight).

    Any η > 1 gives a valid bound; η is the minimiser of the error found by scipy, and C is
    then solved for *that* η and nudged up, so the returned C provably meets ``alpha``
    whatever the optimiser's accuracy.

    >>> c = lil_constant(0.025)
    >>> 8.0 < c <= 0.8 * math.log(1612 / 0.025)     # the paper's closed form is looser
    True
    """
    from scipy import optimize  # imported here: slow to import, needed once per α

    alpha = check_alpha(alpha)
    if not a > 1.0 / math.sqrt(2.0):
        raise ValueError(f"A must exceed 1/sqrt(2), got {a!r}")

    def best_eta(c: float) -> tuple[float, float]:
        # γ² > 1 needs sqrt(η/2) + sqrt(2(η−1)/C) < A: η lies below this root
        top = optimize.brentq(
            lambda e: math.sqrt(e / 2.0) + math.sqrt(2.0 * (e - 1.0) / c) - a, 1.0, 2.0 * a * a
        )
        found = optimize.minimize_scalar(
            lambda e: _theorem2_error(c, e, a), bounds=(1.0, top), method="bounded",
            options={"xatol": 1e-12},
        )
        return float(found.x), float(found.fun)

    c_star = optimize.brentq(lambda c: best_eta(c)[1] - alpha, 0.1, 500.0, xtol=1e-12)
    eta, _ = best_eta(c_star)
    c = optimize.brentq(lambda c: _theorem2_error(c, eta, a) - alpha, 0.1, 500.0, xtol=1e-12)
    c *= 1.0 + 1e-9
    if not _theorem2_error(c, eta, a) <= alpha:  # pragma: no cover - guards the solver
        raise ArithmeticError(f"Theorem 2 constant not found for alpha={alpha!r}")
    return c


def lil_radius(n: int | np.ndarray, alpha: float, a: float = HR_A) -> Any:
    """Time-uniform radius of Howard & Ramdas (2022) Theorem 2: with chance ≥ 1 − ``alpha``,
    ``‖G_n − G‖∞ ≤ lil_radius(n, alpha)`` at every n ≥ 1 at once (inf below 1).

    >>> r = lil_radius(np.array([0, 1000, 20000]), 0.025)
    >>> bool(np.isinf(r[0])), [round(float(x), 4) for x in r[1:]]
    (True, [0.0879, 0.0199])
    """
    c = lil_constant(alpha, a)
    if isinstance(n, (int, np.integer)):  # the scalar path, read at every look
        return a * math.sqrt((math.log1p(math.log(n)) + c) / n) if n >= 1 else math.inf
    t = np.maximum(np.asarray(n, dtype=float), 1.0)
    radius = a * np.sqrt((np.log1p(np.log(t)) + c) / t)
    radius = np.where(np.asarray(n) >= 1, radius, np.inf)
    return float(radius) if np.ndim(radius) == 0 else radius


# -- cells ------------------------------------------------------------------------------------
def _top_cell(precision: int) -> int:
    """The cell of the score 1.0 (the largest): twice the cell of 0.5, plus one."""
    return 2 * ((_HALF_BITS >> (52 - precision)) + 1) + 1


def cell_of(x: float, precision: int = DEFAULT_PRECISION) -> int:
    """The cell of a score in [0, 1] (see the module docstring); monotone in ``x``.

    >>> cells = [cell_of(x) for x in (0.0, 1e-300, 0.001, 0.5, 0.5000001, 0.999, 1.0)]
    >>> cells == sorted(cells), cells[0], cells[-1] == _top_cell(DEFAULT_PRECISION)
    (True, 0, True)
    """
    x = check_finite(x)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"a score must be in [0, 1], got {x!r}")
    shift = 52 - precision
    if x <= 0.5:
        return 0 if x == 0.0 else (_INT64.unpack(_DOUBLE.pack(x))[0] >> shift) + 1
    y = 1.0 - x  # exact for x in [0.5, 1] (Sterbenz)
    top = _top_cell(precision)
    return top if y == 0.0 else top - 1 - (_INT64.unpack(_DOUBLE.pack(y))[0] >> shift)


def cells_of(x: np.ndarray, precision: int = DEFAULT_PRECISION) -> np.ndarray:
    """:func:`cell_of` of every score of an array at once (for simulations), as int64."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all((x >= 0.0) & (x <= 1.0)):
        raise ValueError("scores must be in [0, 1]")
    shift = 52 - precision
    top = _top_cell(precision)
    y = 1.0 - x
    low = np.where(x == 0.0, 0, (x.view(np.int64) >> shift) + 1)
    high = np.where(y == 0.0, top, top - 1 - (y.view(np.int64) >> shift))
    return np.where(x <= 0.5, low, high).astype(np.int64)


def ks_envelope(
    ref_cum: np.ndarray, cur_cum: np.ndarray, point: np.ndarray | None = None
) -> tuple[Any, Any]:
    """``(D̂_lo, D̂_hi)`` from cumulative shares at the tops of ordered cells (last axis).

    ``ref_cum[..., k]`` / ``cur_cum[..., k]``: share of each sample in cells 0..k; ``point``
    marks cells that hold a single value (nothing lies inside them). Cells empty in both
    samples may be included: they change neither figure. Works on a batch of runs at once.

    >>> ks_envelope(np.array([0.5, 1.0]), np.array([0.0, 1.0]))
    (np.float64(0.5), np.float64(1.0))
    """
    ref_cum = np.asarray(ref_cum, dtype=float)
    cur_cum = np.asarray(cur_cum, dtype=float)
    at_tops = np.abs(ref_cum - cur_cum)
    zero = np.zeros(ref_cum.shape[:-1] + (1,))
    ref_prev = np.concatenate([zero, ref_cum[..., :-1]], axis=-1)
    cur_prev = np.concatenate([zero, cur_cum[..., :-1]], axis=-1)
    inside = np.maximum(ref_cum - cur_prev, cur_cum - ref_prev)
    if point is not None:
        inside = np.where(point, at_tops, inside)
    return at_tops.max(axis=-1), np.maximum(inside, at_tops).max(axis=-1)


# -- the test ---------------------------------------------------------------------------------
class KSDistanceCS(SequentialTest):
    """Anytime-valid (1−α) bounds on the KS distance of a score stream from its reference.

    The reference is ``reference`` (a fixed sample, e.g. from the experiment's reference
    file) or else the first ``reference_size`` scores; every later score is current. With
    ``max`` (the limit L), :meth:`status` answers as the module docstring says. Merging adds
    counts: an explicit reference must be the same in both partials; without one each partial
    keeps its own first ``reference_size`` scores (as :class:`rollguard.stats.Drift` does).
    """

    TYPE = "sequential.KSDistanceCS"

    def __init__(
        self,
        alpha: float = 0.05,
        reference_size: int = 1000,
        reference: Iterable[float] | None = None,
        *,
        max: float | None = None,
        precision: int = DEFAULT_PRECISION,
    ) -> None:
        self.alpha = check_alpha(alpha)
        if int(precision) != precision or not 1 <= precision <= 52:
            raise ValueError(f"precision must be an integer in 1..52, got {precision!r}")
        self.precision = int(precision)
        if max is not None and not 0.0 <= float(max) <= 1.0:
            raise ValueError(f"max must be in [0, 1], got {max!r}")
        self.max = None if max is None else float(max)
        if int(reference_size) != reference_size or reference_size < 0:
            raise ValueError(
                f"reference_size must be a non-negative integer, got {reference_size!r}"
            )
        self.reference_size = int(reference_size)
        self.fixed_reference = reference is not None
        self.reference: dict[int, int] = {}
        self.current: dict[int, int] = {}
        self.n_reference = 0
        self.n_current = 0
        for x in () if reference is None else reference:
            self._count(self.reference, x)
            self.n_reference += 1
        if self.fixed_reference:
            self.reference_size = self.n_reference
        self._figures: tuple[int, float, float] | None = None  # (n_current, D̂_lo, D̂_hi)
        # (sorted keys of both samples, reference's cumulative shares, point cells): kept
        # while no new cell appears, so a recomputation only reads the current counts
        self._layout: tuple[list[int], np.ndarray, np.ndarray] | None = None

    def _count(self, counts: dict[int, int], x: float) -> int:
        k = cell_of(x, self.precision)
        counts[k] = counts.get(k, 0) + 1
        return k

    def update(self, x: float) -> Self:
        if not self.fixed_reference and self.n_reference < self.reference_size:
            self._count(self.reference, x)
            self.n_reference += 1
            self._figures = self._layout = None
        else:
            k = self._count(self.current, x)
            self.n_current += 1  # the cached figures stay usable: see _status_from_cache
            if self.current[k] == 1 and k not in self.reference:
                self._layout = None  # a new cell
        return self

    def counts(self) -> dict[str, int]:
        return {"reference": self.n_reference, "current": self.n_current}

    def ready(self) -> bool:
        """Whether the reference is complete and there are current scores to compare."""
        frozen = self.fixed_reference or self.n_reference >= self.reference_size
        return frozen and self.n_reference > 0 and self.n_current > 0

    def radii(self) -> tuple[float, float]:
        """``(ε_ref, ε_cur)``: the reference's DKW and the current's time-uniform radius."""
        half = self.alpha / 2.0
        return dkw_radius(self.n_reference, half), lil_radius(self.n_current, half)

    def empirical(self) -> tuple[float, float]:
        """``(D̂_lo, D̂_hi)``: the KS statistic of the two samples lies between them."""
        if not self.ready():
            return 0.0, 1.0
        cached = self._figures
        if cached is not None and cached[0] == self.n_current:
            return cached[1], cached[2]
        if self._layout is None:
            ref = self.reference
            keys = sorted(ref.keys() | self.current.keys())
            ref_counts = np.fromiter(map(ref.get, keys, repeat(0)), float, len(keys))
            array = np.array(keys)
            point = (array == 0) | (array == _top_cell(self.precision))
            self._layout = (keys, np.cumsum(ref_counts) / self.n_reference, point)
        keys, ref_cum, point = self._layout
        cur_counts = np.fromiter(map(self.current.get, keys, repeat(0)), float, len(keys))
        lo, hi = ks_envelope(ref_cum, np.cumsum(cur_counts) / self.n_current, point)
        self._figures = (self.n_current, float(lo), float(hi))
        return self._figures[1], self._figures[2]

    def interval(self) -> tuple[float, float]:
        """Lower and upper (1−α) bound on the KS distance; ``(0.0, 1.0)`` until ready."""
        if not self.ready():
            return 0.0, 1.0
        lo, hi = self.empirical()
        eps = sum(self.radii())
        return max(0.0, lo - eps), min(1.0, hi + eps)

    def estimate(self) -> float | None:
        """``D̂_lo``, the KS statistic read at the cell tops (a point estimate), or None."""
        return self.empirical()[0] if self.ready() else None

    def status(self) -> str:
        if self.max is None:
            raise ValueError("status() needs the limit: give max")
        if not self.ready():
            return UNDECIDED
        quick = self._status_from_cache()
        if quick is not None:
            return quick
        lower, upper = self.interval()
        return bound_status(lower, upper, max=self.max)

    def _status_from_cache(self) -> str | None:
        """The status without recomputing D̂, when the cached D̂ settles it; else None."""
        cached = self._figures
        if cached is None or self.max is None:
            return None
        n0, lo0, hi0 = cached
        n = self.n_current
        # since n0 current scores, every G_n(x) moved by at most (n − n0)/n: so did D̂_lo, D̂_hi
        slack = (n - n0) / n + _ROUNDING
        eps = sum(self.radii())
        limit = self.max
        fail_low = max(0.0, lo0 - slack - eps) > limit
        fail_high = max(0.0, lo0 + slack - eps) > limit
        pass_low = min(1.0, hi0 - slack + eps) <= limit
        pass_high = min(1.0, hi0 + slack + eps) <= limit
        if fail_low != fail_high or pass_low != pass_high:
            return None
        return FAIL if fail_low else PASS if pass_low else UNDECIDED

    def evidence(self) -> dict[str, Any]:
        lower, upper = self.interval()
        eps_ref, eps_cur = self.radii()
        level = f"{100 * (1 - self.alpha):.4g}%"
        out: dict[str, Any] = {
            "estimate": self.estimate(),
            "lower": lower,
            "upper": upper,
            "reference": self.n_reference,
            "current": self.n_current,
            "radius_reference": eps_ref if math.isfinite(eps_ref) else None,
            "radius_current": eps_cur if math.isfinite(eps_cur) else None,
            "method": (
                f"anytime-valid {level} bounds on the KS distance: DKW with Massart's constant "
                f"on the reference at α/2, Howard & Ramdas 2022 time-uniform DKW on the current "
                f"scores at α/2; the estimate is the two-sample KS statistic (no guarantee)"
            ),
        }
        if self.max is not None:
            out.update(limit=self.max, status=self.status())
        return out

    # -- merge and state ----------------------------------------------------------------------
    def merge(self, other: KSDistanceCS) -> Self:
        self._check_same_kind(other, "alpha", "precision", "max", "fixed_reference")
        if self.fixed_reference:
            if self.reference != other.reference:
                raise ValueError("cannot merge KS distance tests with different references")
        else:
            # each partial spends its own first-N budget, as rollguard.stats.Drift does
            for k, c in other.reference.items():
                self.reference[k] = self.reference.get(k, 0) + c
            self.n_reference += other.n_reference
        for k, c in other.current.items():
            self.current[k] = self.current.get(k, 0) + c
        self.n_current += other.n_current
        self._figures = self._layout = None
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "alpha": self.alpha,
            "max": self.max,
            "precision": self.precision,
            "reference_size": self.reference_size,
            "fixed_reference": self.fixed_reference,
            "reference": [[k, self.reference[k]] for k in sorted(self.reference)],
            "current": [[k, self.current[k]] for k in sorted(self.current)],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type(d)
        new = cls(d["alpha"], d["reference_size"], max=d["max"], precision=d["precision"])
        new.fixed_reference = bool(d["fixed_reference"])
        new.reference = {int(k): int(c) for k, c in d["reference"]}
        new.current = {int(k): int(c) for k, c in d["current"]}
        new.n_reference = sum(new.reference.values())
        new.n_current = sum(new.current.values())
        return new


__all__ = [
    "DEFAULT_PRECISION",
    "HR_A",
    "KSDistanceCS",
    "cell_of",
    "cells_of",
    "dkw_radius",
    "ks_envelope",
    "lil_constant",
    "lil_radius",
]
