"""``rollguard stats EXPERIMENT``: one statistics snapshot (docs/stats-snapshot.md), readable.

The default layout fits the width it is given (the terminal's; 80 columns when there is no
terminal) without squeezing a column: each table keeps the columns that matter most (per arm:
the arm, labelled n, the primary metric and Δ vs champion with its confidence sequence, then
scored, error rate, p99 latency, ...) as long as they fit whole, and turns into one block of
``name value`` rows per arm when even those do not fit. A dim last line says that ``--wide``
shows every column; with it, each table has every column at its natural width, wider than
the terminal if it must be.

>>> import io
>>> from rich.console import Console
>>> console = Console(width=80, record=True, color_system=None, file=io.StringIO())
>>> print_stats(console, {"experiment": "e", "mode": "shadow", "champion": "m:1",
...     "candidates": ["m:2"], "buffered": 0, "counters": {}, "decision": {"final": None,
...     "last_reason": None, "evidence": {"metric": "accuracy", "alpha": 0.05, "candidates": {
...         "m:2": {"alpha": 0.05, "delta": {"estimate": 0.07, "lower": 0.032, "upper": 0.125}}}}},
...     "statistics": {"records": 1200, "arms": {
...         "m:1": {"served_share": 1.0, "serving": {"count": 600, "error_rate": 0.0},
...                 "outcomes": {"count": 540, "accuracy": 0.792}},
...         "m:2": {"served_share": 0.0, "serving": {"count": 600, "error_rate": 0.0},
...                 "outcomes": {"count": 540, "accuracy": 0.8749}}},
...     "pairs": {}, "segments": {}, "label_delay": {}, "feature_drift": {}}})
>>> for line in console.export_text().splitlines():
...     print(line.rstrip())
experiment e (shadow): champion m:1, candidates m:2; 1200 joined records, 0
waiting for event-time order
no decision yet
per arm
arm  scored  error rate  labelled  accuracy    Δ vs champion, 95% CS
────────────────────────────────────────────────────────────────────
m:1     600           0       540     0.792
m:2     600           0       540    0.8749  +0.070 [+0.032, +0.125]
label delay: p50 – s, p90 – s, p99 – s over – labels
counters: none
--wide shows every column (1 left out here to fit 80 columns)
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from rollguard.status import METRIC_KEY, fmt_interval

#: the width the default layout fits when none is given (a terminal's usual width)
DEFAULT_WIDTH = 80
#: in the one-block-per-row layout (too narrow for a table), the optional columns shown
_BLOCK_PRIORITY = 4


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


@dataclass(frozen=True)
class Column:
    """One column of a table.

    ``priority``: ``0`` always in the default layout, ``1, 2, ...`` in the default layout in
    that order while the table fits, ``None`` only with ``--wide``. ``wide``: in the
    ``--wide`` table. ``key``: part of a row's name (the title of its block when the table
    does not fit).
    """

    header: str
    cell: Callable[[Any], str]
    priority: int | None
    wide: bool = True
    numeric: bool = True
    key: bool = False


def _empty(column: Column, rows: Sequence[Any]) -> bool:
    """No row has a figure in this column (a regression metric of a binary task, ...)."""
    return all(not column.cell(row).strip("–/ ") for row in rows)


def _table(columns: Sequence[Column], rows: Sequence[Any]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
                  collapse_padding=True)
    for column in columns:
        table.add_column(column.header, justify="right" if column.numeric else "left",
                         no_wrap=True)
    for row in rows:
        table.add_row(*(column.cell(row) for column in columns))
    return table


@functools.cache
def _measuring_console() -> Console:
    return Console(width=100_000, file=io.StringIO(), color_system=None, legacy_windows=False)


def natural_width(renderable: RenderableType, console: Console | None = None) -> int:
    """How many columns ``renderable`` takes when nothing limits it (a table: every column whole).

    >>> natural_width(_table([Column("arm", str, 0, numeric=False)], ["m:1", "loan:12"]))
    7
    """
    console = console or _measuring_console()
    options = console.options.update(width=100_000)
    return Measurement.get(console, options, renderable).maximum


class _Natural:
    """A table at its natural width, even when that is wider than the console (``--wide``)."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(options.max_width, natural_width(self.table, console))
        yield from console.render(self.table, options.update(width=width))

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        width = natural_width(self.table, console)
        return Measurement(width, width)


