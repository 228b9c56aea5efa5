"""What the dashboard knows: the messages of rollguard's own topics, shaped for its pages.

:class:`Board` takes the messages of ``<prefix>control``, ``stats``, ``history`` and
``deadletter`` (in any order, any number of times) and keeps, per experiment, the latest
statistics snapshot, every control event by ``seq``, the history points as columns for the
charts, and the latest dead letters. :meth:`Board.overview` and :meth:`Board.detail` are the
JSON the pages render. Nothing here decides or computes a statistic: every figure is one the
worker published, and the pages only lay them out.

>>> board = Board()
>>> point = {"experiment": "e", "point": 1, "ts": 100.0, "state": "running", "seq": 1,
...     "champion": "m:1", "traffic": {"m:1": 1.0}, "shadow": ["m:2"], "margin": 0.01,
...     "alpha": 0.05, "metric": "accuracy", "labelled": 40, "records": 90,
...     "candidates": {"m:2": {"status": "active", "alpha": 0.05, "n": {"m:1": 40, "m:2": 40},
...         "delta": {"estimate": 0.05, "lower": -0.1, "upper": 0.2}, "guardrails": []}},
...     "events": [{"seq": 1, "action": "start", "champion": "m:1", "traffic": {"m:1": 1.0},
...                 "reason": "The experiment starts in shadow mode."}]}
>>> board.take("history", b"e", json.dumps(point).encode(), published_at=1000.0)
'e'
>>> board.take("history", b"e", json.dumps(point).encode(), published_at=1000.0)  # again
>>> [row["name"] for row in board.overview(now=1010.0)["experiments"]]
['e']
>>> detail = board.detail("e", now=1010.0)
>>> detail["series"]["delta"]["m:2"]["lower"], detail["decisions"][0]["action"]
([-0.1], 'start')
>>> detail["tests"][0]["delta"]["estimate"], detail["confidence"]
(0.05, 0.95)
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rollguard.decisions.history import is_point
from rollguard.status import FINAL, METRIC_KEY, ExperimentView, is_final

#: the latest dead letters kept per experiment (and for input tied to none)
RECENT_DEAD_LETTERS = 20
#: dead letters of input that names no experiment (not JSON, labels, ...) are kept under this
UNATTRIBUTED = ""
#: outcome figures of an arm shown on the experiment page (all are estimates)
OUTCOME_KEYS = ("accuracy", "precision", "recall", "f1", "log_loss", "brier", "roc_auc", "mae",
                "mse", "rmse", "mean_true", "mean_pred", "hit_rate_at_k", "reciprocal_rank",
                "ndcg_at_k", "precision_at_k", "reward")


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _json_value(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None


@dataclass
class Series:
    """An experiment's history points as columns (one entry per point, ``None`` where a
    figure is missing), ready for the charts."""

    ts: list[float] = field(default_factory=list)
    labelled: list[int | None] = field(default_factory=list)
    state: list[str | None] = field(default_factory=list)
    delta: dict[str, dict[str, list]] = field(default_factory=dict)
    bake: dict[str, list] = field(default_factory=dict)
    traffic: dict[str, list] = field(default_factory=dict)
    srm_p: list[float | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts)

    @staticmethod
    def _put(columns: dict[str, list], key: str, value: Any, at: int) -> None:
        column = columns.get(key)
        if column is None:
            column = columns[key] = [None] * at
        column.append(value)

    def add(self, point: dict[str, Any]) -> None:
        at = len(self.ts)
        self.ts.append(float(point["ts"]))
        self.labelled.append(point.get("labelled"))
        self.state.append(point.get("state"))
        champion_of = {}
        for arm, track in point["candidates"].items():
            delta = track.get("delta") or {}
            n = track.get("n") or {}
            columns = self.delta.setdefault(arm, {})
            for key in ("estimate", "lower", "upper"):
                self._put(columns, key, _finite(delta.get(key)), at)
            champion_of[arm] = next((n[a] for a in n if a != arm), None)
            self._put(columns, "n_champion", champion_of[arm], at)
            self._put(columns, "n_candidate", n.get(arm), at)
        bake = point.get("bake") or {}
        bake_delta = bake.get("delta") or {}
        for key in ("estimate", "lower", "upper"):
            self._put(self.bake, key, _finite(bake_delta.get(key)), at)
        for arm, share in (point.get("traffic") or {}).items():
            self._put(self.traffic, arm, _finite(share), at)
        srm = point.get("srm") or {}
        self.srm_p.append(_finite(srm.get("p_value")))
        # columns a point did not mention get a gap
        for columns in (*self.delta.values(), self.bake, self.traffic):
            for column in columns.values():
                if len(column) < at + 1:
                    column.append(None)
        for arm, column in self.traffic.items():
            if column[-1] is None and arm not in (point.get("traffic") or {}):
                column[-1] = 0.0  # an arm without traffic in this point serves nothing

    def to_json(self) -> dict[str, Any]:
        return {"points": len(self.ts), "ts": self.ts, "labelled": self.labelled,
                "state": self.state, "delta": self.delta,
                "bake": self.bake if any(v is not None for v in self.bake.get("lower", ()))
                else None,
                "traffic": self.traffic,
                "srm_p": self.srm_p if any(v is not None for v in self.srm_p) else None}


@dataclass
class Experiment:
    """What the topics said about one experiment."""

    name: str
    snapshot: dict[str, Any] | None = None
    snapshot_at: float | None = None
    decisions: dict[int, dict[str, Any]] = field(default_factory=dict)
    last_point: dict[str, Any] | None = None
    series: Series = field(default_factory=Series)
    dead_letters: deque = field(default_factory=lambda: deque(maxlen=RECENT_DEAD_LETTERS))

    def view(self) -> ExperimentView:
        """The figures as ``rollguard status`` reads them (its rules for champion, traffic,
        final decision: one reading for the terminal and the web)."""
        decisions = [self.decisions[s] for s in sorted(self.decisions)]
        # the control topic keeps the latest event of each experiment (compaction drops only
        # older ones, which the history points still hold)
        control = next((d for d in reversed(decisions) if d["source"] == "control"), None)
        return ExperimentView(self.name, snapshot=self.snapshot, snapshot_at=self.snapshot_at,
                              control=control, history=decisions)


class Board:
    """Every experiment under one topic prefix, from the messages of its topics."""

    def __init__(self, allow_control: bool = False) -> None:
        self.experiments: dict[str, Experiment] = {}
        self.unattributed: deque = deque(maxlen=RECENT_DEAD_LETTERS)
        self.unattributed_total = 0
        self.version = 0
        self.changed_at: dict[str, int] = {}  # experiment -> version of its last change
        self.allow_control = allow_control

    def _experiment(self, name: str) -> Experiment:
        exp = self.experiments.get(name)
        if exp is None:
            exp = self.experiments[name] = Experiment(name)
        return exp

    # -- messages ---------------------------------------------------------------------------
    def take(self, kind: str, key: bytes | None, value: bytes | None, *,
             published_at: float | None = None,
             headers: dict[str, bytes] | None = None) -> str | None:
        """One message of topic ``kind`` (``control``, ``stats``, ``history``,
        ``deadletter``); returns the experiment it changed (``""``: none in particular),
        or None when it changed nothing (a duplicate, a tombstone, something unreadable)."""
        if kind == "deadletter":
            name = self._dead_letter(value, headers or {}, published_at)
        else:
            name = self._take(kind, key, _json_value(value), published_at)
        if name is not None:
            self.version += 1
            self.changed_at[name] = self.version
        return name

    def _take(self, kind: str, key: bytes | None, value: Any,
              published_at: float | None) -> str | None:
        if not isinstance(value, dict):
            return None
        if kind == "stats":
            name = value.get("experiment")
            if not isinstance(name, str):
                return None
            exp = self._experiment(name)
            exp.snapshot, exp.snapshot_at = value, value.get("published_at") or published_at
            return name
        if kind == "control":
            name, seq = value.get("experiment"), value.get("seq")
            if not isinstance(name, str) or not isinstance(seq, int):
                return None
            exp = self._experiment(name)
            known = exp.decisions.get(seq)
            if known is not None and known["source"] == "control":
                return None  # the seq rule: each event once
            exp.decisions[seq] = {**value, "published_at": published_at, "source": "control",
                                  "final": is_final(value)}
            return name
        if kind == "history" and is_point(value):
            exp = self._experiment(value["experiment"])
            last = exp.last_point
            if last is not None and value["point"] <= last["point"]:
                return None  # a point already taken (the rule of seq, for points)
            exp.last_point = value
            exp.series.add(value)
            for event in value.get("events") or ():
                seq = event.get("seq")
                if isinstance(seq, int) and seq not in exp.decisions:
                    final = event.get("action") in FINAL and value.get("state") != "baking"
                    exp.decisions[seq] = {"experiment": exp.name, "ts": value["ts"],
                                          "mode": value.get("mode"), **event,
                                          "published_at": published_at, "source": "history",
                                          "final": final}
            return exp.name
        return None

    def _dead_letter(self, value: bytes | None, headers: dict[str, bytes],
                     published_at: float | None) -> str:
        text = lambda k: headers.get(k, b"").decode("utf-8", "replace")  # noqa: E731
        entry = {"error": text("rollguard.error"), "topic": text("rollguard.topic"),
                 "offset": text("rollguard.offset"), "published_at": published_at}
        parsed = _json_value(value)
        name = parsed.get("experiment") if isinstance(parsed, dict) else None
        if isinstance(name, str) and name in self.experiments:
            self.experiments[name].dead_letters.appendleft(entry)
            return name
        self.unattributed.appendleft({**entry, "experiment": name if isinstance(name, str)
                                      else None})
        self.unattributed_total += 1
        return UNATTRIBUTED

    def changed_since(self, version: int) -> list[str]:
        return sorted(n for n, v in self.changed_at.items() if v > version)

    # -- the pages' JSON --------------------------------------------------------------------
    def overview(self, now: float | None = None) -> dict[str, Any]:
        """The list page: one row per experiment, by name."""
        now = time.time() if now is None else now
        return {"version": self.version, "allow_control": self.allow_control,
                "experiments": [summary(self.experiments[n], now)
                                for n in sorted(self.experiments) if n != UNATTRIBUTED],
                "unattributed_dead_letters": {"total": self.unattributed_total,
                                              "recent": list(self.unattributed)}}

    def detail(self, name: str, now: float | None = None) -> dict[str, Any] | None:
        """One experiment's page, or None when nothing was published about it."""
        exp = self.experiments.get(name)
        if exp is None:
            return None
        return detail(exp, time.time() if now is None else now, self.allow_control)


