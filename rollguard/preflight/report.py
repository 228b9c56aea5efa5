"""The preflight report: for a terminal, as JSON, and as one self-contained HTML file.

The HTML file holds its styles and its charts (SVG rendered here, :mod:`.svg`): it opens
offline, so a CI system can keep it as an artifact.

>>> from rollguard.preflight.base import CheckResult
>>> report = Report(source="preflight.yaml", candidate="m:predict_v2", champion="m:predict_v1",
...                 checks=[CheckResult("drift", "pass", "Feature drift", ["No drift."])],
...                 inputs={}, settings={})
>>> report.status, report.exit_code
('pass', 0)
>>> "<svg" in report.to_html() or "No drift." in report.to_html()
True
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from html import escape
from typing import Any

from rollguard.preflight.base import FAIL, PASS, SKIPPED, CheckResult

__all__ = ["Report", "print_report"]

STYLE = {PASS: "bold green", FAIL: "bold red", SKIPPED: "yellow"}


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats as strings, tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _utc(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class Report:
    """Every check's result and what they were run on."""

    source: str
    candidate: str
    champion: str
    checks: list[CheckResult]
    inputs: dict[str, Any]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    started_at: float = 0.0
    seconds: float = 0.0
    registration: dict[str, Any] | None = None

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def status(self) -> str:
        return FAIL if self.failed else PASS

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def headline(self) -> str:
        ran = [c for c in self.checks if c.status != SKIPPED]
        if self.failed:
            names = ", ".join(c.name for c in self.failed)
            return (f"FAIL: {len(self.failed)} of {len(ran)} checks failed ({names}); the "
                    f"candidate {self.candidate} may not enter shadow.")
        return (f"PASS: all {len(ran)} checks passed; the candidate {self.candidate} may enter "
                "shadow.")

    def to_dict(self) -> dict[str, Any]:
        return _clean({
            "preflight": self.source, "status": self.status, "exit_code": self.exit_code,
            "headline": self.headline(), "candidate": self.candidate,
            "champion": self.champion, "started_at": self.started_at,
            "seconds": round(self.seconds, 3), "inputs": self.inputs,
            "settings": self.settings, "notes": self.notes,
            "checks": [c.to_dict() for c in self.checks],
            "registration": self.registration})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    # -- HTML ---------------------------------------------------------------------------------
    def to_html(self) -> str:
        from rollguard.preflight.svg import render

        status = self.status
        parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                 f"<title>rollguard preflight: {escape(self.candidate)} {status.upper()}</title>"
                 f"<style>{_CSS}</style></head><body>",
                 f"<h1>rollguard preflight <span class='{status}'>{status.upper()}</span></h1>",
                 f"<p class='headline'>{escape(self.headline())}</p>",
                 "<table class='kv'>",
                 _row("candidate", self.candidate), _row("champion", self.champion),
                 _row("preflight file", self.source)]
        if self.started_at:
            parts.append(_row("run", f"{_utc(self.started_at)}, {self.seconds:.1f} s"))
        for key, value in self.settings.items():
            parts.append(_row(key, _text(value)))
        parts.append("</table><h2>Inputs</h2><table class='kv'>")
        for name, described in self.inputs.items():
            parts.append(_row(name, _describe_input(described)))
        parts.append("</table>")
        if self.notes:
            parts.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in self.notes) + "</ul>")
        parts.append("<h2>Checks</h2><table class='summary'><tr><th>check</th><th>status</th>"
                     "<th>what</th></tr>")
        for check in self.checks:
            parts.append(f"<tr><td><a href='#{check.name}'>{escape(check.name)}</a></td>"
                         f"<td class='{check.status}'>{check.status}</td>"
                         f"<td>{escape(check.title)}</td></tr>")
        parts.append("</table>")
        for check in self.checks:
            parts.append(f"<section id='{check.name}'><h3>{escape(check.title)} "
                         f"<span class='{check.status}'>{check.status}</span></h3><ul>")
            parts.extend(f"<li>{escape(s)}</li>" for s in check.sentences)
            parts.append("</ul>")
            parts.append(_figures_table(check))
            for plot in check.plots:
                parts.append(f"<figure>{render(plot)}</figure>")
            parts.append("<details><summary>figures (JSON)</summary><pre>"
                         f"{escape(json.dumps(_clean(check.figures), indent=1)[:200_000])}"
                         "</pre></details></section>")
        if self.registration:
            parts.append("<h2>Registration</h2><table class='kv'>")
            for key, value in self.registration.items():
                parts.append(_row(key, _text(value)))
            parts.append("</table>")
        parts.append("</body></html>\n")
        return "".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.4}
