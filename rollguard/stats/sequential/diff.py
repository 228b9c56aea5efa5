"""Confidence sequence for a difference of two means from independent arms (ab, canary, bandit).

Δ = mean(candidate) − mean(champion) from two streams of unequal and changing sizes (the canary
share moves through steps, a bandit reallocates). The construction reduces it to a one-stream
mean, then uses the same CS as the paired case (:class:`~.mean.MeanCS`: empirical Bernstein if
bounded, or betting when ``test_points`` name where decisions are made; asymptotic if not):

*Arm-ordered blocks.* Observations are grouped into blocks, each holding the next ``k_c``
observations of the champion and the next ``k_v`` of the candidate, in each arm's own arrival
order. A block's sizes are fixed when it is opened, before any of its values is seen (from the
recent arrival ratio, so a 95/5 canary gives blocks of 19 champion + 1 candidate outcomes and a
50/50 test gives pairs). Its difference of means ``d_j = mean_v − mean_c`` is then, whatever the
allocation did, an unbiased draw of Δ given all earlier blocks, bounded in
``[lower − upper, upper − lower]``, and the blocks' differences form the one stream the CS is
built on. This generalises the pairing of the j-th observations of each arm used by Johari,
Koomen, Pekelis & Walsh (2017, KDD; "Peeking at A/B tests") for equal allocation: with block
sizes in the arrival ratio, the block variance ``σ_v²/k_v + σ_c²/k_c`` gives the efficient
``σ_v²/n_v + σ_c²/n_c`` for the estimate, so no outcome is wasted, apart from the ones waiting
in the last incomplete blocks. Exact under any allocation that does not look at future values
(ab, canary, and bandits whose reallocation uses only outcomes already seen: a block's composition
is fixed before its outcomes are drawn, and each arm's outcomes are i.i.d.).

The arrival ratio is an exponentially weighted share of the candidate among recent arrivals
(weight 1/50), read when a block is opened. When one arm runs ahead (its blocks wait for the
other), each new block takes proportionally more of its observations, so the number of open
blocks (the state) stays small.

For unbounded values the asymptotic CS gives no finite bound before ``burn_in`` completed blocks
(default 30; :mod:`.asymptotic`). It counts blocks, the sample size of the CS: a 95/5 canary
can roll back after about 30 candidate outcomes (600 in all), never on its first two blocks.

Merge: the completed-block CSs merge as their method does (:mod:`.eb`, :mod:`.betting`,
:mod:`.asymptotic`); per-arm counts and sums add; the other's open blocks are appended and keep
filling in order.

>>> cs = DiffMeansCS(alpha=0.05, lower=0.0, upper=1.0, tuned_n=300)
>>> for i in range(4000):                       # a 90/10 canary: 1 candidate in 10
...     arm = "candidate" if i % 10 == 3 else "champion"
...     correct = (i // 10) % 10 < (9 if arm == "candidate" else 6)   # 0.9 vs 0.6
...     _ = cs.update(arm, float(correct))
>>> cs.counts()
{'champion': 3600, 'candidate': 400}
>>> lo, hi = cs.interval()
>>> lo > 0.0 and lo < 0.3 < hi
True
>>> DiffMeansCS.from_dict(cs.to_dict()) == cs
True
"""

from __future__ import annotations

from collections import deque
from typing import Any, Self

from rollguard.stats.sequential._base import (
    SequentialTest,
    check_bounds,
    check_finite,
)
from rollguard.stats.sequential.asymptotic import DEFAULT_BURN_IN
from rollguard.stats.sequential.mean import DEFAULT_TUNED_N, MeanCS

#: The two arms, in index order.
ARMS = ("champion", "candidate")
_ARM_INDEX = {"champion": 0, "candidate": 1}

#: Weight of the newest arrival in the candidate's running share (about the last 50).
_SHARE_WEIGHT = 0.02
#: Shares are clamped to [_MIN_SHARE, 1 − _MIN_SHARE] when sizing blocks (blocks ≤ 999:1).
_MIN_SHARE = 1e-3
#: An arm this many blocks ahead gets blocks one base size larger (keeps the state small).
_AHEAD_STEP = 8

# block layout: [quota_champion, quota_candidate, n_champion, sum_champion, n_cand, sum_cand]
_QUOTA, _COUNT, _SUM = 0, 2, 3


