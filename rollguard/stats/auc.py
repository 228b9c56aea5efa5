"""Mergeable ROC AUC from binned score histograms.

River's ``metrics.ROCAUC`` cannot be merged and reads slowly; this one keeps, for positives and
negatives, the count of scores in each of ``bins`` equal bins of [0, 1] (sparse: only bins that
were hit). Merging adds counts, so it is exact. The AUC is the Mann–Whitney statistic
(Hanley & McNeil 1982, "The meaning and use of the area under a ROC curve", Radiology 143)
computed on the binned scores: a positive–negative pair counts 1 when the positive's bin is
higher, 1/2 when both fall in the same bin.

Approximation error: only pairs in the same bin can be ordered wrongly, so
``|binned AUC - exact AUC| <= 1/2 * sum_b pos_b * neg_b / (P * N)``, which ``error_bound()``
reports (at most half the largest share of negatives in one bin; about 1/(2 * bins) for scores
spread over [0, 1]). Ties in the exact statistic also count 1/2, so tied scores add no error.

>>> auc = BinnedROCAUC()
>>> for y, score in [(True, 0.9), (False, 0.1), (True, 0.35), (False, 0.4)]:
...     _ = auc.update(y, score)
>>> auc.get()
0.75
>>> auc.error_bound()
0.0
"""

from __future__ import annotations

from typing import Any, Self

from rollguard.stats.base import Statistic


class BinnedROCAUC(Statistic):
    """ROC AUC of scores in [0, 1] on ``bins`` equal bins (None until both classes are seen).

    A score outside [0, 1] (or NaN) is refused with ValueError and changes nothing.

    >>> BinnedROCAUC(bins=10).update(True, 0.51).update(False, 0.55).get()
    0.5
    """

    TYPE = "roc_auc"

    def __init__(self, bins: int = 1000) -> None:
        if int(bins) != bins or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins!r}")
        self.bins = int(bins)
        self._last = self.bins - 1
        self.positive: dict[int, int] = {}  # bin -> count of positives
        self.negative: dict[int, int] = {}
        self.n_positive = 0
        self.n_negative = 0

    def update(self, y_true: bool, score: float) -> Self:
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"a score must be a probability in [0, 1], got {score!r}")
        b = int(score * self.bins)
        if b > self._last:  # score 1.0 goes to the last bin
            b = self._last
        if y_true:
            self.n_positive += 1
            counts = self.positive
        else:
            self.n_negative += 1
            counts = self.negative
        counts[b] = counts.get(b, 0) + 1
        return self

    def _pair_sums(self) -> tuple[int, int]:
        """(twice the Mann–Whitney count: 2 per ordered pair, 1 per same-bin pair;
        the number of same-bin pairs). Integers, so the AUC of merged partials is bit-exact."""
        below = 0
        twice_wins = 0
        same_bin_pairs = 0
        positive, negative = self.positive, self.negative
        for b in sorted(positive.keys() | negative.keys()):
            neg = negative.get(b, 0)
            pos = positive.get(b)
            if pos:
                twice_wins += pos * (below + below + neg)
                same_bin_pairs += pos * neg
            below += neg
        return twice_wins, same_bin_pairs

    def get(self) -> float | None:
        pairs = self.n_positive * self.n_negative
        if pairs == 0:
            return None
        return self._pair_sums()[0] / (2 * pairs)

    def error_bound(self) -> float | None:
        """Bound on ``|get() - exact Mann–Whitney AUC|`` (None when the AUC is undefined)."""
        pairs = self.n_positive * self.n_negative
        if pairs == 0:
            return None
        return self._pair_sums()[1] / (2 * pairs)

    def merge(self, other: BinnedROCAUC) -> Self:
        self._check_same_kind(other, "bins")
        for mine, theirs in ((self.positive, other.positive), (self.negative, other.negative)):
            for b, c in theirs.items():
                mine[b] = mine.get(b, 0) + c
        self.n_positive += other.n_positive
        self.n_negative += other.n_negative
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "bins": self.bins,
            "positive": [[b, self.positive[b]] for b in sorted(self.positive)],
            "negative": [[b, self.negative[b]] for b in sorted(self.negative)],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls(bins=d["bins"])
        new.positive = {int(b): int(c) for b, c in d["positive"]}
        new.negative = {int(b): int(c) for b, c in d["negative"]}
        new.n_positive = sum(new.positive.values())
        new.n_negative = sum(new.negative.values())
        return new