h1 span,h3 span{font-size:.7em;padding:.1em .5em;border-radius:4px;vertical-align:middle}
.pass{color:#fff;background:#2a7d2a}.fail{color:#fff;background:#b22222}
.skipped{color:#222;background:#f0d060}td.pass,td.fail,td.skipped{text-align:center}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.2em .5em;
font-size:.9em;vertical-align:top}th{background:#f5f5f5}.kv td:first-child{font-weight:600}
.headline{font-size:1.1em}section{border-top:1px solid #ccc;margin-top:1.5em}
pre{white-space:pre-wrap;font-size:.8em;background:#fafafa;padding:.5em}
figure{margin:.5em 0}
"""


def _row(key: str, value: str) -> str:
    return f"<tr><td>{escape(key)}</td><td>{escape(value)}</td></tr>"


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _describe_input(d: dict[str, Any]) -> str:
    if not isinstance(d, dict):
        return _text(d)
    text = f"{d.get('rows', '?')} rows from {d.get('source', '?')}"
    span = d.get("time_range")
    if span:
        text += f"; time range {_utc(span[0])} to {_utc(span[1])} ({_span(span[1] - span[0])})"
    elif "time_range" in d or d.get("name") == "production":
        text += "; time range unknown"
    for note in d.get("notes", []):
        text += f"; {note}"
    return text


def _span(seconds: float) -> str:
    """A duration for people.

    >>> _span(5.2), _span(5400), _span(86400 * 3)
    ('5.2 s', '1.5 h', '3 d')
    """
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= 2 * size or (unit == "h" and seconds >= size):
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


_COLUMNS = {
    "drift": ("features", ["feature", "kind", "status", "psi", "ks", "ks_lower", "ks_upper",
                           "unseen_share", "train_n", "production_n"]),
    "missing": ("features", ["feature", "status", "train", "production", "increase"]),
    "constraints": ("constraints", ["feature", "constraint", "status", "satisfied", "mostly",
                                    "violations", "checked", "examples"]),
    "edge_cases": ("cases", ["case", "outcome", "detail", "champion", "input"]),
}


def _figures_table(check: CheckResult) -> str:
    figures = check.figures
    if check.name == "latency" and "arms" in figures:
        rows = [{"model": k, **v} for k, v in figures["arms"].items()]
        if figures.get("champion_live"):
            live = figures["champion_live"]
            rows.append({"model": f"champion live ({live.get('arm')})",
                         "calls": live.get("latency_count"),
                         "p50_ms": live.get("latency_p50_ms"),
                         "p95_ms": live.get("latency_p95_ms"),
                         "p99_ms": live.get("latency_p99_ms")})
        return _table(rows, ["model", "calls", "errors", "p50_ms", "p95_ms", "p99_ms",
                             "throughput_rows_per_s"])
    if check.name == "non_inferiority" and "candidate" in figures:
        rows = [{"model": role, **figures[role]} for role in ("candidate", "champion")
                if role in figures]
        table = _table(rows, ["model", "value", "lower", "upper", "n", "method"])
        if "delta" in figures:
            table += _table([figures["delta"]], ["estimate", "lower", "upper", "margin",
                                                 "level", "p_value", "n", "method"])
        return table
    if check.name == "overfitting" and figures.get("learning_curve"):
        return _table(figures["learning_curve"], ["share", "rows", "train", "holdout"])
    if check.name in _COLUMNS:
        key, columns = _COLUMNS[check.name]
        rows = figures.get(key) or []
        if check.name == "edge_cases":
            rows = [r for r in rows if r.get("outcome") not in ("ok", "clean error")]
        elif check.name == "constraints":
            rows = sorted(rows, key=lambda r: r.get("status") != FAIL)
        return _table(rows, columns)
    return ""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(repr(v) for v in value)
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return ""
    used = [c for c in columns if any(c in r for r in rows)]
    head = "".join(f"<th>{escape(c)}</th>" for c in used)
    body = []
    for r in rows[:500]:
        cells = []
        for c in used:
            value = r.get(c)
            cls = f" class='{value}'" if c == "status" and value in (PASS, FAIL, SKIPPED) else ""
            cells.append(f"<td{cls}>{escape(_cell(value))[:300]}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


# -- terminal -------------------------------------------------------------------------------------
#: the terminal report is wrapped to the console's width, at most this many columns
MAX_WIDTH = 100


def _fill(text: str, width: int, indent: int, first: str | None = None) -> str:
    """``text`` wrapped to ``width`` columns, continuation lines indented by ``indent``.

    >>> print(_fill("one two three four five six seven eight nine ten", 40, 4, first="  x "))
      x one two three four five six seven
        eight nine ten
    """
    import textwrap

    return textwrap.fill(text, max(40, width), initial_indent=" " * indent if first is None
                         else first, subsequent_indent=" " * indent, break_on_hyphens=False)


def print_report(console: Any, report: Report) -> None:
    """The report for people, on a rich Console, wrapped to its width (at most
    ``MAX_WIDTH``) with sentences indented under their check."""
    from rich.text import Text

    width = min(console.width or 80, MAX_WIDTH)

    def say(text: str | Text) -> None:
        console.print(text, soft_wrap=False, width=width)

    say(Text.assemble(("rollguard preflight ", "bold"), f"{report.source}: ",
                      (report.candidate, "bold"), " against the champion ", report.champion))
    for name, described in report.inputs.items():
        say(Text(_fill(_describe_input(described), width, 14, f"  {name:<11} ")))
    settings = report.settings
    if "metric" in settings:
        latency = settings.get("latency guardrail") or {}
        bounds = ", ".join(f"{k} {v:g}" for k, v in latency.items()
                           if k != "metric" and isinstance(v, (int, float)))
        origins = {v for k, v in (settings.get("from") or {}).items() if k != "experiment"}
        where = f" (from {', '.join(sorted(origins))})" if origins else ""
        say(Text(_fill(f"{settings['metric']}, margin {settings.get('margin', 0):g}, "
                       f"α {settings.get('alpha'):g}; {latency.get('metric')} "
                       f"{bounds}{where}", width, 14, f"  {'judged by':<11} ")))
    for note in report.notes:
        say(Text(_fill(f"note: {note}", width, 8, "  "), style="dim"))
    for check in report.checks:
        say(Text.assemble(f"\n{check.status.upper():>7}  ", style=STYLE[check.status])
            + Text.assemble((check.title, "bold"), f"  ({check.name})"))
        for sentence in check.sentences:
            say(Text(_fill(sentence, width, 9)))
    console.print()
    say(Text(report.headline(), style=STYLE[report.status]))
    if report.registration:
        say(Text(report.registration.get("sentence", ""), style="bold"))
