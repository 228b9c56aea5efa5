"""A mergeable quantile sketch with relative-error guarantees (DDSketch).

Follows Masson, Rim & Lee (2019), "DDSketch: a fast and fully-mergeable quantile sketch with
relative-error guarantees", PVLDB 12(12). With relative accuracy ``a`` and
``gamma = (1 + a) / (1 - a)``, a positive value ``x`` goes to the bucket
``k = ceil(log_gamma(x))``, which covers ``(gamma**(k-1), gamma**k]``; negative values go to a
second store by magnitude, zeros to a counter. A quantile is read as the bucket's
representative value ``2 gamma**k / (gamma + 1)``, so the ``q``-quantile returned is within a
relative ``a`` of the exact lower ``q``-quantile (the element at index ``floor(q (n - 1))`` of
the sorted data, numpy's ``method="lower"``), clamped to the exact min and max. Merging adds
bucket counts, so merged partials equal the sketch of the whole stream exactly.

The number of buckets per store is bounded by ``max_buckets`` (default 2048: at 1% accuracy a
store spans a factor of about 1e17, e.g. 1 ns to 3 years). Beyond it the lowest buckets (the
smallest magnitudes) are collapsed into the lowest kept one, as the paper's collapsing store
does; only quantiles falling in the collapsed range lose the guarantee. The collapsed state
depends only on the multiset of values seen, so merging stays exact.

Written by hand because no installed package offers a mergeable DDSketch with an exact,
JSON-safe state (DataDog's ``ddsketch`` serialises through protobuf), ``rank``/``cdf`` and
its buckets, which the latency guardrail and the KS distance need.

>>> sketch = QuantileSketch(relative_accuracy=0.01)
>>> for ms in range(1, 1001):
...     _ = sketch.update(float(ms))
>>> p99 = sketch.quantile(0.99)
>>> abs(p99 - 990.0) <= 0.01 * 990.0
True
>>> sketch.cdf(500.0)  # values in buckets at or below 500's: within one 2% bucket of 0.5
0.502
>>> (QuantileSketch().update(-2.0).update(0.0) + QuantileSketch().update(3.0)).get()["count"]
3
"""

from __future__ import annotations

import math
from typing import Any, Self

from rollguard.stats.base import Statistic

#: The quantiles ``get()`` reports, under the keys ``p50`` … ``p99``.
REPORTED_QUANTILES = (0.5, 0.9, 0.95, 0.99)


