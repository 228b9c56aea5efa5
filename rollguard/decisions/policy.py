"""The policy of one experiment: ordered records in, control events out (docs/design.md).

For the primary metric, Δ = candidate − champion of a per-request score (−loss), with an
anytime-valid confidence sequence [L, U] at the candidate's level (the experiment's α,
Bonferroni-split across candidates: :func:`~rollguard.stats.sequential.per_candidate_alpha`).
Shadow mode pairs both arms' scores of the same request; the other modes compare the arms'
independent outcomes. With margin δ:

- **promote** when L > −δ, every guardrail passes with confidence, and both arms have
  ``min_samples`` labelled outcomes (canary: after the last step; bandit: when one arm is
  best with probability 1 − α);
- **roll back** when U < −δ, or when a guardrail fails with confidence (several candidates:
  that one is dropped with ``set_traffic``; the last one dropped is a ``rollback``);
- **hold** when the candidates reach ``max_samples`` or the experiment ``max_duration`` of
  event time, undecided: the champion stays.

``start`` comes with the first record; canary steps and bandit allocations are
``set_traffic``. Every event carries ``seq``, a ``reason`` naming the metric that decided it
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

import math
from typing import Any

from rollguard.decisions.bandit import Posteriors, allocation, seed_for
from rollguard.decisions.guardrails import Monitor, SampleRatio, monitors_for, wants_srm
from rollguard.decisions.observations import Reader
from rollguard.schemas.events import ControlEvent
from rollguard.stats.sequential import FAIL, PASS, DiffMeansCS, PairedMeanCS, from_dict, per_candidate_alpha
from rollguard.streams.records import FIRST, OUTCOME, JoinedRecord

PROMOTE, ROLLBACK, HOLD, SET_TRAFFIC, START = "promote", "rollback", "hold", "set_traffic", "start"
FINAL = (PROMOTE, ROLLBACK, HOLD)
#: event time after a traffic change during which served arms are not checked for SRM: the
#: routers apply a change only after the join, the checkpoint and the control topic
SRM_GRACE_S = 30.0


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _pct(alpha: float) -> str:
    return f"{100 * (1 - alpha):.4g}%"


def _signed(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.4g}"


class Track:
    """One candidate against the champion: primary sequence, guardrails, state."""

    def __init__(self, arm: str, alpha: float, paired: bool, bounds, tuned_n: float,
                 margin: float, monitors: list[Monitor]) -> None:
        self.arm = arm
        self.alpha = alpha
        self.paired = paired
        self.margin = margin
        lower, upper = bounds
        at_margin = (-margin,)  # the one value decisions compare Δ with: tested exactly there
        if paired:
            span = None if lower is None else (lower - upper, upper - lower)
            self.primary = PairedMeanCS(alpha, *(span or (None, None)), tuned_n=tuned_n,
                                        test_points=at_margin)
        else:
            self.primary = DiffMeansCS(alpha, lower, upper, tuned_n=tuned_n,
                                       test_points=at_margin)
        self.monitors = monitors
        self._interval: tuple[float | None, float | None] | None = None
        self._side: int | None = None
        self.active = True
        self.dropped_reason: str | None = None

    def counts(self, champion: str) -> dict[str, int]:
        if self.paired:
            return {champion: self.primary.n, self.arm: self.primary.n}
        c = self.primary.counts()  # DiffMeansCS.counts is a method
        return {champion: c["champion"], self.arm: c["candidate"]}

    def observe(self, *value) -> None:
        """One observation of the primary metric (a paired difference, or arm and score)."""
        self.primary.update(*value)
        self._interval = None
        self._side = None

    def interval(self) -> tuple[float | None, float | None]:
        """The confidence sequence's bounds, recomputed only after new observations."""
        if self._interval is None:
            lo, hi = self.primary.interval()
            self._interval = (_finite(lo), _finite(hi))
        return self._interval

    def side(self) -> int:
        """1 when Δ > −margin with confidence, −1 when Δ < −margin, 0 while undecided."""
        if self._side is None:
            self._side = self.primary.side_of(-self.margin)
        return self._side

    def estimate(self) -> float | None:
        est = self.primary.mean if self.paired else self.primary.estimate
        return _finite(est) if est is not None else None

    def evidence(self, champion: str, margin: float) -> dict[str, Any]:
        lo, hi = self.interval()
        return {
            "alpha": self.alpha,
            "status": "active" if self.active else "dropped",
            "n": self.counts(champion),
            "delta": {"estimate": self.estimate(), "lower": lo, "upper": hi,
                      "margin": margin, "paired": self.paired,
                      "method": self.primary.evidence().get("method")},
            "guardrails": [m.evidence() for m in self.monitors],
        }

    def to_dict(self) -> dict[str, Any]:
        return {"primary": self.primary.to_dict(), "monitors": [m.state() for m in self.monitors],
                "active": self.active, "dropped_reason": self.dropped_reason}

    def load(self, d: dict[str, Any]) -> None:
        self.primary = from_dict(d["primary"])
        self._interval = None
        self._side = None
        for monitor, state in zip(self.monitors, d["monitors"]):
            monitor.load(state)
        self.active, self.dropped_reason = d["active"], d["dropped_reason"]


