"""The protocol every statistic of ``rollguard.stats`` follows, River style.

A statistic is updated one observation at a time (``update(...)`` returns ``self``), read with
``get()`` (plain JSON-safe figures: ``None`` where a figure is undefined, never NaN), merged with
another partial of the same kind (``merge``/``+=`` in place, ``+`` into a copy) and saved with
``to_dict()`` / rebuilt with ``from_dict(d)`` (only dict/list/str/int/float/bool/None, exact round
trip, a ``"type"`` tag that :func:`rollguard.stats.codec.from_dict` dispatches on). Two
statistics are equal when their saved states are equal.

>>> from rollguard.stats import Proportion
>>> a = Proportion().update(True).update(False)
>>> b = Proportion().update(True)
>>> (a + b).get()
0.6666666666666666
>>> Proportion.from_dict(a.to_dict()) == a
True
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Self


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or None when the denominator is zero (undefined, not NaN).

    >>> ratio(1, 4), ratio(0, 0)
    (0.25, None)
    """
    if denominator == 0:
        return None
    return numerator / denominator


class Statistic:
    """Base of every mergeable statistic; subclasses define the state methods."""

    TYPE: ClassVar[str] = ""

    def update(self, *args: Any, **kwargs: Any) -> Self:  # pragma: no cover - abstract
        raise NotImplementedError

    def get(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def merge(self, other: Self) -> Self:  # pragma: no cover - abstract
        """Add the partial ``other`` into this one (``other`` is left unchanged)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iadd__(self, other: Self) -> Self:
        return self.merge(other)

    def __add__(self, other: Self) -> Self:
        result = copy.deepcopy(self)
        return result.merge(other)

    def copy(self) -> Self:
        """An independent copy."""
        return copy.deepcopy(self)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get()!r})"

    def _check_same_kind(self, other: object, *settings: str) -> None:
        """Refuse to merge a statistic of another class or with other settings."""
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for name in settings:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                raise ValueError(
                    f"cannot merge {type(self).__name__} with {name}={theirs!r} "
                    f"into one with {name}={mine!r}"
                )

    @classmethod
    def _check_type_tag(cls, d: dict[str, Any]) -> None:
        if d.get("type") != cls.TYPE:
            raise ValueError(f"expected a {cls.TYPE!r} state, got type {d.get('type')!r}")