class QuantileSketch(Statistic):
    """DDSketch of a stream of finite floats (positive, negative or zero).

    Parameters
    ----------
    relative_accuracy
        ``a`` in (0, 1): quantiles are within ``a * |x|`` of the exact lower quantile ``x``.
    max_buckets
        Bound on the buckets of each of the two stores (positive, negative).

    >>> s = QuantileSketch().update(1.0).update(2.0).update(3.0)
    >>> {name: round(v, 3) for name, v in s.get().items()}
    {'count': 3, 'min': 1.0, 'max': 3.0, 'p50': 1.994, 'p90': 1.994, 'p95': 1.994, 'p99': 1.994}
    >>> s.rank(2.0), s.rank(0.5)
    (2, 0)
    """

    TYPE = "sketch"

    def __init__(self, relative_accuracy: float = 0.01, max_buckets: int = 2048) -> None:
        if not 0.0 < relative_accuracy < 1.0:
            raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy!r}")
        if int(max_buckets) != max_buckets or max_buckets < 1:
            raise ValueError(f"max_buckets must be a positive integer, got {max_buckets!r}")
        self.relative_accuracy = float(relative_accuracy)
        self.max_buckets = int(max_buckets)
        self.gamma = (1.0 + self.relative_accuracy) / (1.0 - self.relative_accuracy)
        self._multiplier = 1.0 / math.log(self.gamma)
        self.positive: dict[int, int] = {}  # bucket key -> count
        self.negative: dict[int, int] = {}  # bucket key of the magnitude -> count
        self.zero = 0
        self.count = 0
        self.min = math.inf
        self.max = -math.inf

    # -- update ---------------------------------------------------------------------------
    def key(self, magnitude: float) -> int:
        """Bucket key of a positive magnitude: ``ceil(log_gamma(magnitude))``."""
        try:
            return math.ceil(math.log(magnitude) * self._multiplier)
        except (OverflowError, ValueError):
            raise ValueError(f"cannot sketch {magnitude!r}: only finite numbers") from None

    def update(self, x: float) -> Self:
        if x > 0.0:
            store = self.positive
            k = self.key(x)
        elif x < 0.0:
            store = self.negative
            k = self.key(-x)
        elif x == 0.0:
            self.zero += 1
            store = None
        else:
            raise ValueError(f"cannot sketch {x!r}: only finite numbers")
        if store is not None:
            c = store.get(k)
            if c is None:
                self._add_new_key(store, k)
            else:
                store[k] = c + 1
        self.count += 1
        if x < self.min:
            self.min = x
        if x > self.max:
            self.max = x
        return self

    def _add_new_key(self, store: dict[int, int], k: int) -> None:
        if len(store) < self.max_buckets:
            store[k] = 1
            return
        # full: keep the highest max_buckets keys, the lowest kept one absorbing the rest
        lowest = min(store)
        if k < lowest:
            store[lowest] += 1
            return
        store[k] = 1
        folded = store.pop(lowest)
        store[min(store)] += folded

    def _collapse(self, store: dict[int, int]) -> None:
        if len(store) <= self.max_buckets:
            return
        keys = sorted(store)
        cut = len(keys) - self.max_buckets
        folded = sum(store.pop(k) for k in keys[:cut])
        store[keys[cut]] += folded

    # -- merge ----------------------------------------------------------------------------
    def merge(self, other: QuantileSketch) -> Self:
        self._check_same_kind(other, "relative_accuracy", "max_buckets")
        for mine, theirs in ((self.positive, other.positive), (self.negative, other.negative)):
            for k, c in theirs.items():
                mine[k] = mine.get(k, 0) + c
            self._collapse(mine)
        self.zero += other.zero
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        return self

    # -- read -----------------------------------------------------------------------------
    def value(self, k: int) -> float:
        """Representative value of positive bucket ``k``: within ``a`` of all it holds."""
        return 2.0 * self.gamma**k / (self.gamma + 1.0)

    def quantile(self, q: float) -> float | None:
        """Estimate of the lower ``q``-quantile (None when empty).

        >>> round(QuantileSketch().update(10.0).update(20.0).update(30.0).quantile(0.5), 3)
        19.887
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q!r}")
        if self.count == 0:
            return None
        rank = math.floor(q * (self.count - 1))
        n_negative = self.count - self.zero - sum(self.positive.values())
        if rank < n_negative:
            # most negative first: largest magnitude key first
            seen = 0
            for k in sorted(self.negative, reverse=True):
                seen += self.negative[k]
                if seen > rank:
                    estimate = -self.value(k)
                    break
        elif rank < n_negative + self.zero:
            estimate = 0.0
        else:
            rank -= n_negative + self.zero
            seen = 0
            for k in sorted(self.positive):
                seen += self.positive[k]
                if seen > rank:
                    estimate = self.value(k)
                    break
        return float(min(max(estimate, self.min), self.max))

    def rank(self, x: float) -> int:
        """Number of values in the buckets at or below ``x``'s bucket.

        It lies between the exact count of values ``<= x`` and the count of values up to the
        upper edge of ``x``'s bucket, less than ``(gamma - 1) |x|`` above ``x`` (``gamma - 1``
        is about ``2 a``).
        """
        if x > 0.0:
            k = self.key(x)
            below = self.count - sum(self.positive.values())
            return below + sum(c for key, c in self.positive.items() if key <= k)
        if x == 0.0:
            return self.count - sum(self.positive.values())
        if x < 0.0:
            k = self.key(-x)
            return sum(c for key, c in self.negative.items() if key >= k)
        raise ValueError(f"cannot rank {x!r}: only finite numbers")

    def cdf(self, x: float) -> float | None:
        """``rank(x) / count`` (None when empty)."""
        if self.count == 0:
            return None
        return self.rank(x) / self.count

    def ordered_counts(self) -> list[tuple[tuple[int, int], int]]:
        """``[(position, count), ...]`` in ascending order of value, one per non-empty bucket.

        ``position`` is ``(-1, -k)`` for negative bucket ``k``, ``(0, 0)`` for zero and
        ``(1, k)`` for positive bucket ``k``: positions of two sketches with the same accuracy
        sort together, which is how two samples are compared bucket by bucket.
        """
        out = [((-1, -k), self.negative[k]) for k in sorted(self.negative, reverse=True)]
        if self.zero:
            out.append(((0, 0), self.zero))
        out.extend(((1, k), self.positive[k]) for k in sorted(self.positive))
        return out

    def buckets(self) -> list[list[float | int]]:
        """``[[low, high, count], ...]`` in ascending order of value, one per non-empty bucket.

        A positive bucket holds values in ``(low, high]``, a negative one in ``[low, high)``,
        the zero bucket ``[0, 0]``.

        >>> QuantileSketch(relative_accuracy=0.5).update(-1.0).update(0.0).update(2.5).buckets()
        [[-1.0, -0.3333333333333333, 1], [0.0, 0.0, 1], [1.0, 3.0, 1]]
        """
        out: list[list[float | int]] = []
        for (sign, k), c in self.ordered_counts():
            if sign == 0:
                out.append([0.0, 0.0, c])
            elif sign > 0:
                out.append([self.gamma ** (k - 1), self.gamma**k, c])
            else:
                out.append([-(self.gamma**-k), -(self.gamma ** (-k - 1)), c])
        return out

    def get(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "count": self.count,
            "min": float(self.min) if self.count else None,
            "max": float(self.max) if self.count else None,
        }
        for q in REPORTED_QUANTILES:
            out[f"p{round(q * 100)}"] = self.quantile(q)
        return out

    # -- state ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "relative_accuracy": self.relative_accuracy,
            "max_buckets": self.max_buckets,
            "count": self.count,
            "zero": self.zero,
            "min": float(self.min) if self.count else None,
            "max": float(self.max) if self.count else None,
            "positive": [[k, self.positive[k]] for k in sorted(self.positive)],
            "negative": [[k, self.negative[k]] for k in sorted(self.negative)],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls(relative_accuracy=d["relative_accuracy"], max_buckets=d["max_buckets"])
        new.count, new.zero = int(d["count"]), int(d["zero"])
        if new.count:
            new.min, new.max = float(d["min"]), float(d["max"])
        new.positive = {int(k): int(c) for k, c in d["positive"]}
        new.negative = {int(k): int(c) for k, c in d["negative"]}
        return new
