"""Confidence sequence for a mean, bounded or not; the paired (shadow-mode) primary metric.

:class:`MeanCS` picks the method from what is known about the values:

* bounded (``lower`` and ``upper`` given: accuracy, brier, rates, a clipped log_loss) → the
  nonasymptotic predictable plug-in empirical-Bernstein CS of Waudby-Smith & Ramdas (2023)
  (:mod:`.eb`): exact coverage at every time, width from the observed variance; or, when the
  caller names ``test_points`` (the values a decision compares the mean with, such as −margin),
  the betting CS of the same paper (:mod:`.betting`), exact at those points and faster to
  decide there;
* unbounded (neither given: abs_error, sq_error) → the asymptotic CS of Waudby-Smith, Arbour,
  Sinha, Kennedy & Ramdas (2024) (:mod:`.asymptotic`), which only needs finite moments. Its
  guarantee is asymptotic, so it gives no finite bound, and ``side_of`` answers 0 (neither
  promote nor roll back), before ``burn_in`` observations (default 30): with tied values the
  plug-in variance is 0 at two observations, and its zero-width interval would roll back on
  two equal differences below −margin.

:class:`PairedMeanCS` is the same object used for shadow mode, where both arms score the same
request: feed it ``d_i = score_candidate − score_champion`` (higher is better, so ``−loss``), and
its interval is an anytime-valid CS for Δ = candidate − champion. Pairing removes the
between-request variance both arms share, which is why shadow needs far fewer labels than ab.
With a non-inferiority margin δ ≥ 0 the policy passes ``test_points=(−δ,)`` and promotes when
``side_of(−δ) == 1`` (``L_t > −δ``) and rolls back when it is −1 (``U_t < −δ``): the chance of
ever promoting a candidate with Δ ≤ −δ is at most α/2 (one side of a two-sided 1−α sequence),
however often it looks.

``tuned_n`` is the sample size at which the boundary is tightest. To tune for an effect ε
(the Δ + δ you want to detect quickly), use :func:`fixed_horizon_n`: the size of the
fixed-horizon test of the same α and a chosen power; the sequential test then decides, on
average, in about that many samples at that effect (measured in ``bench/``).

>>> cs = PairedMeanCS(alpha=0.05, lower=-1.0, upper=1.0, tuned_n=500)
>>> pattern = [0.0] * 18 + [1.0, 1.0]            # candidate right where champion wrong, 10 %
>>> for i in range(3000):
...     _ = cs.update(pattern[i % 20])
>>> lo, hi = cs.interval()
>>> round(cs.mean, 3), lo > 0.0 > -0.01       # promoted even with a zero margin
(0.1, True)
>>> at_margin = PairedMeanCS(alpha=0.05, lower=-1.0, upper=1.0, tuned_n=500, test_points=(-0.01,))
>>> for i in range(600):
...     _ = at_margin.update(pattern[i % 20])
>>> at_margin.method, at_margin.side_of(-0.01), cs.side_of(-0.01)
('betting', 1, 1)
>>> unbounded = MeanCS(alpha=0.05)            # no bounds: asymptotic CS
>>> unbounded.method
'asymptotic'
>>> for _ in range(29):
...     _ = unbounded.update(-2.0)            # the candidate 2 worse on 29 requests in a row
>>> unbounded.side_of(0.0), unbounded.update(-2.0).side_of(0.0)   # undecided until 30
(0, -1)
>>> PairedMeanCS.from_dict(cs.to_dict()).interval() == cs.interval()
True
>>> fixed_horizon_n(effect=0.02, sd=0.3, alpha=0.05, power=0.8)
1766
"""

from __future__ import annotations

import math
from typing import Any, Self

from rollguard.stats.sequential._base import (SequentialTest, check_alpha, check_bounds,
                                              interval_side)
from rollguard.stats.sequential.asymptotic import DEFAULT_BURN_IN, AsymptoticCS
from rollguard.stats.sequential.betting import BettingCS
from rollguard.stats.sequential.eb import EmpiricalBernsteinCS

#: The name of each core's method, for :attr:`MeanCS.method`.
_METHODS = {BettingCS: "betting", EmpiricalBernsteinCS: "empirical-bernstein",
            AsymptoticCS: "asymptotic"}

#: Default tuning: the boundary is tightest around this many samples (two × a typical
#: ``min_samples`` of 500). Pass the fixed-horizon size of the effect you care about instead.
DEFAULT_TUNED_N = 1000