def _blocks(columns: Sequence[Column], rows: Sequence[Any], width: int) -> Group:
    """One block per row: its name (the key columns) in bold, then one ``header  value`` row
    per figure, aligned; when that does not fit ``width``, each value under its header."""
    keys = [c for c in columns if c.key] or list(columns[:1])
    rest = [c for c in columns if c not in keys]
    value_width = max((cell_len(c.cell(row)) for c in rest for row in rows), default=0)
    # headers as wide as the widest, or wrapped between words to keep values whole
    label_width = min(max((cell_len(c.header) for c in rest), default=0), width - 4 - value_width)
    aligned = label_width >= max((cell_len(w) for c in rest for w in c.header.split()), default=0)
    blocks: list[RenderableType] = []
    for row in rows:
        blocks.append(Text("  ".join(c.cell(row) for c in keys), style="bold",
                           overflow="fold"))
        figures = [(c.header, c.cell(row)) for c in rest if c.cell(row)]
        if aligned:
            grid = Table.grid(padding=(0, 2, 0, 0))
            grid.add_column(width=0)  # the indent: the padding after it
            grid.add_column(width=label_width)
            grid.add_column(no_wrap=True)
            for header, value in figures:
                grid.add_row("", header, value)
            blocks.append(grid)
        else:
            for header, value in figures:
                blocks += [Text("  " + header), Text("    " + value)]
    return Group(*blocks)


@dataclass
class Layout:
    """Which columns a table shows, and how many of the ``--wide`` ones it leaves out."""

    renderable: RenderableType
    left_out: int = 0


def lay_out(columns: Sequence[Column], rows: Sequence[Any], width: int, wide: bool) -> Layout:
    """The table of ``rows``: every ``--wide`` column (``wide``), or the columns that fit ``width``.

    The columns of priority 0 come first; the others join in priority order when the table
    still fits (skipping columns no row has a figure in); no column is ever squeezed. When
    even the columns of priority 0 do not fit, each row becomes a block of ``header value``
    rows instead.
    """
    if wide:
        return Layout(_Natural(_table([c for c in columns if c.wide], rows)))
    shown = [c for c in columns if c.priority == 0]
    optional = sorted((c for c in columns if c.priority and not _empty(c, rows)),
                      key=lambda c: c.priority)

    def in_order(chosen: Iterable[Column]) -> list[Column]:
        return sorted(chosen, key=columns.index)

    if natural_width(_table(shown, rows)) > width:
        shown = in_order(shown + [c for c in optional if c.priority <= _BLOCK_PRIORITY])
        renderable: RenderableType = _blocks(shown, rows, width)
    else:
        for column in optional:
            if natural_width(_table(in_order(shown + [column]), rows)) <= width:
                shown.append(column)
        shown = in_order(shown)
        renderable = _table(shown, rows)
    left_out = sum(1 for c in columns if c.wide and c not in shown and not _empty(c, rows))
    return Layout(renderable, left_out)


# -- the tables --------------------------------------------------------------------------------

#: the outcome figure (a key of ``statistics.arms[arm].outcomes``) -> its column header
_OUTCOME_HEADERS = {"accuracy": "accuracy", "precision": "precision", "recall": "recall",
                    "log_loss": "log-loss", "brier": "brier", "roc_auc": "ROC AUC",
                    "mae": "MAE", "mse": "MSE"}


def _primary(snapshot: dict[str, Any]) -> str | None:
    """The outcome key of the experiment's primary metric (``accuracy``, ``mae``, ...), if known."""
    metric = (((snapshot.get("decision") or {}).get("evidence") or {}).get("metric"))
    return METRIC_KEY.get(metric, metric) if metric else None


def _delta_column(snapshot: dict[str, Any]) -> Column:
    """Δ = candidate − champion of the primary metric (higher is better) with its confidence
    sequence, from the sequential test's evidence: blank for the champion."""
    evidence = (snapshot.get("decision") or {}).get("evidence") or {}
    tracks = evidence.get("candidates") or {}
    alphas = {t.get("alpha") or evidence.get("alpha") or 0.05 for t in tracks.values()} or {0.05}

    def level(alpha: float) -> str:
        return f"{100 * (1 - alpha):.4g}%"

    one_level = len(alphas) == 1

    def cell(row: tuple[str, dict[str, Any]]) -> str:
        arm = row[0]
        if arm == snapshot.get("champion") or arm not in tracks:
            return ""
        track = tracks[arm]
        delta = track.get("delta") or {}
        text = fmt_interval(delta.get("estimate"), delta.get("lower"), delta.get("upper"))
        if not one_level and text != "–":
            text += f" ({level(track.get('alpha') or evidence.get('alpha') or 0.05)})"
        return text

    header = f"Δ vs champion, {level(next(iter(alphas)))} CS" if one_level else \
        "Δ vs champion, CS (level)"
    return Column(header, cell, 0)