# -- shaping ------------------------------------------------------------------------------------
def _confidence(alpha: Any) -> float | None:
    a = _finite(alpha)
    return None if a is None else round(1.0 - a, 6)


def _state(view: ExperimentView, exp: Experiment) -> str:
    final = view.final()
    if final is not None:
        return final.get("action") or "final"
    if view.evidence.get("paused") or (exp.last_point or {}).get("state") == "paused":
        return "paused"
    if "bake" in view.evidence or (exp.last_point or {}).get("state") == "baking":
        return "baking"
    if view.control is not None or exp.snapshot is not None:
        return "running"
    return "waiting"


def _evidence(view: ExperimentView, exp: Experiment) -> dict[str, Any]:
    """The newest evidence: the snapshot's, else the latest control event's, else the last
    history point's (which holds the same figures, trimmed)."""
    if view.evidence:
        return view.evidence
    point = exp.last_point or {}
    return {k: point.get(k) for k in ("metric", "alpha", "margin", "traffic", "candidates",
                                      "srm", "canary_step", "bandit", "bake", "paused")
            if k in point}


def _decision(event: dict[str, Any], now: float) -> dict[str, Any]:
    published = _finite(event.get("published_at"))
    return {"seq": event.get("seq"), "ts": event.get("ts"), "action": event.get("action"),
            "reason": event.get("reason"), "champion": event.get("champion"),
            "traffic": event.get("traffic"), "published_at": published,
            "age_s": None if published is None else max(0.0, now - published),
            "final": bool(event.get("final"))}


