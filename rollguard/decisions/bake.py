"""The bake window: after ``promote``, the new champion must stay as good as the former one.

A promotion rests on what the analysis saw; production can still show what it did not (a
slow drift, a segment that only arrives at night, a dependency that breaks under full
load). With ``bake: {duration: 2h, min_samples: 2000}`` in the experiment file the rollout
goes on after ``promote``:

- the former champion keeps scoring every request in shadow mode, or keeps serving a
  ``holdback`` share (5 % by default) in the others;
- a fresh anytime-valid confidence sequence of Δ = new − former champion, started at the
  promotion, at the experiment's α, and every guardrail of the new champion against the
  former one are watched after every record;
- a breach (Δ below −margin with confidence, or a guardrail failing) emits ``rollback`` to
  the former champion, at once;
- once ``duration`` of event time has passed since the promotion and the new champion has
  ``min_samples`` labelled outcomes in the window, with no breach, ``complete`` ends the
  experiment. ``complete`` says no breach was *detected*: it claims no confidence that the
  new champion is as good (the promotion did that).

>>> from rollguard.schemas import parse_experiments
>>> [exp] = parse_experiments('''
... {name: e, task: binary, mode: ab, champion: m:1, candidates: [m:2],
...  primary: {metric: accuracy, margin: 0.01}, bake: {duration: 1h, holdback: 0.1}}''', "x.yaml")
>>> window = BakeWindow.open(exp, "m:2", since=100.0, delta_type=SplitDelta, bounds=(0.0, 1.0))
>>> window.routing(shadow_mode=False)
({'m:2': 0.9, 'm:1': 0.1}, [])
>>> window.due(100.0 + 3600)   # the time has come, the samples have not
False
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rollguard.decisions.actions import COMPLETE, ROLLBACK
from rollguard.decisions.guardrails import monitors_for
from rollguard.decisions.modes import pct, signed
from rollguard.decisions.tracks import PairedDelta, SplitDelta, Track
from rollguard.schemas.experiment import Experiment
from rollguard.stats.sequential import FAIL

if TYPE_CHECKING:
    from rollguard.decisions.policy import Policy
    from rollguard.schemas.events import ControlEvent


class BakeWindow:
    """The new champion (``winner``) against the former one, from the promotion on."""

    def __init__(self, experiment: Experiment, winner: str, since: float, track: Track) -> None:
        self.experiment = experiment
        self.winner = winner
        self.former = experiment.champion
        self.since = since
        self.track = track

    @classmethod
    def open(cls, experiment: Experiment, winner: str, since: float,
             delta_type: type[PairedDelta] | type[SplitDelta],
             bounds: tuple[float | None, float | None]) -> BakeWindow:
        bake = experiment.bake
        alpha = experiment.alpha  # one comparison now: the former champion is the control
        # Δ may change during the window (that is what it watches for): bounds for its
        # average since the promotion, valid while it moves
        delta = delta_type(alpha, bounds, 2 * bake.min_samples, float(experiment.primary.margin),
                           tracks_average=True)
        return cls(experiment, winner, since, Track(
            winner, delta, monitors_for(experiment, alpha, winner, tracks_average=True)))

    # -- the phase (decisions/phases.py) ------------------------------------------------------
    name = "bake"

    def tracks(self, policy: Policy) -> list[Track]:
        return [self.track]

    def rollback_subject(self, policy: Policy) -> str:
        return f"{self.winner} is rolled back to {self.former} during its bake window"

    def decide(self, policy: Policy, ts: float) -> list[ControlEvent]:
        """Roll back at a breach, complete when due."""
        track, winner, former = self.track, self.winner, self.former
        conf = pct(track.alpha)
        for monitor in track.monitors:
            if monitor.status() == FAIL:
                return [policy._final(ROLLBACK, ts, (
                    f"{self.rollback_subject(policy)}: guardrail {monitor.name} failed "
                    f"{monitor.confidence(conf)} ({monitor.explain()})."))]
        delta = track.delta
        lo, hi = delta.interval()
        if delta.side() < 0:
            return [policy._final(ROLLBACK, ts, (
                f"{self.rollback_subject(policy)}: its {policy.metric} is worse than "
                f"{former}'s by more than the margin {policy.margin:g} (Δ ≤ {signed(hi)} with "
                f"{conf} confidence, estimate {signed(delta.estimate())})."))]
        if self.due(ts):
            n = track.counts(former)
            return [policy._final(COMPLETE, ts, (
                f"{winner} completes its bake window: over {ts - self.since:.4g} s of event "
                f"time and {n[winner]} labelled outcomes ({former}: {n[former]}) no breach of "
                f"the margin {policy.margin:g} on {policy.metric} or of a guardrail was "
                f"detected (Δ in [{signed(lo)}, {signed(hi)}] with {conf} confidence)."), winner)]
        return []

    def routing(self, shadow_mode: bool) -> tuple[dict[str, float], list[str]]:
        """The new champion serves; the former one scores in shadow or keeps a holdback."""
        if shadow_mode:
            return {self.winner: 1.0}, [self.former]
        holdback = self.experiment.bake.holdback
        return {self.winner: round(1.0 - holdback, 6), self.former: holdback}, []

    def due(self, ts: float) -> bool:
        """True once the window's duration and samples are both reached."""
        bake = self.experiment.bake
        return ts - self.since >= bake.duration \
            and self.track.counts(self.former)[self.winner] >= bake.min_samples

    def evidence(self) -> dict[str, Any]:
        bake = self.experiment.bake
        return {"champion": self.winner, "former": self.former, "since": self.since,
                "duration": bake.duration, "min_samples": bake.min_samples,
                **self.track.evidence(self.former)}

    def to_dict(self) -> dict[str, Any]:
        return {"winner": self.winner, "since": self.since, "track": self.track.to_dict()}

    @classmethod
    def from_dict(cls, experiment: Experiment, d: dict[str, Any],
                  delta_type: type[PairedDelta] | type[SplitDelta],
                  bounds: tuple[float | None, float | None]) -> BakeWindow:
        window = cls.open(experiment, d["winner"], d["since"], delta_type, bounds)
        window.track.load(d["track"])
        return window
