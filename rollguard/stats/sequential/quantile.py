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

:class:`QuantileRatioGuardrail` tests the ratio of a candidate's q-quantile to the champion's
against ``max_ratio`` directly: a two-sample sequential test (Howard & Ramdas 2022, A/B testing
of quantiles) on the candidate's latencies divided by ``max_ratio`` and the champion's, from the
same kind of histograms. It fails or passes each with chance ≤ α of being wrong under
continuous monitoring (see the class for the proof and its one assumption on shadow pairs).

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
from bisect import bisect_left, insort
from heapq import heappop, heappush
from itertools import accumulate
from math import ceil, exp, floor, lgamma, log, log1p
from typing import Any, Self

from rollguard.stats.sequential._base import (
    FAIL,
    PASS,
    UNDECIDED,
    SequentialTest,
    check_alpha,
    check_finite,
    check_tuned_n,
    finite_or_none,
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
        self._cumulative: list[int] | None = None  # cumulative(), until the counts change

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

    def copy_counts(self, other: LogHistogram) -> None:
        """Take ``other``'s counts (same bins), replacing these."""
        self.keys, self.counts, self.n = list(other.keys), dict(other.counts), other.n
        self._cumulative = None

    def _add_key(self, k: int, count: int) -> tuple[int, bool]:
        self._cumulative = None
        pos = bisect_left(self.keys, k)
        new = pos == len(self.keys) or self.keys[pos] != k
        if new:
            self.keys.insert(pos, k)
            self.counts[k] = count
        else:
            self.counts[k] += count
        self.n += count
        return pos, new

    def cumulative(self) -> list[int]:
        """The count of values in each occupied bin and all bins before it (O(bins) once
        after a change: an interval's two ranks and the estimate all read it)."""
        if self._cumulative is None:
            self._cumulative = list(accumulate(map(self.counts.__getitem__, self.keys)))
        return self._cumulative

    def order_statistic_bin(self, rank: int) -> int:
        """Bin holding the ``rank``-th smallest value (1-based) (O(bins))."""
        if not 1 <= rank <= self.n:
            raise ValueError(f"rank {rank} outside 1..{self.n}")
        return self.keys[bisect_left(self.cumulative(), rank)]


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
            # where seek() from the first bin would stop, by bisection rather than a scan
            cumulative = hist.cumulative()
            self.idx = bisect_left(cumulative, rank)
            self.below = cumulative[self.idx] - hist.counts[hist.keys[self.idx]]


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


#: Weight of the "no bet" component (θ = q exactly: the constant martingale 1) in each arm's
#: one-sided mixture of :class:`QuantileRatioGuardrail`. A factor never drops below it, which
#: keeps one arm's lack of evidence from cancelling the other's; it costs log(1/(1 − _ATOM))
#: ≈ 0.22 where the evidence is strong. 0.2 did best of 0.05–0.5 in the lognormal simulations.
_ATOM = 0.2

#: λ is used a little smaller than n·q − s, so that rounding in n·q never enlarges D/λ.
_LAMBDA_SLACK = 1e-9


class _Witness:
    """Where one statistic of the ratio test was lowest at its last scan: the bin ``key``, each
    arm's count of values in lower bins (kept up to date as values arrive) and each arm's term
    there (None once that arm has a new value)."""

    __slots__ = ("below", "key", "terms")

    def __init__(self) -> None:
        self.key: int | None = None
        self.below = [0, 0]  # candidate, champion
        self.terms: list[float | None] = [None, None]


class QuantileRatioGuardrail(SequentialTest):
    """Latency guardrail: is the candidate's q-quantile ≤ ``max_ratio`` × the champion's?

    A sequential two-sample test of the ratio itself, after Howard & Ramdas (2022),
    "Sequential estimation of quantiles with applications to A/B-testing and best-arm
    identification", Bernoulli 28(3), section on A/B testing of quantiles (the test behind
    ``confseq``'s ``quantile_ab_p_value``): under a null that ties the two quantiles together
    there is a common value x* at which both arms' indicator counts are Bernoulli walks with
    known one-sided means, so the *product* of the two arms' mixture martingales at x* is a
    test supermartingale; x* is unknown, so the statistic is the product's minimum over x.
    Near a decision each arm's factor need only be about 1/√α, where the former test (two
    per-arm intervals at level 1 − α/2, fail when disjoint) needed each arm alone at 2/α: on
    p95 lognormal latencies 1.2 × slower against ``max_ratio`` 1.1 it caught 69–73 % of runs
    by 10,000 requests per arm, this test 98.7–98.8 % (bench/bench_latency_guardrail.py).

    Let Y' = candidate latency / ``max_ratio`` (what the candidate histogram counts), X the
    champion's latency, Q(·) the q-quantile inf{x : P(· ≤ x) ≥ q}, and for a count s of n
    values ``M_n(s)`` the beta-binomial mixture of :class:`QuantileCS` (prior Beta(a, b) with
    mean q, mass π₋ below q and π₊ = 1 − π₋ above; tuned for ``tuned_n`` values at level √α,
    since each factor carries about half of log(1/α); the default 2000 caught the 1.2 × slower
    p95 below in 98.7–98.8 % of runs, 4000 in 99.0–99.3 %, but 2000 decides small-sample p99
    cases sooner). Write ``M⁻`` and ``M⁺`` for the same mixture with the prior restricted to
    θ < q (evidence that P(value ≤ x) < q) and to θ > q (evidence that P(value < x) > q),
    and ``w = _ATOM``.

    * ``"fail"`` when ``min_x [L⁻(Y' ≤ x) + L⁺(X < x)] ≥ log(1/α)``;
    * ``"pass"`` when ``min_x [L⁺(Y' < x) + L⁻(X ≤ x)] ≥ log(1/α)``; else ``"undecided"``

    with ``L∓(count)`` a lower bound of ``log(w + (1 − w)·M∓_n(count))`` (n: that arm's count
    of values), x running over the histogram's bins (counts at the bin's edges).

    *Why a false alarm has chance ≤ α, however often it is read.* Suppose Q(Y') ≤ Q(X) (the
    candidate is within ``max_ratio``) and take x* = Q(X): then P(Y' ≤ x*) ≥ P(Y' ≤ Q(Y'))
    ≥ q and P(X < x*) ≤ q. For a Bernoulli(p) stream and one bet θ, the likelihood-ratio
    factor of one value is ``1 + c(A − q)`` with ``c = (θ − q)/(q(1 − q))``, A the indicator:
    its mean ``1 + c(p − q)`` is ≤ 1 when c ≤ 0 ≤ p − q or p − q ≤ 0 ≤ c. So each
    component of ``w + (1 − w)M⁻`` on the candidate's indicators 1{Y' ≤ x*} (θ ≤ q) and of
    ``w + (1 − w)M⁺`` on the champion's 1{X < x*} (θ ≥ q) is a supermartingale, and so is
    their product: where a request brings both arms' values (shadow mode) the mean of the
    product of the two factors is ``(1 + c₁(p₁ − q))(1 + c₂(p₂ − q)) + c₁c₂·Cov ≤ 1``,
    because c₁ ≤ 0 ≤ c₂ and the covariance of the two indicators is ≥ 0 when the arms'
    latencies are independent (A/B modes) or positively quadrant dependent (a request that
    slows one model does not speed the other up; with the two-sided mixture, whose bets
    include c₁c₂ > 0, this would not hold). By Ville's inequality the product reaches 1/α
    with chance ≤ α over all time, read after every request (the policy reads between
    records, not between the two values of one). The statistic is at most the log of the
    product at x*: with k* the bin of x*,
    the candidate's count at the bin's upper edge is ≥ #{Y' ≤ x*} and ``L⁻`` does not increase
    with the count; the champion's count below the bin is ≤ #{X < x*} and ``L⁺`` does not
    decrease with it (bins are a monotone function of the value). The pass statistic is the
    mirror image (x* = Q(Y'), null Q(Y') ≥ Q(X)), so a false pass also has chance ≤ α. No
    continuity is assumed (atoms allowed); the arrival order of the arms may depend on the
    past, not on the values to come.

    *The lower bound L.* For s = nq − λ ≤ nq the log-likelihood ratio of a bet θ is exactly
    ``−n·KL(q‖θ) − λ(logit θ − logit q)``, ≤ 0 for θ > q; so, with u = logit θ − logit q and
    dθ = θ(1 − θ)du, ``π₊M⁺_n(s) = ∫_{θ>q} e^(−n·KL − λu) Beta(θ; a, b) dθ ≤ min(π₊, D/λ)``,
    D the largest value of θ(1 − θ)·Beta(θ; a, b) (at θ = q, the mode of θ^a(1 − θ)^b).
    Then ``M⁻_n(s) = (M_n(s) − π₊M⁺_n(s))/π₋ ≥ (M_n(s) − min(π₊, D/λ))/π₋``; for s > nq,
    ``w`` alone. ``M_n(s) ≤ M_n(s − 1)`` exactly when s ≤ nq + 1 − q (from Γ(z + 1) = zΓ(z))
    and min(π₊, D/λ) grows with s, so ``L⁻`` does not increase with s; likewise ``L⁺``
    (c ≥ nq, λ = c − nq) does not decrease. Each term costs three ``lgamma``, no incomplete
    beta function (``scipy.special.betainc``, ~2 µs a call on scalars).

    *Cost.* A decision needs only whether some bin is below log(1/α), not the minimum. Each
    statistic keeps a witness bin: one below log(1/α) (then it is not reached), or one where
    both terms are ≥ log(1/α) − log w (then it is: every term is ≥ log w, the growing one is
    at least as large further out). It is re-read first, computing only the term of the arm
    with a new value; only when it proves neither does a search run outwards from it, which
    clears whole blocks of bins with one evaluation each (:meth:`_search`). In the lognormal
    runs that is about two or three terms of three ``lgamma`` each per update and read, and
    an update alone is one histogram insertion. State: the two histograms' counts (exact
    merge: the statistics depend on the counts only); the witnesses are a cache, not saved.

    ``interval(arm)`` and the evidence's per-arm figures are each arm's :class:`QuantileCS`
    at level 1 − α, computed on demand, for information; the decision does not use them.
    """

    TYPE = "sequential.QuantileRatioGuardrail"
    ARMS = ("champion", "candidate")
    _INDEX = {"candidate": 0, "champion": 1}

    def __init__(
        self,
        alpha: float = 0.05,
        q: float = 0.99,
        max_ratio: float = 1.2,
        tuned_n: float = 2000,
        rel_width: float = 0.01,
        min_value: float = 1e-3,
    ) -> None:
        self.alpha = check_alpha(alpha)
        if not 0.0 < q < 1.0:
            raise ValueError(f"q must be in (0, 1), got {q!r}")
        self.q = float(q)
        if not (math.isfinite(max_ratio) and max_ratio > 0):
            raise ValueError(f"max_ratio must be positive, got {max_ratio!r}")
        self.max_ratio = float(max_ratio)
        self.tuned_n = check_tuned_n(tuned_n)
        #: [candidate latency / max_ratio, champion latency]
        self.hists = (LogHistogram(rel_width, min_value), LogHistogram(rel_width, min_value))
        self._keys: list[int] = []  # bins either arm occupies, ascending
        self._setup()

    def _setup(self) -> None:
        from scipy.special import betainc  # once per object: the prior's mass below q

        q = self.q
        gh = q * (1.0 - q)
        rho = normal_mixture_rho(self.tuned_n * gh, math.sqrt(self.alpha))
        r = max(rho - gh, 1e-3 * gh)
        self._a, self._b = r / (1.0 - q), r / q  # as QuantileCS: prior mean q
        a, b = self._a, self._b
        self._log_norm = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
        self._logit_q = math.log(q) - math.log1p(-q)
        self._log_1q = math.log1p(-q)
        pi_lo = float(betainc(self._a, self._b, q))
        self._pi_lo, self._pi_hi = pi_lo, 1.0 - pi_lo
        self._log_pi_lo, self._log_pi_hi = math.log(pi_lo), math.log(1.0 - pi_lo)
        # log D = log sup θ(1 − θ)·Beta(θ; a, b), reached at the prior's mode of θ^a(1 − θ)^b: q
        self._log_d = a * math.log(q) + b * math.log1p(-q) - self._log_norm
        self._log_w = math.log(_ATOM)
        self._log_1w = math.log1p(-_ATOM)
        self._threshold = math.log(1.0 / self.alpha)
        self._reset()

    def _reset(self) -> None:
        self._wit = {FAIL: _Witness(), PASS: _Witness()}
        self._status: str | None = None
        self._fail: bool | None = None  # failed()'s answer, until the next value

    # -- the two arms' terms ------------------------------------------------------------------
    def _term(self, kind: str, i: int, below: int, at: int) -> float:
        """Arm ``i``'s term of statistic ``kind`` at a bin holding ``at`` of its values, with
        ``below`` in lower bins. Fail: the candidate's L⁻ of its count ≤ x and the champion's
        L⁺ of its count < x; pass: the candidate's L⁺(<) and the champion's L⁻(≤). With n
        the arm's values and ``M_n`` the two-sided mixture (as QuantileCS.log_mixture):

        - ``L⁻(s) = log(w + (1 − w)·max(0, (M_n(s) − min(π₊, D/λ))/π₋))`` for s ≤ nq,
          λ = nq − s, else ``log w``;
        - ``L⁺(c) = log(w + (1 − w)·max(0, (M_n(c) − min(π₋, D/λ))/π₊))`` for c ≥ nq,
          λ = c − nq, else ``log w``.
        """
        n = self.hists[i].n
        nq = n * self.q
        if (kind == FAIL) == (i == 0):  # L⁻ of the count ≤ x
            s = below + at
            if s > floor(nq):
                return self._log_w
            lam = nq - s - _LAMBDA_SLACK  # how far below nq: caps M⁺_n(s) at D/(π₊λ)
            other, log_other, log_side = self._pi_hi, self._log_pi_hi, self._log_pi_lo
        else:  # L⁺ of the count < x
            s = below
            if s < ceil(nq):
                return self._log_w
            lam = s - nq - _LAMBDA_SLACK
            other, log_other, log_side = self._pi_lo, self._log_pi_lo, self._log_pi_hi
        if lam > 0.0 and self._log_d - log(lam) < log_other:
            log_other = self._log_d - log(lam)
            other = exp(log_other)
        a, b = self._a, self._b
        ell = (lgamma(a + s) + lgamma(b + n - s) - lgamma(a + b + n)
               - self._log_norm - s * self._logit_q - n * self._log_1q)  # log M_n(s)
        if ell <= log_other:
            return self._log_w
        y = ell + log1p(-other * exp(-ell)) - log_side + self._log_1w
        x = self._log_w
        return (y if y > x else x) + log1p(exp(-abs(y - x)))  # log(e^x + e^y)

    # -- reading ------------------------------------------------------------------------------
    def update(self, arm: str, x: float) -> Self:
        """Add one latency of ``arm`` ("champion" or "candidate")."""
        try:
            i = self._INDEX[arm]
        except KeyError:
            raise ValueError(f"arm must be one of {self.ARMS}, got {arm!r}") from None
        x = check_finite(x)
        hist = self.hists[i]
        k = hist.key(x / self.max_ratio if i == 0 else x)
        _, new = hist._add_key(k, 1)
        if new and k not in self.hists[1 - i].counts:
            insort(self._keys, k)
        for w in self._wit.values():
            if w.key is not None and k < w.key:
                w.below[i] += 1
            w.terms[i] = None
        self._status = self._fail = None
        return self

    def _at(self, idx: int) -> tuple[int, int]:
        """Each arm's count in the ``idx``-th occupied bin."""
        k = self._keys[idx]
        return self.hists[0].counts.get(k, 0), self.hists[1].counts.get(k, 0)

    def _prefix_counts(self) -> tuple[list[int], list[int], list[int], list[int]]:
        """Each arm's count in every occupied bin, and in the bins before it."""
        keys, c0, c1 = self._keys, self.hists[0].counts, self.hists[1].counts
        at0, at1 = [c0.get(k, 0) for k in keys], [c1.get(k, 0) for k in keys]
        return at0, at1, list(accumulate(at0, initial=0)), list(accumulate(at1, initial=0))

    def _minimum(self, kind: str, prefix: tuple[list[int], ...] | None = None) -> float:
        """The statistic ``kind`` exactly: its minimum over every occupied bin, the same value
        a scan of every bin gives, found by a best-first branch and bound that evaluates a
        few dozen terms where the scan evaluated every bin's two (the evidence reads it at
        every history point). On bins [i, j] the sum is at least R(i) + L(j) (R grows to the
        right, L shrinks: see :meth:`_search`), so a block is split only while that bound
        could be below the best sum found; single bins are summed exactly as the scan does.
        ``prefix``: :meth:`_prefix_counts`, when the caller has it."""
        keys = self._keys
        if not keys:
            return 0.0
        at0, at1, below0, below1 = prefix or self._prefix_counts()
        args = ((below0, at0), (below1, at1))
        R = 1 if kind == FAIL else 0
        L = 1 - R
        cache: tuple[dict[int, float], dict[int, float]] = ({}, {})
        term = self._term

        def t(i: int, idx: int) -> float:
            value = cache[i].get(idx)
            if value is None:
                below, at = args[i]
                value = cache[i][idx] = term(kind, i, below[idx], at[idx])
            return value

        # every term is ≥ log w exactly (see _term), so no sum is below this floor
        floor_ = self._log_w + self._log_w
        # the terms are exact to a few ulps of their lgamma values: a block is skipped only
        # when its bound exceeds the best sum by more than any rounding could make up
        n = self.hists[0].n + self.hists[1].n + 2.0
        slack = 1e-6 + 1e-14 * n * math.log(n)
        best = math.inf
        last = len(keys) - 1
        heap = [(t(R, 0) + t(L, last), 0, last)]
        while heap:
            bound, lo, hi = heappop(heap)
            if bound >= best + slack:
                break
            if lo == hi:
                best = min(best, t(0, lo) + t(1, lo))  # the scan's sum, in its order
                if best <= floor_:
                    break
                continue
            mid = (lo + hi) // 2
            heappush(heap, (t(R, lo) + t(L, mid), lo, mid))
            heappush(heap, (t(R, mid + 1) + t(L, hi), mid + 1, hi))
        return best

    def _reached(self, kind: str) -> bool:
        """Whether statistic ``kind`` is ≥ log(1/α). First its witness, where only the terms
        of arms with new values are computed: below log(1/α) there, it is not reached; both
        terms ≥ log(1/α) − log w there, it is (every bin on the right has R at least as large,
        every bin on the left L, and the other term is ≥ log w); else :meth:`_search`."""
        w = self._wit[kind]
        key = w.key
        if key is None:
            return self._search(kind)
        terms = w.terms
        if terms[0] is None:
            terms[0] = self._term(kind, 0, w.below[0], self.hists[0].counts.get(key, 0))
        if terms[1] is None:
            terms[1] = self._term(kind, 1, w.below[1], self.hists[1].counts.get(key, 0))
        t0, t1 = terms
        if t0 + t1 < self._threshold:  # type: ignore[operator]
            return False
        stop = self._threshold - self._log_w
        if t0 >= stop and t1 >= stop:  # type: ignore[operator]
            return True
        return self._search(kind)

    def _search(self, kind: str) -> bool:
        """Whether statistic ``kind`` is ≥ log(1/α), i.e. no bin is below it, by a search
        outwards from the witness: on the right of a bin i whose terms are known, the
        sum at every bin of (i, j] is at least R(i) + L(j), R being the term that grows to
        the right (the champion's L⁺(<) for fail, the candidate's for pass) and L the other;
        so one evaluation of L(j) clears a whole block, whose length doubles while blocks
        clear and halves when one does not, down to single bins, evaluated exactly. Once R
        alone reaches log(1/α) − log w, nothing further right can be below (every term is
        ≥ log w). Leftwards the same with the roles swapped. The first bin found below
        becomes the witness; if none, the visited bin with the largest min(R, L), which is
        a certificate when that is ≥ log(1/α) − log w (see :meth:`_reached`).
        """
        h = self._threshold
        w = self._wit[kind]
        keys, term = self._keys, self._term
        if not keys:
            return h <= 0.0  # no values: both terms are log 1
        if w.key is None:
            start, below, known = 0, (0, 0), (None, None)
        else:
            start, below, known = bisect_left(keys, w.key), tuple(w.below), tuple(w.terms)
        at = self._at(start)
        t = [known[i] if known[i] is not None else term(kind, i, below[i], at[i])
             for i in (0, 1)]
        w.key, w.below, w.terms = keys[start], list(below), t
        if t[0] + t[1] < h:
            return False
        R = 1 if kind == FAIL else 0
        L = 1 - R
        stop = h - self._log_w
        if t[R] >= stop and t[L] >= stop:  # a certificate: no bin on either side is below
            return True
        last = len(keys) - 1
        # the visited bin with the largest min(R, L): the next witness, a certificate if ≥ stop
        best = [min(t[R], t[L]), start, list(below), t[R], t[L]]

        def keep(idx: int, b: list[int], tr: float, tl: float) -> None:
            if min(tr, tl) > best[0]:
                best[:] = [min(tr, tl), idx, list(b), tr, tl]

        def below_at(idx: int, b: list[int], tr: float, tl: float) -> bool:
            w.key, w.below = keys[idx], list(b)  # the new witness
            w.terms = [tl, tr] if R else [tr, tl]
            return False

        # rightwards, then leftwards (mirrored: the sum on [j, i) is at least L(i) + R(j)):
        # from bin i with prefix counts b, galloping while the term ahead stays below `stop`
        for ahead, behind in ((R, L), (L, R)):
            forward = ahead == R
            i, b, t_ahead = start, [below[0], below[1]], t[ahead]
            step = 1
            while t_ahead < stop and (i < last if forward else i > 0):
                j = min(i + step, last) if forward else max(i - step, 0)
                bj, sign = list(b), (1 if forward else -1)
                for idx in (range(i, j) if forward else range(j, i)):
                    a0, a1 = self._at(idx)
                    bj[0] += sign * a0
                    bj[1] += sign * a1
                aj = self._at(j)
                t_behind_j = term(kind, behind, bj[behind], aj[behind])
                if t_ahead + t_behind_j >= h or abs(j - i) == 1:
                    t_ahead_j = term(kind, ahead, bj[ahead], aj[ahead])
                    trj, tlj = (t_ahead_j, t_behind_j) if forward else (t_behind_j, t_ahead_j)
                    if trj + tlj < h:
                        return below_at(j, bj, trj, tlj)
                    keep(j, bj, trj, tlj)
                    i, b, t_ahead = j, bj, t_ahead_j
                    step *= 2
                else:
                    step = max(1, abs(j - i) // 2)
        below_at(best[1], best[2], best[3], best[4])  # no bin below: the witness moves there
        return True

    def status(self) -> str:
        """``"fail"``: the candidate's quantile is above ``max_ratio`` × the champion's with
        confidence 1 − α; ``"pass"``: at or below it with confidence 1 − α; else
        ``"undecided"``. Each wrong with chance ≤ α however often it is read."""
        if self._status is None:
            self._status = (FAIL if self.failed() else PASS if self._reached(PASS)
                            else UNDECIDED)
        return self._status

    def failed(self) -> bool:
        """Whether :meth:`status` is ``"fail"``, settled without the pass statistic (the
        policy asks after every record; whether it passes matters only for a promotion)."""
        if self._fail is None:
            self._fail = self._reached(FAIL)
        return self._fail

    def get(self) -> str:
        """Same as :meth:`status` (River's reading method)."""
        return self.status()

    def e_values(self) -> tuple[float, float]:
        """The two statistics as e-values (exp of the minimum over the bins; O(bins)):
        evidence against "ratio ≤ max_ratio" (fail at ≥ 1/α) and against "ratio ≥ max_ratio"
        (pass at ≥ 1/α). Capped at e^700 for JSON."""
        prefix = self._prefix_counts()  # shared by both statistics
        return (math.exp(min(self._minimum(FAIL, prefix), 700.0)),
                math.exp(min(self._minimum(PASS, prefix), 700.0)))

    def _arm_cs(self, arm: str) -> tuple[QuantileCS, float]:
        """One arm's QuantileCS at level 1 − α from its counts, and the scale of its values."""
        i = self._INDEX[arm]
        hist = self.hists[i]
        cs = QuantileCS(self.alpha, self.q, self.tuned_n, hist.rel_width, hist.min_value)
        cs.hist.copy_counts(hist)  # keys already sorted: no insertion one bin at a time
        cs._restore()
        return cs, (self.max_ratio if i == 0 else 1.0)

    def interval(self, arm: str) -> tuple[float, float]:
        """That arm's quantile CS at level 1 − α (O(bins); for information, not the test)."""
        if arm not in self._INDEX:
            raise ValueError(f"arm must be one of {self.ARMS}, got {arm!r}")
        cs, scale = self._arm_cs(arm)
        lo, hi = cs.interval()
        return lo * scale, hi * scale

    def estimate(self, arm: str) -> float | None:
        """That arm's empirical q-quantile (mid-point of its bin), or None without values."""
        cs, scale = self._arm_cs(arm)
        est = cs.estimate
        return None if est is None else est * scale

    def evidence(self) -> dict[str, Any]:
        e_fail, e_pass = self.e_values()
        arms: dict[str, Any] = {}
        for arm in self.ARMS:
            cs, scale = self._arm_cs(arm)
            lo, hi = cs.interval()
            est = cs.estimate
            arms[arm] = {"n": cs.n, "estimate": None if est is None else est * scale,
                         "lower": lo * scale, "upper": finite_or_none(hi * scale)}
        champ, cand = arms["champion"]["estimate"], arms["candidate"]["estimate"]
        return {
            "method": "two-sample sequential test of the quantile ratio (Howard & Ramdas 2022): "
                      "product of one-sided beta-binomial mixtures, minimised over the common "
                      "value",
            "q": self.q,
            "max_ratio": self.max_ratio,
            "ratio_estimate": cand / champ if cand is not None and champ else None,
            "e_fail": e_fail,
            "e_pass": e_pass,
            "threshold": 1.0 / self.alpha,
            "alpha": self.alpha,
            "tuned_n": self.tuned_n,
            "arms": arms,
            "status": self.status(),
        }

    # -- merging and saving -------------------------------------------------------------------
    _SETTINGS = ("alpha", "q", "max_ratio", "tuned_n")

    def merge(self, other: QuantileRatioGuardrail) -> Self:
        """Add a partial's counts: exactly the whole-stream test."""
        self._check_same_kind(other, *self._SETTINGS)
        mine, theirs = self.hists[0], other.hists[0]
        if (mine.rel_width, mine.min_value) != (theirs.rel_width, theirs.min_value):
            raise ValueError("cannot merge histograms with different bins")
        for i in (0, 1):
            for k in other.hists[i].keys:
                self.hists[i]._add_key(k, other.hists[i].counts[k])
        self._keys = sorted(set(self.hists[0].keys) | set(self.hists[1].keys))
        self._reset()
        return self

    def to_dict(self) -> dict[str, Any]:
        cand, champ = self.hists
        return {
            "type": self.TYPE,
            "alpha": self.alpha,
            "q": self.q,
            "max_ratio": self.max_ratio,
            "tuned_n": self.tuned_n,
            "rel_width": champ.rel_width,
            "min_value": champ.min_value,
            "champion": [[k, champ.counts[k]] for k in champ.keys],
            "candidate": [[k, cand.counts[k]] for k in cand.keys],  # bins of latency / max_ratio
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type(d)
        if "arms" in d:
            raise ValueError("a QuantileRatioGuardrail state of the former test (two per-arm "
                             "intervals) cannot be continued by the ratio test: its candidate "
                             "bins are of the latency, not of latency / max_ratio")
        obj = cls(alpha=d["alpha"], q=d["q"], max_ratio=d["max_ratio"], tuned_n=d["tuned_n"],
                  rel_width=d["rel_width"], min_value=d["min_value"])
        for i, arm in enumerate(("candidate", "champion")):
            for k, c in d[arm]:
                obj.hists[i]._add_key(int(k), int(c))
        obj._keys = sorted(set(obj.hists[0].keys) | set(obj.hists[1].keys))
        return obj
