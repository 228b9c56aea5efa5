"""Event-time buckets (hourly by default) of any statistic, for stability across time windows.

``Hourly(factory, width=3600, keep=168)`` keys buckets by ``floor(ts / width)`` of the event
time (never the wall clock) and holds one sub-statistic per bucket, made by ``factory``. At most
``keep`` buckets are kept: beyond, the oldest are dropped, and an event older than every kept
bucket of a full window is ignored (counted in ``dropped``). Merging aligns buckets by key,
merges each, then keeps the newest ``keep``; merged partials equal the statistic of the whole
stream whenever no partial had to drop a bucket that the merged window keeps (always so when
every event is within ``keep`` buckets of the newest). ``dropped`` counts each partial's own
ignored events.

The factory itself is not saved; what is saved is the state of one empty statistic it makes
(the ``prototype``), and a restored ``Hourly`` makes new buckets as copies of it.

>>> from rollguard.stats.counts import Proportion
>>> errors = Hourly(Proportion, keep=2)
>>> for ts, failed in [(0.0, True), (1800.0, False), (3600.0, False), (7300.0, True)]:
...     _ = errors.update(ts, failed)
>>> errors.get()   # the bucket starting at 0 was dropped: keep=2
[{'start': 3600.0, 'value': 0.0}, {'start': 7200.0, 'value': 1.0}]
>>> errors.bucket(3600.0).n
1
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any, Self

from rollguard.stats.base import Statistic


class Hourly(Statistic):
    """Sub-statistics per event-time bucket of ``width`` seconds, the newest ``keep`` kept.

    ``update(ts, *args, **kwargs)`` updates the bucket of ``ts`` with ``*args, **kwargs``;
    ``bucket(ts)`` returns that bucket's statistic (made if needed; None if too old) for
    statistics with other update methods. ``get()`` lists the buckets oldest first as
    ``{"start": ..., **sub.get()}`` (or ``{"start": ..., "value": sub.get()}`` when the
    sub-statistic's ``get()`` is not a dict).
    """

    TYPE = "hourly"

    def __init__(
        self, factory: Callable[[], Statistic], width: float = 3600.0, keep: int = 168
    ) -> None:
        if not width > 0:
            raise ValueError(f"width must be positive, got {width!r}")
        if int(keep) != keep or keep < 1:
            raise ValueError(f"keep must be a positive integer, got {keep!r}")
        self.width = float(width)
        self.keep = int(keep)
        self._factory = factory
        self.prototype = factory().to_dict()
        self.buckets: dict[int, Statistic] = {}
        self.dropped = 0

    def bucket(self, ts: float) -> Statistic | None:
        """The statistic of the bucket holding event time ``ts`` (None: older than the window)."""
        key = math.floor(ts / self.width)
        sub = self.buckets.get(key)
        if sub is None:
            if len(self.buckets) >= self.keep:
                oldest = min(self.buckets)
                if key < oldest:
                    return None
                del self.buckets[oldest]
            sub = self.buckets[key] = self._factory()
        return sub

    def update(self, ts: float, *args: Any, **kwargs: Any) -> Self:
        sub = self.bucket(ts)
        if sub is None:
            self.dropped += 1
        else:
            sub.update(*args, **kwargs)
        return self

    def get(self) -> list[dict[str, Any]]:
        out = []
        for key in sorted(self.buckets):
            figures = self.buckets[key].get()
            start = key * self.width
            out.append(
                {"start": start, **figures}
                if isinstance(figures, dict)
                else {"start": start, "value": figures}
            )
        return out

    def merge(self, other: Hourly) -> Self:
        self._check_same_kind(other, "width", "keep", "prototype")
        for key, sub in other.buckets.items():
            mine = self.buckets.get(key)
            if mine is None:
                self.buckets[key] = copy.deepcopy(sub)
            else:
                mine.merge(sub)
        for key in sorted(self.buckets)[: max(0, len(self.buckets) - self.keep)]:
            del self.buckets[key]
        self.dropped += other.dropped
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "width": self.width,
            "keep": self.keep,
            "prototype": self.prototype,
            "dropped": self.dropped,
            "buckets": [[key, self.buckets[key].to_dict()] for key in sorted(self.buckets)],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        from rollguard.stats import codec  # codec imports this module

        cls._check_type_tag(d)
        prototype = copy.deepcopy(d["prototype"])
        new = cls(lambda: codec.from_dict(prototype), width=d["width"], keep=d["keep"])
        new.dropped = int(d["dropped"])
        new.buckets = {int(key): codec.from_dict(state) for key, state in d["buckets"]}
        return new
