"""The policy of one experiment: ordered records in, control events out (docs/design.md).

For the primary metric, Δ = candidate − champion of a per-request score (−loss), with an
anytime-valid confidence sequence [L, U] at the candidate's level (the experiment's α,
Bonferroni-split across candidates: :func:`~rollguard.stats.sequential.per_candidate_alpha`).
Shadow mode pairs both arms' scores of the same request; the other modes compare the arms'
independent outcomes. With margin δ:

- **promote** when L > −δ, every guardrail passes with confidence, and both arms have
  ``min_samples`` labelled outcomes (canary: after the last step; bandit: the same rule,
  while Thompson sampling allocates the traffic);
- **roll back** when U < −δ, or when a guardrail fails with confidence (several candidates:
  that one is dropped with ``set_traffic``; the last one dropped is a ``rollback``);
- **hold** when the candidates reach ``max_samples`` or the experiment ``max_duration`` of
  event time, undecided: the champion stays.

``start`` comes with the first record; canary steps and bandit allocations are
``set_traffic``. What differs between the modes (routing, what an outcome feeds, what
happens when a candidate may be promoted) lives in :mod:`rollguard.decisions.modes`; what
differs between the phases (the analysis in :mod:`rollguard.decisions.phases`, the bake
window in :mod:`rollguard.decisions.bake`) in the phase objects; the lifecycle (start, SRM,
a person's pause, the events and their ``seq``) lives here. Every event carries ``seq``, a ``reason`` naming the metric that decided it
and the ``evidence`` behind it; ``ts`` is the event time of the record that triggered it. A
final event is emitted once, and the policy decides nothing after it.

>>> from rollguard.schemas import parse_experiments
>>> from rollguard.streams.records import ArmView, JoinedRecord, OUTCOME, SCORED
>>> [exp] = parse_experiments('''
... {name: e, task: binary, mode: shadow, champion: m:1, candidates: [m:2],
...  primary: {metric: accuracy, margin: 0.0}, min_samples: 100}''', "doc.yaml")
>>> policy = Policy(exp)
>>> events = []
>>> for i in range(4000):
...     champion_right = i % 10 != 0          # the champion errs on 10%, the candidate never
...     views = (ArmView("m:1", True, champion_right, None, 1.0, None, i),
...              ArmView("m:2", False, True, None, 1.0, None, i))
...     events += policy.on_record(JoinedRecord(OUTCOME, i, f"r{i}", "e", None, None, views,
...                                             True, i))
>>> [(e.seq, e.action, e.champion) for e in events]
[(1, 'start', 'm:1'), (2, 'promote', 'm:2')]
>>> print(events[1].reason)  # doctest: +ELLIPSIS
m:2 is promoted: its accuracy is at least the champion's minus the margin 0 (Δ ≥ +0... with 95% confidence, ...
"""

from __future__ import annotations

from typing import Any

from rollguard.decisions.actions import (COMPLETE, FINAL, HOLD, PAUSE, PROMOTE, RESUME,  # noqa: F401
                                         ROLLBACK, SET_TRAFFIC, START)
from rollguard.decisions.bake import BakeWindow
from rollguard.decisions.phases import Analysis
from rollguard.decisions.guardrails import SampleRatio, monitors_for, wants_srm
from rollguard.decisions.modes import mode_for, pct, signed
from rollguard.decisions.observations import Reader
from rollguard.decisions.tracks import Track
from rollguard.schemas.events import ControlEvent
from rollguard.schemas.experiment import Experiment
from rollguard.stats.sequential import FAIL, PASS, per_candidate_alpha
from rollguard.streams.records import FIRST, OUTCOME, JoinedRecord

#: event time after a traffic change during which served arms are not checked for SRM: the
#: routers apply a change only after the join, the checkpoint and the control topic
SRM_GRACE_S = 30.0


