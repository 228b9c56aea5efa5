"""``rollguard stats EXPERIMENT``: one statistics snapshot (docs/stats-snapshot.md), readable.

>>> from rich.console import Console
>>> console = Console(width=100, record=True, color_system=None, file=open("/dev/null", "w"))
>>> console.print(render({"experiment": "e", "mode": "shadow", "champion": "m:1",
...     "candidates": ["m:2"], "buffered": 0, "counters": {}, "decision": {"final": None,
...     "last_reason": None}, "statistics": {"records": 0, "arms": {}, "pairs": {},
...     "segments": {}, "label_delay": {}, "feature_drift": {}}}))
>>> print(console.export_text().splitlines()[2])
no decision yet
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def _f(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _arms_table(stats: dict[str, Any]) -> Table:
    table = Table(title="per arm", title_justify="left")
    columns = ["arm", "served share", "scored", "error rate", "latency p50/p95/p99 ms",
               "labelled", "accuracy", "precision", "recall", "log-loss", "brier", "ROC AUC",
               "ECE", "MAE", "MSE", "score PSI", "score KS"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for arm, figures in stats.get("arms", {}).items():
        serving = figures.get("serving") or {}
        outcomes = figures.get("outcomes") or {}
        drift = figures.get("score_drift") or {}
        latency = "/".join(_f(serving.get(k), 3) for k in
                           ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"))
        table.add_row(arm, _f(figures.get("served_share"), 3), _f(serving.get("count")),
                      _f(serving.get("error_rate"), 3), latency, _f(outcomes.get("count")),
                      _f(outcomes.get("accuracy")), _f(outcomes.get("precision")),
                      _f(outcomes.get("recall")), _f(outcomes.get("log_loss")),
                      _f(outcomes.get("brier")), _f(outcomes.get("roc_auc")),
                      _f((outcomes.get("calibration") or {}).get("ece"), 3),
                      _f(outcomes.get("mae")), _f(outcomes.get("mse")),
                      _f(drift.get("psi"), 3), _f(drift.get("ks"), 3))
    return table


def _pairs_table(stats: dict[str, Any]) -> Table:
    table = Table(title="candidate vs champion, same requests", title_justify="left")
    for column in ("candidate", "pairs", "agreement", "score correlation", "labelled pairs",
                   "mean loss difference (champion − candidate)"):
        table.add_column(column)
    for arm, pair in stats.get("pairs", {}).items():
        table.add_row(arm, _f(pair.get("pairs")), _f(pair.get("agreement"), 3),
                      _f(pair.get("score_correlation"), 3), _f(pair.get("outcomes")),
                      _f(pair.get("difference_mean")))
    return table


def _segments_table(stats: dict[str, Any]) -> Table:
    table = Table(title="per segment", title_justify="left")
    for column in ("segment", "arm", "labelled", "accuracy", "precision", "recall", "MAE"):
        table.add_column(column)
    for key, by_value in stats.get("segments", {}).items():
        for value, by_arm in by_value.items():
            for arm, figures in by_arm.items():
                table.add_row(f"{key}={value}", arm, _f(figures.get("count")),
                              _f(figures.get("accuracy")), _f(figures.get("precision")),
                              _f(figures.get("recall")), _f(figures.get("mae")))
    return table


def render(snapshot: dict[str, Any]) -> Group:
    """The renderables of one snapshot: header, decision, tables, delays, counters."""
    stats = snapshot.get("statistics", {})
    decision = snapshot.get("decision") or {}
    final = decision.get("final")
    header = Text(f"experiment {snapshot.get('experiment')} ({snapshot.get('mode')}): champion "
                  f"{snapshot.get('champion')}, candidates {', '.join(snapshot.get('candidates', []))}; "
                  f"{_f(stats.get('records'))} joined records, {_f(snapshot.get('buffered'))} "
                  "waiting for event-time order", style="bold")
    if final:
        verdict = Text(f"decision: {final['action']} (seq {final['seq']}): {final['reason']}")
    elif decision.get("last_reason"):
        verdict = Text(f"no final decision yet; last event: {decision['last_reason']}")
    else:
        verdict = Text("no decision yet")
    delay = stats.get("label_delay") or {}
    delays = Text("label delay: p50 " + _f(delay.get("delay_p50_s"), 3) + " s, p90 "
                  + _f(delay.get("delay_p90_s"), 3) + " s, p99 " + _f(delay.get("delay_p99_s"), 3)
                  + f" s over {_f(delay.get('labels'))} labels")
    counters = snapshot.get("counters") or {}
    counted = Text("counters: " + (", ".join(f"{k} {v}" for k, v in counters.items()) or "none"))
    parts = [header, verdict, _arms_table(stats)]
    if stats.get("pairs"):
        parts.append(_pairs_table(stats))
    if stats.get("segments"):
        parts.append(_segments_table(stats))
    parts += [delays, counted]
    return Group(*parts)
