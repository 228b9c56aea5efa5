"""Guardrails: one monitor per guardrail of the experiment file and candidate.

Each feeds an anytime-valid test of :mod:`rollguard.stats.sequential` from the ordered
records and answers ``pass`` (holds with confidence), ``fail`` (breached with confidence) or
``undecided``. They run at the candidate's α (the experiment's α, Bonferroni-split across
candidates), like the primary metric.

- ``latency_pXX_ms``: ``max_ratio`` → a two-sample test of the quantile ratio itself
  (:class:`QuantileRatioGuardrail`, Howard & Ramdas 2022); ``max`` → the candidate's
  quantile CS against a limit.
- ``error_rate``: ``max`` → mean of the candidate's error indicator; ``max_diff`` → its
  difference to the champion's (independent streams).
- ``precision``/``recall``/``accuracy`` (optionally in a ``segment``): ``min`` → the mean of
  "correct" over the candidate's predicted positives (precision), of "predicted positive"
  over actual positives (recall), of "correct" over all (accuracy); multiclass precision and
  recall are micro-averaged, i.e. accuracy. Restricting a stream to the requests that match
  a condition known when they arrive keeps the sequence anytime-valid (optional sampling of
  an i.i.d. stream is again i.i.d.).
- ``agreement``: ``min`` → mean of "same prediction as the champion" (label-free proxy).
- ``hit_rate_at_k``/``reciprocal_rank``/``ndcg_at_k``/``precision_at_k``/``reward``
  (ranking tasks, optionally in a ``segment``): ``min`` → the mean of the per-request metric
  of the candidate's own lists (bounded in [0, 1]; the reward unbounded, with the
  asymptotic sequence).
- ``srm``: sample-ratio mismatch of the served split against the published traffic
  (Lindon & Malek 2022 e-process); one per experiment.
- ``score_psi`` / ``score_ks``: ``max`` → drift of the candidate's scores against its first
  ``reference.n`` scores, or against its scores in the experiment's ``reference.file``
  (label-free proxy). ``score_ks``: anytime-valid bounds on the KS distance
  (:class:`KSDistanceCS`: DKW on the reference, Howard & Ramdas 2022 on the current scores).
  ``score_psi``: a heuristic point estimate without an error guarantee, undecided until the
  reference and as many current scores are in, then pass or fail; its failure says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rollguard.stats import Drift
from rollguard.streams.reference import reference_of
from rollguard.stats.sequential import (
    FAIL,
    PASS,
    UNDECIDED,
    DiffThresholdTest,
    KSDistanceCS,
    QuantileCS,
    QuantileRatioGuardrail,
    SRMTest,
    ThresholdTest,
    from_dict,
)

if TYPE_CHECKING:
    from rollguard.schemas.experiment import Experiment

_QUANTILE = {"latency_p50_ms": 0.5, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}
_RANKING = ("hit_rate_at_k", "reciprocal_rank", "ndcg_at_k", "precision_at_k", "reward")


def _segment_text(segment) -> str:
    return "" if not segment else "[" + ",".join(f"{k}={v}" for k, v in segment.items()) + "]"


def _matches(record, segment) -> bool:
    if not segment:
        return True
    segments = record.segments or {}
    return all(segments.get(k) == v for k, v in segment.items())


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


class Monitor:
    """One guardrail of one candidate. Subclasses say what they feed and how they read."""

    kind = "monitor"

    def __init__(self, name: str, test: Any) -> None:
        self.name = name
        self.test = test
        self._status: str | None = None  # cached until the test takes a new value

    def _feed(self, *value: Any) -> None:
        self.test.update(*value)
        self._status = None

    def on_scored(self, record, cand, champ) -> None:
        pass

    def on_outcome(self, record, cand, champ, reader) -> None:
        pass

    def status(self) -> str:
        """``pass``, ``fail`` or ``undecided``; recomputed only after new values."""
        if self._status is None:
            self._status = self._compute_status()
        return self._status

    def _compute_status(self) -> str:
        return self.test.status()

    def failed(self) -> bool:
        """Whether the guardrail fails (the policy asks after every record)."""
        return self.status() == FAIL

    def confidence(self, pct: str) -> str:
        """How sure a failure is, for its reason: ``with 95% confidence`` where the test
        guarantees it; a heuristic says so instead."""
        return f"with {pct} confidence"

    def evidence(self) -> dict[str, Any]:
        return {"guardrail": self.name, "status": self.status(), **self.test.evidence()}

    def state(self) -> Any:
        return self.test.to_dict()

    def load(self, state: Any) -> None:
        self.test = from_dict(state)
        self._status = None

    def explain(self) -> str:
        """What the figures say, for a reason sentence."""
        lo, hi = self.test.interval()
        return f"{self.name}: the candidate's value lies in [{_fmt(lo)}, {_fmt(hi)}]"


class LatencyRatio(Monitor):
    def __init__(self, metric: str, max_ratio: float, alpha: float) -> None:
        super().__init__(f"{metric} <= {max_ratio:g} x champion",
                         QuantileRatioGuardrail(alpha, q=_QUANTILE[metric], max_ratio=max_ratio))

    def on_scored(self, record, cand, champ) -> None:
        if cand is not None and cand.latency_ms is not None:
            self._feed("candidate", cand.latency_ms)
        if champ is not None and champ.latency_ms is not None:
            self._feed("champion", champ.latency_ms)

    def failed(self) -> bool:
        # the ratio test settles "fail" alone; its pass statistic is read only to promote
        return self._status == FAIL if self._status is not None else self.test.failed()

    def explain(self) -> str:
        """The estimates and the e-value of the ratio test (a test of the ratio itself, not
        of two intervals: the per-arm intervals in the evidence may overlap when it fails)."""
        ev = self.test.evidence()
        passed = ev["status"] == PASS
        cand, champ = ev["arms"]["candidate"]["estimate"], ev["arms"]["champion"]["estimate"]
        return (f"{self.name}: the candidate's quantile ≈ {_fmt(cand)} ms, the champion's ≈ "
                f"{_fmt(champ)} ms (ratio {_fmt(ev['ratio_estimate'])}); the ratio test's "
                f"e-value for a ratio {'at or below' if passed else 'above'} "
                f"{ev['max_ratio']:g} is {_fmt(ev['e_pass' if passed else 'e_fail'])} "
                f"(decides at 1/alpha = {ev['threshold']:g})")


class LatencyMax(Monitor):
    def __init__(self, metric: str, limit: float, alpha: float) -> None:
        super().__init__(f"{metric} <= {limit:g} ms", QuantileCS(alpha, q=_QUANTILE[metric]))
        self.limit = limit

    def on_scored(self, record, cand, champ) -> None:
        if cand is not None and cand.latency_ms is not None:
            self._feed(cand.latency_ms)

    def _compute_status(self) -> str:
        lo, hi = self.test.interval()
        if lo > self.limit:
            return FAIL
        if hi <= self.limit:
            return PASS
        return UNDECIDED

    def evidence(self) -> dict[str, Any]:
        return {"guardrail": self.name, "status": self.status(), "limit_ms": self.limit,
                **self.test.evidence()}


class ErrorRateMax(Monitor):
    def __init__(self, limit: float, alpha: float, tracks_average: bool = False) -> None:
        super().__init__(f"error_rate <= {limit:g}", ThresholdTest(
            alpha, 0.0, 1.0, max=limit, tracks_average=tracks_average))

    def on_scored(self, record, cand, champ) -> None:
        if cand is not None:
            self._feed(1.0 if cand.error is not None else 0.0)


class ErrorRateDiff(Monitor):
    def __init__(self, limit: float, alpha: float, tracks_average: bool = False) -> None:
        super().__init__(f"error_rate <= champion + {limit:g}",
                         DiffThresholdTest(alpha, 0.0, 1.0, max=limit,
                                           tracks_average=tracks_average))

    def on_scored(self, record, cand, champ) -> None:
        if cand is not None:
            self._feed("candidate", 1.0 if cand.error is not None else 0.0)
        if champ is not None:
            self._feed("champion", 1.0 if champ.error is not None else 0.0)


class Quality(Monitor):
    """precision / recall / accuracy of the candidate, optionally within a segment."""

    def __init__(self, metric: str, limit: float, segment, alpha: float,
                 tracks_average: bool = False) -> None:
        super().__init__(f"{metric}{_segment_text(segment)} >= {limit:g}",
                         ThresholdTest(alpha, 0.0, 1.0, min=limit,
                                       tracks_average=tracks_average))
        self.metric, self.segment = metric, dict(segment) if segment else None

    def on_outcome(self, record, cand, champ, reader) -> None:
        if cand is None or cand.error is not None or cand.prediction is None:
            return
        if not _matches(record, self.segment):
            return
        label = record.label
        if self.metric == "accuracy" or not reader.binary:
            self._feed(1.0 if reader.correct(cand, label) else 0.0)
        elif self.metric == "precision":
            if reader.predicted_positive(cand):
                self._feed(1.0 if reader.actual_positive(label) else 0.0)
        elif reader.actual_positive(label):  # recall
            self._feed(1.0 if reader.predicted_positive(cand) else 0.0)


class RankingQuality(Monitor):
    """A ranking metric of the candidate's lists (or its reward), optionally in a segment."""

    def __init__(self, metric: str, limit: float, segment, alpha: float,
                 tracks_average: bool = False) -> None:
        bounds = (None, None) if metric == "reward" else (0.0, 1.0)
        super().__init__(f"{metric}{_segment_text(segment)} >= {limit:g}",
                         ThresholdTest(alpha, *bounds, min=limit, tracks_average=tracks_average))
        self.metric, self.segment = metric, dict(segment) if segment else None

    def on_outcome(self, record, cand, champ, reader) -> None:
        if cand is None or not _matches(record, self.segment):
            return
        value = reader.ranking_score(self.metric, cand, record.label, record.reward)
        if value is not None:
            self._feed(value)