class Policy:
    """The state machine of one experiment, for every mode of docs/design.md."""

    def __init__(self, experiment: Any) -> None:
        exp = self.experiment = experiment
        self.reader = Reader(experiment)
        self.mode = exp.mode
        self.champion = exp.champion
        self.margin = float(exp.primary.margin)
        self.metric = exp.primary.metric
        alphas = per_candidate_alpha(exp.alpha, exp.candidates)
        bounds = self.reader.score_bounds()
        tuned_n = 2 * exp.min_samples
        paired = exp.mode == "shadow"
        self.tracks = {c: Track(c, alphas[c], paired, bounds, tuned_n, self.margin,
                                monitors_for(exp, alphas[c], c))
                       for c in exp.candidates}
        self.traffic, self.shadow = self._initial_traffic()
        self.srm = SampleRatio(exp.alpha, self.traffic) if wants_srm(exp) and \
            exp.mode != "shadow" else None
        self.srm_from = -math.inf
        self.bandit = Posteriors(list(exp.arms)) if exp.mode == "bandit" else None
        self.bandit_seen = 0        # rewards at the last allocation
        self.prob_best: dict[str, float] | None = None
        self.step = 0               # canary: index into canary.steps
        self.step_from = 0          # canary: candidate outcomes when the step began
        self.seq = 0
        self.records = 0
        self.start_ts: float | None = None
        self.final: dict[str, Any] | None = None
        self.last_reason: str | None = None

    # -- traffic --------------------------------------------------------------------------
    def _initial_traffic(self) -> tuple[dict[str, float], list[str]]:
        exp = self.experiment
        if exp.mode == "shadow":
            return {exp.champion: 1.0}, list(exp.candidates)
        if exp.mode == "canary":
            return self._canary_shares(exp.canary.steps[0]), []
        if exp.traffic:
            return dict(exp.traffic), []
        return _equal(list(exp.arms)), []

    def _canary_shares(self, share: float) -> dict[str, float]:
        active = [c for c, t in self.tracks.items() if t.active] if hasattr(self, "tracks") \
            else list(self.experiment.candidates)
        each = round(share / len(active), 6)
        shares = {c: each for c in active}
        shares = {self.champion: round(1.0 - each * len(active), 6), **shares}
        return shares

    def _without(self, dropped: list[str]) -> dict[str, float]:
        """The traffic with ``dropped`` arms' shares given back to the champion."""
        if self.mode == "canary":
            return self._canary_shares(self.experiment.canary.steps[self.step])
        shares = {a: s for a, s in self.traffic.items() if a not in dropped}
        shares[self.champion] = round(shares.get(self.champion, 0.0)
                                      + sum(self.traffic.get(a, 0.0) for a in dropped), 6)
        return _renormalise(shares)

    def _set_traffic(self, traffic: dict[str, float], ts: float) -> None:
        self.traffic = traffic
        if self.srm is not None:
            self.srm.set_shares(traffic)
            self.srm_from = ts + self.experiment.allowed_lateness + SRM_GRACE_S

    # -- records --------------------------------------------------------------------------
    def on_record(self, record: JoinedRecord) -> list[ControlEvent]:
        if self.final is not None:
            return []
        events: list[ControlEvent] = []
        if self.start_ts is None:
            self.start_ts = record.ts
            events.append(self._event(START, record.ts, self._start_reason()))
        if record.kind == FIRST:  # the first traffic of a join partition: nothing to count
            return events
        self.records += 1
        if record.kind == OUTCOME:
            self._on_outcome(record)
        else:
            self._on_scored(record)
        events.extend(self._decide(record.ts))
        return events

    def _on_scored(self, record: JoinedRecord) -> None:
        champ = record.view(self.champion)
        for arm, track in self.tracks.items():
            if track.active:
                cand = record.view(arm)
                for monitor in track.monitors:
                    monitor.on_scored(record, cand, champ)
        if self.srm is not None and record.ts >= self.srm_from:
            served = record.served_arm
            if served is not None:
                self.srm.on_served(served)

    def _on_outcome(self, record: JoinedRecord) -> None:
        reader, label = self.reader, record.label
        champ = record.view(self.champion)
        if self.mode == "shadow":
            champ_score = reader.score(champ, label) if champ is not None else None
            for arm, track in self.tracks.items():
                cand = record.view(arm)
                if track.active and cand is not None and champ_score is not None:
                    score = reader.score(cand, label)
                    if score is not None:
                        track.observe(score - champ_score)
        else:
            served = record.served_arm
            view = record.view(served) if served is not None else None
            score = reader.score(view, label) if view is not None else None
            if score is not None:
                if served == self.champion:
                    for track in self.tracks.values():
                        if track.active:
                            track.observe("champion", score)
                elif served in self.tracks and self.tracks[served].active:
                    self.tracks[served].observe("candidate", score)
            if self.bandit is not None and view is not None:
                reward = reader.reward(record, view)
                if reward is not None:
                    self.bandit.update(served, reward)
        for arm, track in self.tracks.items():
            if track.active:
                cand = record.view(arm)
                for monitor in track.monitors:
                    monitor.on_outcome(record, cand, champ, reader)

    # -- decisions ------------------------------------------------------------------------
    def _verdict(self, track: Track) -> tuple[str, str] | None:
        """``(ROLLBACK, reason)``, ``(PROMOTE, "")`` when it may be promoted, or None."""
        conf = _pct(track.alpha)
        for monitor in track.monitors:
            if monitor.status() == FAIL:
                return ROLLBACK, (f"{track.arm} is rolled back: guardrail {monitor.name} failed "
                                  f"with {conf} confidence ({monitor.explain()}).")
        if self.mode == "bandit":
            return None  # the bandit's own rule decides the primary metric
        side = track.side()
        if side < 0:
            _, hi = track.interval()
            return ROLLBACK, (f"{track.arm} is rolled back: its {self.metric} is worse than the "
                              f"champion's by more than the margin {self.margin:g} "
                              f"(Δ ≤ {_signed(hi)} with {conf} confidence, estimate "
                              f"{_signed(track.estimate())}).")
        counts = track.counts(self.champion)
        if side > 0 and min(counts.values()) >= self.experiment.min_samples \
                and all(m.status() == PASS for m in track.monitors):
            return PROMOTE, ""
        return None

    def _decide(self, ts: float) -> list[ControlEvent]:
        events: list[ControlEvent] = []
        if self.srm is not None and self.srm.status() == FAIL:
            reason = (f"All candidates are rolled back: guardrail srm failed with "
                      f"{_pct(self.experiment.alpha)} confidence ({self.srm.explain()}).")
            return [self._final(ROLLBACK, ts, reason)]
        verdicts = {arm: self._verdict(t) for arm, t in self.tracks.items() if t.active}
        dropped = [arm for arm, v in verdicts.items() if v is not None and v[0] == ROLLBACK]
        if dropped:
            for arm in dropped:
                self.tracks[arm].active = False
                self.tracks[arm].dropped_reason = verdicts[arm][1]
            reason = _one_sentence([verdicts[arm][1] for arm in dropped])
            if not any(t.active for t in self.tracks.values()):
                return [self._final(ROLLBACK, ts, reason)]
            self._set_traffic(self._without(dropped), ts)
            self.shadow = [a for a in self.shadow if a not in dropped]
            events.append(self._event(SET_TRAFFIC, ts, reason))
        ready = [arm for arm, v in verdicts.items() if v is not None and v[0] == PROMOTE]
        if self.mode == "bandit":
            events.extend(self._bandit(ts))
        elif ready:
            best = max(ready, key=lambda a: (self.tracks[a].interval()[0], a))
            if self.mode == "canary":
                events.extend(self._canary(best, ts))
            else:
                events.append(self._final(PROMOTE, ts, self._promote_reason(best), best))
        if self.final is None:
            hold = self._hold_reason(ts)
            if hold:
                events.append(self._final(HOLD, ts, hold))
        return events

    def _canary(self, best: str, ts: float) -> list[ControlEvent]:
        exp = self.experiment
        steps = exp.canary.steps
        step_samples = exp.canary.step_samples or exp.min_samples
        n_cand = self.tracks[best].counts(self.champion)[best]
        if n_cand - self.step_from < step_samples:
            return []
        track = self.tracks[best]
        lo, _ = track.interval()
        if self.step + 1 < len(steps):
            self.step += 1
            self.step_from = n_cand
            share = steps[self.step]
            reason = (f"Canary step {self.step + 1} of {len(steps)}: {best} gets "
                      f"{100 * share:.4g}% of traffic after its analysis at "
                      f"{100 * steps[self.step - 1]:.4g}% passed ({self.metric} Δ ≥ "
                      f"{_signed(lo)} with {_pct(track.alpha)} confidence; guardrails pass).")
            self._set_traffic(self._canary_shares(share), ts)
            return [self._event(SET_TRAFFIC, ts, reason)]
        return [self._final(PROMOTE, ts, self._promote_reason(best), best)]

    def _bandit(self, ts: float) -> list[ControlEvent]:
        exp, bandit = self.experiment, self.bandit
        every = exp.bandit.update_every if exp.bandit else 200
        rewards = bandit.rewards
        if rewards - self.bandit_seen < every:
            return []
        self.bandit_seen = rewards
        arms = [self.champion] + [a for a, t in self.tracks.items() if t.active]
        sub = Posteriors(arms)
        for arm in arms:
            sub.arms[arm] = bandit.arms[arm]
        prob = self.prob_best = sub.prob_best(seed_for(exp.name, rewards))
        best = max(prob, key=lambda a: (prob[a], a))
        enough = all(bandit.arms[a].n >= exp.min_samples for a in arms)
        if enough and prob[best] >= 1.0 - exp.alpha:
            if best == self.champion:
                reason = (f"All candidates are rolled back: the champion {best} has the highest "
                          f"reward with probability {prob[best]:.3f} ≥ 1 − α (Thompson "
                          f"sampling on {rewards} rewards).")
                return [self._final(ROLLBACK, ts, reason)]
            monitors = self.tracks[best].monitors
            if all(m.status() == PASS for m in monitors):
                reason = (f"{best} is promoted: it has the highest reward with probability "
                          f"{prob[best]:.3f} ≥ 1 − α (Thompson sampling on {rewards} "
                          f"rewards), and every guardrail passes.")
                return [self._final(PROMOTE, ts, reason, best)]
        min_share = exp.bandit.min_share if exp.bandit else 0.05
        shares = allocation(prob, min_share)
        if max(abs(shares.get(a, 0.0) - self.traffic.get(a, 0.0)) for a in shares) < 0.01:
            return []
        self._set_traffic(shares, ts)
        share_text = ", ".join(f"{a} {100 * s:.3g}%" for a, s in shares.items())
        reason = (f"Thompson sampling moves traffic to {share_text}: P(best) is "
                  + ", ".join(f"{a} {p:.3f}" for a, p in prob.items()) + f" after {rewards} rewards.")
        return [self._event(SET_TRAFFIC, ts, reason)]

    def _hold_reason(self, ts: float) -> str | None:
        exp = self.experiment
        if exp.max_duration is not None and self.start_ts is not None \
                and ts - self.start_ts >= exp.max_duration:
            return (f"The experiment reached its max_duration ({exp.max_duration:g} s of event "
                    f"time) undecided: the champion {self.champion} stays.")
        if exp.max_samples is not None:
            active = [t for t in self.tracks.values() if t.active]
            if active and all(t.counts(self.champion)[t.arm] >= exp.max_samples for t in active):
                return (f"The experiment reached max_samples ({exp.max_samples} labelled "
                        f"outcomes per candidate) undecided on {self.metric}: the champion "
                        f"{self.champion} stays.")
        return None

    # -- events ---------------------------------------------------------------------------
    def _start_reason(self) -> str:
        exp = self.experiment
        cands = ", ".join(exp.candidates)
        if exp.mode == "shadow":
            verb = "is" if len(exp.candidates) == 1 else "are"
            return (f"The experiment starts in shadow mode: {exp.champion} serves, {cands} "
                    f"{verb} scored on the same requests.")
        shares = ", ".join(f"{a} {100 * s:.4g}%" for a, s in self.traffic.items())
        return f"The experiment starts in {exp.mode} mode with traffic {shares}."

    def _promote_reason(self, best: str) -> str:
        track = self.tracks[best]
        lo, _ = track.interval()
        n = track.counts(self.champion)
        return (f"{best} is promoted: its {self.metric} is at least the champion's minus the "
                f"margin {self.margin:g} (Δ ≥ {_signed(lo)} with {_pct(track.alpha)} "
                f"confidence, estimate {_signed(track.estimate())}, n = "
                f"{n[self.champion]}/{n[best]}) and every guardrail passes.")

    def _final(self, action: str, ts: float, reason: str, winner: str | None = None) -> ControlEvent:
        if action == PROMOTE:
            self.traffic, self.shadow = {winner: 1.0}, []
        else:
            self.traffic, self.shadow = {self.champion: 1.0}, []
        event = self._event(action, ts, reason, champion=winner or self.champion)
        self.final = {"action": action, "seq": event.seq, "ts": ts, "reason": reason,
                      "champion": event.champion}
        return event

    def _event(self, action: str, ts: float, reason: str, champion: str | None = None) -> ControlEvent:
        self.seq += 1
        self.last_reason = reason
        return ControlEvent(experiment=self.experiment.name, seq=self.seq, ts=ts, action=action,
                            mode=self.mode, champion=champion or self.champion,
                            traffic=dict(self.traffic), shadow=list(self.shadow),
                            reason=reason, evidence=self.evidence())

    def evidence(self) -> dict[str, Any]:
        exp = self.experiment
        out: dict[str, Any] = {
            "metric": self.metric, "alpha": exp.alpha, "margin": self.margin,
            "min_samples": exp.min_samples, "records": self.records,
            "candidates": {arm: t.evidence(self.champion, self.margin)
                           for arm, t in self.tracks.items()},
            "traffic": dict(self.traffic),
        }
        if self.srm is not None:
            out["srm"] = self.srm.evidence()
        if self.mode == "canary":
            out["canary_step"] = {"index": self.step + 1, "of": len(exp.canary.steps),
                                  "share": exp.canary.steps[self.step]}
        if self.bandit is not None:
            out["bandit"] = {"posteriors": self.bandit.describe(), "prob_best": self.prob_best}
        return out

    def status(self) -> dict[str, Any]:
        """The decision state for the statistics snapshot."""
        return {"seq": self.seq, "final": self.final, "last_reason": self.last_reason,
                "champion": self.final["champion"] if self.final else self.champion,
                "shadow": list(self.shadow), "evidence": self.evidence()}

    # -- state ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "tracks": {arm: t.to_dict() for arm, t in self.tracks.items()},
            "traffic": self.traffic, "shadow": self.shadow,
            "srm": self.srm.state() if self.srm is not None else None, "srm_from": self.srm_from,
            "bandit": self.bandit.to_dict() if self.bandit is not None else None,
            "bandit_seen": self.bandit_seen, "prob_best": self.prob_best,
            "step": self.step, "step_from": self.step_from, "seq": self.seq,
            "records": self.records, "start_ts": self.start_ts, "final": self.final,
            "last_reason": self.last_reason,
        }

    @classmethod
    def from_dict(cls, experiment: Any, d: dict[str, Any]) -> "Policy":
        new = cls(experiment)
        for arm, state in d["tracks"].items():
            new.tracks[arm].load(state)
        new.traffic, new.shadow = dict(d["traffic"]), list(d["shadow"])
        if new.srm is not None and d["srm"] is not None:
            new.srm.load(d["srm"])
        new.srm_from = d["srm_from"]
        if d["bandit"] is not None:
            new.bandit = Posteriors.from_dict(d["bandit"])
        new.bandit_seen, new.prob_best = d["bandit_seen"], d["prob_best"]
        new.step, new.step_from, new.seq = d["step"], d["step_from"], d["seq"]
        new.records, new.start_ts, new.final = d["records"], d["start_ts"], d["final"]
        new.last_reason = d["last_reason"]
        return new


def _one_sentence(reasons: list[str]) -> str:
    """Several candidates' reasons (each one sentence) as one sentence: "a; b."

    >>> _one_sentence(["m:2 is rolled back: x.", "m:3 is rolled back: y."])
    'm:2 is rolled back: x; m:3 is rolled back: y.'
    """
    return "; ".join(r.rstrip(".") for r in reasons) + "."


def _equal(arms: list[str]) -> dict[str, float]:
    each = round(1.0 / len(arms), 6)
    shares = {a: each for a in arms[1:]}
    return {arms[0]: round(1.0 - each * (len(arms) - 1), 6), **shares}


def _renormalise(shares: dict[str, float]) -> dict[str, float]:
    total = sum(shares.values())
    arms = list(shares)
    out = {a: round(shares[a] / total, 6) for a in arms[1:]}
    return {arms[0]: round(1.0 - sum(out.values()), 6), **out}
