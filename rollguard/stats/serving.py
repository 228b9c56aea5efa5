"""Serving statistics of one arm on all its predictions: count, latency quantiles, errors and
how many it served; and the served share of each arm.

Latency goes into a :class:`~rollguard.stats.sketch.QuantileSketch` (1% relative accuracy by
default), so p50/p95/p99 merge exactly across partitions and are within 1% of the exact lower
quantiles.

>>> champion, candidate = ServingStats(), ServingStats()
>>> for ms in [12.0, 15.0, 11.0]:
...     _ = champion.update(latency_ms=ms, served=True)
>>> _ = candidate.update(latency_ms=30.0, served=True).update(error=True)
>>> candidate.get()["error_rate"]
0.5
>>> served_shares({"churn:6": champion, "churn:7": candidate})
{'churn:6': 0.75, 'churn:7': 0.25}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from rollguard.stats.base import Statistic, ratio
from rollguard.stats.sketch import QuantileSketch


class ServingStats(Statistic):
    """Per-arm serving figures: ``update(latency_ms=None, error=False, served=False)``.

    Every prediction event counts once; its latency, when given, goes into the sketch. ``get()``
    gives ``count``, ``errors``, ``error_rate``, ``served``, ``latency_count`` and
    ``latency_p50_ms``, ``latency_p95_ms``, ``latency_p99_ms`` (None when undefined).

    >>> ServingStats().update(latency_ms=20.0).get()["latency_p99_ms"]
    20.0
    """

    TYPE = "serving"

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        self.n = 0
        self.errors = 0
        self.served = 0
        self.latency_ms = QuantileSketch(relative_accuracy=relative_accuracy)

    def update(
        self, latency_ms: float | None = None, error: bool = False, served: bool = False
    ) -> Self:
        self.n += 1
        if error:
            self.errors += 1
        if served:
            self.served += 1
        if latency_ms is not None:
            self.latency_ms.update(latency_ms)
        return self

    def get(self) -> dict[str, Any]:
        latency = self.latency_ms
        return {
            "count": self.n,
            "errors": self.errors,
            "error_rate": ratio(self.errors, self.n),
            "served": self.served,
            "latency_count": latency.count,
            "latency_p50_ms": latency.quantile(0.5),
            "latency_p95_ms": latency.quantile(0.95),
            "latency_p99_ms": latency.quantile(0.99),
        }

    def merge(self, other: ServingStats) -> Self:
        self._check_same_kind(other)
        self.n += other.n
        self.errors += other.errors
        self.served += other.served
        self.latency_ms.merge(other.latency_ms)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "n": self.n,
            "errors": self.errors,
            "served": self.served,
            "latency_ms": self.latency_ms.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls()
        new.n, new.errors, new.served = int(d["n"]), int(d["errors"]), int(d["served"])
        new.latency_ms = QuantileSketch.from_dict(d["latency_ms"])
        return new


def served_shares(stats_by_arm: Mapping[str, ServingStats]) -> dict[str, float | None]:
    """Each arm's share of the served predictions (None for every arm when none was served).

    >>> served_shares({"a": ServingStats(), "b": ServingStats()})
    {'a': None, 'b': None}
    """
    total = sum(stats.served for stats in stats_by_arm.values())
    return {arm: ratio(stats.served, total) for arm, stats in stats_by_arm.items()}
