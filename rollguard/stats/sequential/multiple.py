"""Several candidates at once (A/B/C…): control the family-wise error across them.

Bonferroni over time-uniform guarantees. Give each of the k candidate-vs-champion comparisons
level α/k — its primary confidence sequence *and* its guardrails (docs/design.md: guardrails are
tested at the same α as the primary metric). Each comparison's sequence misses, at any time
at all, with chance ≤ α/k, so by the union bound

    P(some comparison's sequence ever misses) ≤ k · α/k = α,

whatever the dependence between comparisons (they share the champion's data) and however often
the policy looks or when it stops each arm. In particular the chance that *any* candidate whose
Δ ≤ −δ is promoted is ≤ α/2 (promotion uses one side). Why Bonferroni: it is exact for
anytime-valid sequences without any assumption, and with a handful of candidates its cost is
small (log(2k/α) grows slowly: k = 3 at α = 0.05 widens bounds by ~ 8 %). The α of a candidate
that was rolled back is not handed on to the others (that would need a closed-testing argument;
not done here).

>>> per_candidate_alpha(0.05, ["churn:7", "churn:8", "churn:9"])
{'churn:7': 0.016666666666666666, 'churn:8': 0.016666666666666666, 'churn:9': 0.016666666666666666}
>>> bonferroni_alpha(0.05, 1)
0.05
"""

from __future__ import annotations

from collections.abc import Iterable

from rollguard.stats.sequential._base import check_alpha


def bonferroni_alpha(alpha: float, comparisons: int) -> float:
    """Level of each of ``comparisons`` tests so that their family-wise error is ≤ ``alpha``."""
    alpha = check_alpha(alpha)
    if int(comparisons) != comparisons or comparisons < 1:
        raise ValueError(f"comparisons must be a positive integer, got {comparisons!r}")
    return alpha / int(comparisons)


def per_candidate_alpha(alpha: float, candidates: Iterable[str]) -> dict[str, float]:
    """The α each candidate's tests (primary and guardrails) must use: Bonferroni α/k."""
    names = list(dict.fromkeys(candidates))
    if not names:
        raise ValueError("need at least one candidate")
    each = bonferroni_alpha(alpha, len(names))
    return {name: each for name in names}
