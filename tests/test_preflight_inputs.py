"""`rollguard preflight`'s inputs and outputs, without Kafka: the preflight file (one sentence
per mistake, exit code 2), the tables (CSV, Parquet, JSONL requests), the models' outputs,
the constraints file, the live figures read from a snapshot, and the reports."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest

from rollguard.preflight.config import PreflightInputError, load_config, parse_config

MINIMAL = """
candidate: models:predict
champion: models:predict
task: binary
target: y
train: train.csv
holdout: holdout.csv
production: {file: recent.csv}
primary: {metric: accuracy, margin: 0.01}
"""


def _error(text: str, **kwargs) -> str:
    with pytest.raises(PreflightInputError) as caught:
        parse_config(text, "preflight.yaml", **kwargs)
    message = str(caught.value)
    assert message.endswith(".") and "\n" not in message and "Traceback" not in message
    return message


# -- the preflight file ----------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    (MINIMAL.replace("target: y\n", ""), "preflight.yaml: key 'target' is missing."),
    (MINIMAL + "alhpa: 0.05\n", "key 'alhpa' is not a known key (did you mean 'alpha'?)"),
    (MINIMAL.replace("{file: recent.csv}", "{file: r.csv, kafka: {experiment: e}}"),
     "key 'production' takes file (a JSONL or CSV file) or kafka"),
    (MINIMAL + "threshold: {max: 0.2}\n", "key 'threshold.max' does not fit accuracy (higher "
                                          "is better): use threshold.min"),
    (MINIMAL + "threshold: {min: 0.8, live: {last: 1d}}\n", "key 'threshold' takes one of"),
    (MINIMAL.replace("task: binary", "task: regression"), "key 'primary.metric' is accuracy, "
                                                           "which needs task binary or multiclass"),
    (MINIMAL.replace("models:predict\nchampion", "models.predict\nchampion"),
     "key 'candidate' must be an entry point 'package.module:function' or an MLflow model URI"),
    (MINIMAL + "alpha: 0.9\n", "key 'alpha'"),
    (MINIMAL + "stress: {guardrail: {metric: error_rate, max: 0.1}}\n",
     "key 'stress.guardrail.metric' is error_rate; the stress test judges latency_p50_ms"),
    (MINIMAL + "skip: [drfit]\n", "key 'skip[0]'"),
])
def test_a_mistake_in_the_file_is_one_sentence_naming_the_key(text, expected):
    assert expected in _error(text)


def test_the_experiment_file_supplies_primary_alpha_and_the_latency_guardrail(tmp_path):
    (tmp_path / "experiments.yaml").write_text("""
- name: loan-v2
  task: binary
  mode: shadow
  champion: loan:1
  candidates: [loan:2]
  primary: {metric: brier, margin: 0.02}
  alpha: 0.1
  guardrails: [{metric: latency_p95_ms, max_ratio: 1.3}]
- name: other
  task: binary
  mode: ab
  champion: m:1
  candidates: [m:2]
  primary: {metric: accuracy}