class Policy:
    """The lifecycle of one experiment: start, the analysis of every candidate, the end."""

    def __init__(self, experiment: Experiment) -> None:
        exp = self.experiment = experiment
        self.reader = Reader(experiment)
        self.mode = mode_for(experiment)
        self.champion = exp.champion
        self.margin = float(exp.primary.margin)
        self.metric = exp.primary.metric
        alphas = per_candidate_alpha(exp.alpha, exp.candidates)
        bounds = self.reader.score_bounds()
        tuned_n = 2 * exp.min_samples
        self.tracks = {c: Track(c, self.mode.delta(alphas[c], bounds, tuned_n, self.margin),
                                monitors_for(exp, alphas[c], c))
                       for c in exp.candidates}
        self.traffic, self.shadow = self.mode.routing()
        self.srm = SampleRatio(exp.alpha, self.traffic) \
            if wants_srm(exp) and self.mode.splits_traffic else None
        self.srm_from = float("-inf")
        self.seq = 0
        self.records = 0
        self.start_ts: float | None = None
        self.final: dict[str, Any] | None = None
        self.last_reason: str | None = None
        #: the analysis, then (after a promotion with ``bake:``) the bake window
        self.phase: Analysis | BakeWindow = Analysis()
        #: event time of the last joined record taken (a manual event's ``ts``)
        self.last_ts: float | None = None
        #: who paused the experiment, why and when (``evidence.manual``), until resumed
        self.paused: dict[str, Any] | None = None

    @property
    def bake(self) -> BakeWindow | None:
        """The bake window while the new champion bakes, else None."""
        return self.phase if isinstance(self.phase, BakeWindow) else None

    def active_tracks(self) -> list[Track]:
        """The candidates under test: the phase says (the new champion alone while it bakes)."""
        return self.phase.tracks(self)

    # -- records --------------------------------------------------------------------------
    def on_record(self, record: JoinedRecord) -> list[ControlEvent]:
        if self.final is not None:
            return []
        events: list[ControlEvent] = []
        if self.start_ts is None:
            self.start_ts = record.ts
            events.append(self._event(START, record.ts, self.mode.start_reason(self)))
        if record.kind == FIRST:  # the first traffic of a join partition: nothing to count
            return events
        self.records += 1
        self.last_ts = record.ts
        if record.kind == OUTCOME:
            self._on_outcome(record)
        else:
            self._on_scored(record)
        events.extend(self._decide(record.ts))
        return events

    def _on_scored(self, record: JoinedRecord) -> None:
        champ = record.view(self.champion)
        for track in self.active_tracks():
            cand = record.view(track.arm)
            for monitor in track.monitors:
                monitor.on_scored(record, cand, champ)
        if self.srm is not None and record.ts >= self.srm_from:
            served = record.served_arm
            if served is not None:
                self.srm.on_served(served)

    def _on_outcome(self, record: JoinedRecord) -> None:
        self.mode.observe(self, record)
        champ = record.view(self.champion)
        for track in self.active_tracks():
            cand = record.view(track.arm)
            for monitor in track.monitors:
                monitor.on_outcome(record, cand, champ, self.reader)

    # -- decisions ------------------------------------------------------------------------
    def _decide(self, ts: float) -> list[ControlEvent]:
        if self.paused is not None:  # a person paused it: statistics count, nothing decides
            return []
        if self.srm is not None and self.srm.status() == FAIL:
            reason = (f"{self.phase.rollback_subject(self)}: guardrail srm failed with "
                      f"{pct(self.experiment.alpha)} confidence ({self.srm.explain()}).")
            return [self._final(ROLLBACK, ts, reason)]
        return self.phase.decide(self, ts)

    def best_of(self, ready: list[str]) -> str:
        """Of the candidates that may be promoted, the one with the highest lower bound."""
        return max(ready, key=lambda a: (self.tracks[a].delta.interval()[0], a))

    def promote(self, best: str, ts: float, reason: str | None = None) -> ControlEvent:
        """``best`` becomes the champion: the end, or the start of its bake window.
        ``reason``: its first clause (by default, the evidence that it won)."""
        if reason is None:
            delta = self.tracks[best].delta
            lo, _ = delta.interval()
            n = self.tracks[best].counts(self.champion)
            reason = (f"{best} is promoted: its {self.metric} is at least the champion's minus "
                      f"the margin {self.margin:g} (Δ ≥ {signed(lo)} with {pct(delta.alpha)} "
                      f"confidence, estimate {signed(delta.estimate())}, n = "
                      f"{n[self.champion]}/{n[best]}) and every guardrail passes")
        bake = self.experiment.bake
        if bake is None:
            return self._final(PROMOTE, ts, reason + ".", best)
        self.phase = BakeWindow.open(self.experiment, best, ts, self.mode.delta,
                                     self.reader.score_bounds())
        self.traffic, self.shadow = self.bake.routing(shadow_mode=not self.mode.splits_traffic)
        if self.srm is not None:
            self.srm.set_shares(self.traffic)
            self.srm_from = ts + self.experiment.allowed_lateness + SRM_GRACE_S
        keeps = (f"{self.champion} keeps scoring every request" if self.shadow else
                 f"{self.champion} keeps {100 * self.traffic[self.champion]:.4g}% of traffic")
        reason += (f"; it bakes for {bake.duration:g} s of event time and {bake.min_samples} "
                   f"labelled outcomes while {keeps}.")
        return self._event(PROMOTE, ts, reason, champion=best)

    def set_traffic(self, traffic: dict[str, float], ts: float, reason: str) -> ControlEvent:
        self.traffic = traffic
        if self.srm is not None:
            self.srm.set_shares(traffic)
            self.srm_from = ts + self.experiment.allowed_lateness + SRM_GRACE_S
        return self._event(SET_TRAFFIC, ts, reason)

    # -- events ---------------------------------------------------------------------------
    def _final(self, action: str, ts: float, reason: str, winner: str | None = None) -> ControlEvent:
        self.traffic, self.shadow = {winner or self.champion: 1.0}, []
        event = self._event(action, ts, reason, champion=winner or self.champion)
        self.final = {"action": action, "seq": event.seq, "ts": ts, "reason": reason,
                      "champion": event.champion}
        return event

    def _event(self, action: str, ts: float, reason: str, champion: str | None = None) -> ControlEvent:
        self.seq += 1
        self.last_reason = reason
        return ControlEvent(experiment=self.experiment.name, seq=self.seq, ts=ts, action=action,
                            mode=self.mode.name, champion=champion or self.champion,
                            traffic=dict(self.traffic), shadow=list(self.shadow),
                            reason=reason, evidence=self.evidence())

    def evidence(self) -> dict[str, Any]:
        exp = self.experiment
        out: dict[str, Any] = {
            "metric": self.metric, "alpha": exp.alpha, "margin": self.margin,
            "min_samples": exp.min_samples, "records": self.records,
            "candidates": {arm: t.evidence(self.champion) for arm, t in self.tracks.items()},
            "traffic": dict(self.traffic),
        }
        if self.srm is not None:
            out["srm"] = self.srm.evidence()
        out.update(self.mode.evidence())
        if self.bake is not None:
            out["bake"] = self.bake.evidence()
        if self.paused is not None:
            out["paused"] = dict(self.paused)
        return out

    def status(self) -> dict[str, Any]:
        """The decision state for the statistics snapshot."""
        champion = self.final["champion"] if self.final else \
            self.bake.winner if self.bake is not None else self.champion
        return {"seq": self.seq, "final": self.final, "last_reason": self.last_reason,
                "champion": champion, "paused": self.paused,
                "shadow": list(self.shadow), "evidence": self.evidence()}

    # -- state ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "tracks": {arm: t.to_dict() for arm, t in self.tracks.items()},
            "traffic": self.traffic, "shadow": self.shadow,
            "srm": self.srm.state() if self.srm is not None else None, "srm_from": self.srm_from,
            "seq": self.seq, "records": self.records, "start_ts": self.start_ts,
            "final": self.final, "last_reason": self.last_reason,
            "bake": self.bake.to_dict() if self.bake is not None else None,
            "last_ts": self.last_ts, "paused": self.paused,
            **self.mode.to_dict(),
        }

    @classmethod
    def from_dict(cls, experiment: Experiment, d: dict[str, Any]) -> Policy:
        new = cls(experiment)
        for arm, state in d["tracks"].items():
            new.tracks[arm].load(state)
        new.traffic, new.shadow = dict(d["traffic"]), list(d["shadow"])
        if new.srm is not None and d["srm"] is not None:
            new.srm.load(d["srm"])
        new.srm_from = d["srm_from"]
        new.mode.load(d)
        new.seq, new.records, new.start_ts = d["seq"], d["records"], d["start_ts"]
        new.final, new.last_reason = d["final"], d["last_reason"]
        new.last_ts, new.paused = d.get("last_ts"), d.get("paused")
        if d.get("bake") is not None:
            new.phase = BakeWindow.from_dict(experiment, d["bake"], new.mode.delta,
                                             new.reader.score_bounds())
        return new
