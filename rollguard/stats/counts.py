"""Counts and sums: a proportion of successes and the average of a stream of numbers.

Both keep an integer count, so merged partials count exactly. ``Average`` keeps a plain float
sum rather than River's ``stats.Mean`` (a float weight and a running mean): merging two sums is
one addition (the merged value differs from the whole stream's only by float rounding, a
relative 1e-15 or so), an update costs half as much, and the state is two plain numbers.

>>> errors = Proportion()
>>> for failed in [False, False, True, False]:
...     _ = errors.update(failed)
>>> errors.get()
0.25
>>> latency = Average().update(10.0).update(20.0)
>>> (latency + Average().update(30.0)).get()
20.0
"""

from __future__ import annotations

from typing import Any, Self

from rollguard.stats.base import Statistic, ratio


class Proportion(Statistic):
    """Share of ``True`` among the observations: ``hits / n`` (None before any observation).

    >>> Proportion().update(True).update(True).update(False).get()
    0.6666666666666666
    >>> Proportion().get() is None
    True
    """

    TYPE = "proportion"

    def __init__(self) -> None:
        self.hits = 0
        self.n = 0

    def update(self, hit: bool) -> Self:
        self.n += 1
        if hit:
            self.hits += 1
        return self

    def get(self) -> float | None:
        return ratio(self.hits, self.n)

    def merge(self, other: Proportion) -> Self:
        self._check_same_kind(other)
        self.hits += other.hits
        self.n += other.n
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, "hits": self.hits, "n": self.n}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls()
        new.hits, new.n = int(d["hits"]), int(d["n"])
        return new


class Average(Statistic):
    """Arithmetic mean of the observations, from a count and a sum (None before any).

    >>> Average().update(1.0).update(2.0).get()
    1.5
    """

    TYPE = "average"

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0

    def update(self, x: float) -> Self:
        self.n += 1
        self.total += x
        return self

    def get(self) -> float | None:
        return ratio(self.total, self.n)

    def merge(self, other: Average) -> Self:
        self._check_same_kind(other)
        self.n += other.n
        self.total += other.total
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, "n": self.n, "total": self.total}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls()
        new.n, new.total = int(d["n"]), float(d["total"])
        return new
