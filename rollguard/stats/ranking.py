"""Ranking metrics: one ranked list against the items the user engaged with.

``ranked`` is the list a model returned, best first; ``engaged`` the items the user clicked,
watched or bought: a list (each with gain 1) or a mapping item → graded gain (> 0); ``k`` the
depth. Per request (the values the sequential tests take, so any of them can be the primary
metric):

- **hit rate@k**: 1 when an engaged item is in the top k, else 0;
- **reciprocal rank@k**: 1 / the rank of the first engaged item in the top k, else 0 (the
  mean is MRR; Voorhees 1999, "The TREC-8 question answering track report");
- **NDCG@k**: DCG@k = Σ_{i=1..k} gain(ranked[i]) / log2(i + 1) over the top k, divided by the
  DCG@k of the engaged items in their ideal order; 0 when nothing was engaged (Järvelin &
  Kekäläinen 2002, "Cumulated gain-based evaluation of IR techniques", ACM TOIS 20(4), with
  linear gains as scikit-learn's ``ndcg_score``);
- **precision@k**: |top k ∩ engaged| / k (a list shorter than k is not rewarded for it).

Each metric is also a small mergeable mean, River style (``update`` returns self, ``get``
reads, ``+=`` merges partials), as are the mean reward (:class:`Reward`) and the tally of
interleaved comparisons (:class:`Preference`). :class:`RankingStats` keeps them all for one
arm (and segment), as :class:`~rollguard.stats.classification.ClassificationStats` does for
classifiers.

>>> ranked = ["a", "b", "c", "d"]
>>> hit_rate(ranked, ["c"], k=3), reciprocal_rank(ranked, ["c"], k=3)
(1.0, 0.3333333333333333)
>>> round(ndcg(ranked, {"c": 3.0, "z": 1.0}, k=3), 4), precision(ranked, ["c", "d"], k=2)
(0.4131, 0.0)
>>> stats = NDCG(k=3).update(ranked, ["a"]).update(ranked, ["z"])
>>> stats.get(), (stats + NDCG(k=3).update(ranked, ["a"])).n
(0.5, 3)
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Self

from rollguard.stats.base import Statistic, ratio
from rollguard.stats.counts import Average

Engaged = Collection[str] | Mapping[str, float]

#: the per-request metrics by the name an experiment file gives them
RANKING_METRICS = ("hit_rate_at_k", "reciprocal_rank", "ndcg_at_k", "precision_at_k")

_DISCOUNTS: list[float] = []


def _discount(position: int) -> float:
    """1 / log2(position + 2) for a 0-based position, cached."""
    while len(_DISCOUNTS) <= position:
        _DISCOUNTS.append(1.0 / math.log2(len(_DISCOUNTS) + 2))
    return _DISCOUNTS[position]


def _gain_of(engaged: Engaged):
    if isinstance(engaged, Mapping):
        return engaged.get
    found = engaged if isinstance(engaged, (set, frozenset, dict)) else set(engaged)
    return lambda item: 1.0 if item in found else None


def hit_rate(ranked: Sequence[str], engaged: Engaged, k: int) -> float:
    """1.0 when an engaged item is among the top ``k`` of ``ranked``, else 0.0.

    >>> hit_rate(["a", "b"], ["b"], k=1), hit_rate(["a", "b"], ["b"], k=2)
    (0.0, 1.0)
    """
    gain = _gain_of(engaged)
    return 1.0 if any(gain(item) for item in ranked[:k]) else 0.0


def reciprocal_rank(ranked: Sequence[str], engaged: Engaged, k: int) -> float:
    """1 / the rank of the first engaged item in the top ``k``, else 0.0.

    >>> reciprocal_rank(["a", "b", "c"], ["c", "b"], k=3)
    0.5
    """
    gain = _gain_of(engaged)
    for position, item in enumerate(ranked[:k]):
        if gain(item):
            return 1.0 / (position + 1)
    return 0.0


def ndcg(ranked: Sequence[str], engaged: Engaged, k: int) -> float:
    """NDCG@k with linear gains (1 per engaged item when ``engaged`` is not a mapping).

    >>> ndcg(["a", "b"], ["a"], k=2), round(ndcg(["b", "a"], ["a"], k=2), 4)
    (1.0, 0.6309)
    >>> ndcg(["a", "b"], [], k=2)
    0.0
    """
    gains = engaged.values() if isinstance(engaged, Mapping) else [1.0] * len(engaged)
    ideal = sorted((g for g in gains if g > 0), reverse=True)[:k]
    if not ideal:
        return 0.0
    best = math.fsum(g * _discount(i) for i, g in enumerate(ideal))
    gain = _gain_of(engaged)
    dcg = math.fsum((gain(item) or 0.0) * _discount(i) for i, item in enumerate(ranked[:k]))
    return min(1.0, dcg / best)


def precision(ranked: Sequence[str], engaged: Engaged, k: int) -> float:
    """The share of the ``k`` positions that hold an engaged item.

    >>> precision(["a", "b", "c"], ["a", "c"], k=4)
    0.5
    """
    gain = _gain_of(engaged)
    return sum(1 for item in ranked[:k] if gain(item)) / k


#: metric name -> per-request function(ranked, engaged, k)
PER_REQUEST = {"hit_rate_at_k": hit_rate, "reciprocal_rank": reciprocal_rank,
               "ndcg_at_k": ndcg, "precision_at_k": precision}


def ranking_value(metric: str, ranked: Sequence[str], engaged: Engaged, k: int) -> float:
    """The per-request value of ``metric`` (one of :data:`RANKING_METRICS`).

    >>> ranking_value("reciprocal_rank", ["a", "b"], {"b": 2.0}, k=10)
    0.5
    """
    try:
        function = PER_REQUEST[metric]
    except KeyError:
        raise ValueError(f"unknown ranking metric {metric!r}; known: "
                         f"{', '.join(RANKING_METRICS)}") from None
    return function(ranked, engaged, k)


class _MeanAtK(Statistic):
    """The mean of one per-request ranking metric at depth ``k``: a count and a sum."""

    TYPE: ClassVar[str] = ""
    METRIC: ClassVar[str] = ""

    def __init__(self, k: int = 10) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        self.k = k
        self.n = 0
        self.total = 0.0

    def update(self, ranked: Sequence[str], engaged: Engaged) -> Self:
        self.n += 1
        self.total += PER_REQUEST[self.METRIC](ranked, engaged, self.k)
        return self

    def get(self) -> float | None:
        return ratio(self.total, self.n)

    def merge(self, other: Self) -> Self:
        self._check_same_kind(other, "k")
        self.n += other.n
        self.total += other.total
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, "k": self.k, "n": self.n, "total": self.total}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls(int(d["k"]))
        new.n, new.total = int(d["n"]), float(d["total"])
        return new


class HitRate(_MeanAtK):
    """Hit rate@k: the share of requests with an engaged item in the top k.

    >>> HitRate(k=2).update(["a", "b", "c"], ["c"]).update(["a", "b"], ["b"]).get()
    0.5
    """

    TYPE = "hit_rate"
    METRIC = "hit_rate_at_k"


class ReciprocalRank(_MeanAtK):
    """MRR@k: the mean of 1 / rank of the first engaged item (0 when none is in the top k;
    Voorhees 1999).

    >>> ReciprocalRank(k=5).update(["a", "b"], ["b"]).update(["a", "b"], ["a"]).get()
    0.75
    """

    TYPE = "reciprocal_rank"
    METRIC = "reciprocal_rank"


class NDCG(_MeanAtK):
    """Mean NDCG@k, linear gains and a log2 discount (Järvelin & Kekäläinen 2002).

    >>> round(NDCG(k=3).update(["a", "b", "c"], {"c": 2.0, "a": 1.0}).get(), 4)
    0.7602
    """

    TYPE = "ndcg"
    METRIC = "ndcg_at_k"


class PrecisionAtK(_MeanAtK):
    """Mean precision@k: engaged items in the top k, over k.

    >>> PrecisionAtK(k=4).update(["a", "b", "c", "d"], ["b", "d", "x"]).get()
    0.5
    """

    TYPE = "precision_at_k"
    METRIC = "precision_at_k"


class Reward(Average):
    """The mean business reward of the served lists (revenue, watch time): an :class:`Average`.

    >>> Reward().update(12.5).update(0.0).get()
    6.25
    """

    TYPE = "reward"


class Preference(Statistic):
    """The tally of interleaved comparisons of a candidate with the champion.

    Each request whose user engaged with an item of the interleaved list is a **win** for the
    candidate when its team placed more of the engaged items, a **loss** when the champion's
    did, a **tie** otherwise; requests without engagement are counted apart (they say
    nothing). ``get()`` gives the counts, the candidate's share of credited items and the
    preference (wins − losses) / (wins + losses + ties), which is 2 Δ_AB of Chapelle,
    Joachims, Radlinski & Yue (2012), "Large-scale validation and analysis of interleaved
    search evaluation", ACM TOIS 30(1).

    >>> tally = Preference().update(2, 1).update(0, 1).update(1, 1).update(0, 0)
    >>> {k: tally.get()[k] for k in ("wins", "losses", "ties", "no_engagement", "preference")}
    {'wins': 1, 'losses': 1, 'ties': 1, 'no_engagement': 1, 'preference': 0.0}
    """

    TYPE = "preference"

    def __init__(self) -> None:
        self.wins = self.losses = self.ties = self.no_engagement = 0
        self.candidate_items = self.champion_items = 0

    def update(self, candidate_items: int, champion_items: int) -> Self:
        """One request: how many engaged items each team placed."""
        self.candidate_items += candidate_items
        self.champion_items += champion_items
        if candidate_items == champion_items == 0:
            self.no_engagement += 1
        elif candidate_items > champion_items:
            self.wins += 1
        elif candidate_items < champion_items:
            self.losses += 1
        else:
            self.ties += 1
        return self

    def get(self) -> dict[str, Any]:
        compared = self.wins + self.losses + self.ties
        return {"compared": compared, "wins": self.wins, "losses": self.losses,
                "ties": self.ties, "no_engagement": self.no_engagement,
                "candidate_share": ratio(self.candidate_items,
                                         self.candidate_items + self.champion_items),
                "preference": ratio(self.wins - self.losses, compared)}

    def merge(self, other: Preference) -> Self:
        self._check_same_kind(other)
        for name in _PREFERENCE_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, **{name: getattr(self, name) for name in _PREFERENCE_FIELDS}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls()
        for name in _PREFERENCE_FIELDS:
            setattr(new, name, int(d[name]))
        return new


_PREFERENCE_FIELDS = ("wins", "losses", "ties", "no_engagement", "candidate_items",
                      "champion_items")


class RankingStats(Statistic):
    """Every ranking metric of one arm (and segment) at depth ``k``, and its mean reward.

    ``update(ranked, engaged, reward=None)`` per labelled outcome; ``get()`` gives ``count``,
    one value per metric under its experiment-file name, ``reward`` (the mean of the rewards
    given, None before any), ``rewarded`` and ``mean_length`` (of the ranked lists).

    >>> stats = RankingStats(k=2).update(["a", "b", "c"], ["b"], reward=3.0)
    >>> stats = stats.update(["a", "b"], [])
    >>> figures = stats.get()
    >>> figures["count"], figures["hit_rate_at_k"], figures["reciprocal_rank"], figures["reward"]
    (2, 0.5, 0.25, 3.0)
    """

    TYPE = "ranking"

    def __init__(self, k: int = 10) -> None:
        self.metrics = {"hit_rate_at_k": HitRate(k), "reciprocal_rank": ReciprocalRank(k),
                        "ndcg_at_k": NDCG(k), "precision_at_k": PrecisionAtK(k)}
        self.reward = Reward()
        self.length = Average()

    @property
    def k(self) -> int:
        return self.metrics["ndcg_at_k"].k

    def update(self, ranked: Sequence[str], engaged: Engaged, reward: float | None = None
               ) -> Self:
        for stat in self.metrics.values():
            stat.update(ranked, engaged)
        if reward is not None:
            self.reward.update(float(reward))
        self.length.update(len(ranked))
        return self

    def get(self) -> dict[str, Any]:
        return {"count": self.length.n, **{name: s.get() for name, s in self.metrics.items()},
                "reward": self.reward.get(), "rewarded": self.reward.n,
                "mean_length": self.length.get()}

    def merge(self, other: RankingStats) -> Self:
        self._check_same_kind(other, "k")
        for name, stat in self.metrics.items():
            stat.merge(other.metrics[name])
        self.reward.merge(other.reward)
        self.length.merge(other.length)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.TYPE, "metrics": {n: s.to_dict() for n, s in self.metrics.items()},
                "reward": self.reward.to_dict(), "length": self.length.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        kinds = {c.METRIC: c for c in (HitRate, ReciprocalRank, NDCG, PrecisionAtK)}
        new = cls(int(d["metrics"]["ndcg_at_k"]["k"]))
        new.metrics = {name: kinds[name].from_dict(state) for name, state in d["metrics"].items()}
        new.reward = Reward.from_dict(d["reward"])
        new.length = Average.from_dict(d["length"])
        return new
