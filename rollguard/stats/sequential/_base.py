"""What every sequential test of this package shares: the River-style protocol and helpers.

A test is updated one observation at a time (``update(...)`` returns ``self``), read at any time
(``interval()`` or ``status()``, O(1)), merged with a partial of the same kind and settings
(``merge``/``+=`` in place, ``+`` into a copy) and saved with ``to_dict()`` / rebuilt with
``from_dict(d)`` (only dict/list/str/int/float/bool/None, a ``"type"`` tag, exact round trip).
``evidence()`` gives the JSON-safe figures a control event carries. Two tests are equal when
their saved states are equal. This mirrors ``rollguard.stats.base`` on purpose but does not
import it, so this package stands alone.

>>> clamp(1.5, 0.0, 1.0), finite_or_none(float("inf")), finite_or_none(2.0)
(1.0, None, 2.0)
>>> bound_status(0.002, 0.008, max=0.01)
'pass'
>>> bound_status(0.011, 0.02, max=0.01), bound_status(0.0, 0.02, max=0.01)
('fail', 'undecided')
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar, Self

#: The three answers of a guardrail.
PASS, FAIL, UNDECIDED = "pass", "fail", "undecided"


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float in (0, 1), or a ValueError."""
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return alpha


def check_bounds(lower: float | None, upper: float | None) -> tuple[float | None, float | None]:
    """Both bounds given with lower < upper (bounded metric), or both None (unbounded)."""
    if (lower is None) != (upper is None):
        raise ValueError("give both lower and upper (bounded metric) or neither (unbounded)")
    if lower is None or upper is None:
        return None, None
    lower, upper = float(lower), float(upper)
    if not (math.isfinite(lower) and math.isfinite(upper) and lower < upper):
        raise ValueError(f"need finite lower < upper, got {lower!r}, {upper!r}")
    return lower, upper


def check_tuned_n(tuned_n: float) -> float:
    """The tuning sample size, a positive number."""
    tuned_n = float(tuned_n)
    if not (math.isfinite(tuned_n) and tuned_n > 0):
        raise ValueError(f"tuned_n must be positive, got {tuned_n!r}")
    return tuned_n


def check_finite(x: float) -> float:
    """``x`` as a float, or a ValueError for NaN and infinities (they would poison the sums)."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"observation must be finite, got {x!r}")
    return x


def clamp(x: float, lo: float, hi: float) -> float:
    """``x`` limited to ``[lo, hi]``."""
    return lo if x < lo else hi if x > hi else x


def finite_or_none(x: float | None) -> float | None:
    """``x`` if it is a finite number, else None (JSON has no infinities)."""
    if x is None or not math.isfinite(x):
        return None
    return float(x)


def interval_side(lower: float, upper: float, value: float) -> int:
    """1 if the interval lies wholly above ``value``, −1 if wholly below, else 0.

    >>> interval_side(0.2, 0.4, 0.1), interval_side(0.2, 0.4, 0.5), interval_side(0.2, 0.4, 0.3)
    (1, -1, 0)
    """
    return -1 if upper < value else 1 if lower > value else 0


def bound_status(
    lower: float, upper: float, *, max: float | None = None, min: float | None = None
) -> str:
    """Guardrail answer from a confidence interval and a limit.

    With ``max``: "pass" when the whole interval is at or below it, "fail" when the whole
    interval is above it. With ``min``: "pass" when at or above, "fail" when below. With both,
    "fail" if either fails and "pass" only if both pass. Otherwise "undecided".
    """
    if max is None and min is None:
        raise ValueError("give max, min or both")
    failed = (max is not None and lower > max) or (min is not None and upper < min)
    if failed:
        return FAIL
    passed = (max is None or upper <= max) and (min is None or lower >= min)
    return PASS if passed else UNDECIDED


class SequentialTest:
    """Base of every object of this package; subclasses define the state methods."""

    TYPE: ClassVar[str] = ""

    def merge(self, other: Self) -> Self:  # pragma: no cover - abstract
        """Add the partial ``other`` into this one (``other`` is left unchanged)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:  # pragma: no cover - abstract
        raise NotImplementedError

    def evidence(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iadd__(self, other: Self) -> Self:
        return self.merge(other)

    def __add__(self, other: Self) -> Self:
        return copy.deepcopy(self).merge(other)

    def copy(self) -> Self:
        """An independent copy."""
        return copy.deepcopy(self)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.evidence()!r})"

    @classmethod
    def _check_type(cls, d: dict[str, Any]) -> None:
        if d.get("type") != cls.TYPE:
            raise ValueError(f"not a {cls.TYPE} state: type {d.get('type')!r}")

    def _check_same_kind(self, other: object, *settings: str) -> None:
        """Refuse to merge an object of another class or with other settings."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for name in settings:
            if getattr(self, name) != getattr(other, name):
                raise ValueError(
                    f"cannot merge {type(self).__name__} with a different {name}: "
                    f"{getattr(self, name)!r} != {getattr(other, name)!r}"
                )
