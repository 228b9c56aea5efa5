"""Shadow pairs: a candidate and the champion scoring the same request.

Label-free proxies, on every pair of predictions: the agreement rate (same prediction) and the
Pearson correlation of their scores. On labelled pairs: the distribution (count, mean,
variance) of the per-request difference ``champion_loss - candidate_loss``, i.e. candidate
minus champion oriented so that higher is better for the candidate. Paired differences are
what make shadow comparisons need far fewer labels than an unpaired A/B test: their variance
excludes the request-to-request variation both models share.

>>> pair = PairStats()
>>> predictions = [(True, True, 0.9, 0.8), (False, True, 0.4, 0.6), (True, True, 0.7, 0.7)]
>>> for cand, champ, cand_score, champ_score in predictions:
...     _ = pair.update(cand, champ, cand_score, champ_score)
>>> _ = pair.update_outcome(candidate_loss=0.0, champion_loss=1.0).update_outcome(0.0, 0.0)
>>> result = pair.get()
>>> round(result["agreement"], 4), round(result["score_correlation"], 4)
(0.6667, 0.9934)
>>> result["outcomes"], result["difference_mean"], result["difference_variance"]
(2, 0.5, 0.5)
"""

from __future__ import annotations

from typing import Any, Self

from rollguard.stats.base import Statistic
from rollguard.stats.counts import Proportion
from rollguard.stats.moments import Correlation, MeanVariance


class PairStats(Statistic):
    """Candidate vs champion on the same requests.

    ``update(candidate_prediction, champion_prediction, candidate_score=None,
    champion_score=None)`` on every pair of predictions (scores correlate only when both are
    given); ``update_outcome(candidate_loss, champion_loss)`` once the label is known, with any
    per-request loss (lower is better), recording ``champion_loss - candidate_loss``.
    """

    TYPE = "pair"

    def __init__(self) -> None:
        self.agreement = Proportion()
        self.score_correlation = Correlation()
        self.difference = MeanVariance()

    def update(
        self,
        candidate_prediction: Any,
        champion_prediction: Any,
        candidate_score: float | None = None,
        champion_score: float | None = None,
    ) -> Self:
        self.agreement.update(candidate_prediction == champion_prediction)
        if candidate_score is not None and champion_score is not None:
            self.score_correlation.update(candidate_score, champion_score)
        return self

    def update_outcome(self, candidate_loss: float, champion_loss: float) -> Self:
        self.difference.update(champion_loss - candidate_loss)
        return self

    def get(self) -> dict[str, Any]:
        difference = self.difference.get()
        return {
            "pairs": self.agreement.n,
            "agreement": self.agreement.get(),
            "score_pairs": self.score_correlation.n,
            "score_correlation": self.score_correlation.get(),
            "outcomes": difference["n"],
            "difference_mean": difference["mean"],
            "difference_variance": difference["variance"],
        }

    def merge(self, other: PairStats) -> Self:
        self._check_same_kind(other)
        self.agreement.merge(other.agreement)
        self.score_correlation.merge(other.score_correlation)
        self.difference.merge(other.difference)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "agreement": self.agreement.to_dict(),
            "score_correlation": self.score_correlation.to_dict(),
            "difference": self.difference.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        cls._check_type_tag(d)
        new = cls()
        new.agreement = Proportion.from_dict(d["agreement"])
        new.score_correlation = Correlation.from_dict(d["score_correlation"])
        new.difference = MeanVariance.from_dict(d["difference"])
        return new
