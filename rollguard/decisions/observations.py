"""What the policy reads off a joined record: per-arm losses, correctness, positives.


The primary metric is a per-request loss (lower is better; :mod:`rollguard.stats.losses`);
the policy works with its negative, a score where higher is better, so that
Δ = candidate − champion > 0 favours the candidate. A ranking task's metrics are gains
already (:mod:`rollguard.stats.ranking`, of the arm's list against the engaged items, or the
label's reward): they are the score as they are.

>>> from types import SimpleNamespace as Exp
>>> from rollguard.streams.records import ArmView
>>> exp = Exp(task="binary", primary=Exp(metric="accuracy", clip=None), is_positive=bool)
>>> reader = Reader(exp)
>>> reader.score(ArmView("m:1", True, True, 0.9, 5.0, None, 1.0), label=True)
0.0
>>> reader.score_bounds()
(-1.0, 0.0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rollguard.stats.losses import per_request_loss
from rollguard.stats.ranking import RANKING_METRICS, hit_rate, ranking_value

if TYPE_CHECKING:
    from rollguard.schemas.experiment import Experiment

#: what a ranking's prediction or label is (items, engaged items, item -> gain)
_RANKED = (list, dict)


class Reader:
    """Turns an arm's prediction and the label into the numbers the tests take."""

    def __init__(self, experiment: Experiment) -> None:
        self.task = experiment.task
        self.metric = experiment.primary.metric
        self.clip = experiment.primary.clip
        self.positive = experiment.is_positive
        self.binary = self.task == "binary"
        self.ranking = self.task == "ranking"
        self.k = experiment.ranking.k if self.ranking else 10

    def score_bounds(self) -> tuple[float, float] | tuple[None, None]:
        """Bounds of the per-request score (−loss): bounded metrics use the betting
        sequence (exact at −margin), unbounded ones the asymptotic one."""
        if self.metric in ("accuracy", "brier"):
            return (-1.0, 0.0)
        if self.metric in RANKING_METRICS or self.metric == "preference":
            return (0.0, 1.0)
        if self.clip is not None:
            return (-float(self.clip), 0.0)
        return (None, None)

    def loss(self, view, label) -> float | None:
        """The primary loss of one arm's prediction, or None if it has none to give (a
        ranking's items or engaged items sent to another task's experiment included)."""
        if view.error is not None or type(view.prediction) in _RANKED or type(label) in _RANKED:
            return None
        metric = self.metric
        try:
            if metric in ("log_loss", "brier"):
                if view.score is None:
                    return None
                loss = per_request_loss(metric, self.positive(label), score=view.score)
            elif view.prediction is None:
                return None
            elif self.binary:
                loss = per_request_loss(metric, self.positive(label), self.positive(view.prediction))
            else:
                loss = per_request_loss(metric, label, view.prediction)
        except (TypeError, ValueError):  # e.g. a regression label that is not a number
            return None
        if self.clip is not None and loss > self.clip:
            loss = float(self.clip)
        return loss

    def score(self, view, label, reward: float | None = None) -> float | None:
        """The primary metric's per-request score (higher is better) of one arm, or None."""
        if self.ranking:
            return self.ranking_score(self.metric, view, label, reward)
        loss = self.loss(view, label)
        return None if loss is None else (-loss if loss else 0.0)

    def ranking_score(self, metric: str, view, label, reward: float | None = None
                      ) -> float | None:
        """A ranking metric of the arm's list, or the reward (default: a hit in its top k);
        None when the arm has no list or the label no engaged items."""
        if view.error is not None or not isinstance(view.prediction, list) \
                or not isinstance(label, (list, dict)):
            return None
        if metric == "reward":
            return float(reward) if reward is not None else hit_rate(view.prediction, label,
                                                                      self.k)
        return ranking_value(metric, view.prediction, label, self.k)

    def correct(self, view, label) -> bool:
        if self.ranking:  # a hit in the top k
            return isinstance(view.prediction, list) and isinstance(label, (list, dict)) \
                and hit_rate(view.prediction, label, self.k) > 0
        if self.binary:
            return self.positive(view.prediction) == self.positive(label)
        return view.prediction == label

    def predicted_positive(self, view) -> bool:
        return self.positive(view.prediction) if self.binary else False

    def actual_positive(self, label) -> bool:
        return self.positive(label) if self.binary else False

    def reward(self, record, view) -> float | None:
        """Bandit reward of the served arm: the label's ``reward`` if given, else 1 when the
        served prediction was correct (classification; ranking: an engaged item in the top
        k) or −loss (regression)."""
        if record.reward is not None:
            return float(record.reward)
        if view.error is not None or view.prediction is None:
            return 0.0 if self.task != "regression" else None
        if self.task == "regression":
            return self.score(view, record.label)
        return 1.0 if self.correct(view, record.label) else 0.0