def summary(exp: Experiment, now: float) -> dict[str, Any]:
    """One row of the list page."""
    view = exp.view()
    evidence = _evidence(view, exp)
    original = view.original_champion or (exp.last_point or {}).get("champion")
    tracks = evidence.get("candidates") or {}
    candidates = list((exp.snapshot or {}).get("candidates") or sorted(tracks))
    labelled = {}
    for arm in [original, *candidates]:
        n = view.labelled(arm) if arm else None
        if n is None:  # no snapshot yet: the test's own count
            n = next(((t.get("n") or {}).get(arm) for t in tracks.values()
                      if arm in (t.get("n") or {})), None)
        if arm:
            labelled[arm] = n
    counts = {"pass": 0, "fail": 0, "undecided": 0}
    for track in tracks.values():
        for g in track.get("guardrails") or ():
            counts[g.get("status", "undecided")] = counts.get(g.get("status", "undecided"), 0) + 1
    deltas = []
    for arm in candidates:
        track = tracks.get(arm) or {}
        d = track.get("delta") or {}
        deltas.append({"candidate": arm, "status": track.get("status"),
                       "estimate": _finite(d.get("estimate")), "lower": _finite(d.get("lower")),
                       "upper": _finite(d.get("upper")),
                       "confidence": _confidence(track.get("alpha", evidence.get("alpha")))})
    decisions = [exp.decisions[s] for s in sorted(exp.decisions)]
    traffic = view.traffic() or dict(evidence.get("traffic") or {})
    srm = evidence.get("srm")
    return {
        "name": exp.name,
        "mode": view.mode if view.mode != "?" else (exp.last_point or {}).get("mode"),
        "metric": evidence.get("metric"), "margin": evidence.get("margin"),
        "original_champion": original, "champion": view.champion or original,
        "candidates": candidates, "traffic": traffic, "shadow": view.shadow(),
        "labelled": labelled, "deltas": deltas, "guardrails": counts,
        "srm": None if srm is None else srm.get("status"),
        "state": _state(view, exp),
        "latest": _decision(decisions[-1], now) if decisions else None,
        "snapshot_age_s": None if exp.snapshot_at is None else max(0.0, now - exp.snapshot_at),
        "points": len(exp.series),
    }


