"""How each experiment mode routes, observes and advances: one small object per mode.

The :class:`~rollguard.decisions.policy.Policy` owns the lifecycle (start, the analysis,
the final decision), the candidates' tracks and the events; a mode says only what differs:

- which traffic and shadow arms the experiment starts with (:meth:`Mode.routing`);
- how an outcome feeds the primary metric (:meth:`Mode.observe`): both arms' scores of a
  request in shadow mode, which ranker's items the user engaged with in interleave mode,
  the serving arm's outcome in the others;
- what happens once candidates may be promoted (:meth:`Mode.advance`): a promotion, the
  next canary step, or, for a bandit, the promotion or a new allocation;
- how traffic is shared once a candidate is dropped (:meth:`Mode.without`).

Adding a mode is adding one class here and its name in :data:`MODES`.

>>> from rollguard.schemas import parse_experiments
>>> [exp] = parse_experiments('''
... {name: e, task: binary, mode: canary, champion: m:1, candidates: [m:2],
...  primary: {metric: accuracy, margin: 0.0}, canary: {steps: [0.1, 0.5]}}''', "doc.yaml")
>>> mode = mode_for(exp)
>>> type(mode).__name__, mode.routing()
('CanaryMode', ({'m:1': 0.9, 'm:2': 0.1}, []))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rollguard.decisions.bandit import Posteriors, allocation, seed_for
from rollguard.decisions.tracks import PairedDelta, SplitDelta
from rollguard.schemas.events import ControlEvent
from rollguard.serving.interleaving import credit, team_draft
from rollguard.schemas.experiment import Experiment
from rollguard.streams.records import JoinedRecord

if TYPE_CHECKING:
    from rollguard.decisions.policy import Policy


def pct(alpha: float) -> str:
    return f"{100 * (1 - alpha):.4g}%"


def signed(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.4g}"


class Mode:
    """What one experiment mode decides differently; the defaults are the A/B test's."""

    name = "ab"
    #: the candidates' Δ: per-request pairs, or the arms' own outcomes
    delta = SplitDelta
    #: whether a sample-ratio-mismatch guardrail applies (only where traffic is split)
    splits_traffic = True
    #: whether its traffic changes are routine allocation rather than decisions (a person
    #: reading the history wants a bandit's decisions, not each reallocation)
    reallocates = False

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment

    # -- routing ------------------------------------------------------------------------
    def routing(self) -> tuple[dict[str, float], list[str]]:
        """The traffic and shadow arms the experiment starts with."""
        exp = self.experiment
        return (dict(exp.traffic) if exp.traffic else equal_shares(list(exp.arms))), []

    def without(self, policy: Policy, dropped: list[str]) -> dict[str, float]:
        """The traffic with ``dropped`` arms' shares given back to the champion."""
        shares = {a: s for a, s in policy.traffic.items() if a not in dropped}
        shares[policy.champion] = round(shares.get(policy.champion, 0.0)
                                        + sum(policy.traffic.get(a, 0.0) for a in dropped), 6)
        return renormalise(shares)

    # -- observing ----------------------------------------------------------------------
    def observe(self, policy: Policy, record: JoinedRecord) -> None:
        """An outcome of the arm that served: the champion's counts for every candidate."""
        served = record.served_arm
        view = record.view(served) if served is not None else None
        score = policy.reader.score(view, record.label, record.reward) \
            if view is not None else None
        if score is None:
            return
        tracks = policy.active_tracks()
        if served == policy.champion:
            for track in tracks:
                track.delta.add("champion", score)
        else:
            for track in tracks:
                if track.arm == served:
                    track.delta.add("candidate", score)

    # -- deciding -----------------------------------------------------------------------
    def advance(self, policy: Policy, ready: list[str], ts: float) -> list[ControlEvent]:
        """Candidates ``ready`` may be promoted: the best one is (by its lower bound)."""
        if not ready:
            return []
        return [policy.promote(policy.best_of(ready), ts)]

    def start_reason(self, policy: Policy) -> str:
        shares = ", ".join(f"{a} {100 * s:.4g}%" for a, s in policy.traffic.items())
        return f"The experiment starts in {self.name} mode with traffic {shares}."

    def evidence(self) -> dict[str, Any]:
        """What this mode adds to every event's evidence."""
        return {}

    # -- state --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {}

    def load(self, d: dict[str, Any]) -> None:
        pass


