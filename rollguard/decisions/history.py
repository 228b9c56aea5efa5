"""History points: what the policy's evidence was, at a deterministic cadence (docs/history.md).

The stats topic is compacted: it keeps the latest snapshot of each experiment, not how Δ
and its bounds got there. The evaluator therefore also makes **history points**, which the
worker appends to ``<prefix>history`` and ``rollguard replay --history FILE`` writes out. A
point is a copy of figures the policy already exposes (:meth:`Policy.status` and its
``evidence``): nothing is computed again, so a chart of the points shows the evidence the
worker decided on.

When: after the record that led to a control event (except a bandit's routine reallocation,
see below), and whenever the labelled outcomes or the event time since the start cross the
next step of a schedule that widens as the experiment grows (:data:`LABELLED_STEP`,
:data:`LABELLED_RATIO`, :data:`TIME_STEP_S`, :data:`TIME_RATIO`). The steps depend only on
the records the policy takes, in their event-time order, so the live worker and a replay of
the same events make the same points; ``FIRST`` records (a join partition's first traffic,
whose number depends on the partitions) never move the schedule. After the final decision
no more points are made.

>>> from rollguard.decisions.policy import Policy
>>> from rollguard.schemas import parse_experiments
>>> from rollguard.streams.records import ArmView, JoinedRecord, OUTCOME
>>> [exp] = parse_experiments('''
... {name: e, task: binary, mode: shadow, champion: m:1, candidates: [m:2],
...  primary: {metric: accuracy, margin: 0.01}, min_samples: 100}''', "doc.yaml")
>>> policy, history = Policy(exp), History("e")
>>> for i in range(3000):                   # four labelled requests a second
...     views = (ArmView("m:1", True, i % 10 != 0, None, 1.0, None, i),
...              ArmView("m:2", False, True, None, 1.0, None, i))
...     record = JoinedRecord(OUTCOME, i / 4, f"r{i}", "e", None, None, views, True, i)
...     history.observe(record, policy.on_record(record), policy)
>>> points = history.take()
>>> [(p["point"], p["ts"], p["labelled"], p["at"]) for p in points[:4]]
[(1, 0.0, 1, ['decision']), (2, 1.0, 5, ['time']), (3, 2.0, 9, ['time']), (4, 2.25, 10, ['labelled'])]
>>> last = points[-1]
>>> last["point"], last["state"], last["events"][0]["action"], last["at"]
(36, 'promote', 'promote', ['decision', 'time'])
>>> last["candidates"]["m:2"]["n"], round(last["candidates"]["m:2"]["delta"]["lower"], 4)
({'m:1': 101, 'm:2': 101}, -0.0091)
>>> history.take()   # taken once: the worker publishes each point once
[]
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rollguard.streams.records import FIRST, OUTCOME, JoinedRecord

if TYPE_CHECKING:
    from rollguard.decisions.policy import Policy
    from rollguard.schemas.events import ControlEvent

#: labelled outcomes between two points at least, and as a share of those already in
LABELLED_STEP = 10
LABELLED_RATIO = 0.02
#: event time between two points at least (seconds), and as a share of the time since start
TIME_STEP_S = 1.0
TIME_RATIO = 0.01
#: the guardrail evidence a point keeps besides its scalars (the rest: the snapshot's)
_DROPPED_KEYS = ("method",)


def schedule_points(labelled: int, seconds: float) -> int:
    """About how many scheduled points an experiment with ``labelled`` outcomes over
    ``seconds`` of event time gets (decisions add theirs; the two schedules often coincide).

    >>> schedule_points(10_000_000, 30 * 86400)   # a month, ten million labels
    1671
    >>> schedule_points(2_000, 300)               # five minutes
    330
    """
    return _steps(labelled, LABELLED_STEP, LABELLED_RATIO) + \
        _steps(seconds, TIME_STEP_S, TIME_RATIO)


def _steps(total: float, step: float, ratio: float) -> int:
    x, n = 0.0, 0
    while True:
        x = _next(x, step, ratio)
        if x > total:
            return n
        n += 1


def _next(x: float, step: float, ratio: float) -> float:
    return x + max(step, x * ratio)


def _scalars(d: dict[str, Any]) -> dict[str, Any]:
    """The scalar figures of a guardrail's evidence (and its ``limit`` mapping)."""
    out = {}
    for key, value in d.items():
        if key in _DROPPED_KEYS:
            continue
        if value is None or isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif key == "limit" and isinstance(value, dict):
            out[key] = dict(value)
    return out


def _track(evidence: dict[str, Any]) -> dict[str, Any]:
    """A candidate's (or the bake window's) evidence, without the long method texts."""
    delta = evidence.get("delta") or {}
    return {"status": evidence.get("status"), "alpha": evidence.get("alpha"),
            "n": dict(evidence.get("n") or {}),
            "delta": {k: delta.get(k) for k in ("estimate", "lower", "upper")},
            "guardrails": [_scalars(g) for g in evidence.get("guardrails") or []]}


