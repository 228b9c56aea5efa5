"""One candidate against the champion: Δ of the primary metric, its guardrails, its state.

Δ = candidate − champion of a per-request score (−loss) is read the same way in every mode
(:class:`Delta`: counts, estimate, confidence sequence, side of −margin); how it is fed
depends on the design: :class:`PairedDelta` takes both arms' scores of one request (shadow
mode), :class:`SplitDelta` the outcome of whichever arm served (ab, canary, bandit).

>>> delta = PairedDelta(alpha=0.05, bounds=(0.0, 1.0), tuned_n=200, margin=0.0)
>>> for i in range(2000):
...     _ = delta.add_pair(candidate=1.0, champion=float(i % 10 != 0))  # champion errs on 10%
>>> delta.counts(), delta.side()
((2000, 2000), 1)
>>> split = SplitDelta(alpha=0.05, bounds=(0.0, 1.0), tuned_n=200, margin=0.0)
>>> split.add("champion", 1.0).add("candidate", 0.0).counts()
(1, 1)
"""

from __future__ import annotations

import math
from typing import Any, Protocol

from rollguard.decisions.guardrails import Monitor
from rollguard.stats.sequential import DiffMeansCS, PairedMeanCS, from_dict


def finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


class Delta(Protocol):
    """Δ = candidate − champion of the primary metric: what the decisions read."""

    alpha: float

    def counts(self) -> tuple[int, int]: ...            # (champion, candidate) outcomes
    def estimate(self) -> float | None: ...
    def interval(self) -> tuple[float | None, float | None]: ...
    def side(self) -> int: ...                           # of −margin: 1 above, −1 below, 0
    def method(self) -> str | None: ...
    def to_dict(self) -> dict[str, Any]: ...
    def load(self, d: dict[str, Any]) -> None: ...


class _CachedDelta:
    """The reading half shared by both designs; caches the CS's figures between updates."""

    paired = False

    def __init__(self, alpha: float, margin: float, cs: PairedMeanCS | DiffMeansCS) -> None:
        self.alpha = alpha
        self.margin = margin
        self.cs = cs
        self._interval: tuple[float | None, float | None] | None = None
        self._side: int | None = None

    def _changed(self) -> None:
        self._interval = None
        self._side = None

    def interval(self) -> tuple[float | None, float | None]:
        """The confidence sequence's bounds, recomputed only after new observations."""
        if self._interval is None:
            lo, hi = self.cs.interval()
            self._interval = (finite(lo), finite(hi))
        return self._interval

    def side(self) -> int:
        """1 when Δ > −margin with confidence, −1 when Δ < −margin, 0 while undecided."""
        if self._side is None:
            self._side = self.cs.side_of(-self.margin)
        return self._side

    def method(self) -> str | None:
        return self.cs.evidence().get("method")

    def to_dict(self) -> dict[str, Any]:
        return self.cs.to_dict()

    def load(self, d: dict[str, Any]) -> None:
        self.cs = from_dict(d)
        self._changed()


class PairedDelta(_CachedDelta):
    """Δ from both arms' scores of the same request (shadow mode): one difference each."""

    paired = True

    def __init__(self, alpha: float, bounds: tuple[float | None, float | None],
                 tuned_n: float, margin: float, *, tracks_average: bool = False) -> None:
        lower, upper = bounds
        span = (None, None) if lower is None or upper is None else (lower - upper, upper - lower)
        # the one value decisions compare Δ with: tested exactly there
        super().__init__(alpha, margin, PairedMeanCS(alpha, *span, tuned_n=tuned_n,
                                                     test_points=(-margin,),
                                                     tracks_average=tracks_average))

    def add_pair(self, candidate: float, champion: float) -> PairedDelta:
        self.cs.update(candidate - champion)
        self._changed()
        return self

    def counts(self) -> tuple[int, int]:
        return self.cs.n, self.cs.n

    def estimate(self) -> float | None:
        return finite(self.cs.mean)


class SplitDelta(_CachedDelta):
    """Δ from the arms' own outcomes (ab, canary, bandit): each request is served by one."""

    def __init__(self, alpha: float, bounds: tuple[float | None, float | None],
                 tuned_n: float, margin: float, *, tracks_average: bool = False) -> None:
        super().__init__(alpha, margin, DiffMeansCS(alpha, *bounds, tuned_n=tuned_n,
                                                    test_points=(-margin,),
                                                    tracks_average=tracks_average))

    def add(self, role: str, score: float) -> SplitDelta:
        """One outcome of the ``"champion"`` or the ``"candidate"``."""
        self.cs.update(role, score)
        self._changed()
        return self

    def counts(self) -> tuple[int, int]:
        c = self.cs.counts()
        return c["champion"], c["candidate"]

    def estimate(self) -> float | None:
        return finite(self.cs.estimate)


class Track:
    """One candidate against the champion: its Δ, its guardrails, and whether it is active."""

    def __init__(self, arm: str, delta: PairedDelta | SplitDelta, monitors: list[Monitor]) -> None:
        self.arm = arm
        self.delta = delta
        self.monitors = monitors
        self.active = True
        self.dropped_reason: str | None = None

    @property
    def alpha(self) -> float:
        return self.delta.alpha

    def counts(self, champion: str) -> dict[str, int]:
        n_champion, n_candidate = self.delta.counts()
        return {champion: n_champion, self.arm: n_candidate}

    def min_count(self) -> int:
        return min(self.delta.counts())

    def drop(self, reason: str) -> None:
        self.active = False
        self.dropped_reason = reason

    def evidence(self, champion: str) -> dict[str, Any]:
        lo, hi = self.delta.interval()
        return {
            "alpha": self.alpha,
            "status": "active" if self.active else "dropped",
            "n": self.counts(champion),
            "delta": {"estimate": self.delta.estimate(), "lower": lo, "upper": hi,
                      "margin": self.delta.margin, "paired": self.delta.paired,
                      "method": self.delta.method()},
            "guardrails": [m.evidence() for m in self.monitors],
        }

    def to_dict(self) -> dict[str, Any]:
        return {"primary": self.delta.to_dict(), "monitors": [m.state() for m in self.monitors],
                "active": self.active, "dropped_reason": self.dropped_reason}

    def load(self, d: dict[str, Any]) -> None:
        self.delta.load(d["primary"])
        for monitor, state in zip(self.monitors, d["monitors"]):
            monitor.load(state)
        self.active, self.dropped_reason = d["active"], d["dropped_reason"]