class ShadowMode(Mode):
    """The champion serves; every candidate scores the same requests without serving."""

    name = "shadow"
    delta = PairedDelta
    splits_traffic = False

    def routing(self) -> tuple[dict[str, float], list[str]]:
        exp = self.experiment
        return {exp.champion: 1.0}, list(exp.candidates)

    def observe(self, policy: Policy, record: JoinedRecord) -> None:
        reader, label, reward = policy.reader, record.label, record.reward
        champ = record.view(policy.champion)
        champ_score = reader.score(champ, label, reward) if champ is not None else None
        if champ_score is None:
            return
        for track in policy.active_tracks():
            cand = record.view(track.arm)
            score = reader.score(cand, label, reward) if cand is not None else None
            if score is not None:
                track.delta.add_pair(score, champ_score)

    def start_reason(self, policy: Policy) -> str:
        exp = self.experiment
        verb = "is" if len(exp.candidates) == 1 else "are"
        return (f"The experiment starts in shadow mode: {exp.champion} serves, "
                f"{', '.join(exp.candidates)} {verb} scored on the same requests.")


class CanaryMode(Mode):
    """Candidates get small shares that rise through ``canary.steps``, each step analysed."""

    name = "canary"

    def __init__(self, experiment: Experiment) -> None:
        super().__init__(experiment)
        self.step = 0               # index into canary.steps
        self.step_from = 0          # the candidate's outcomes when the step began

    def routing(self) -> tuple[dict[str, float], list[str]]:
        exp = self.experiment
        return canary_shares(exp.champion, list(exp.candidates), exp.canary.steps[0]), []

    def without(self, policy: Policy, dropped: list[str]) -> dict[str, float]:
        active = [t.arm for t in policy.active_tracks()]
        return canary_shares(policy.champion, active, self.experiment.canary.steps[self.step])

    def advance(self, policy: Policy, ready: list[str], ts: float) -> list[ControlEvent]:
        """The best candidate ready: the next step after ``step_samples`` outcomes at this
        one, or its promotion after the last."""
        if not ready:
            return []
        best = policy.best_of(ready)
        exp = self.experiment
        steps = exp.canary.steps
        track = policy.tracks[best]
        n_cand = track.counts(policy.champion)[best]
        if n_cand - self.step_from < (exp.canary.step_samples or exp.min_samples):
            return []
        if self.step + 1 == len(steps):
            return [policy.promote(best, ts)]
        self.step += 1
        self.step_from = n_cand
        share = steps[self.step]
        lo, _ = track.delta.interval()
        reason = (f"Canary step {self.step + 1} of {len(steps)}: {best} gets "
                  f"{100 * share:.4g}% of traffic after its analysis at "
                  f"{100 * steps[self.step - 1]:.4g}% passed ({policy.metric} Δ ≥ "
                  f"{signed(lo)} with {pct(track.alpha)} confidence; guardrails pass).")
        active = [t.arm for t in policy.active_tracks()]
        return [policy.set_traffic(canary_shares(policy.champion, active, share), ts, reason)]

    def evidence(self) -> dict[str, Any]:
        steps = self.experiment.canary.steps
        return {"canary_step": {"index": self.step + 1, "of": len(steps),
                                "share": steps[self.step]}}

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "step_from": self.step_from}

    def load(self, d: dict[str, Any]) -> None:
        self.step, self.step_from = d["step"], d["step_from"]