def _limit_text(g: dict[str, Any]) -> str | None:
    limit = g.get("limit")
    if isinstance(limit, dict):
        return ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                         for k, v in limit.items())
    if isinstance(limit, (int, float)) and not isinstance(limit, bool):
        return f"max {limit:g}"
    if g.get("max_ratio") is not None:
        return f"max {g['max_ratio']:g} × champion's"
    if g.get("limit_ms") is not None:
        return f"max {g['limit_ms']:g} ms"
    return None


def guardrail_row(g: dict[str, Any], alpha: Any) -> dict[str, Any]:
    """A guardrail's evidence as the page shows it: status, the estimate, its bounds and
    their confidence, the limit, and for the latency ratio test its e-values.

    >>> row = guardrail_row({"guardrail": "error_rate <= 0.05", "status": "pass", "n": 900,
    ...     "estimate": 0.0, "lower": 0.0, "upper": 0.0055, "limit": {"max": 0.05}}, 0.05)
    >>> row["limit"], row["upper"], row["confidence"]
    ('max 0.05', 0.0055, 0.95)
    """
    estimate = g.get("estimate", g.get("ratio_estimate"))
    return {"guardrail": g.get("guardrail"), "status": g.get("status", "undecided"),
            "n": g.get("n"), "estimate": _finite(estimate),
            "estimate_of": "ratio to the champion" if "ratio_estimate" in g else None,
            "lower": _finite(g.get("lower")), "upper": _finite(g.get("upper")),
            "confidence": _confidence(g.get("alpha", alpha)), "limit": _limit_text(g),
            "e_fail": _finite(g.get("e_fail")), "e_pass": _finite(g.get("e_pass")),
            "threshold": _finite(g.get("threshold")), "method": g.get("method")}


