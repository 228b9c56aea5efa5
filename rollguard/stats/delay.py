"""The label delay distribution: how long labels take to arrive, and what never joins.

``update(delay_s)`` records the delay (label time minus prediction time, seconds) of a label
that joined; ``record_late()``, ``record_expired()`` and ``record_duplicate()`` count labels
that came past the TTL, requests that expired without a label, and duplicate labels. Delays
go into a :class:`~rollguard.stats.sketch.QuantileSketch` (relative accuracy 1% by default;
negative delays from clock skew are kept as such).

>>> delays = DelayStats()
>>> for seconds in [60.0, 3600.0, 86400.0]:
...     _ = delays.update(seconds)
>>> _ = delays.record_expired().record_duplicate()
>>> result = delays.get()
>>> result["labels"], result["expired"], result["duplicates"], result["late"]
(3, 1, 1, 0)
>>> abs(result["delay_p50_s"] - 3600.0) <= 0.01 * 3600.0
True
"""

from __future__ import annotations

from typing import Any, Self

from rollguard.stats.base import Statistic
from rollguard.stats.sketch import QuantileSketch


class DelayStats(Statistic):
    """Label delays (p50/p90/p99, max) and counts of late, expired and duplicate labels."""

    TYPE = "delay"

    def __init__(self, relative_accuracy: float = 0.01) -> None:
        self.delay_s = QuantileSketch(relative_accuracy=relative_accuracy)
        self.late = 0
        self.expired = 0
        self.duplicates = 0

    def update(self, delay_s: float) -> Self:
        self.delay_s.update(delay_s)
        return self

    def record_late(self) -> Self:
        """A label arrived after its request expired (past the label TTL)."""
        self.late += 1
        return self

    def record_expired(self) -> Self:
        """A request reached the label TTL without a label."""
        self.expired += 1
        return self

    def record_duplicate(self) -> Self:
        """A second label for a request already labelled."""
        self.duplicates += 1
        return self

    def get(self) -> dict[str, Any]:
        sketch = self.delay_s
        return {
            "labels": sketch.count,
            "delay_p50_s": sketch.quantile(0.5),
            "delay_p90_s": sketch.quantile(0.9),
            "delay_p99_s": sketch.quantile(0.99),
            "delay_max_s": float(sketch.max) if sketch.count else None,
            "late": self.late,
            "expired": self.expired,
            "duplicates": self.duplicates,
        }

    def merge(self, other: DelayStats) -> Self:
        self._check_same_kind(other)
        self.delay_s.merge(other.delay_s)
        self.late += other.late
        self.expired += other.expired
        self.duplicates += other.duplicates
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "delay_s": self.delay_s.to_dict(),
            "late": self.late,
            "expired": self.expired,
            "duplicates": self.duplicates,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls()
        new.delay_s = QuantileSketch.from_dict(d["delay_s"])
        new.late, new.expired, new.duplicates = (
            int(d["late"]),
            int(d["expired"]),
            int(d["duplicates"]),
        )
        return new