class BanditMode(Mode):
    """Thompson sampling allocates the traffic; the decision is the A/B test's.

    Traffic follows each arm's posterior probability of being best (a Bayesian estimate,
    which guarantees nothing about errors), every ``bandit.update_every`` rewards. What is
    promoted or rolled back is decided by the same anytime-valid confidence sequence of
    Δ against −margin, at the candidate's α, as in an A/B test: its arm-ordered blocks stay
    exact when the allocation moves with the outcomes already seen
    (:mod:`rollguard.stats.sequential.diff`), so stopping whenever it says keeps the error
    rate its reason states.
    """

    name = "bandit"
    reallocates = True

    def __init__(self, experiment: Experiment) -> None:
        super().__init__(experiment)
        self.posteriors = Posteriors(list(experiment.arms))
        self.seen = 0        # rewards at the last allocation
        self.prob_best: dict[str, float] | None = None

    def observe(self, policy: Policy, record: JoinedRecord) -> None:
        super().observe(policy, record)
        served = record.served_arm
        view = record.view(served) if served is not None else None
        if view is not None:
            reward = policy.reader.reward(record, view)
            if reward is not None:
                self.posteriors.update(served, reward)

    def advance(self, policy: Policy, ready: list[str], ts: float) -> list[ControlEvent]:
        if ready:
            return super().advance(policy, ready, ts)
        return self._allocate(policy, ts)

    def _allocate(self, policy: Policy, ts: float) -> list[ControlEvent]:
        exp = self.experiment
        settings = exp.bandit
        rewards = self.posteriors.rewards
        if rewards - self.seen < (settings.update_every if settings else 200):
            return []
        self.seen = rewards
        arms = [policy.champion] + [t.arm for t in policy.active_tracks()]
        playing = Posteriors(arms)
        for arm in arms:
            playing.arms[arm] = self.posteriors.arms[arm]
        prob = self.prob_best = playing.prob_best(seed_for(exp.name, rewards))
        shares = allocation(prob, settings.min_share if settings else 0.05)
        if max(abs(shares.get(a, 0.0) - policy.traffic.get(a, 0.0)) for a in shares) < 0.01:
            return []
        share_text = ", ".join(f"{a} {100 * s:.3g}%" for a, s in shares.items())
        reason = (f"Thompson sampling moves traffic to {share_text}: the posterior estimate "
                  "of P(best) is " + ", ".join(f"{a} {p:.3f}" for a, p in prob.items())
                  + f" after {rewards} rewards (an allocation, not a decision).")
        return [policy.set_traffic(shares, ts, reason)]

    def evidence(self) -> dict[str, Any]:
        return {"bandit": {"posteriors": self.posteriors.describe(), "prob_best": self.prob_best}}

    def to_dict(self) -> dict[str, Any]:
        return {"bandit": self.posteriors.to_dict(), "bandit_seen": self.seen,
                "prob_best": self.prob_best}

    def load(self, d: dict[str, Any]) -> None:
        self.posteriors = Posteriors.from_dict(d["bandit"])
        self.seen, self.prob_best = d["bandit_seen"], d["prob_best"]


