"""Time-uniform confidence sequences for quantiles, and the latency guardrail built on them.

Howard & Ramdas (2022), "Sequential estimation of quantiles with applications to A/B-testing
and best-arm identification", Bernoulli 28(3), Theorem 1 (fixed quantile). For i.i.d. values
and the q-quantile Q, the number of values ≤ Q is a Binomial(t, ≥ q) count and the number
< Q a Binomial(t, ≤ q) count. A uniform boundary for a Bernoulli(q) sum turns into ranks:

    lower_t = X_(s_t + 1),   s_t = max{ s ≤ ⌊tq⌋ : M_t(s) ≥ 1/α }     (0 if no such s)
    upper_t = X_(r_t),       r_t = min{ r ≥ ⌈tq⌉ : M_t(r) ≥ 1/α }     (∞ if r > t)

(``X_(k)``: k-th smallest value). If ``lower_t > Q`` then at most ``s_t`` values are ≤ Q, which
makes ``M_t`` ≥ 1/α; if ``upper_t < Q`` at least ``r_t`` values are < Q, likewise. ``M_t(s)`` is
the paper's beta-binomial mixture (a mixture of Bernoulli likelihood ratios, hence a test
martingale under θ = q; by a monotone coupling its crossing chance is largest at θ = q)::

    M_t(s) = B(a + s, b + t − s) / (B(a, b) q^s (1−q)^{t−s}),   a = r/(1−q), b = r/q

with ``r`` set, as in the authors' ``confseq`` (two-sided ``BetaBinomialMixture``), from the
normal mixture tightest at ``tuned_n`` values. So P(∃t: Q ∉ [lower_t, upper_t]) ≤ α, with no
assumption on the distribution (continuous, or each side separately ≤ α with atoms).
The ranks move by at most about one per observation, so each update moves them with a few
``lgamma`` evaluations (``math.lgamma``: scipy's ``betaln`` costs ~1 µs a call on scalars).

*Order statistics from a log histogram.* Storing every latency would make the state grow
without bound, so values are counted in log-spaced bins of relative width ``rel_width``
(default 1 %) above ``min_value`` (one bin [0, min_value] below). A rank's order statistic lies
in a known bin, and the bounds use that bin's outer edge (the lower edge for a lower bound, the
upper edge for an upper bound): the guarantee is exact, the price a resolution of ``rel_width``.
Written here rather than on ``rollguard.stats.QuantileSketch`` because the bounds need the edges
of the bin holding an exact rank (no relative-error approximation), and a sketch that collapses
buckets would void them. Counts add, so merging is exact: the merged CS is exactly the
whole-stream one (it depends on the counts only).

:class:`QuantileRatioGuardrail` compares a candidate's q-quantile with the champion's:
``"fail"`` when ``lower(cand) > max_ratio · upper(champ)``, ``"pass"`` when
``upper(cand) ≤ max_ratio · lower(champ)``, else ``"undecided"``. Each arm's CS has level
1 − α/2, so a false alarm (fail while cand's quantile ≤ max_ratio × champ's) needs the
candidate's lower side or the champion's upper side to miss, chance ≤ α/2 + α/2 = α; a false
pass likewise ≤ α.

>>> cs = QuantileCS(alpha=0.05, q=0.5, tuned_n=200)
>>> for i in range(1000):
...     _ = cs.update(float(i % 100) + 0.5)           # median 50
>>> lo, hi = cs.interval()
>>> 40 < lo < 50 < hi < 60
True
>>> g = QuantileRatioGuardrail(alpha=0.05, q=0.99, max_ratio=1.2)
>>> for i in range(5000):
...     _ = g.update("champion", 10.0 + (i % 100))    # p99 ≈ 109
...     _ = g.update("candidate", 20.0 + 2 * (i % 100))  # p99 ≈ 218: twice as slow
>>> g.status()
'fail'
>>> QuantileRatioGuardrail.from_dict(g.to_dict()) == g
True
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any, Self

from rollguard.stats.sequential._base import (
    FAIL,
    PASS,
    UNDECIDED,
    SequentialTest,
    check_alpha,
    check_finite,
    check_tuned_n,
)
from rollguard.stats.sequential.asymptotic import normal_mixture_rho

#: Bin edges are widened by this relative amount, so rounding in log() never puts a value
#: outside the edges of its bin.
_EDGE_SLACK = 1e-12


class LogHistogram:
    """Exact counts in log-spaced bins: bin 0 is [0, min_value], bin k ≥ 1 is
    (min_value·γ^(k−1), min_value·γ^k] with γ = 1 + rel_width.

    >>> h = LogHistogram(rel_width=0.01)
    >>> for x in (1.0, 2.0, 2.0, 100.0):
    ...     _ = h.add(x)
    >>> h.n, len(h.keys)
    (4, 3)
    >>> lo, hi = h.edges(h.key(2.0))
    >>> lo <= 2.0 <= hi and hi / lo < 1.0101
    True
    """

    def __init__(self, rel_width: float = 0.01, min_value: float = 1e-3) -> None:
        if not 0.0 < rel_width < 1.0:
            raise ValueError(f"rel_width must be in (0, 1), got {rel_width!r}")
        if not min_value > 0.0:
            raise ValueError(f"min_value must be positive, got {min_value!r}")
        self.rel_width = float(rel_width)
        self.min_value = float(min_value)
        self._log_gamma = math.log1p(self.rel_width)
        self.keys: list[int] = []  # occupied bins, ascending
        self.counts: dict[int, int] = {}
        self.n = 0

    def key(self, x: float) -> int:
        """The bin of a value (values ≤ min_value, negatives included, go to bin 0)."""
        if x <= self.min_value:
            return 0
        return max(1, math.ceil(math.log(x / self.min_value) / self._log_gamma))

    def edges(self, key: int) -> tuple[float, float]:
        """Lower and upper edge of a bin, widened by a rounding margin."""
        if key == 0:
            return 0.0, self.min_value * (1.0 + _EDGE_SLACK)
        lo = self.min_value * math.exp((key - 1) * self._log_gamma) * (1.0 - _EDGE_SLACK)
        hi = self.min_value * math.exp(key * self._log_gamma) * (1.0 + _EDGE_SLACK)
        return lo, hi

    def add(self, x: float, count: int = 1) -> tuple[int, bool]:
        """Count ``x``; return the position of its bin in ``keys`` and whether it is new."""
        k = self.key(x)
        return self._add_key(k, count)

    def _add_key(self, k: int, count: int) -> tuple[int, bool]:
        pos = bisect_left(self.keys, k)
        new = pos == len(self.keys) or self.keys[pos] != k
        if new:
            self.keys.insert(pos, k)
            self.counts[k] = count
        else:
            self.counts[k] += count
        self.n += count
        return pos, new

    def order_statistic_bin(self, rank: int) -> int:
        """Bin holding the ``rank``-th smallest value (1-based), by a scan (O(bins))."""
        if not 1 <= rank <= self.n:
            raise ValueError(f"rank {rank} outside 1..{self.n}")
        below = 0
        for k in self.keys:
            below += self.counts[k]
            if below >= rank:
                return k
        raise AssertionError("counts do not add up")  # pragma: no cover


class _Cursor:
    """Tracks the bin of one rank as values arrive: ``below`` = count of bins before ``idx``."""

    __slots__ = ("below", "idx")

    def __init__(self) -> None:
        self.idx = 0
        self.below = 0

    def on_insert(self, hist: LogHistogram, pos: int, new: bool) -> None:
        if len(hist.keys) == 1 and new:
            self.idx, self.below = 0, 0
        elif pos < self.idx or (new and pos == self.idx):
            self.below += 1
            if new:
                self.idx += 1

    def seek(self, hist: LogHistogram, rank: int) -> None:
        keys, counts = hist.keys, hist.counts
        while self.below >= rank:
            self.idx -= 1
            self.below -= counts[keys[self.idx]]
        while self.below + counts[keys[self.idx]] < rank:
            self.below += counts[keys[self.idx]]
            self.idx += 1

    def reset(self, hist: LogHistogram, rank: int) -> None:
        self.idx, self.below = 0, 0
        if hist.keys and 1 <= rank <= hist.n:
            self.seek(hist, rank)


class QuantileCS(SequentialTest):
    """Anytime-valid (1−α) CS for the q-quantile of one stream (Howard & Ramdas 2022, Thm 1).

    See the module docstring. ``interval()`` is ``(0.0, inf)`` until there are enough values.
    Values are assumed ≥ 0 (latencies); negative values count as 0.
    """

    TYPE = "sequential.QuantileCS"

    def __init__(
        self,
        alpha: float = 0.05,
        q: float = 0.5,
        tuned_n: float = 1000,
        rel_width: float = 0.01,
        min_value: float = 1e-3,
    ) -> None:
        self.alpha = check_alpha(alpha)
        if not 0.0 < q < 1.0:
            raise ValueError(f"q must be in (0, 1), got {q!r}")
        self.q = float(q)
        self.tuned_n = check_tuned_n(tuned_n)
        self.hist = LogHistogram(rel_width=rel_width, min_value=min_value)
        # beta-binomial mixture, parameterised as confseq's two-sided BetaBinomialMixture
        gh = self.q * (1.0 - self.q)
        rho = normal_mixture_rho(self.tuned_n * gh, self.alpha)
        r = max(rho - gh, 1e-3 * gh)
        self._a = r / (1.0 - self.q)  # prior weight of values ≤ Q ("successes")
        self._b = r / self.q  # prior weight of values > Q
        self._log_norm = math.lgamma(self._a) + math.lgamma(self._b) - math.lgamma(self._a + self._b)
        self._log_q = math.log(self.q)
        self._log_1q = math.log1p(-self.q)
        self._threshold = math.log(1.0 / self.alpha)
        self.s_low = -1  # largest s ≤ ⌊tq⌋ with M_t(s) ≥ 1/α, or −1
        self.r_up = 1  # smallest r ≥ ⌈tq⌉ with M_t(r) ≥ 1/α, or t + 1
        self._lo = _Cursor()
        self._hi = _Cursor()

    @property
    def n(self) -> int:
        return self.hist.n

    def log_mixture(self, t: int, s: int) -> float:
        """``log M_t(s)``: the beta-binomial mixture after ``s`` of ``t`` values ≤ Q."""
        return (
            math.lgamma(self._a + s)
            + math.lgamma(self._b + t - s)
            - math.lgamma(self._a + self._b + t)
            - self._log_norm
            - s * self._log_q
            - (t - s) * self._log_1q
        )

    def _move_ranks(self, t: int) -> None:
        """Re-establish ``s_low`` and ``r_up`` for ``t`` values, from their previous positions."""
        h, f = self._threshold, self.log_mixture
        cap = math.floor(t * self.q)
        s = min(self.s_low, cap)
        while s + 1 <= cap and f(t, s + 1) >= h:
            s += 1
        while s >= 0 and f(t, s) < h:
            s -= 1
        self.s_low = s
        floor_ = math.ceil(t * self.q)
        r = min(max(self.r_up, floor_), t + 1)
        while r - 1 >= floor_ and f(t, r - 1) >= h:
            r -= 1
        while r <= t and f(t, r) < h:
            r += 1
        self.r_up = r

    def update(self, x: float) -> Self:
        """Add one value."""
        x = check_finite(x)
        hist = self.hist
        pos, new = hist.add(x)
        self._lo.on_insert(hist, pos, new)
        self._hi.on_insert(hist, pos, new)
        t = hist.n
        self._move_ranks(t)
        if self.s_low >= 0:
            self._lo.seek(hist, self.s_low + 1)
        if self.r_up <= t:
            self._hi.seek(hist, self.r_up)
        return self

    def interval(self) -> tuple[float, float]:
        """``(L_t, U_t)`` for the q-quantile, level 1−α at every time at once (O(1))."""
        hist = self.hist
        lo = hist.edges(hist.keys[self._lo.idx])[0] if self.s_low >= 0 else 0.0
        hi = hist.edges(hist.keys[self._hi.idx])[1] if self.r_up <= hist.n else math.inf
        return lo, hi

    def get(self) -> tuple[float, float]:
        return self.interval()

    @property
    def estimate(self) -> float | None:
        """Mid-point of the bin of the empirical q-quantile (O(bins); None if empty)."""
        if self.n == 0:
            return None
        lo, hi = self.hist.edges(self.hist.order_statistic_bin(max(1, math.ceil(self.n * self.q))))
        return (lo + hi) / 2.0

    def evidence(self) -> dict[str, Any]:
        lo, hi = self.interval()
        return {
            "method": "quantile CS, beta-binomial mixture (Howard & Ramdas 2022)",
            "q": self.q,
            "n": self.n,
            "estimate": self.estimate,
            "lower": lo,
            "upper": hi if math.isfinite(hi) else None,
            "alpha": self.alpha,
            "tuned_n": self.tuned_n,
            "rel_width": self.hist.rel_width,
        }

    # -- merging and saving -----------------------------------------------------------------
    _SETTINGS = ("alpha", "q", "tuned_n")

    def merge(self, other: QuantileCS) -> Self:
        """Add a partial's counts: exactly the whole-stream CS."""
        self._check_same_kind(other, *self._SETTINGS)
        if (self.hist.rel_width, self.hist.min_value) != (other.hist.rel_width,
                                                          other.hist.min_value):
            raise ValueError("cannot merge histograms with different bins")
        for k in other.hist.keys:
            self.hist._add_key(k, other.hist.counts[k])
        self._restore()
        return self

    def _search_ranks(self, t: int) -> None:
        """Find ``s_low`` and ``r_up`` for ``t`` values from scratch, by bisection.

        ``M_t(s)`` falls until about ``tq`` and rises after, and is below 1/α near ``tq``, so
        "``M_t(s)`` ≥ 1/α" is true then false on ``[0, ⌊tq⌋]`` and false then true on
        ``[⌈tq⌉, t]``.
        """
        h, f = self._threshold, self.log_mixture
        lo, hi = -1, math.floor(t * self.q)  # invariant: f(lo) ≥ h (or lo = −1), answer < hi+1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if f(t, mid) >= h:
                lo = mid
            else:
                hi = mid - 1
        self.s_low = lo
        lo, hi = math.ceil(t * self.q), t + 1  # answer in [lo, hi]; t + 1 means none
        while lo < hi:
            mid = (lo + hi) // 2
            if f(t, mid) >= h:
                hi = mid
            else:
                lo = mid + 1
        self.r_up = lo

    def _restore(self) -> None:
        t = self.hist.n
        self._search_ranks(t)
        self._lo.reset(self.hist, self.s_low + 1)
        self._hi.reset(self.hist, self.r_up)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "alpha": self.alpha,
            "q": self.q,
            "tuned_n": self.tuned_n,
            "rel_width": self.hist.rel_width,
            "min_value": self.hist.min_value,
            "bins": [[k, self.hist.counts[k]] for k in self.hist.keys],
            "s_low": self.s_low,
            "r_up": self.r_up,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type(d)
        obj = cls(
            alpha=d["alpha"], q=d["q"], tuned_n=d["tuned_n"], rel_width=d["rel_width"],
            min_value=d["min_value"],
        )
        for k, c in d["bins"]:
            obj.hist._add_key(int(k), int(c))
        obj.s_low, obj.r_up = int(d["s_low"]), int(d["r_up"])
        obj._lo.reset(obj.hist, obj.s_low + 1)
        obj._hi.reset(obj.hist, obj.r_up)
        return obj