class DiffMeansCS(SequentialTest):
    """Anytime-valid (1−α) CS for mean(candidate) − mean(champion) from independent arms.

    ``lower``/``upper`` bound each observation (omit both for unbounded scores). ``tuned_n``
    and ``burn_in`` (unbounded only) count blocks, i.e. about the smaller arm's count. See the
    module docstring.
    """

    TYPE = "sequential.DiffMeansCS"

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
        self.lower, self.upper = lo, hi
        if lo is None or hi is None:
            self.blocks_cs = MeanCS(alpha=alpha, tuned_n=tuned_n, burn_in=burn_in)
        else:
            self.blocks_cs = MeanCS(alpha=alpha, lower=lo - hi, upper=hi - lo, tuned_n=tuned_n,
                                    test_points=test_points, tracks_average=tracks_average)
        self._n = [0, 0]
        self._sum = [0.0, 0.0]
        self._open: deque[list[Any]] = deque()  # blocks not yet complete, oldest first
        self._next = [0, 0]  # per arm: index in _open of the first block with room
        self._share = 0.5  # running share of the candidate among arrivals

    @property
    def alpha(self) -> float:
        return self.blocks_cs.alpha

    @property
    def tuned_n(self) -> float:
        return self.blocks_cs.core.tuned_n  # type: ignore[return-value]

    # -- updating ---------------------------------------------------------------------------
    def _block_sizes(self, arm: int) -> list[int]:
        """Sizes of a new block, opened for ``arm`` (all open blocks are full for it)."""
        share = min(max(self._share, _MIN_SHARE), 1.0 - _MIN_SHARE)
        ratio = (1.0 - share) / share  # champion outcomes per candidate outcome
        if ratio >= 1.0:
            sizes = [max(1, round(ratio)), 1]
        else:
            sizes = [1, max(1, round(1.0 / ratio))]
        sizes[arm] *= 1 + len(self._open) // _AHEAD_STEP
        return sizes

    def update(self, arm: str, x: float) -> Self:
        """Add one outcome of ``arm`` ("champion" or "candidate")."""
        try:
            i = _ARM_INDEX[arm]
        except KeyError:
            raise ValueError(f"arm must be one of {ARMS}, got {arm!r}") from None
        x = check_finite(x)
        if self.lower is not None and self.upper is not None:
            if not self.lower <= x <= self.upper:
                raise ValueError(f"observation {x!r} outside [{self.lower}, {self.upper}]")
        self._n[i] += 1
        self._sum[i] += x
        blocks = self._open
        j = self._next[i]
        if j == len(blocks):
            blocks.append([*self._block_sizes(i), 0, 0.0, 0, 0.0])
        block = blocks[j]
        block[_COUNT + 2 * i] += 1
        block[_SUM + 2 * i] += x
        if block[_COUNT + 2 * i] >= block[_QUOTA + i]:
            j += 1
            while j < len(blocks) and blocks[j][_COUNT + 2 * i] >= blocks[j][_QUOTA + i]:
                j += 1
            self._next[i] = j
        self._share += _SHARE_WEIGHT * (i - self._share)
        while blocks and blocks[0][2] >= blocks[0][0] and blocks[0][4] >= blocks[0][1]:
            done = blocks.popleft()
            self.blocks_cs.update(done[5] / done[4] - done[3] / done[2])
            self._next[0] -= 1
            self._next[1] -= 1
        return self

    # -- reading ----------------------------------------------------------------------------
    def interval(self) -> tuple[float, float]:
        """``(L_t, U_t)`` for Δ = candidate − champion, level 1−α at every time at once."""
        return self.blocks_cs.interval()

    def get(self) -> tuple[float, float]:
        return self.interval()

    def side_of(self, value: float) -> int:
        """1 if Δ is above ``value`` with confidence, −1 if below, else 0."""
        return self.blocks_cs.side_of(value)

    def counts(self) -> dict[str, int]:
        """Outcomes seen per arm."""
        return {arm: self._n[i] for i, arm in enumerate(ARMS)}

    def means(self) -> dict[str, float | None]:
        """Plain mean per arm (None for an arm with no outcome yet)."""
        return {
            arm: (self._sum[i] / self._n[i] if self._n[i] else None) for i, arm in enumerate(ARMS)
        }

    @property
    def estimate(self) -> float | None:
        """Difference of the plain per-arm means (None until both arms have an outcome)."""
        means = self.means()
        if means["champion"] is None or means["candidate"] is None:
            return None
        return means["candidate"] - means["champion"]

    @property
    def n_blocks(self) -> int:
        """Completed blocks (the sample size of the CS)."""
        return self.blocks_cs.n

    def evidence(self) -> dict[str, Any]:
        inner = self.blocks_cs.evidence()
        return {
            "method": "arm-ordered blocks + " + inner["method"],
            "n": self.counts(),
            "mean": self.means(),
            "estimate": self.estimate,
            "lower": inner["lower"],
            "upper": inner["upper"],
            "alpha": self.alpha,
            "blocks": self.n_blocks,
            "pending": sum(b[2] + b[4] for b in self._open),
            "tuned_n": self.tuned_n,
        }

    # -- merging and saving -----------------------------------------------------------------
    def merge(self, other: DiffMeansCS) -> Self:
        """Merge completed blocks by their method's merge; append the other's open blocks."""
        self._check_same_kind(other, "lower", "upper")
        self.blocks_cs.merge(other.blocks_cs)
        for i in range(2):
            self._n[i] += other._n[i]
            self._sum[i] += other._sum[i]
        self._open.extend(list(block) for block in other._open)
        for i in range(2):
            j = 0
            while j < len(self._open) and self._open[j][_COUNT + 2 * i] >= self._open[j][i]:
                j += 1
            self._next[i] = j
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "lower": self.lower,
            "upper": self.upper,
            "blocks_cs": self.blocks_cs.to_dict(),
            "n": list(self._n),
            "sum": list(self._sum),
            "open": [list(b) for b in self._open],
            "next": list(self._next),
            "share": self._share,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type(d)
        obj = cls.__new__(cls)
        obj.lower, obj.upper = d["lower"], d["upper"]
        obj.blocks_cs = MeanCS.from_dict(d["blocks_cs"])
        obj._n = [int(v) for v in d["n"]]
        obj._sum = [float(v) for v in d["sum"]]
        obj._open = deque(
            [int(b[0]), int(b[1]), int(b[2]), float(b[3]), int(b[4]), float(b[5])]
            for b in d["open"]
        )
        obj._next = [int(v) for v in d["next"]]
        obj._share = float(d["share"])
        return obj