class InterleaveMode(Mode):
    """Team-draft interleaving of two rankers (Radlinski, Kurup & Joachims 2008; Chapelle,
    Joachims, Radlinski & Yue 2012).

    Both rankers rank every request (the champion's prediction is the served one); the user
    sees their team-draft merge (:mod:`rollguard.serving.interleaving`: the Router's
    :meth:`~rollguard.serving.Route.shown` and this worker build the same list from the two
    predictions and the request id), and each engaged item credits the ranker that placed
    it. A request the user engaged with gives one pair to the paired test: the candidate
    won (1, 0), lost (0, 1) or tied (0, 0), so Δ is the preference P(win) − P(loss) among
    requests with engagement, in [−1, 1], tested against −margin by the same anytime-valid
    sequence as shadow mode's per-request differences. Requests without engagement say
    nothing and are counted apart; ``min_samples`` counts the compared requests.

    In the bake window the promoted ranker serves and the former champion's list stays
    interleaved with it, the team draft's roles following the served prediction.
    """

    name = "interleave"
    delta = PairedDelta
    splits_traffic = False

    def __init__(self, experiment: Experiment) -> None:
        super().__init__(experiment)
        #: per candidate: wins, losses, ties, requests without engagement, and requests
        #: missing one ranker's list (not compared)
        self.tally = {c: dict.fromkeys(_TALLY, 0) for c in experiment.candidates}

    def routing(self) -> tuple[dict[str, float], list[str]]:
        exp = self.experiment
        return {exp.champion: 1.0}, list(exp.candidates)

    def observe(self, policy: Policy, record: JoinedRecord) -> None:
        engaged = record.label
        served = record.served_arm
        if not isinstance(engaged, (list, dict)) or served is None:
            return
        for track in policy.active_tracks():
            pair = (policy.champion, track.arm)
            if served not in pair:
                continue
            other = pair[1] if served == pair[0] else pair[0]
            tally = self.tally.setdefault(track.arm, dict.fromkeys(_TALLY, 0))
            first, second = record.view(served), record.view(other)
            if second is None or not _ranked(first) or not _ranked(second):
                tally["one_list"] += 1
                continue
            shown = team_draft(first.prediction, second.prediction, record.experiment,
                               record.request_id)
            by_served, by_other = credit(shown, engaged)
            cand, champ = (by_served, by_other) if served == track.arm else (by_other, by_served)
            if cand == champ == 0:
                tally["no_engagement"] += 1
                continue
            tally["wins" if cand > champ else "losses" if cand < champ else "ties"] += 1
            track.delta.add_pair(float(cand > champ), float(champ > cand))

    def advance(self, policy: Policy, ready: list[str], ts: float) -> list[ControlEvent]:
        if not ready:
            return []
        best = ready[0]
        delta = policy.tracks[best].delta
        lo, _ = delta.interval()
        t = self.tally.get(best, {})
        how = ("prefer its ranking to the champion's" if not policy.margin else
               f"prefer the champion's ranking to it by at most the margin {policy.margin:g}")
        reason = (f"{best} is promoted: users {how} in the interleaved lists "
                  f"(preference Δ = P(win) − P(loss) ≥ {signed(lo)} with "
                  f"{pct(delta.alpha)} confidence, estimate {signed(delta.estimate())}; "
                  f"{t.get('wins', 0)} wins, {t.get('losses', 0)} losses, {t.get('ties', 0)} "
                  f"ties over {delta.counts()[1]} requests with engagement) and every "
                  "guardrail passes")
        return [policy.promote(best, ts, reason)]

    def start_reason(self, policy: Policy) -> str:
        exp = self.experiment
        return (f"The experiment starts in interleave mode: every request shows the "
                f"team-draft interleaving of {exp.champion}'s and {exp.candidates[0]}'s "
                "lists, and an engaged item credits the ranker that placed it.")

    def evidence(self) -> dict[str, Any]:
        return {"interleaving": {arm: dict(t) for arm, t in self.tally.items()}}

    def to_dict(self) -> dict[str, Any]:
        return {"interleaving": {arm: dict(t) for arm, t in self.tally.items()}}

    def load(self, d: dict[str, Any]) -> None:
        self.tally = {arm: dict(t) for arm, t in d["interleaving"].items()}


_TALLY = ("wins", "losses", "ties", "no_engagement", "one_list")


def _ranked(view) -> bool:
    return view is not None and view.error is None and isinstance(view.prediction, list)


#: every mode by the name the experiment file gives
MODES: dict[str, type[Mode]] = {m.name: m for m in (Mode, ShadowMode, CanaryMode, BanditMode,
                                                    InterleaveMode)}


def mode_for(experiment: Experiment) -> Mode:
    return MODES[experiment.mode](experiment)


def canary_shares(champion: str, candidates: list[str], share: float) -> dict[str, float]:
    """``share`` split between ``candidates``, the rest to the champion.

    >>> canary_shares("m:1", ["m:2", "m:3"], 0.1)
    {'m:1': 0.9, 'm:2': 0.05, 'm:3': 0.05}
    """
    each = round(share / len(candidates), 6)
    shares = {c: each for c in candidates}
    return {champion: round(1.0 - each * len(candidates), 6), **shares}


def equal_shares(arms: list[str]) -> dict[str, float]:
    each = round(1.0 / len(arms), 6)
    shares = {a: each for a in arms[1:]}
    return {arms[0]: round(1.0 - each * (len(arms) - 1), 6), **shares}


def renormalise(shares: dict[str, float]) -> dict[str, float]:
    total = sum(shares.values())
    arms = list(shares)
    out = {a: round(shares[a] / total, 6) for a in arms[1:]}
    return {arms[0]: round(1.0 - sum(out.values()), 6), **out}
