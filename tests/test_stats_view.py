"""``rollguard stats``: readable at 80 columns, every column with ``--wide``, ``--json`` unchanged.

The snapshots are the pure core's own (``rollguard replay`` over synthetic traffic: the same
evaluator the worker runs, as in tests/test_status.py); the command reads them from a stand-in
for the stats topic, so no broker is needed.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from rollguard.replay import Replay
from rollguard.schemas import parse_experiments
from rollguard.stats_view import _f, arm_columns, print_stats
from rollguard.status import fmt_interval
from rollguard.synth import Arm, ab_events, shadow_events

EXPERIMENTS = """
- name: better
  task: binary
  mode: shadow
  champion: m:1
  candidates: [m:2]
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 200
  label_ttl: 1h
  guardrails:
    - {metric: latency_p99_ms, max_ratio: 1.5}
    - {metric: error_rate, max: 0.05}
- name: split
  task: binary
  mode: ab
  champion: loan:1
  candidates: [loan:2, loan:3]
  traffic: {"loan:1": 0.4, "loan:2": 0.3, "loan:3": 0.3}
  primary: {metric: accuracy, margin: 0.01}
  min_samples: 100000
  label_ttl: 1h
"""

#: the columns of each table of ``rollguard stats`` before the default layout fitted 80 columns
TODAY_ARMS = ["arm", "served share", "scored", "error rate", "latency p50/p95/p99 ms",
              "labelled", "accuracy", "precision", "recall", "log-loss", "brier", "ROC AUC",
              "ECE", "MAE", "MSE", "score PSI", "score KS"]
TODAY_PAIRS = ["candidate", "pairs", "agreement", "score correlation", "labelled pairs",
               "mean loss difference (champion − candidate)"]
TODAY_SEGMENTS = ["segment", "arm", "labelled", "accuracy", "precision", "recall", "MAE"]
DELTA = "Δ vs champion, 95% CS"  # one candidate at alpha 0.05; two share it: 97.5% each
HINT = "--wide shows every column"


@functools.lru_cache(maxsize=1)
def _snapshots() -> dict[str, str]:
    experiments = parse_experiments(EXPERIMENTS, "experiments.yaml")
    events = list(shadow_events("better", Arm("m:1", 0.8), [Arm("m:2", 0.88)], n=1500, seed=1))
    events += ab_events("split", Arm("loan:1", 0.8), [Arm("loan:2", 0.82), Arm("loan:3", 0.78)],
                        n=900, seed=3, shares={"loan:1": 0.4, "loan:2": 0.3, "loan:3": 0.3})
    events.sort(key=lambda e: e["ts"])
    replay = Replay(experiments)
    replay.run_lines(json.dumps(e).encode() for e in events)
    # as published on the stats topic: JSON text
    return {name: json.dumps(ev.snapshot()) for name, ev in replay.evaluators.items()}


def snapshot(name: str = "better") -> dict:
    return json.loads(_snapshots()[name])


def shown(snap: dict, width: int = 80, wide: bool = False) -> str:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    print_stats(console, snap, wide=wide)
    return console.export_text()


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Each table of the output: (its header cells, its rows' cells); cells are split where two
    or more spaces separate them, so a cell cut short or wrapped shows up as a wrong cell."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if i and line and set(line) == {"─"}:
            rows = []
            for row in lines[i + 1:]:
                if not row.startswith(" ") and row.rstrip() and not _cells(row)[0].count(" "):
                    rows.append(_cells(row))
                else:
                    break
            found.append((_cells(lines[i - 1]), rows))
    return found


def _cells(line: str) -> list[str]:
    return [cell for cell in re.split(r" {2,}", line.strip()) if cell]


def arm_rows(snap: dict) -> list[tuple[str, dict]]:
    return list(snap["statistics"]["arms"].items())


def delta_header(snap: dict) -> str:
    (alpha,) = {t["alpha"] for t in snap["decision"]["evidence"]["candidates"].values()}
    return f"Δ vs champion, {100 * (1 - alpha):.4g}% CS"


def delta_text(snap: dict, arm: str) -> str:
    d = snap["decision"]["evidence"]["candidates"][arm]["delta"]
    return fmt_interval(d["estimate"], d["lower"], d["upper"])


# -- the default layout ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["better", "split"])
def test_the_default_layout_fits_80_columns_with_whole_headers_and_values(name):
    snap = snapshot(name)
    text = shown(snap, 80)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    (arm_headers, rows), *others = tables(text)
    # the columns that matter most, every header whole (none wrapped or cut)
    assert arm_headers[:1] == ["arm"]
    assert {"labelled", "accuracy", delta_header(snap), "scored"} <= set(arm_headers)
    assert set(arm_headers) <= set(TODAY_ARMS) | {delta_header(snap), "p99 ms"}
    # every cell whole: each row is exactly the figures of its arm
    columns = {c.header: c for c in arm_columns(snap)}
    assert len(rows) == len(snap["statistics"]["arms"])
    for cells, row in zip(rows, arm_rows(snap)):
        assert cells == [v for v in (columns[h].cell(row) for h in arm_headers) if v]
        assert cells[0] == row[0]  # the arm's name
        assert _f(row[1]["outcomes"]["accuracy"]) in cells
    for arm in snap["candidates"]:
        assert re.search(rf"^{re.escape(arm)} .*{re.escape(delta_text(snap, arm))}$", text,
                         re.MULTILINE)
    for headers, rows in others:
        assert set(headers) <= set(TODAY_PAIRS) | set(TODAY_SEGMENTS)
        assert all(len(cells) == len(headers) for cells in rows), (headers, rows)
    # the last line, dim, says how to see the rest
    assert text.splitlines()[-1].startswith(HINT + " (")


@pytest.mark.parametrize("width", [40, 60, 80, 100, 132, 200])
def test_every_width_fits_and_keeps_names_and_figures_whole(width):
    snap = snapshot("split")
    text = shown(snap, width)
    assert all(len(line) <= width for line in text.splitlines()), text
    assert "…" not in text
    for arm in snap["statistics"]["arms"]:
        assert re.search(rf"(^|  ){re.escape(arm)}(  |$)", text, re.MULTILINE), arm
    for arm in snap["candidates"]:
        assert delta_text(snap, arm) in text
    assert HINT in text


def test_a_wider_terminal_shows_more_columns():
    snap = snapshot()
    narrow, wider = tables(shown(snap, 80))[0][0], tables(shown(snap, 132))[0][0]
    assert set(narrow) < set(wider)


def test_long_arm_names_become_one_block_per_arm():
    snap = snapshot()
    long = {arm: f"credit-default-gradient-boosted-trees-{arm.replace(':', '-v')}:20240611"
            for arm in snap["statistics"]["arms"]}
    snap["statistics"]["arms"] = {long[a]: f for a, f in snap["statistics"]["arms"].items()}
    snap["champion"], snap["candidates"] = long[snap["champion"]], [long["m:2"]]
    evidence = snap["decision"]["evidence"]
    evidence["candidates"] = {long[a]: t for a, t in evidence["candidates"].items()}
    text = shown(snap, 80)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    lines = text.splitlines()
    for arm in long.values():
        assert arm in lines  # its block's title, whole
    block = lines[lines.index(long["m:2"]) + 1:]
    assert _cells(block[0]) == ["served share", "0"] or _cells(block[0])[0] == "scored"
    assert any(_cells(line) == [DELTA, delta_text(snap, long["m:2"])] for line in block)
    assert any(_cells(line) == ["labelled", _f(snap["statistics"]["arms"][long["m:2"]]
                                               ["outcomes"]["count"])] for line in block)


def test_an_empty_snapshot_fits():
    snap = {"experiment": "e", "mode": "shadow", "champion": "m:1", "candidates": ["m:2"],
            "buffered": 0, "counters": {}, "decision": {"final": None, "last_reason": None},
            "statistics": {"records": 0, "arms": {}, "pairs": {}, "segments": {},
                           "label_delay": {}, "feature_drift": {}}}
    text = shown(snap, 80)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "no decision yet" in text and HINT in text


def test_the_interval_says_its_level_when_candidates_differ():
    snap = snapshot("split")
    tracks = snap["decision"]["evidence"]["candidates"]
    tracks["loan:2"]["alpha"], tracks["loan:3"]["alpha"] = 0.05, 0.01
    text = shown(snap, 100)
    assert "Δ vs champion, CS (level)" in text
    assert delta_text(snap, "loan:2") + " (95%)" in text
    assert delta_text(snap, "loan:3") + " (99%)" in text


def test_a_regression_experiment_shows_its_primary_metric():
    snap = {"experiment": "r", "mode": "shadow", "champion": "m:1", "candidates": ["m:2"],
            "buffered": 0, "counters": {},
            "decision": {"final": None, "last_reason": None, "evidence": {
                "metric": "abs_error", "alpha": 0.05, "candidates": {"m:2": {
                    "alpha": 0.05, "delta": {"estimate": 1.5, "lower": 0.25, "upper": 2.75}}}}},
            "statistics": {"records": 10, "arms": {
                "m:1": {"outcomes": {"count": 5, "mae": 12.5, "mse": 200.0}},
                "m:2": {"outcomes": {"count": 5, "mae": 11.0, "mse": 150.0}}}}}
    (headers, rows), = tables(shown(snap, 80))
    assert headers == ["arm", "labelled", "MAE", DELTA, "MSE"]
    assert rows == [["m:1", "5", "12.5", "200"],
                    ["m:2", "5", "11", "+1.500 [+0.250, +2.750]", "150"]]


# -- --wide ----------------------------------------------------------------------------------------

def _today_arm_row(arm: str, figures: dict) -> list[str]:
    """An arm's row of the table before the default layout fitted 80 columns."""
    serving = figures.get("serving") or {}
    outcomes = figures.get("outcomes") or {}
    drift = figures.get("score_drift") or {}
    latency = "/".join(_f(serving.get(k), 3) for k in
                       ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms"))
    return [arm, _f(figures.get("served_share"), 3), _f(serving.get("count")),
            _f(serving.get("error_rate"), 3), latency, _f(outcomes.get("count")),
            _f(outcomes.get("accuracy")), _f(outcomes.get("precision")),
            _f(outcomes.get("recall")), _f(outcomes.get("log_loss")),
            _f(outcomes.get("brier")), _f(outcomes.get("roc_auc")),
            _f((outcomes.get("calibration") or {}).get("ece"), 3),
            _f(outcomes.get("mae")), _f(outcomes.get("mse")),
            _f(drift.get("psi"), 3), _f(drift.get("ks"), 3)]


@pytest.mark.parametrize("width", [80, 300])
def test_wide_shows_every_column_of_todays_tables_unsqueezed(width):
    snap = snapshot()
    text = shown(snap, width, wide=True)
    (arms, arm_cells), (pairs, pair_cells), (segments, segment_cells) = tables(text)
    assert [h for h in arms if h != DELTA] == TODAY_ARMS
    assert arms.index(DELTA) == arms.index("accuracy") + 1
    assert pairs == TODAY_PAIRS and segments == TODAY_SEGMENTS
    for cells, (arm, figures) in zip(arm_cells, arm_rows(snap), strict=True):
        today = _today_arm_row(arm, figures)
        if arm != snap["champion"]:
            today.insert(TODAY_ARMS.index("accuracy") + 1, delta_text(snap, arm))
        assert cells == today
    assert len(pair_cells) == 1 and pair_cells[0][0] == "m:2"
    assert len(segment_cells) == 4 and all(len(c) == len(TODAY_SEGMENTS) for c in segment_cells)
    assert "…" not in text and HINT not in text
    # the text lines still fit the width; the per-arm table is as wide as it needs
    assert len(text.splitlines()[0]) <= width
    assert max(len(line) for line in text.splitlines()) > 80


# -- the command -----------------------------------------------------------------------------------

@pytest.fixture
def stats_topic(monkeypatch):
    """``rollguard stats`` reads these ``{experiment: JSON}`` instead of a Kafka topic, on an
    80-column terminal."""
    import rollguard.kafka.compacted as compacted
    from rollguard import cli

    published: dict[str, str] = {}
    monkeypatch.setattr(compacted, "latest_values",
                        lambda bootstrap, topic, timeout=10.0: {
                            k: v.encode() for k, v in published.items()})
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    # the command's console, made as cli.py makes it, now that COLUMNS says the width
    monkeypatch.setattr(cli, "out", Console(highlight=False, soft_wrap=True))
    return published


def run(*args: str):
    from rollguard import cli

    result = CliRunner().invoke(cli.app, ["stats", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_command_fits_the_terminal_and_wide_shows_every_column(stats_topic):
    stats_topic.update(_snapshots())
    text = run("split")
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert text.splitlines()[-1].startswith(HINT)
    assert "loan:3" in text and delta_text(snapshot("split"), "loan:3") in text
    wide = run("split", "--wide")
    assert "latency p50/p95/p99 ms" in wide and "score KS" in wide and HINT not in wide
    assert [h for h in tables(wide)[0][0] if h != delta_header(snapshot("split"))] == TODAY_ARMS


#: a snapshot as the stats topic holds it, and what ``rollguard stats e --json`` printed for it
#: before the default layout changed (json.dumps(snapshot, indent=2) + newline, ASCII escapes)
RAW = ('{"experiment":"e","mode":"shadow","champion":"m:1","candidates":["m:2"],"decision":'
       '{"seq":1,"final":null,"last_reason":"m:2: Δ ≥ −0.01 pending","champion":"m:1"},'
       '"statistics":{"records":3,"arms":{"m:1":{"served_share":1.0,"serving":{"count":3,'
       '"latency_p99_ms":12.345678901234567}}}},"counters":{"late_labels":2},"buffered":0,'
       '"published_at":1700000000.5}')
RAW_JSON = ('{\n  "experiment": "e",\n  "mode": "shadow",\n  "champion": "m:1",\n  "candidates": '
            '[\n    "m:2"\n  ],\n  "decision": {\n    "seq": 1,\n    "final": null,\n    '
            '"last_reason": "m:2: \\u0394 \\u2265 \\u22120.01 pending",\n    "champion": "m:1"\n'
            '  },\n  "statistics": {\n    "records": 3,\n    "arms": {\n      "m:1": {\n        '
            '"served_share": 1.0,\n        "serving": {\n          "count": 3,\n          '
            '"latency_p99_ms": 12.345678901234567\n        }\n      }\n    }\n  },\n  "counters": '
            '{\n    "late_labels": 2\n  },\n  "buffered": 0,\n  "published_at": 1700000000.5\n}\n')


@pytest.mark.parametrize("extra", [[], ["--wide"]])
def test_json_is_byte_for_byte_what_it_was(stats_topic, extra):
    stats_topic.update(_snapshots())
    stats_topic["e"] = RAW
    assert run("e", "--json", *extra) == RAW_JSON
    for name, raw in _snapshots().items():
        assert run(name, "--json", *extra) == json.dumps(json.loads(raw), indent=2) + "\n"


def test_the_snapshot_is_not_changed_by_showing_it():
    snap = snapshot("split")
    before = copy.deepcopy(snap)
    shown(snap, 80), shown(snap, 80, wide=True), shown(snap, 30)
    assert snap == before