def _role(view: ExperimentView, arm: str, state: str) -> str:
    original, now = view.original_champion, view.champion
    if arm == original:
        return "champion" if now == arm else "former champion"
    if arm == now:
        return "promoted"
    if view.track(arm).get("status") == "dropped" or state == "rollback":
        return "rolled back"
    if state in ("promote", "hold", "complete"):
        return "not promoted"
    return "candidate"


def _arm_rows(view: ExperimentView, arms: list[str], state: str) -> list[dict[str, Any]]:
    stats_arms = view.statistics.get("arms") or {}
    traffic, shadow = view.traffic(), view.shadow()
    metric_key = METRIC_KEY.get(view.metric, view.metric)
    rows = []
    for arm in arms:
        figures = stats_arms.get(arm) or {}
        serving = figures.get("serving") or {}
        outcomes = figures.get("outcomes") or {}
        rows.append({
            "arm": arm, "role": _role(view, arm, state), "traffic": traffic.get(arm),
            "shadow": arm in shadow, "served_share": _finite(figures.get("served_share")),
            "scored": serving.get("count"), "served": serving.get("served"),
            "errors": serving.get("errors"), "error_rate": _finite(serving.get("error_rate")),
            "latency_p50_ms": _finite(serving.get("latency_p50_ms")),
            "latency_p95_ms": _finite(serving.get("latency_p95_ms")),
            "latency_p99_ms": _finite(serving.get("latency_p99_ms")),
            "labelled": outcomes.get("count"), "metric": metric_key,
            "primary": _finite(outcomes.get(metric_key)),
            "outcomes": {k: _finite(outcomes[k]) for k in OUTCOME_KEYS
                         if _finite(outcomes.get(k)) is not None},
        })
    return rows


def _segments(view: ExperimentView, arms: list[str]) -> list[dict[str, Any]]:
    metric_key = METRIC_KEY.get(view.metric, view.metric)
    rows = []
    for key, values in sorted((view.statistics.get("segments") or {}).items()):
        for value, by_arm in sorted(values.items()):
            rows.append({"key": key, "value": value, "arms": {
                arm: {"count": (by_arm.get(arm) or {}).get("count"),
                      "primary": _finite((by_arm.get(arm) or {}).get(metric_key))}
                for arm in arms}})
    return rows


def _labels(view: ExperimentView) -> dict[str, Any]:
    stats = view.statistics
    arms = stats.get("arms") or {}
    scored = sum((a.get("serving") or {}).get("served") or 0 for a in arms.values()) or None
    records = stats.get("records")
    labelled = None if scored is None or records is None else records - scored
    expired = view.counter("unlabelled_expired")
    delay = stats.get("label_delay") or {}
    pending = None if labelled is None else max(0, scored - labelled - expired)
    return {"scored": scored, "labelled": labelled, "pending": pending,
            "late": view.counter("late_labels"), "expired": expired,
            "without_prediction": view.counter("labels_without_prediction"),
            "delay_p50_s": _finite(delay.get("delay_p50_s")),
            "delay_p90_s": _finite(delay.get("delay_p90_s")),
            "delay_p99_s": _finite(delay.get("delay_p99_s"))}


