"""The descriptive statistics of one experiment, built from joined records.

Per arm: serving figures on every scored request (latency quantiles, error rate, served
count) and, on labelled outcomes, the task's metrics (accuracy, precision, recall, log-loss,
Brier, ROC AUC, calibration; or MAE/MSE; or the ranking metrics and reward of the arm's
lists), overall and per segment value; per candidate the pair figures against the champion
(agreement, score correlation, per-request loss differences of the primary metric; in
interleave mode the tally of interleaved comparisons); the label delay distribution; hourly
event-time
buckets of the primary loss per arm; drift of each arm's scores and of the requests'
numeric features against a reference.

Every part is a mergeable statistic of :mod:`rollguard.stats`, so each join partition keeps
a partial (a delta between checkpoints) and the evaluator adds them up per experiment.
Score drift is the exception: its reference is the experiment's first N scores in event
time, so the evaluator feeds it from the ordered records (:meth:`on_ordered_scored`).
Feature drift is fed from the requests as each join partition reads them, so its reference
is "the first N requests of each partition": a partition's deltas keep taking reference
values until its budget (``reference_left``, kept across deltas) is spent.

>>> from types import SimpleNamespace as Exp
>>> from rollguard.streams.records import ArmView, JoinedRecord, OUTCOME
>>> exp = Exp(name="e", task="binary", arms=("m:1", "m:2"), champion="m:1",
...           primary=Exp(metric="accuracy"), segments=(), is_positive=bool)
>>> views = (ArmView("m:1", True, True, 0.9, 5.0, None, 1.0),
...          ArmView("m:2", False, False, 0.4, 7.0, None, 1.0))
>>> stats = ExperimentStats(exp).on_record(JoinedRecord(OUTCOME, 2.0, "r", "e", None,
...                                        {"tier": "vip"}, views, True, 2.0))
>>> stats.get()["arms"]["m:2"]["outcomes"]["accuracy"]
0.0
>>> stats.get()["pairs"]["m:2"]["difference_mean"]    # champion loss - candidate loss
-1.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rollguard.stats import (
    ClassificationStats,
    DelayStats,
    Drift,
    FeatureDrift,
    Hourly,
    MeanVariance,
    PairStats,
    Preference,
    RankingStats,
    RegressionStats,
    ServingStats,
    from_dict,
    per_request_loss,
)
from rollguard.serving.interleaving import credit, team_draft
from rollguard.stats.ranking import PER_REQUEST
from rollguard.streams.records import FIRST, OUTCOME, JoinedRecord
from rollguard.streams.reference import reference_of

if TYPE_CHECKING:
    from rollguard.schemas.experiment import Experiment

FEATURES = "__features__"
_RANKED = (list, dict)  # a ranking's items or engaged items
#: at most this many values per segment key get statistics of their own; the rest share one
MAX_SEGMENT_VALUES = 50
OTHER = "__other__"


def _loss_of(metric: str, task: str, positive, view, label, k: int = 10,
             reward: float | None = None) -> float | None:
    """The primary metric's per-request loss of one arm, or None when it cannot be had (a
    ranking metric's loss is minus its value; the reward's, minus the reward)."""
    if task == "ranking":
        ranked = view.prediction
        if view.error is not None or not isinstance(ranked, list) \
                or not isinstance(label, (list, dict)):
            return None
        if metric == "reward":
            return None if reward is None else -float(reward)
        function = PER_REQUEST.get(metric)
        return None if function is None else -function(ranked, label, k)
    if view.error is not None or view.prediction is None and metric in ("accuracy", "abs_error",
                                                                        "sq_error"):
        return None
    if type(view.prediction) in (list, dict) or type(label) in (list, dict):
        return None  # a ranking's items or engaged items, sent to another task's experiment
    if metric in ("log_loss", "brier"):
        if view.score is None:
            return None
        return per_request_loss(metric, positive(label), score=view.score)
    if metric == "accuracy" and task == "binary":
        return per_request_loss(metric, positive(label), positive(view.prediction))
    try:
        return per_request_loss(metric, label, view.prediction)
    except (TypeError, ValueError):  # a regression label or prediction that is not a number
        return None


class ExperimentStats:
    """A mergeable bundle of one experiment's descriptive statistics."""

    def __init__(self, experiment: Experiment, *, reference_left: dict[str, int] | None = None,
                 reference_n: int = 1000) -> None:
        self.experiment = experiment
        self.task = experiment.task
        self.metric = experiment.primary.metric
        self.champion = experiment.champion
        self.positive = experiment.is_positive
        self.segment_keys = tuple(experiment.segments or ())
        ranking = getattr(experiment, "ranking", None)
        self.k = ranking.k if ranking is not None else 10
        self.interleaved = getattr(experiment, "mode", None) == "interleave"
        configured = getattr(experiment, "reference", None)
        self.reference_n = configured.n if configured is not None and configured.n else reference_n
        self.file_reference = reference_of(experiment)
        self.reference_left = reference_left if reference_left is not None else {}
        self.serving: dict[str, ServingStats] = {}
        self.outcomes: dict[str, Any] = {}
        self.segments: dict[str, dict[str, dict[str, Any]]] = {}
        self.pairs: dict[str, PairStats] = {}
        self.interleaving: dict[str, Preference] = {}
        self.delay = DelayStats()
        self.hourly: dict[str, Hourly] = {}
        self.score_drift: dict[str, Drift] = {}
        if self.file_reference is not None and self.file_reference.features:
            self.feature_drift = FeatureDrift(references=self.file_reference.features)
        else:
            self.feature_drift = FeatureDrift(self._budget(FEATURES))
        self.records = 0

    # -- updates ---------------------------------------------------------------------------
    def _budget(self, key: str) -> int:
        return self.reference_left.get(key, self.reference_n)

    def _score_drift(self, arm: str) -> Drift:
        file = self.file_reference
        if file is not None and file.scores.get(arm):
            return Drift(reference=file.scores[arm])
        return Drift(self.reference_n)

    def spend_reference(self) -> None:
        """Charge the reference values this partial took to ``reference_left``."""
        if self.feature_drift.fixed_features:
            return
        taken = max((d.reference.count for d in self.feature_drift.features.values()), default=0)
        self.reference_left[FEATURES] = max(0, self._budget(FEATURES) - taken)

    def _metrics(self) -> Any:
        if self.task == "regression":
            return RegressionStats()
        if self.task == "ranking":
            return RankingStats(self.k)
        return ClassificationStats(task=self.task)

    def _update_metrics(self, targets: list[Any], view, label, reward: float | None = None
                        ) -> None:
        """One outcome of an arm into ``targets``, its statistics overall and per segment
        (a binary outcome's classes are read once for all of them)."""
        ranked = type(view.prediction) is list
        if self.task == "ranking":
            if ranked and isinstance(label, (list, dict)):
                for stats in targets:
                    stats.update(view.prediction, label, reward)
            return
        if ranked or type(label) in (list, dict):
            return  # a ranking's items or engaged items, sent to another task's experiment
        if self.task == "regression":
            for stats in targets:
                try:
                    stats.update(float(label), float(view.prediction))
                except (TypeError, ValueError):
                    pass
        elif self.task == "binary":
            y_true, y_pred, score = self.positive(label), self.positive(view.prediction), view.score
            for stats in targets:
                stats.update(y_true, y_pred, score)
        else:
            for stats in targets:
                stats.update(label, view.prediction)

    def _segment_arms(self, segments: dict[str, str] | None) -> list[dict[str, Any]]:
        """The statistics by arm of each of a record's segment values that are kept (values
        beyond MAX_SEGMENT_VALUES of a key share OTHER's)."""
        out = []
        for key, value in (segments or {}).items():
            if self.segment_keys and key not in self.segment_keys:
                continue
            by_value = self.segments.setdefault(key, {})
            if value not in by_value and len(by_value) >= MAX_SEGMENT_VALUES:
                value = OTHER
            out.append(by_value.setdefault(value, {}))
        return out

    def on_record(self, record: JoinedRecord) -> "ExperimentStats":
        if record.kind == FIRST:
            return self
        self.records += 1
        if record.kind == OUTCOME:
            self._on_outcome(record)
        else:
            self._on_scored(record)
        return self

    def _on_scored(self, record: JoinedRecord) -> None:
        champion = record.view(self.champion)
        for view in record.arms:
            serving = self.serving.get(view.arm)
            if serving is None:
                serving = self.serving[view.arm] = ServingStats()
            serving.update(view.latency_ms, view.error is not None, view.served)
            if champion is not None and view is not champion and view.error is None \
                    and champion.error is None:
                pair = self.pairs.get(view.arm)
                if pair is None:
                    pair = self.pairs[view.arm] = PairStats()
                pair.update(view.prediction, champion.prediction, view.score, champion.score)

    def on_ordered_scored(self, record: JoinedRecord) -> None:
        """Score drift, fed by the evaluator in event-time order: the reference is then the
        experiment's first N scores, whatever the partitioning (the join partitions' deltas
        leave it alone)."""
        for view in record.arms:
            if view.score is not None:
                drift = self.score_drift.get(view.arm)
                if drift is None:
                    drift = self.score_drift[view.arm] = self._score_drift(view.arm)
                drift.update(view.score)

    def _on_outcome(self, record: JoinedRecord) -> None:
        label = record.label
        served = record.served_arm
        if served is not None and record.label_ts is not None:
            served_view = record.view(served)
            self.delay.update(max(0.0, record.label_ts - served_view.ts))
        losses: dict[str, float] = {}
        reward = record.reward
        if self.interleaved:
            self._interleaved(record)
        segment_arms = None  # looked up once per record (at its first arm with an outcome)
        binary_label = self.task == "binary" and type(label) not in _RANKED
        y_true = self.positive(label) if binary_label else None
        for view in record.arms:
            if view.error is not None or view.prediction is None:
                continue
            arm = view.arm
            stats = self.outcomes.get(arm)
            if stats is None:
                stats = self.outcomes[arm] = self._metrics()
            if segment_arms is None:
                segment_arms = self._segment_arms(record.segments)
            targets = [stats]
            for by_arm in segment_arms:
                seg = by_arm.get(arm)
                if seg is None:
                    seg = by_arm[arm] = self._metrics()
                targets.append(seg)
            if binary_label and type(view.prediction) not in _RANKED:
                # a binary outcome's classes are read once for its statistics and its loss
                y_pred, score = self.positive(view.prediction), view.score
                for stats in targets:
                    stats.update(y_true, y_pred, score)
                loss = self._binary_loss(y_true, y_pred, score, view, label)
            else:
                self._update_metrics(targets, view, label, reward)
                loss = _loss_of(self.metric, self.task, self.positive, view, label, self.k,
                                reward)
            if loss is not None:
                losses[arm] = loss
                hourly = self.hourly.get(arm)
                if hourly is None:
                    hourly = self.hourly[arm] = Hourly(MeanVariance)
                hourly.update(record.ts, loss)
        champion_loss = losses.get(self.champion)
        if champion_loss is not None:
            for arm, loss in losses.items():
                if arm != self.champion:
                    pair = self.pairs.get(arm)
                    if pair is None:
                        pair = self.pairs[arm] = PairStats()
                    pair.update_outcome(loss, champion_loss)

    def _binary_loss(self, y_true: bool, y_pred: bool, score: float | None, view,
                     label) -> float | None:
        """:func:`_loss_of` for a binary outcome whose classes are read already."""
        metric = self.metric
        if metric == "accuracy":
            return 0.0 if y_true == y_pred else 1.0
        if metric in ("log_loss", "brier"):
            return None if score is None else per_request_loss(metric, y_true, score=score)
        return _loss_of(metric, self.task, self.positive, view, label, self.k)

    def _interleaved(self, record: JoinedRecord) -> None:
        """Interleave mode: which ranker's items of the shown list the user engaged with."""
        served, engaged = record.served_arm, record.label
        if served is None or not isinstance(engaged, (list, dict)):
            return
        first = record.view(served)
        for view in record.arms:
            if view is first or type(view.prediction) is not list \
                    or type(first.prediction) is not list:
                continue
            shown = team_draft(first.prediction, view.prediction, record.experiment,
                               record.request_id)
            by_served, by_other = credit(shown, engaged)
            # the champion serves (in a bake window, the promoted candidate does)
            cand, champ = (by_other, by_served) if served == self.champion \
                else (by_served, by_other)
            arm = view.arm if served == self.champion else served
            tally = self.interleaving.get(arm)
            if tally is None:
                tally = self.interleaving[arm] = Preference()
            tally.update(cand, champ)

    def on_request(self, request: Any) -> "ExperimentStats":
        if request.features:
            self.feature_drift.update(request.features)
        return self

    # -- merge, read, save -----------------------------------------------------------------
    def empty(self) -> bool:
        return self.records == 0 and self.feature_drift.get() == {}

    def merge(self, other: "ExperimentStats") -> "ExperimentStats":
        self.records += other.records
        for mine, theirs in ((self.serving, other.serving), (self.outcomes, other.outcomes),
                             (self.pairs, other.pairs), (self.hourly, other.hourly),
                             (self.score_drift, other.score_drift),
                             (self.interleaving, other.interleaving)):
            _merge_into(mine, theirs)
        for key, by_value in other.segments.items():
            for value, by_arm in by_value.items():
                _merge_into(self.segments.setdefault(key, {}).setdefault(value, {}), by_arm)
        self.delay.merge(other.delay)
        self.feature_drift.merge(other.feature_drift)
        return self

    __iadd__ = merge

    def get(self) -> dict[str, Any]:
        arms = {}
        for arm in self.experiment.arms:
            arms[arm] = {
                "serving": self.serving[arm].get() if arm in self.serving else None,
                "outcomes": self.outcomes[arm].get() if arm in self.outcomes else None,
                "hourly_loss": self.hourly[arm].get() if arm in self.hourly else [],
                "score_drift": self.score_drift[arm].get() if arm in self.score_drift else None,
            }
        served_total = sum(s.served for s in self.serving.values())
        for arm, figures in arms.items():
            figures["served_share"] = (self.serving[arm].served / served_total
                                       if served_total and arm in self.serving else None)
        return {
            "records": self.records,
            "arms": arms,
            "segments": {key: {value: {arm: s.get() for arm, s in by_arm.items()}
                               for value, by_arm in by_value.items()}
                         for key, by_value in self.segments.items()},
            "pairs": {arm: pair.get() for arm, pair in self.pairs.items()},
            **({"interleaving": {arm: t.get() for arm, t in self.interleaving.items()}}
               if self.interleaved else {}),
            "label_delay": self.delay.get(),
            "feature_drift": self.feature_drift.get(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "serving": {a: s.to_dict() for a, s in self.serving.items()},
            "outcomes": {a: s.to_dict() for a, s in self.outcomes.items()},
            "segments": {k: {v: {a: s.to_dict() for a, s in by_arm.items()}
                             for v, by_arm in by_value.items()}
                         for k, by_value in self.segments.items()},
            "pairs": {a: s.to_dict() for a, s in self.pairs.items()},
            **({"interleaving": {a: s.to_dict() for a, s in self.interleaving.items()}}
               if self.interleaving else {}),
            "delay": self.delay.to_dict(),
            "hourly": {a: s.to_dict() for a, s in self.hourly.items()},
            "score_drift": {a: s.to_dict() for a, s in self.score_drift.items()},
            "feature_drift": self.feature_drift.to_dict(),
        }

    @classmethod
    def from_dict(cls, experiment: Experiment, d: dict[str, Any]) -> "ExperimentStats":
        new = cls(experiment, reference_left={})
        new.records = int(d["records"])
        new.serving = {a: from_dict(s) for a, s in d["serving"].items()}
        new.outcomes = {a: from_dict(s) for a, s in d["outcomes"].items()}
        new.segments = {k: {v: {a: from_dict(s) for a, s in by_arm.items()}
                            for v, by_arm in by_value.items()}
                        for k, by_value in d["segments"].items()}
        new.pairs = {a: from_dict(s) for a, s in d["pairs"].items()}
        new.interleaving = {a: from_dict(s) for a, s in d.get("interleaving", {}).items()}
        new.delay = from_dict(d["delay"])
        new.hourly = {a: from_dict(s) for a, s in d["hourly"].items()}
        new.score_drift = {a: from_dict(s) for a, s in d["score_drift"].items()}
        new.feature_drift = from_dict(d["feature_drift"])
        return new


def _merge_into(mine: dict, theirs: dict) -> None:
    for key, stat in theirs.items():
        if key in mine:
            mine[key].merge(stat)
        else:
            mine[key] = from_dict(stat.to_dict())