class Agreement(Monitor):
    def __init__(self, limit: float, alpha: float, tracks_average: bool = False) -> None:
        super().__init__(f"agreement >= {limit:g}", ThresholdTest(
            alpha, 0.0, 1.0, min=limit, tracks_average=tracks_average))

    def on_scored(self, record, cand, champ) -> None:
        if cand is not None and champ is not None and cand.error is None and champ.error is None:
            self._feed(1.0 if cand.prediction == champ.prediction else 0.0)


class ScoreDrift(Monitor):
    """Drift of the candidate's scores from its reference (its first ``reference_n`` scores,
    or ``reference``, its scores in the experiment's reference file), against ``limit``.

    ``score_ks``: anytime-valid bounds on the KS distance at the candidate's ``alpha``
    (:class:`~rollguard.stats.sequential.KSDistanceCS`): fails when the lower bound exceeds
    the limit, passes when the upper bound is within it, each wrong with chance ≤ α however
    often it is read. ``score_psi``: a heuristic, the PSI point estimate (no bound is known
    that would hold here): undecided until the reference and as many current scores are in,
    then pass or fail by the estimate; :meth:`confidence` and the evidence's ``method`` say so.
    """

    kind = "drift"

    def __init__(self, metric: str, limit: float, reference_n: int,
                 reference: list[float] | None = None, alpha: float = 0.05) -> None:
        self.heuristic = metric == "score_psi"
        self.value_key = "psi" if self.heuristic else "ks"
        self.limit = limit
        self.alpha = alpha
        self.reference = list(reference) if reference else None
        self.reference_n = len(reference) if reference else reference_n
        super().__init__(f"{metric} <= {limit:g}", self._new_test())

    def _new_test(self) -> Any:
        if self.heuristic:
            return (Drift(reference=self.reference) if self.reference
                    else Drift(reference_size=self.reference_n))
        return KSDistanceCS(self.alpha, self.reference_n, self.reference, max=self.limit)

    def on_scored(self, record, cand, champ) -> None:
        if cand is not None and cand.score is not None:
            self._feed(cand.score)

    def value(self) -> float | None:
        """The point estimate (PSI, or the two-sample KS statistic); None until readable."""
        if not self.heuristic:
            return self.test.estimate()
        figures = self.test.get()
        if figures["current"] < self.reference_n:
            return None
        return figures[self.value_key]

    def _compute_status(self) -> str:
        if not self.heuristic:
            return self.test.status()
        value = self.value()
        if value is None:
            return UNDECIDED
        return FAIL if value > self.limit else PASS

    def confidence(self, pct: str) -> str:
        if self.heuristic:
            return "by its point estimate (a heuristic with no error guarantee)"
        return super().confidence(pct)

    def evidence(self) -> dict[str, Any]:
        if not self.heuristic:
            figures = self.test.evidence()
            figures.pop("status", None)
            figures.pop("limit", None)
            return {"guardrail": self.name, "status": self.status(), "limit": self.limit,
                    **figures}
        figures = self.test.get()
        return {"guardrail": self.name, "status": self.status(), "estimate": self.value(),
                "limit": self.limit, "reference": figures["reference"],
                "current": figures["current"],
                "method": "point estimate, no error guarantee (PSI against the reference: "
                          "a heuristic, no confidence bound)"}

    def load(self, state: Any) -> None:
        if self.heuristic:
            self.test = Drift.from_dict(state)
        elif state.get("type") == KSDistanceCS.TYPE:
            self.test = KSDistanceCS.from_dict(state)
        else:
            # a score_ks state saved before the bounds existed (a Drift sketch cannot give
            # them): the test starts afresh, its guarantee intact, its reference re-collected
            self.test = self._new_test()
        self._status = None

    def explain(self) -> str:
        if self.heuristic:
            return (f"{self.name}: the PSI of the candidate's scores is {_fmt(self.value())} "
                    f"(a point estimate)")
        lo, hi = self.test.interval()
        return (f"{self.name}: the KS distance of the candidate's scores from the reference "
                f"lies in [{_fmt(lo)}, {_fmt(hi)}] (estimate {_fmt(self.value())})")