def _dead_letters(view: ExperimentView, exp: Experiment) -> dict[str, Any]:
    rows = []
    for key, n in sorted(((view.snapshot or {}).get("counters") or {}).items()):
        if "deadletter:" not in key:
            continue
        shared = key.startswith("all:")
        _, topic, problem = key.removeprefix("all:").split(":", 2)
        rows.append({"topic": topic, "reason": problem, "count": n,
                     "scope": "unreadable input, tied to no experiment" if shared
                     else "this experiment"})
    return {"by_reason": rows, "recent": list(exp.dead_letters)}


def detail(exp: Experiment, now: float, allow_control: bool = False) -> dict[str, Any]:
    """One experiment's page."""
    view = exp.view()
    row = summary(exp, now)
    evidence = _evidence(view, exp)
    state = row["state"]
    arms = [a for a in [row["original_champion"], *row["candidates"]] if a]
    tests = []
    for arm in row["candidates"]:
        track = (evidence.get("candidates") or {}).get(arm) or {}
        d = track.get("delta") or {}
        alpha = track.get("alpha", evidence.get("alpha"))
        tests.append({"candidate": arm, "status": track.get("status"), "alpha": alpha,
                      "confidence": _confidence(alpha), "n": track.get("n") or {},
                      "delta": {"estimate": _finite(d.get("estimate")),
                                "lower": _finite(d.get("lower")),
                                "upper": _finite(d.get("upper")), "method": d.get("method"),
                                "paired": d.get("paired")},
                      # mode interleave: the test's wins, losses and ties in the merged lists
                      "interleaving": (evidence.get("interleaving") or {}).get(arm),
                      "guardrails": [guardrail_row(g, alpha)
                                     for g in track.get("guardrails") or ()]})
    bake = evidence.get("bake")
    if bake is not None:
        d = bake.get("delta") or {}
        alpha = bake.get("alpha", evidence.get("alpha"))
        bake = {"champion": bake.get("champion"), "former": bake.get("former"),
                "since": bake.get("since"), "duration": bake.get("duration"),
                "min_samples": bake.get("min_samples"), "n": bake.get("n") or {},
                "confidence": _confidence(alpha),
                "delta": {"estimate": _finite(d.get("estimate")), "lower": _finite(d.get("lower")),
                          "upper": _finite(d.get("upper")), "method": d.get("method")},
                "guardrails": [guardrail_row(g, alpha) for g in bake.get("guardrails") or ()]}
    srm = evidence.get("srm")
    if srm is not None:
        srm = {"status": srm.get("status"), "n": srm.get("n"),
               "p_value": _finite(srm.get("p_value")),
               "shares": srm.get("shares") or {}, "observed": srm.get("observed") or {},
               "confidence": _confidence(srm.get("alpha", evidence.get("alpha"))),
               "method": srm.get("method")}
    bandit = evidence.get("bandit") or {}
    counters = {k: v for k, v in ((exp.snapshot or {}).get("counters") or {}).items()
                if "deadletter:" not in k}
    return {
        **row, "alpha": evidence.get("alpha"), "confidence": _confidence(evidence.get("alpha")),
        "min_samples": evidence.get("min_samples"), "records": evidence.get("records"),
        "allow_control": allow_control,
        "decisions": [_decision(exp.decisions[s], now) for s in sorted(exp.decisions)],
        "series": exp.series.to_json(), "arms": _arm_rows(view, arms, state), "tests": tests,
        "bake": bake, "srm": srm, "canary_step": evidence.get("canary_step"),
        "prob_best": bandit.get("prob_best"), "segments": _segments(view, arms),
        "labels": _labels(view), "dead_letters": _dead_letters(view, exp),
        "counters": counters, "buffered": (exp.snapshot or {}).get("buffered"),
        "paused": evidence.get("paused") if state == "paused" else None,
        "last_reason": row["latest"]["reason"] if row["latest"] else None,
    }
