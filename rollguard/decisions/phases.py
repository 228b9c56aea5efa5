"""The analysis phase of an experiment's lifecycle: every candidate against the champion.

An experiment goes through phases (``Policy.phase``): the analysis until a decision, then,
after a promotion with ``bake:``, the bake window (:class:`~rollguard.decisions.bake.BakeWindow`).
Each phase says which tracks it feeds (``tracks``), who a rollback rolls back
(``rollback_subject``) and what it decides after a record (``decide``); the policy keeps
what is common to all of them (start, SRM, pause, the events and their ``seq``).

In the analysis each active candidate gets a verdict after every record: rolled back when a
guardrail fails or Δ's upper bound is below −margin (one of several is dropped with
``set_traffic``, the last one makes a ``rollback``); ready when Δ's lower bound is above
−margin, both arms have ``min_samples`` labelled outcomes and every guardrail passes (the
mode then promotes, takes a canary step or keeps sampling); ``hold`` at ``max_samples`` or
``max_duration`` undecided.

>>> _one_sentence(["m:2 is rolled back: x.", "m:3 is rolled back: y."])
'm:2 is rolled back: x; m:3 is rolled back: y.'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rollguard.decisions.actions import HOLD, PROMOTE, ROLLBACK
from rollguard.decisions.modes import pct, signed
from rollguard.stats.sequential import PASS

if TYPE_CHECKING:
    from rollguard.decisions.policy import Policy
    from rollguard.decisions.tracks import Track
    from rollguard.schemas.events import ControlEvent


class Analysis:
    """Every active candidate against the champion, until the decision."""

    name = "analysis"

    def tracks(self, policy: Policy) -> list[Track]:
        return [t for t in policy.tracks.values() if t.active]

    def rollback_subject(self, policy: Policy) -> str:
        return "All candidates are rolled back"

    def decide(self, policy: Policy, ts: float) -> list[ControlEvent]:
        events: list[ControlEvent] = []
        # only the candidates with a verdict: after most records there is none to sort out
        verdicts = {}
        for track in self.tracks(policy):
            verdict = self.verdict(policy, track)
            if verdict is not None:
                verdicts[track.arm] = verdict
        dropped = [arm for arm, v in verdicts.items() if v[0] == ROLLBACK]
        if dropped:
            for arm in dropped:
                policy.tracks[arm].drop(verdicts[arm][1])
            reason = _one_sentence([verdicts[arm][1] for arm in dropped])
            if not self.tracks(policy):
                return [policy._final(ROLLBACK, ts, reason)]
            policy.shadow = [a for a in policy.shadow if a not in dropped]
            events.append(policy.set_traffic(policy.mode.without(policy, dropped), ts, reason))
        ready = [arm for arm, v in verdicts.items() if v[0] == PROMOTE]
        events.extend(policy.mode.advance(policy, ready, ts))
        if policy.final is None:
            hold = self.hold_reason(policy, ts)
            if hold:
                events.append(policy._final(HOLD, ts, hold))
        return events

    @staticmethod
    def verdict(policy: Policy, track: Track) -> tuple[str, str] | None:
        """``(ROLLBACK, reason)``, ``(PROMOTE, "")`` when it may be promoted, or None."""
        for monitor in track.monitors:
            if monitor.failed():
                return ROLLBACK, (f"{track.arm} is rolled back: guardrail {monitor.name} failed "
                                  f"{monitor.confidence(pct(track.alpha))} "
                                  f"({monitor.explain()}).")
        delta = track.delta
        side = delta.side()
        if side < 0:
            _, hi = delta.interval()
            return ROLLBACK, (f"{track.arm} is rolled back: its {policy.metric} is worse than "
                              f"the champion's by more than the margin {policy.margin:g} "
                              f"(Δ ≤ {signed(hi)} with {pct(track.alpha)} confidence, estimate "
                              f"{signed(delta.estimate())}).")
        if side > 0 and track.min_count() >= policy.experiment.min_samples \
                and all(m.status() == PASS for m in track.monitors):
            return PROMOTE, ""
        return None

    def hold_reason(self, policy: Policy, ts: float) -> str | None:
        exp = policy.experiment
        if exp.max_duration is not None and policy.start_ts is not None \
                and ts - policy.start_ts >= exp.max_duration:
            return (f"The experiment reached its max_duration ({exp.max_duration:g} s of event "
                    f"time) undecided: the champion {policy.champion} stays.")
        if exp.max_samples is not None:
            active = self.tracks(policy)
            if active and all(t.counts(policy.champion)[t.arm] >= exp.max_samples
                              for t in active):
                return (f"The experiment reached max_samples ({exp.max_samples} labelled "
                        f"outcomes per candidate) undecided on {policy.metric}: the champion "
                        f"{policy.champion} stays.")
        return None


def _one_sentence(reasons: list[str]) -> str:
    """Several candidates' reasons (each one sentence) as one sentence: "a; b." """
    return "; ".join(r.rstrip(".") for r in reasons) + "."