def fixed_horizon_n(effect: float, sd: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Samples a fixed-horizon two-sided z-test at level α needs for ``power`` at ``effect``.

    ``ceil(((z_{1−α/2} + z_power) · sd / effect)²)`` — the usual normal-approximation size; a
    good ``tuned_n`` for a sequential test meant to detect ``effect``.
    """
    from scipy.stats import norm  # imported here: scipy.stats is slow to import

    check_alpha(alpha)
    if effect <= 0 or sd <= 0 or not 0 < power < 1:
        raise ValueError("need effect > 0, sd > 0 and power in (0, 1)")
    z = norm.ppf(1.0 - alpha / 2.0) + norm.ppf(power)
    return math.ceil((z * sd / effect) ** 2)


class MeanCS(SequentialTest):
    """Anytime-valid (1−α) CS for the mean of one stream: EB if bounded, asymptotic if not.

    Merge and its meaning are those of the chosen method (see :mod:`.eb`, :mod:`.asymptotic`).
    ``burn_in`` applies to the asymptotic CS only (unbounded values): no finite bound before
    that many observations. The bounded methods are valid from the first observation.
    ``tracks_average``: bounds for the *average* of the means so far, valid when the mean
    changes over time (a model that degrades): the empirical-Bernstein CS without its running
    intersection (Waudby-Smith & Ramdas 2023 give its validity for the average of the
    conditional means), never the betting CS, whose kept rejections assume one mean.
    """

    TYPE = "sequential.MeanCS"

    def __init__(
        self,
        alpha: float = 0.05,
        lower: float | None = None,
        upper: float | None = None,
        tuned_n: float = DEFAULT_TUNED_N,
        test_points: tuple[float, ...] = (),
        *,
        burn_in: int = DEFAULT_BURN_IN,
        tracks_average: bool = False,
    ) -> None:
        lo, hi = check_bounds(lower, upper)
        self.core: EmpiricalBernsteinCS | BettingCS | AsymptoticCS
        if lo is None or hi is None:  # keeps no running intersection either
            self.core = AsymptoticCS(alpha=alpha, tuned_n=tuned_n, burn_in=burn_in)
        elif test_points and not tracks_average:
            self.core = BettingCS(alpha=alpha, lower=lo, upper=hi, tuned_n=tuned_n,
                                  test_points=test_points)
        else:
            self.core = EmpiricalBernsteinCS(alpha=alpha, lower=lo, upper=hi, tuned_n=tuned_n,
                                             running_intersection=not tracks_average)

    @property
    def method(self) -> str:
        """``"betting"``, ``"empirical-bernstein"`` (bounded) or ``"asymptotic"`` (unbounded)."""
        return _METHODS[type(self.core)]

    @property
    def alpha(self) -> float:
        return self.core.alpha

    @property
    def n(self) -> int:
        return self.core.n

    @property
    def mean(self) -> float | None:
        return self.core.mean

    def update(self, x: float) -> Self:
        """Add one observation."""
        self.core.update(x)
        return self

    def interval(self) -> tuple[float, float]:
        """``(L_t, U_t)`` at level 1−α, valid at every time at once."""
        return self.core.interval()

    def get(self) -> tuple[float, float]:
        return self.core.interval()

    def side_of(self, value: float) -> int:
        """1 if the mean is above ``value`` with confidence, −1 if below, else 0."""
        if isinstance(self.core, BettingCS):
            return self.core.side_of(value)
        return interval_side(*self.core.interval(), value)

    def evidence(self) -> dict[str, Any]:
        return self.core.evidence()

    def merge(self, other: MeanCS) -> Self:
        self._check_same_kind(other)
        self.core.merge(other.core)  # type: ignore[arg-type]  # the core checks its own kind
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, "core": self.core.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type(d)
        obj = cls.__new__(cls)
        core = d["core"]
        kinds = {k.TYPE: k for k in _METHODS}
        if core.get("type") not in kinds:
            raise ValueError(f"not a {cls.TYPE} state: core type {core.get('type')!r}")
        obj.core = kinds[core["type"]].from_dict(core)
        return obj


class PairedMeanCS(MeanCS):
    """CS for Δ = candidate − champion from paired per-request score differences (shadow mode).

    ``lower``/``upper`` bound the differences (e.g. −1, 1 for accuracy); omit both for unbounded
    scores. ``update(d)`` takes ``d = score_candidate − score_champion``;
    ``update_pair(candidate, champion)`` computes it.
    """

    TYPE = "sequential.PairedMeanCS"

    def update_pair(self, candidate: float, champion: float) -> Self:
        """Add one request scored by both arms (higher is better)."""
        return self.update(candidate - champion)
