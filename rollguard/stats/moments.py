"""Mean and variance, and Pearson correlation, on River's mergeable online moments.

River's ``stats.Var`` (Welford's update) and ``stats.Cov`` merge with ``+=`` by the parallel
formulas of Chan, Golub & LeVeque (1983), "Algorithms for computing the sample variance:
analysis and recommendations", The American Statistician 37(3); see also Schubert & Gertz (2018),
"Numerically stable parallel computation of (co-)variance", SSDBM. These wrappers add what the
pipeline needs around them: ``update`` returning self, merging with an empty partial exactly
(River's ``Mean`` divides by zero when both sides are empty), and an exact JSON-safe state.

The state is River's own: the weight ``n``, the running mean and, for ``Var``, the sum of
squared deviations ``_S`` (the attribute River's own merge reads; saving ``get()`` instead
would not round-trip exactly, because ``_S`` is rebuilt from it by a multiplication).

>>> diff = MeanVariance()
>>> for x in [1.0, 2.0, 3.0, 4.0]:
...     _ = diff.update(x)
>>> diff.get()
{'n': 4, 'mean': 2.5, 'variance': 1.6666666666666667}
>>> r = Correlation()
>>> for x, y in [(0.1, 0.2), (0.5, 0.4), (0.9, 0.95)]:
...     _ = r.update(x, y)
>>> round(r.get(), 6)
0.965567
"""

from __future__ import annotations

import math
from typing import Any, Self

from river import stats as river_stats

from rollguard.stats.base import Statistic


def _var_state(var: river_stats.Var) -> dict[str, float]:
    return {"n": var.mean.n, "mean": var.mean._mean, "s": var._S}


def _var_from_state(d: dict[str, Any]) -> river_stats.Var:
    var = river_stats.Var(ddof=1)
    var.mean = river_stats.Mean._from_state(float(d["n"]), float(d["mean"]))
    var._S = float(d["s"])
    return var


def _merge_var(into: river_stats.Var, other: river_stats.Var) -> river_stats.Var:
    """``into += other``, exact when either side is empty."""
    if other.mean.n == 0:
        return into
    if into.mean.n == 0:
        return _var_from_state(_var_state(other))
    into += other
    return into


class MeanVariance(Statistic):
    """Count, mean and sample variance (ddof=1) of a stream, on River's ``stats.Var``.

    ``get()`` gives ``{"n", "mean", "variance"}``; mean is None before the first value and
    variance None before the second.

    >>> MeanVariance().update(2.0).update(4.0).get()
    {'n': 2, 'mean': 3.0, 'variance': 2.0}
    """

    TYPE = "mean_variance"

    def __init__(self) -> None:
        self.var = river_stats.Var(ddof=1)

    @property
    def n(self) -> int:
        return int(self.var.mean.n)

    def update(self, x: float) -> Self:
        self.var.update(x)
        return self

    def get(self) -> dict[str, Any]:
        n = self.n
        return {
            "n": n,
            "mean": self.var.mean._mean if n > 0 else None,
            "variance": self.var.get() if n > 1 else None,
        }

    def merge(self, other: MeanVariance) -> Self:
        self._check_same_kind(other)
        self.var = _merge_var(self.var, other.var)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, **_var_state(self.var)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls()
        new.var = _var_from_state(d)
        return new


_NOISE = 1e-12


class Correlation(Statistic):
    """Pearson correlation of paired values, from River's ``stats.Cov`` and two ``stats.Var``.

    ``get()`` is None until two pairs are seen, or while either side has zero variance.

    >>> Correlation().update(1.0, 2.0).update(2.0, 4.0).update(3.0, 5.0).get()
    0.9819805060619656
    """

    TYPE = "correlation"

    def __init__(self) -> None:
        self.cov = river_stats.Cov(ddof=1)
        self.var_x = river_stats.Var(ddof=1)
        self.var_y = river_stats.Var(ddof=1)

    @property
    def n(self) -> int:
        return int(self.var_x.mean.n)

    def update(self, x: float, y: float) -> Self:
        self.cov.update(x, y)
        self.var_x.update(x)
        self.var_y.update(y)
        return self

    def get(self) -> float | None:
        if self.n < 2:
            return None
        var_x, var_y = self.var_x.get(), self.var_y.get()
        # a constant side has zero variance, but merged partials can leave rounding noise
        # (~1e-16 relative): treat a variance that small against the mean as zero
        if var_x <= _NOISE * (1.0 + self.var_x.mean.get() ** 2) or \
                var_y <= _NOISE * (1.0 + self.var_y.mean.get() ** 2):
            return None
        r = self.cov.get() / math.sqrt(var_x * var_y)
        return max(-1.0, min(1.0, r))  # rounding can step just past ±1

    def merge(self, other: Correlation) -> Self:
        self._check_same_kind(other)
        if other.cov.n == 0:
            return self
        if self.cov.n == 0:
            self.cov = river_stats.Cov._from_state(
                other.cov.n, other.cov.mean_x._mean, other.cov.mean_y._mean, other.cov.cov
            )
        else:
            self.cov += other.cov
        self.var_x = _merge_var(self.var_x, other.var_x)
        self.var_y = _merge_var(self.var_y, other.var_y)
        return self

    def to_dict(self) -> dict[str, Any]:
        cov = self.cov
        return {
            "type": self.TYPE,
            "cov": {
                "n": cov.n,
                "mean_x": cov.mean_x._mean,
                "mean_y": cov.mean_y._mean,
                "cov": cov.cov,
            },
            "x": _var_state(self.var_x),
            "y": _var_state(self.var_y),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls()
        c = d["cov"]
        new.cov = river_stats.Cov._from_state(
            float(c["n"]), float(c["mean_x"]), float(c["mean_y"]), float(c["cov"]), ddof=1
        )
        new.var_x = _var_from_state(d["x"])
        new.var_y = _var_from_state(d["y"])
        return new