""")
    text = "\n".join(line for line in MINIMAL.splitlines()
                     if not line.startswith(("primary", "task")))
    config = parse_config(text + "\nexperiment: {file: experiments.yaml, name: loan-v2}\n",
                          "p.yaml", base_dir=tmp_path)
    assert (config.primary.metric, config.primary.margin, config.alpha) == ("brier", 0.02, 0.1)
    assert (config.latency.metric, config.latency.max_ratio, config.latency.q) == \
        ("latency_p95_ms", 1.3, 0.95)
    assert config.origins["primary"] == "experiment loan-v2" and config.task == "binary"
    assert config.experiment_name == "loan-v2"
    # the same key given twice, differently, is refused: one file drives both, or neither
    message = _error(text + "\nprimary: {metric: brier, margin: 0.05}\n"
                     "experiment: {file: experiments.yaml, name: loan-v2}\n", base_dir=tmp_path)
    assert "key 'primary' differs from the live experiment loan-v2's" in message
    assert "the file holds 2 experiments" not in message
    message = _error(text + "\nexperiment: experiments.yaml\n", base_dir=tmp_path)
    assert "names a file of 2 experiments (loan-v2, other): say which" in message


def test_a_missing_file_is_an_unusable_input(tmp_path):
    with pytest.raises(PreflightInputError, match="does not exist: give the path of a YAML"):
        load_config(tmp_path / "nowhere.yaml")


# -- tables ---------------------------------------------------------------------------------------------
def test_csv_columns_are_typed_and_missing_tokens_are_missing(tmp_path):
    from rollguard.preflight.data import infer_schema, read_table

    (tmp_path / "t.csv").write_text("a,b,c,d,y\n1,x,true,1.5,0\nNA,,false,nan,1\n3,z,,2,1\n")
    table = read_table(tmp_path / "t.csv", "training")
    assert table.rows == [{"a": 1, "b": "x", "c": True, "d": 1.5, "y": 0},
                          {"a": None, "b": None, "c": False, "d": None, "y": 1},
                          {"a": 3, "b": "z", "c": None, "d": 2.0, "y": 1}]
    schema = infer_schema(table, "y", categorical=["a"])
    assert {n: f.kind for n, f in schema.items()} == {
        "a": "categorical", "b": "categorical", "c": "categorical", "d": "numeric"}
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3\n")
    with pytest.raises(PreflightInputError, match="has 1 cells on line 3, its header 2"):
        read_table(tmp_path / "bad.csv", "holdout")
    with pytest.raises(PreflightInputError, match="has no target column 'label'"):
        infer_schema(table, "label")


def test_parquet_is_read_with_pyarrow(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from rollguard.preflight.data import read_table

    pq.write_table(pa.table({"x": [1.0, None, 3.0], "plan": ["a", "b", None], "y": [1, 0, 1]}),
                   tmp_path / "t.parquet")
    table = read_table(tmp_path / "t.parquet", "training")
    assert table.rows[1] == {"x": None, "plan": "b", "y": 0} and table.columns == ["x", "plan", "y"]


def test_jsonl_requests_keep_the_experiments_valid_requests_with_their_times(tmp_path):
    from rollguard.preflight.data import read_production_file

    lines = [
        {"request_id": "r1", "experiment": "e", "ts": 10.0, "features": {"x": 1}},
        {"request_id": "r2", "experiment": "other", "ts": 11.0, "features": {"x": 2}},
        {"request_id": "r3", "experiment": "e", "features": {"x": 3}},            # no ts
        {"request_id": "r4", "experiment": "e", "ts": 12.0, "features": {"x": 4}},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\nnot json\n"
    (tmp_path / "r.jsonl").write_text(text)
    table = read_production_file(tmp_path / "r.jsonl", experiment="e")
    assert table.rows == [{"x": 1}, {"x": 4}] and table.time_range() == (10.0, 12.0)
    assert table.skipped == 2 and "left out" in table.notes[0]


# -- models ---------------------------------------------------------------------------------------------
def test_outputs_are_normalised_and_invalid_ones_named():
    import numpy as np

    from rollguard.preflight.models import InvalidOutput, normalise_output, valid_prediction

    assert normalise_output(np.array([1, 0]), 2) == [(1, None), (0, None)]
    assert normalise_output([(np.int64(1), np.float32(0.5))], 1) == [(1, 0.5)]
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"prediction": [1, 0], "score": [0.7, 0.2]})
    assert normalise_output(frame, 2) == [(1, 0.7), (0, 0.2)]
    with pytest.raises(InvalidOutput, match="returned 1 predictions for 2 rows"):
        normalise_output([1], 2)
    with pytest.raises(InvalidOutput, match="returned dict"):
        normalise_output({"a": 1}, 1)
    assert valid_prediction((2, None), "binary", {0, 1}).startswith("its prediction 2 is not")
    assert valid_prediction((1.5, None), "regression", None) is None
    assert valid_prediction((1, 1.2), "binary", {0, 1}) == \
        "its score is 1.2, not a number in [0, 1]"


def test_entry_points_import_from_their_own_folder(tmp_path):
    from rollguard.preflight.models import resolve_entry_point

    for name, value in (("a", 1), ("b", 2)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "samename.py").write_text(f"def predict(rows):\n    return [{value}] * len(rows)\n")
    assert resolve_entry_point("samename:predict", tmp_path / "a", "candidate")([{}]) == [1]
    assert resolve_entry_point("samename:predict", tmp_path / "b", "champion")([{}]) == [2]
    (tmp_path / "a" / "broken.py").write_text("import numpy\n1 / 0\n")
    with pytest.raises(PreflightInputError, match="Importing the candidate broken:predict "
                                                  "failed with ZeroDivisionError"):
        resolve_entry_point("broken:predict", tmp_path / "a", "candidate")
    with pytest.raises(PreflightInputError, match="there is no module 'nothere'"):
        resolve_entry_point("nothere:predict", tmp_path / "a", "candidate")


# -- constraints -------------------------------------------------------------------------------------
def test_constraints_round_trip_through_their_file_and_bad_entries_are_named(tmp_path):
    from rollguard.preflight.constraints import (dump_constraints, infer_constraints,
                                                 load_constraints)
    from rollguard.preflight.data import Feature

    rows = [{"id": f"u{i}", "plan": random.Random(i).choice(["a", "b"]), "n": i % 7}
            for i in range(50)]
    schema = {"id": Feature("id", "categorical", strings=True),
              "plan": Feature("plan", "categorical", strings=True),
              "n": Feature("n", "numeric", integer=True)}
    inferred = infer_constraints(rows, schema)
    checks = {(c.feature, c.check) for c in inferred}
    assert ("id", "unique") in checks and ("plan", "allowed_values") in checks
    assert ("n", "integer") in checks and ("id", "allowed_values") in checks
    path = tmp_path / "constraints.yaml"
    path.write_text(dump_constraints(inferred, "train.csv", 50))
    assert load_constraints(path) == inferred
    path.write_text("constraints:\n  - {feature: n, check: range}\n")
    with pytest.raises(PreflightInputError, match=r"constraints\[0\]' \(range of n\) needs "
                                                  "min or max"):
        load_constraints(path)
    path.write_text("constraints:\n  - {feature: n, check: rnage}\n")
    with pytest.raises(PreflightInputError, match="constraints"):
        load_constraints(path)


def test_constraints_infer_on_a_training_set(tmp_path):
    from typer.testing import CliRunner

    from rollguard.cli import app

    (tmp_path / "t.csv").write_text("age,plan,y\n" + "".join(
        f"{20 + i % 50},{'ab'[i % 2]},{i % 2}\n" for i in range(100)))
    result = CliRunner().invoke(app, ["preflight", "constraints", "infer",
                                      str(tmp_path / "t.csv"), "--target", "y"])
    assert result.exit_code == 0, result.output
    assert "- {feature: age, check: range, min: 20.0, max: 69.0, mostly: 0.99}" in result.output
    assert "feature: y" not in result.output
    result = CliRunner().invoke(app, ["preflight", "constraints", "infer",
                                      str(tmp_path / "none.csv")])
    assert result.exit_code == 2 and "does not exist" in result.output


# -- the live figures and the report -------------------------------------------------------------
def test_live_figures_take_the_hours_of_the_window():
    from rollguard.preflight.live import live_figures

    hours = [{"start": 3600.0 * h, "n": 100, "mean": 0.1 * (h % 3), "variance": 0.0}
             for h in range(48)]
    snapshot = {"experiment": "e", "champion": "m:1",
                "decision": {"champion": "m:2"},  # promoted since: m:2 serves now
                "statistics": {"arms": {"m:2": {"hourly_loss": hours,
                                                "outcomes": {"count": 4800, "accuracy": 0.9}}}}}
    live = live_figures(snapshot, "accuracy", last=6 * 3600)
    assert live["arm"] == "m:2" and live["n"] == 600 and live["window"]["hours"] == 6
    assert live["value"] == pytest.approx(1 - 0.1)   # hours 42..47: losses 0, .1, .2 twice
    assert live_figures(snapshot, "accuracy", last=3600, arm="m:9")["value"] is None


def test_the_html_report_is_self_contained_and_the_json_strict(tmp_path):
    from rollguard.preflight.base import CheckResult, Plot
    from rollguard.preflight.report import Report

    plot = Plot("histogram", "x <drift>", {"training": [0.5, 0.5], "production": [0.1, 0.9]},
                edges=[0.0, 1.0, 2.0], markers={"training p99": 1.5})
    report = Report("p.yaml", "m:v2", "m:v1", [
        CheckResult("drift", "fail", "Feature drift", ["x drifted: PSI 2 > 0.2."],
                    {"psi": math.inf}, [plot]),
        CheckResult("threshold", "skipped", "Threshold", ["No threshold."])], {}, {})
    html = report.to_html()
    assert "x &lt;drift&gt;" in html and "<svg" in html
    assert not re.search(r"<script|<link|src=|https?://(?!www\.w3\.org/2000/svg)", html)
    data = json.loads(report.to_json())
    assert data["status"] == "fail" and data["exit_code"] == 1
    assert data["checks"][0]["figures"]["psi"] == "inf"
    assert report.headline().startswith("FAIL: 1 of 1 checks failed (drift)")


def test_a_check_that_raises_fails_with_its_error_and_the_others_still_run(monkeypatch):
    from rollguard.preflight import runner
    from rollguard.preflight.base import CheckResult

    class Broken:
        name, title = "broken", "Broken"

        def run(self, context):
            raise RuntimeError("boom")

    class Fine:
        name, title = "fine", "Fine"

        def run(self, context):
            return CheckResult("fine", "pass", "Fine", ["ok"])

    monkeypatch.setattr(runner, "CHECKS", [Broken(), Fine()])
    context = type("C", (), {"config": type("K", (), {"skip": ()})()})()
    results = runner.run_checks(context)
    assert [(r.name, r.status) for r in results] == [("broken", "fail"), ("fine", "pass")]
    assert results[0].sentences == ["The check could not run: RuntimeError: boom."]


# -- the example -------------------------------------------------------------------------------------
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "preflight"


def test_the_example_file_reads_its_live_experiment_and_the_workflows_keep_the_reports():
    import yaml

    from rollguard.preflight.constraints import load_constraints

    config = load_config(EXAMPLE / "preflight.yaml")
    assert config.origins["primary"] == "experiment loan-v2"
    assert (config.latency.metric, config.latency.max_ratio) == ("latency_p99_ms", 1.2)
    assert config.register.model_version == "loan:2"
    assert len(load_constraints(EXAMPLE / "constraints.yaml")) == 30
    workflow = yaml.safe_load((EXAMPLE / "github-workflow.yml").read_text())
    steps = workflow["jobs"]["preflight"]["steps"]
    [run] = [s["run"] for s in steps if "rollguard preflight" in s.get("run", "")]
    assert "--json preflight.json --html preflight.html" in run and "--register" in run
    [keep] = [s for s in steps if "upload-artifact" in s.get("uses", "")]
    assert keep["if"] == "always()"
    gitlab = yaml.safe_load((EXAMPLE / "gitlab-ci.yml").read_text())
    assert gitlab["preflight"]["artifacts"]["when"] == "always"


@pytest.mark.parametrize("task, metric", [("regression", "abs_error"),
                                          ("multiclass", "accuracy"), ("binary", "log_loss")])
def test_every_task_runs_end_to_end_on_small_data(tmp_path, task, metric):
    from rollguard.preflight import run_preflight

    rng = random.Random(4)
    lines = {name: ["x,colour,y"] for name in ("train", "holdout", "recent")}
    for name in lines:
        for _ in range(300):
            x, colour = rng.gauss(0, 1), rng.choice(["red", "blue"])
            y = {"regression": f"{2 * x + rng.gauss(0, 0.3):.4f}",
                 "multiclass": "abc"[int(x > -0.5) + int(x > 0.5)],
                 "binary": str(int(x + rng.gauss(0, 0.5) > 0))}[task]
            lines[name].append(f"{x:.4f},{colour},{y}")
        (tmp_path / f"{name}.csv").write_text("\n".join(lines[name]) + "\n")
    (tmp_path / "tiny.py").write_text(f'''
import math
TASK = {task!r}

def predict(rows):
    out = []
    for r in rows:
        x = r.get("x")
        if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
            raise ValueError("x must be a finite number")
        if abs(x) > 1e12:  # 2 * 1e308 would be an infinite prediction: refused instead
            raise ValueError("x is out of range")
        if TASK == "regression":
            out.append(2 * x)
        elif TASK == "multiclass":
            out.append("abc"[int(x > -0.5) + int(x > 0.5)])
        else:
            p = 1 / (1 + math.exp(-max(-50.0, min(50.0, 3 * x))))
            out.append((int(p >= 0.5), p))
    return out
''')
    (tmp_path / "p.yaml").write_text(f"""
candidate: tiny:predict
champion: tiny:predict
task: {task}
target: y
train: train.csv
holdout: holdout.csv
production: {{file: recent.csv}}
primary: {{metric: {metric}, margin: 0.05}}
skip: [latency]
""")
    report = run_preflight(load_config(tmp_path / "p.yaml"))
    assert {c.name: c.status for c in report.checks} == {
        "drift": "pass", "missing": "pass", "constraints": "pass", "non_inferiority": "pass",
        "threshold": "skipped", "overfitting": "pass", "edge_cases": "pass",
        "latency": "skipped"}, report.headline()
    assert json.loads(report.to_json())["exit_code"] == 0