def point_from_status(experiment: str, mode: str, status: dict[str, Any]) -> dict[str, Any]:
    """The figures of a point, copied from :meth:`Policy.status` (no ``point``, ``ts``,
    ``at`` or ``events``: :class:`History` adds them)."""
    evidence = status.get("evidence") or {}
    final, paused = status.get("final"), status.get("paused")
    state = final["action"] if final else "paused" if paused else \
        "baking" if "bake" in evidence else "running"
    out: dict[str, Any] = {
        "experiment": experiment, "mode": mode, "state": state, "seq": status.get("seq"),
        "champion": status.get("champion"), "traffic": dict(evidence.get("traffic") or {}),
        "shadow": list(status.get("shadow") or []), "records": evidence.get("records"),
        "metric": evidence.get("metric"), "alpha": evidence.get("alpha"),
        "margin": evidence.get("margin"),
        "candidates": {arm: _track(e) for arm, e in (evidence.get("candidates") or {}).items()},
    }
    srm = evidence.get("srm")
    if srm is not None:
        out["srm"] = {k: srm.get(k) for k in ("status", "n", "p_value", "alpha")}
        out["srm"]["shares"] = dict(srm.get("shares") or {})
        out["srm"]["observed"] = dict(srm.get("observed") or {})
    if "canary_step" in evidence:
        out["canary_step"] = dict(evidence["canary_step"])
    bandit = evidence.get("bandit")
    if bandit is not None:
        out["bandit"] = {"prob_best": bandit.get("prob_best")}
    if paused and not final:
        out["paused"] = dict(paused)
    bake = evidence.get("bake")
    if bake is not None:
        out["bake"] = {"champion": bake.get("champion"), "former": bake.get("former"),
                       "since": bake.get("since"), "duration": bake.get("duration"),
                       "min_samples": bake.get("min_samples"), **_track(bake)}
    return out


class History:
    """The cadence of one experiment's points, and the points not yet taken."""

    def __init__(self, experiment: str, enabled: bool = True) -> None:
        self.experiment = experiment
        #: False: no point is made (a replay that only wants the control events)
        self.enabled = enabled
        self.points = 0          # points made so far (the next one is points + 1)
        self.labelled = 0        # outcomes the policy took before its final decision
        self.start: float | None = None
        self.next_labelled = float(LABELLED_STEP)
        self.next_elapsed = TIME_STEP_S
        self.active: list[str] | None = None  # the active candidates at the last point
        self.new: list[dict[str, Any]] = []

    def observe(self, record: JoinedRecord, events: list[ControlEvent], policy: Policy) -> None:
        """After the policy took ``record`` (and emitted ``events``): make a point if due."""
        if not self.enabled:
            return
        if self.start is None:
            self.start = policy.start_ts
        at = []
        if record.kind == OUTCOME and (policy.final is None or events):
            self.labelled += 1
            if self.labelled >= self.next_labelled:
                at.append("labelled")
                self.next_labelled = _next(self.labelled, LABELLED_STEP, LABELLED_RATIO)
        if record.kind != FIRST and self.start is not None and (policy.final is None or events):
            elapsed = record.ts - self.start
            if elapsed >= self.next_elapsed:
                at.append("time")
                self.next_elapsed = _next(elapsed, TIME_STEP_S, TIME_RATIO)
        status = None
        if events:
            status = policy.status()
            active = sorted(a for a, t in status["evidence"]["candidates"].items()
                            if t.get("status") == "active")
            routine = (policy.mode.reallocates and all(
                e.action == "set_traffic" for e in events) and active == self.active)
            if not routine:
                at.insert(0, "decision")
        if at:
            self._point(record.ts, at, events, policy, status)

    def decided(self, events: list[ControlEvent], policy: Policy) -> None:
        """Control events that came from a person's request (manual promote, rollback,
        pause, resume: :mod:`rollguard.decisions.manual`), applied between two records: a
        point at their event time."""
        if events and self.enabled:
            self._point(events[-1].ts, ["decision"], events, policy, None)

    def _point(self, ts: float, at: list[str], events: list[ControlEvent], policy: Policy,
               status: dict[str, Any] | None) -> None:
        point = point_from_status(self.experiment, policy.mode.name, status or policy.status())
        self.points += 1
        self.active = sorted(a for a, t in point["candidates"].items()
                             if t["status"] == "active")
        point.update(point=self.points, ts=ts, at=at, labelled=self.labelled)
        if events:
            point["events"] = [{"seq": e.seq, "action": e.action, "champion": e.champion,
                                "traffic": dict(e.traffic), "reason": e.reason} for e in events]
        self.new.append(point)

    def take(self) -> list[dict[str, Any]]:
        """The points made since the last call, in order (the worker publishes them)."""
        new, self.new = self.new, []
        return new

    # -- state (with the evaluator's: the cadence resumes where it was) ---------------------
    def to_dict(self) -> dict[str, Any]:
        return {"points": self.points, "labelled": self.labelled, "start": self.start,
                "next_labelled": self.next_labelled, "next_elapsed": self.next_elapsed,
                "active": self.active}

    @classmethod
    def from_dict(cls, experiment: str, d: dict[str, Any] | None) -> History:
        new = cls(experiment)
        if d:  # a state saved before history points existed starts the cadence afresh
            new.points, new.labelled, new.start = d["points"], d["labelled"], d["start"]
            new.next_labelled, new.next_elapsed = d["next_labelled"], d["next_elapsed"]
            new.active = d.get("active")
        return new


def is_point(value: Any) -> bool:
    """A message of the history topic as rollguard writes it (readers skip anything else).

    >>> is_point({"experiment": "e", "point": 3, "ts": 12.5, "candidates": {}})
    True
    >>> is_point({"experiment": "e", "point": "3"}), is_point([1])
    (False, False)
    """
    return isinstance(value, dict) and isinstance(value.get("experiment"), str) \
        and isinstance(value.get("point"), int) and isinstance(value.get("ts"), (int, float)) \
        and math.isfinite(value["ts"]) and isinstance(value.get("candidates"), dict)
