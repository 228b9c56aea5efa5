"""Guardrails on a rate or mean against a fixed limit, or against the champion's.

:class:`ThresholdTest` — one stream against an absolute limit: ``error_rate ≤ 0.01``,
``precision ≥ 0.95`` in a segment, ``recall ≥ …``; also, in shadow mode, a paired difference
such as ``error_rate(cand) − error_rate(champ) ≤ max_diff`` (feed the per-request difference,
bounds −1 and 1). :class:`DiffThresholdTest` — the same difference from independent arms
(ab, canary, bandit), built on :class:`~.diff.DiffMeansCS`.

Both run an anytime-valid (1−α) confidence sequence (when bounded, the betting CS of
Waudby-Smith & Ramdas 2023 with its capitals kept exactly at the limits, :mod:`.betting`;
asymptotic, Waudby-Smith et al. 2024, when not) and answer

* ``"pass"`` when the whole interval is within the limit (a false pass has chance ≤ α/2),
* ``"fail"`` when the whole interval breaches it (a false alarm has chance ≤ α/2),
* ``"undecided"`` otherwise,

at every look, however many. The answer is not sticky: a guardrail that passed can become
undecided (never failed while the truth is within the limit, up to the same α/2).

*Ratio metrics on a sub-stream.* Precision is the mean of ``correct`` over predicted positives,
recall over actual positives: feed the test only those requests. This is valid under optional
stopping because whether a request enters the sub-stream is decided by something other than the
value recorded (the prediction, for precision, where the value is the label; the label, for
recall, where the value is the prediction): given that it entered, the value is a fresh draw
with mean equal to the precision (recall), so the sub-stream is an i.i.d. stream of its own. The
CS holds at every sub-stream size at once, hence at whatever sub-stream size the whole stream's
stopping time lands on.

>>> errors = ThresholdTest(alpha=0.05, lower=0.0, upper=1.0, max=0.01, tuned_n=2000)
>>> for i in range(3000):
...     _ = errors.update(1.0 if i % 500 == 0 else 0.0)       # 0.2 % errors
>>> errors.status(), errors.n
('pass', 3000)
>>> precision = ThresholdTest(alpha=0.05, lower=0.0, upper=1.0, min=0.95)
>>> for i in range(400):
...     _ = precision.update(1.0 if i % 5 else 0.0)           # precision 0.8
>>> precision.status()
'fail'
>>> precision.evidence()["limit"]
{'min': 0.95}
"""

from __future__ import annotations

from typing import Any, Self

from rollguard.stats.sequential._base import FAIL, PASS, UNDECIDED, SequentialTest
from rollguard.stats.sequential.diff import DiffMeansCS
from rollguard.stats.sequential.mean import DEFAULT_TUNED_N, MeanCS


def _check_limits(max: float | None, min: float | None) -> None:
    if max is None and min is None:
        raise ValueError("give max, min or both")
    if max is not None and min is not None and min > max:
        raise ValueError(f"min {min!r} above max {max!r}")


def _limit(max: float | None, min: float | None) -> dict[str, float]:
    limit = {}
    if max is not None:
        limit["max"] = max
    if min is not None:
        limit["min"] = min
    return limit


class _LimitTest(SequentialTest):
    """A confidence sequence (``self.cs``) read against ``max`` and/or ``min``: what both
    threshold tests share. Subclasses say which sequence (``CS``) and how it is fed."""

    CS: type[SequentialTest]

    def __init__(
        self,
        alpha: float = 0.05,
        lower: float | None = None,
        upper: float | None = None,
        *,
        max: float | None = None,
        min: float | None = None,
        tuned_n: float = DEFAULT_TUNED_N,
        tracks_average: bool = False,
    ) -> None:
        _check_limits(max, min)
        self.max, self.min = max, min
        # the limits are where the answer is decided: test there exactly (when in range);
        # tracks_average: bounds on the average so far, valid while the mean moves (mean.py)
        span = self._span(lower, upper)
        points = tuple(limit for limit in (max, min)
                       if limit is not None and span is not None and span[0] <= limit <= span[1])
        self.cs = self.CS(alpha=alpha, lower=lower, upper=upper, tuned_n=tuned_n,
                          test_points=points, tracks_average=tracks_average)

    @staticmethod
    def _span(lower: float | None, upper: float | None) -> tuple[float, float] | None:
        """The range of the mean the sequence is on (None when unbounded)."""
        return None if lower is None or upper is None else (lower, upper)

    @property
    def alpha(self) -> float:
        return self.cs.alpha

    def interval(self) -> tuple[float, float]:
        return self.cs.interval()

    def status(self) -> str:
        """``"pass"``, ``"fail"`` or ``"undecided"`` (O(1))."""
        above_max = None if self.max is None else self.cs.side_of(self.max)
        above_min = None if self.min is None else self.cs.side_of(self.min)
        if above_max == 1 or above_min == -1:
            return FAIL
        if above_max in (None, -1) and above_min in (None, 1):
            return PASS
        return UNDECIDED

    def get(self) -> str:
        """Same as :meth:`status` (River's reading method)."""
        return self.status()

    def evidence(self) -> dict[str, Any]:
        return {**self.cs.evidence(), "limit": _limit(self.max, self.min), "status": self.status()}

    def merge(self, other: Self) -> Self:
        self._check_same_kind(other, "max", "min")
        self.cs.merge(other.cs)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, "max": self.max, "min": self.min, "cs": self.cs.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type(d)
        obj = cls.__new__(cls)
        obj.max, obj.min = d["max"], d["min"]
        obj.cs = cls.CS.from_dict(d["cs"])
        return obj


class ThresholdTest(_LimitTest):
    """Anytime-valid guardrail: the mean of one stream against ``max`` and/or ``min``.

    ``lower``/``upper`` bound the values (omit both for unbounded values). See the module
    docstring for the answers and their error rates.
    """

    TYPE = "sequential.ThresholdTest"
    CS = MeanCS

    @property
    def n(self) -> int:
        return self.cs.n

    def update(self, x: float) -> Self:
        """Add one observation (e.g. 1.0 for an error, 0.0 for a success)."""
        self.cs.update(x)
        return self


class DiffThresholdTest(_LimitTest):
    """Anytime-valid guardrail on mean(candidate) − mean(champion) from independent arms.

    E.g. ``error_rate(cand) − error_rate(champ) ≤ max_diff``:
    ``DiffThresholdTest(alpha, lower=0, upper=1, max=max_diff)`` fed ``update(arm, error)``.

    >>> g = DiffThresholdTest(alpha=0.05, lower=0.0, upper=1.0, max=0.02)
    >>> for i in range(12000):
    ...     arm = "candidate" if i % 2 else "champion"
    ...     rate = 25 if arm == "candidate" else 100             # 4 % vs 1 % errors
    ...     _ = g.update(arm, 1.0 if (i // 2) % rate == 0 else 0.0)
    >>> g.status()
    'fail'
    """

    TYPE = "sequential.DiffThresholdTest"
    CS = DiffMeansCS

    @staticmethod
    def _span(lower: float | None, upper: float | None) -> tuple[float, float] | None:
        """A difference of two means of values in [lower, upper] lies in ±(upper − lower)."""
        return None if lower is None or upper is None else (lower - upper, upper - lower)

    def update(self, arm: str, x: float) -> Self:
        """Add one outcome of ``arm`` ("champion" or "candidate")."""
        self.cs.update(arm, x)
        return self
