"""The sticky assignment rule (docs/events.md): which arm serves a unit, in every language.

A unit's *bucket* is the first 8 bytes of SHA-256 over the UTF-8 bytes of
``experiment + "/" + unit``, read as a big-endian unsigned integer: an integer in
[0, 2**64), i.e. the fraction ``bucket / 2**64`` in [0, 1). Arms are laid on [0, 1)
champion first, then the other arms of ``traffic`` sorted by their ``model:version``
string, each an interval as wide as its share.

The comparison is exact, so that every language finds the same arm for every unit:
the cumulative share ``C_i`` is the IEEE-754 double running sum of the shares in lay
order (champion first), and the unit goes to the first arm with ``bucket < C_i * 2**64``,
comparing the integer bucket with the double *exactly* (``C_i * 2**64`` is exact in
doubles; where ``C_i >= 2**-11`` it is an integer that fits an unsigned 64-bit integer).
A bucket at or past the last boundary (shares that sum to a hair under 1) goes to the last
arm with a positive share. Converting the bucket to a double first rounds it and can
disagree for buckets within about 2**-53 of a boundary (one unit in ~10**15); the
published test vectors contain such a case.

>>> bucket("churn-v7", "user-42")
1454422682501511517
>>> assign("churn-v7", "user-42", champion="churn:6", traffic={"churn:6": 0.9, "churn:7": 0.1})
'churn:6'
>>> layout = Layout.of("churn:6", {"churn:6": 0.5, "churn:7": 0.5})
>>> layout.arms, layout.bounds[0] == 2**63
(('churn:6', 'churn:7'), True)
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass

#: buckets are integers in [0, BUCKETS); the fraction on [0, 1) is bucket / BUCKETS
BUCKETS = 1 << 64

#: how far the shares of ``traffic`` may sum from 1 (rounding of shares computed elsewhere)
SHARE_SUM_TOLERANCE = 1e-6


class TrafficError(ValueError):
    """A ``traffic`` mapping that cannot be laid on [0, 1); the message says what is wrong."""


def bucket(experiment: str, unit: str) -> int:
    """The unit's bucket: an integer in [0, 2**64) (divide by 2**64 for the fraction).

    >>> bucket("e", "u") == int.from_bytes(hashlib.sha256(b"e/u").digest()[:8], "big")
    True
    """
    digest = hashlib.sha256(f"{experiment}/{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def lay_order(champion: str, traffic: Mapping[str, float]) -> tuple[str, ...]:
    """The arms in lay order: the champion first, then the others sorted by their string.

    >>> lay_order("m:2", {"m:3": 0.2, "m:10": 0.3, "m:2": 0.5})
    ('m:2', 'm:10', 'm:3')
    """
    return (champion, *sorted(arm for arm in traffic if arm != champion))


@dataclass(frozen=True)
class Layout:
    """Arms with a positive share, in lay order, and the exclusive upper bucket of each.

    ``bounds[i]`` is the smallest integer ``>= C_i * 2**64`` (so ``bucket < bounds[i]``
    exactly when ``bucket < C_i * 2**64``); the last bound is always 2**64. Arms with a
    zero share take no interval and are left out.

    >>> Layout.of("a:1", {"a:1": 0.0, "b:1": 1.0})
    Layout(arms=('b:1',), bounds=(18446744073709551616,))
    >>> Layout.of("a:1", {"a:1": 0.7, "b:1": 0.2})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    rollguard.serving.assignment.TrafficError: traffic shares must sum to 1 but sum to 0.9 (...).
    """

    arms: tuple[str, ...]
    bounds: tuple[int, ...]

    @classmethod
    def of(cls, champion: str, traffic: Mapping[str, float]) -> Layout:
        """Lay ``traffic`` (``model:version`` → share) out with ``champion`` first."""
        shares = dict(traffic)
        for arm, share in shares.items():
            if not isinstance(arm, str) or not arm:
                raise TrafficError(
                    f"traffic arms must be non-empty 'model:version' strings, got {arm!r}.")
            if isinstance(share, bool) or not isinstance(share, (int, float)) \
                    or not math.isfinite(share) or share < 0:
                raise TrafficError(
                    f"the share of {arm} must be a finite number >= 0, got {share!r}.")
        if not shares:
            raise TrafficError(
                "traffic must give a share to at least one arm, got an empty mapping.")
        total = math.fsum(shares.values())
        if abs(total - 1.0) > SHARE_SUM_TOLERANCE:
            raise TrafficError(f"traffic shares must sum to 1 but sum to {total:.6g} ({shares}).")
        arms: list[str] = []
        bounds: list[int] = []
        cumulative = 0.0
        for arm in lay_order(champion, shares):
            share = float(shares.get(arm, 0.0))
            if share <= 0.0:
                continue
            cumulative += share  # the double running sum of the rule, not an exact sum
            arms.append(arm)
            # exact: a double times 2**64 is exact, ceil of a float is an exact int
            bounds.append(min(math.ceil(cumulative * BUCKETS), BUCKETS))
        bounds[-1] = BUCKETS  # the last arm with a share takes whatever rounding left over
        return cls(tuple(arms), tuple(bounds))

    def arm_for(self, unit_bucket: int) -> str:
        """The arm whose interval holds ``unit_bucket`` (an integer in [0, 2**64)).

        >>> Layout.of("a:1", {"a:1": 0.5, "b:1": 0.5}).arm_for(2**63 - 1)
        'a:1'
        >>> Layout.of("a:1", {"a:1": 0.5, "b:1": 0.5}).arm_for(2**63)
        'b:1'
        """
        return self.arms[bisect_right(self.bounds, unit_bucket)]


def assign(experiment: str, unit: str, champion: str, traffic: Mapping[str, float]) -> str:
    """The ``model:version`` that serves ``unit`` in ``experiment`` under ``traffic``.

    >>> shares = {"churn:6": 0.5, "churn:7": 0.5}
    >>> assign("churn-v7", "user-1", "churn:6", shares)
    'churn:7'
    >>> assign("churn-v7", "user-2", "churn:6", shares)
    'churn:6'
    """
    return Layout.of(champion, traffic).arm_for(bucket(experiment, unit))