def arm_columns(snapshot: dict[str, Any]) -> list[Column]:
    """The per-arm columns, in display order: today's full table with Δ after the primary
    metric, and a ``p99 ms`` column of the default layout."""

    def serving(row: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        return row[1].get("serving") or {}

    def outcomes(row: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        return row[1].get("outcomes") or {}

    def drift(row: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        return row[1].get("score_drift") or {}

    def outcome(key: str) -> Callable[[tuple[str, dict[str, Any]]], str]:
        return lambda row: _f(outcomes(row).get(key))

    def latency(row: tuple[str, dict[str, Any]]) -> str:
        return "/".join(_f(serving(row).get(k), 3) for k in
                        ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"))

    primary = _primary(snapshot)
    columns = [
        Column("arm", lambda row: row[0], 0, numeric=False, key=True),
        Column("served share", lambda row: _f(row[1].get("served_share"), 3), 4),
        Column("scored", lambda row: _f(serving(row).get("count")), 1),
        Column("error rate", lambda row: _f(serving(row).get("error_rate"), 3), 2),
        Column("latency p50/p95/p99 ms", latency, None),
        Column("p99 ms", lambda row: _f(serving(row).get("latency_p99_ms"), 3), 3,
               wide=False),
        Column("labelled", lambda row: _f(outcomes(row).get("count")), 0),
    ]
    for priority, key in enumerate(("accuracy", "precision", "recall", "log_loss", "brier",
                                    "roc_auc"), start=5):
        columns.append(Column(_OUTCOME_HEADERS[key], outcome(key), priority))
    columns.append(Column("ECE", lambda row: _f((outcomes(row).get("calibration") or {})
                                                .get("ece"), 3), 11))
    columns += [Column("MAE", outcome("mae"), 12), Column("MSE", outcome("mse"), 13),
                Column("score PSI", lambda row: _f(drift(row).get("psi"), 3), 14),
                Column("score KS", lambda row: _f(drift(row).get("ks"), 3), 15)]
    delta = _delta_column(snapshot)
    if _empty(delta, list((snapshot.get("statistics") or {}).get("arms", {}).items())):
        delta = replace(delta, priority=None)  # no evidence yet: a column of blanks
    at = next((i for i, c in enumerate(columns) if c.header == _OUTCOME_HEADERS.get(primary)),
              None)
    if at is not None:
        columns[at] = replace(columns[at], priority=0)
        columns.insert(at + 1, delta)
    else:
        columns.append(delta)
    return columns


def pair_columns() -> list[Column]:
    return [
        Column("candidate", lambda row: row[0], 0, numeric=False, key=True),
        Column("pairs", lambda row: _f(row[1].get("pairs")), 0),
        Column("agreement", lambda row: _f(row[1].get("agreement"), 3), 0),
        Column("score correlation", lambda row: _f(row[1].get("score_correlation"), 3), 2),
        Column("labelled pairs", lambda row: _f(row[1].get("outcomes")), 1),
        Column("mean loss difference (champion − candidate)",
               lambda row: _f(row[1].get("difference_mean")), 3),
    ]


def segment_columns(snapshot: dict[str, Any]) -> list[Column]:
    primary = _primary(snapshot)
    columns = [Column("segment", lambda row: row[0], 0, numeric=False, key=True),
               Column("arm", lambda row: row[1], 0, numeric=False, key=True),
               Column("labelled", lambda row: _f(row[2].get("count")), 0)]
    for priority, key in enumerate(("accuracy", "precision", "recall", "mae"), start=1):
        columns.append(Column(_OUTCOME_HEADERS[key],
                              lambda row, key=key: _f(row[2].get(key)),
                              0 if key == primary else priority))
    return columns


def _segment_rows(stats: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(f"{key}={value}", arm, figures)
            for key, by_value in stats.get("segments", {}).items()
            for value, by_arm in by_value.items()
            for arm, figures in by_arm.items()]


def render(snapshot: dict[str, Any], *, width: int = DEFAULT_WIDTH, wide: bool = False) -> Group:
    """The renderables of one snapshot: header, decision, tables, delays, counters.

    Without ``wide``, every line fits ``width`` columns and the last (dim) one says that
    ``--wide`` shows every column; with ``wide``, each table has every column, at its natural
    width. Print it with :func:`print_stats` (which lets a ``--wide`` table be wider than the
    console instead of cropping it).
    """
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

    tables = [("per arm", arm_columns(snapshot), list(stats.get("arms", {}).items()))]
    if stats.get("pairs"):
        tables.append(("candidate vs champion, same requests", pair_columns(),
                       list(stats["pairs"].items())))
    if stats.get("segments"):
        tables.append(("per segment", segment_columns(snapshot), _segment_rows(stats)))
    parts: list[RenderableType] = [header, verdict]
    left_out = 0
    for title, columns, rows in tables:
        layout = lay_out(columns, rows, width, wide)
        left_out += layout.left_out
        parts += [Text(title, style="italic"), layout.renderable]
    parts += [delays, counted]
    if not wide:
        note = f" ({left_out} left out here to fit {width} columns)" if left_out else ""
        parts.append(Text(f"--wide shows every column{note}", style="dim"))
    return Group(*parts)


def print_stats(console: Console, snapshot: dict[str, Any], *, wide: bool = False) -> None:
    """Print one snapshot on ``console``: the default layout fits ``console.width``; with
    ``wide``, every column, each table as wide as it needs (lines longer than the console
    rather than squeezed or cropped columns)."""
    console.print(render(snapshot, width=console.width, wide=wide), soft_wrap=False,
                  crop=not wide)
