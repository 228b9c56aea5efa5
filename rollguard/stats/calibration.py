"""Reliability bins and the expected calibration error of binary scores.

Scores in [0, 1] fall into ``bins`` equal bins; each bin keeps its count, the sum of its scores
and its count of positives. The expected calibration error is the count-weighted mean gap
between the mean score and the share of positives over the bins, as in Naeini, Cooper &
Hauskrecht (2015), "Obtaining well calibrated probabilities using Bayesian binning", AAAI, and
Guo et al. (2017), "On calibration of modern neural networks", ICML:
``ECE = sum_b (n_b / n) |mean_score_b - positive_rate_b| = sum_b |score_sum_b - positives_b| / n``.
Counts merge exactly; score sums are floats (rounding only).

>>> cal = Calibration(bins=2)
>>> for y, score in [(True, 0.9), (True, 0.7), (False, 0.2), (True, 0.1)]:
...     _ = cal.update(y, score)
>>> result = cal.get()
>>> round(result["ece"], 6)
0.275
>>> result["bins"][0]
{'lower': 0.0, 'upper': 0.5, 'count': 2, 'mean_score': 0.15000000000000002, 'positive_rate': 0.5}
"""

from __future__ import annotations

from typing import Any, Self

from rollguard.stats.base import Statistic, ratio


class Calibration(Statistic):
    """Reliability diagram bins and ECE (None before any observation).

    A score outside [0, 1] (or NaN) is refused with ValueError and changes nothing.
    """

    TYPE = "calibration"

    def __init__(self, bins: int = 10) -> None:
        if int(bins) != bins or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins!r}")
        self.bins = int(bins)
        self._last = self.bins - 1
        self.counts = [0] * self.bins
        self.positives = [0] * self.bins
        self.score_sums = [0.0] * self.bins

    def update(self, y_true: bool, score: float) -> Self:
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"a score must be a probability in [0, 1], got {score!r}")
        b = int(score * self.bins)
        if b > self._last:  # score 1.0 goes to the last bin
            b = self._last
        self.counts[b] += 1
        self.score_sums[b] += score
        if y_true:
            self.positives[b] += 1
        return self

    def get(self) -> dict[str, Any]:
        n = sum(self.counts)
        gap = sum(abs(s - p) for s, p in zip(self.score_sums, self.positives))
        return {
            "ece": ratio(gap, n),
            "bins": [
                {
                    "lower": b / self.bins,
                    "upper": (b + 1) / self.bins,
                    "count": self.counts[b],
                    "mean_score": ratio(self.score_sums[b], self.counts[b]),
                    "positive_rate": ratio(self.positives[b], self.counts[b]),
                }
                for b in range(self.bins)
            ],
        }

    def merge(self, other: Calibration) -> Self:
        self._check_same_kind(other, "bins")
        for b in range(self.bins):
            self.counts[b] += other.counts[b]
            self.positives[b] += other.positives[b]
            self.score_sums[b] += other.score_sums[b]
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "bins": self.bins,
            "counts": list(self.counts),
            "positives": list(self.positives),
            "score_sums": list(self.score_sums),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls(bins=d["bins"])
        new.counts = [int(c) for c in d["counts"]]
        new.positives = [int(c) for c in d["positives"]]
        new.score_sums = [float(s) for s in d["score_sums"]]
        if not len(new.counts) == len(new.positives) == len(new.score_sums) == new.bins:
            raise ValueError("calibration state: every list must have one entry per bin")
        return new