class QuantileRatioGuardrail(SequentialTest):
    """Latency guardrail: candidate's q-quantile ≤ ``max_ratio`` × champion's, at level α.

    Each arm has a :class:`QuantileCS` at level 1 − α/2 (see the module docstring).
    """

    TYPE = "sequential.QuantileRatioGuardrail"
    ARMS = ("champion", "candidate")

    def __init__(
        self,
        alpha: float = 0.05,
        q: float = 0.99,
        max_ratio: float = 1.2,
        tuned_n: float = 1000,
        rel_width: float = 0.01,
        min_value: float = 1e-3,
    ) -> None:
        self.alpha = check_alpha(alpha)
        if not (math.isfinite(max_ratio) and max_ratio > 0):
            raise ValueError(f"max_ratio must be positive, got {max_ratio!r}")
        self.max_ratio = float(max_ratio)
        self.arms = {
            arm: QuantileCS(self.alpha / 2.0, q, tuned_n, rel_width, min_value)
            for arm in self.ARMS
        }

    @property
    def q(self) -> float:
        return self.arms["champion"].q

    def update(self, arm: str, x: float) -> Self:
        """Add one latency of ``arm`` ("champion" or "candidate")."""
        try:
            cs = self.arms[arm]
        except KeyError:
            raise ValueError(f"arm must be one of {self.ARMS}, got {arm!r}") from None
        cs.update(x)
        return self

    def interval(self, arm: str) -> tuple[float, float]:
        """The CS of one arm's quantile (level 1 − α/2)."""
        return self.arms[arm].interval()

    def status(self) -> str:
        """``"pass"``, ``"fail"`` or ``"undecided"`` (O(1))."""
        cand_lo, cand_hi = self.arms["candidate"].interval()
        champ_lo, champ_hi = self.arms["champion"].interval()
        if cand_lo > self.max_ratio * champ_hi:
            return FAIL
        if cand_hi <= self.max_ratio * champ_lo:
            return PASS
        return UNDECIDED

    def get(self) -> str:
        """Same as :meth:`status` (River's reading method)."""
        return self.status()

    def evidence(self) -> dict[str, Any]:
        champ, cand = self.arms["champion"], self.arms["candidate"]
        ratio = None
        if champ.estimate and cand.estimate is not None:
            ratio = cand.estimate / champ.estimate
        return {
            "method": "quantile CS per arm (Howard & Ramdas 2022), alpha split between arms",
            "q": self.q,
            "max_ratio": self.max_ratio,
            "ratio_estimate": ratio,
            "alpha": self.alpha,
            "arms": {arm: cs.evidence() for arm, cs in self.arms.items()},
            "status": self.status(),
        }

    def merge(self, other: QuantileRatioGuardrail) -> Self:
        self._check_same_kind(other, "alpha", "max_ratio")
        for arm in self.ARMS:
            self.arms[arm].merge(other.arms[arm])
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "alpha": self.alpha,
            "max_ratio": self.max_ratio,
            "arms": {arm: cs.to_dict() for arm, cs in self.arms.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type(d)
        obj = cls.__new__(cls)
        obj.alpha = check_alpha(d["alpha"])
        obj.max_ratio = float(d["max_ratio"])
        obj.arms = {arm: QuantileCS.from_dict(d["arms"][arm]) for arm in cls.ARMS}
        return obj
