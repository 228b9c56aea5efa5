"""Ranking metrics (rollguard.stats.ranking) against their definitions: NDCG against
scikit-learn's ``ndcg_score``, the others against direct numpy readings of their formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import ndcg_score

from rollguard.stats.ranking import (NDCG, HitRate, PrecisionAtK, Preference, RankingStats,
                                     ReciprocalRank, hit_rate, ndcg, precision, ranking_value,
                                     reciprocal_rank)

ITEMS = "abcdefghijkl"
ranked_lists = st.lists(st.sampled_from(ITEMS), min_size=1, max_size=10, unique=True)
graded = st.dictionaries(st.sampled_from(ITEMS + "xyz"), st.integers(1, 4).map(float),
                         max_size=5)


@settings(max_examples=300, deadline=None)
@given(ranked_lists, graded, st.integers(1, 12))
def test_ndcg_is_scikit_learns(ranked, gains, k):
    k = min(k, len(ranked))  # past the list, sklearn would rank the unlisted items too
    universe = sorted(set(ranked) | set(gains))
    y_true = np.array([[gains.get(item, 0.0) for item in universe]])
    # the list's order as scores; items it does not list below them all
    y_score = np.array([[len(ranked) - ranked.index(i) if i in ranked else -1.0
                         for i in universe]])
    if len(universe) < 2:
        return  # sklearn needs two documents
    expected = ndcg_score(y_true, y_score, k=k)
    assert math.isclose(ndcg(ranked, gains, k), expected, rel_tol=1e-12, abs_tol=1e-12)


@settings(max_examples=300, deadline=None)
@given(ranked_lists, st.lists(st.sampled_from(ITEMS + "xyz"), max_size=5, unique=True),
       st.integers(1, 12))
def test_hit_rate_reciprocal_rank_and_precision_follow_their_formulas(ranked, engaged, k):
    relevant = np.array([item in engaged for item in ranked[:k]], dtype=float)
    assert hit_rate(ranked, engaged, k) == float(relevant.any())
    first = np.flatnonzero(relevant)
    assert reciprocal_rank(ranked, engaged, k) == (1.0 / (first[0] + 1) if first.size else 0.0)
    assert precision(ranked, engaged, k) == relevant.sum() / k
    # a list of engaged items is the same as each with gain 1
    as_gains = dict.fromkeys(engaged, 1.0)
    for metric in ("hit_rate_at_k", "reciprocal_rank", "ndcg_at_k", "precision_at_k"):
        assert ranking_value(metric, ranked, engaged, k) == \
            ranking_value(metric, ranked, as_gains, k)


def test_the_values_of_known_lists():
    ranked = ["a", "b", "c", "d", "e"]
    assert ndcg(ranked, ["a"], 5) == 1.0
    assert ndcg(ranked, ["e"], 5) == pytest.approx(1 / math.log2(6))
    assert ndcg(ranked, ["z"], 5) == 0.0 and ndcg(ranked, [], 5) == 0.0
    assert ndcg(ranked, {"b": 3.0, "a": 1.0}, 2) == pytest.approx(
        (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3)))
    assert reciprocal_rank(ranked, ["d", "z"], 3) == 0.0 and hit_rate(ranked, ["d"], 3) == 0.0
    assert precision(["a"], ["a"], 5) == 0.2, "a short list is not rewarded for being short"


def test_the_means_and_their_merge():
    requests = [(["a", "b", "c"], ["b"]), (["a", "b", "c"], []), (["c", "a"], {"a": 2.0})]
    for cls, metric in ((HitRate, "hit_rate_at_k"), (ReciprocalRank, "reciprocal_rank"),
                        (NDCG, "ndcg_at_k"), (PrecisionAtK, "precision_at_k")):
        whole = cls(k=2)
        for ranked, engaged in requests:
            whole.update(ranked, engaged)
        values = [ranking_value(metric, r, e, 2) for r, e in requests]
        assert whole.get() == pytest.approx(sum(values) / 3)
        parts = cls(k=2).update(*requests[0]) + cls(k=2).update(*requests[1]).update(*requests[2])
        assert parts.get() == pytest.approx(whole.get())
        with pytest.raises(ValueError, match="k=3"):
            cls(k=2).merge(cls(k=3))
    stats = RankingStats(k=2)
    for (ranked, engaged), reward in zip(requests, (5.0, None, 1.0)):
        stats.update(ranked, engaged, reward)
    figures = stats.get()
    assert figures["count"] == 3 and figures["reward"] == 3.0 and figures["rewarded"] == 2
    assert figures["hit_rate_at_k"] == pytest.approx(2 / 3)
    assert figures["mean_length"] == pytest.approx(8 / 3)


def test_preference_tally():
    tally = Preference()
    for cand, champ in ((2, 0), (1, 1), (0, 3), (0, 0), (1, 0)):
        tally.update(cand, champ)
    figures = tally.get()
    assert (figures["wins"], figures["losses"], figures["ties"], figures["no_engagement"]) == \
        (2, 1, 1, 1)
    assert figures["preference"] == 0.25 and figures["candidate_share"] == pytest.approx(4 / 8)