class SampleRatio(Monitor):
    """Sample-ratio mismatch of the whole experiment (not per candidate)."""

    def __init__(self, alpha: float, shares: dict[str, float]) -> None:
        super().__init__("srm", SRMTest(alpha, shares=dict(shares)))

    def on_served(self, arm: str) -> None:
        self._feed(arm)

    def set_shares(self, shares: dict[str, float]) -> None:
        self.test.set_shares({a: s for a, s in shares.items() if s > 0})
        self._status = None

    def explain(self) -> str:
        return (f"srm: the served split does not match the published traffic "
                f"(e-value {self.test.e_value:.3g} >= 1/alpha)")


def monitors_for(experiment: Experiment, alpha: float, arm: str, *,
                 tracks_average: bool = False) -> list[Monitor]:
    """The monitors of ``experiment``'s guardrails for candidate ``arm``, in file order.

    ``tracks_average`` (the bake window, where the new champion may change): the rate
    guardrails (error rate, precision, recall, accuracy, agreement) bound the average since
    they started, valid while it moves. The latency and drift guardrails keep their tests.
    """
    mean = {"tracks_average": tracks_average}
    monitors: list[Monitor] = []
    reference_n = (experiment.reference.n if experiment.reference and experiment.reference.n
                   else 1000)
    file_reference = reference_of(experiment)
    score_reference = file_reference.scores.get(arm) if file_reference is not None else None
    for g in experiment.guardrails:
        m = g.metric
        if m in _QUANTILE:
            if g.max_ratio is not None:
                monitors.append(LatencyRatio(m, g.max_ratio, alpha))
            if g.max is not None:
                monitors.append(LatencyMax(m, g.max, alpha))
        elif m == "error_rate":
            if g.max is not None:
                monitors.append(ErrorRateMax(g.max, alpha, **mean))
            if g.max_diff is not None:
                monitors.append(ErrorRateDiff(g.max_diff, alpha, **mean))
        elif m in ("precision", "recall", "accuracy"):
            monitors.append(Quality(m, g.min, g.segment, alpha, **mean))
        elif m == "agreement":
            monitors.append(Agreement(g.min, alpha, **mean))
        elif m in _RANKING:
            monitors.append(RankingQuality(m, g.min, g.segment, alpha, **mean))
        elif m in ("score_psi", "score_ks"):
            monitors.append(ScoreDrift(m, g.max, reference_n, score_reference, alpha))
    return monitors


def wants_srm(experiment: Experiment) -> bool:
    return any(g.metric == "srm" for g in experiment.guardrails)
