"""The experiment definition: keys, defaults, rules across keys, errors that name the key."""

from __future__ import annotations

import json
import math
from types import MappingProxyType

import msgspec
import pytest
import yaml

from rollguard.schemas import (Experiment, ExperimentError, format_duration, load_experiments,
                               parse_duration, parse_experiments)

DESIGN_EXAMPLE = """\
name: churn-v7
task: binary            # binary | multiclass | regression
mode: shadow            # shadow | ab | canary | bandit
champion: churn:6
candidates: [churn:7]
primary: {metric: accuracy, margin: 0.01}
alpha: 0.05
min_samples: 500
max_samples: 200000
guardrails:
  - {metric: latency_p99_ms, max_ratio: 1.2}
  - {metric: error_rate, max: 0.01}
  - {metric: precision, segment: {tier: vip}, min: 0.95}
label_ttl: 7d
"""

BASE = {"name": "churn-v7", "task": "binary", "mode": "shadow", "champion": "churn:6",
        "candidates": ["churn:7"], "primary": {"metric": "accuracy", "margin": 0.01}}


def parse(**changes) -> Experiment:
    data = {**BASE, **changes}
    return Experiment.from_dict({k: v for k, v in data.items() if v is not None},
                                "experiments.yaml")


def error_of(**changes) -> str:
    with pytest.raises(ExperimentError) as caught:
        parse(**changes)
    message = str(caught.value)
    assert "\n" not in message and message.endswith(".")
    return message


# ---------------------------------------------------------------- reading files

def test_the_design_example_parses_with_its_values_and_the_defaults(tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text(DESIGN_EXAMPLE)
    [exp] = load_experiments(path)
    assert exp.name == "churn-v7" and exp.task == "binary" and exp.mode == "shadow"
    assert exp.arms == ("churn:6", "churn:7")
    assert (exp.primary.metric, exp.primary.margin, exp.primary.clip) == ("accuracy", 0.01, None)
    assert (exp.alpha, exp.min_samples, exp.max_samples) == (0.05, 500, 200000)
    assert exp.label_ttl == 7 * 86400.0
    assert [g.metric for g in exp.guardrails] == ["latency_p99_ms", "error_rate", "precision"]
    assert exp.guardrails[0].max_ratio == 1.2 and exp.guardrails[1].max == 0.01
    assert exp.guardrails[2].segment == {"tier": "vip"} and exp.guardrails[2].min == 0.95
    # defaults
    assert exp.allowed_lateness == 5.0 and exp.max_duration is None
    assert exp.positive_label is True and exp.state == "auto" and exp.segments is None
    assert exp.traffic is None and exp.canary is None and exp.bandit is None
    assert exp.reference.n == 1000 and exp.reference.file is None


def test_a_file_may_hold_a_list_and_json_is_read_as_json(tmp_path):
    second = {**BASE, "name": "churn-v8", "candidates": ["churn:8", "churn:9"], "mode": "ab"}
    path = tmp_path / "all.json"
    path.write_text(json.dumps([BASE, second]))
    first, other = load_experiments(path)
    assert (first.name, other.name) == ("churn-v7", "churn-v8")
    assert other.arms == ("churn:6", "churn:8", "churn:9")
    assert dict(other.traffic) == {"churn:6": 1 / 3, "churn:8": 1 / 3, "churn:9": 1 / 3}
    yaml_list = parse_experiments(yaml.safe_dump([BASE, second]), "all.yaml")
    assert yaml_list == [first, other]


def test_yaml_exponent_floats_are_numbers_and_duplicate_keys_are_errors():
    [exp] = parse_experiments(DESIGN_EXAMPLE.replace("alpha: 0.05", "alpha: 5e-2"), "e.yaml")
    assert exp.alpha == 0.05  # PyYAML's SafeLoader alone would read the string '5e-2'
    with pytest.raises(ExperimentError, match=r"^e\.yaml: key \"alpha\" appears twice in one "
                                              r"mapping \(line 8\)\.$"):
        parse_experiments(DESIGN_EXAMPLE.replace("min_samples: 500", "alpha: 0.1"), "e.yaml")
    with pytest.raises(ExperimentError, match="appears twice"):
        parse_experiments('{"name": "a", "name": "b"}', "e.json")


def test_yaml_never_builds_python_objects():
    with pytest.raises(ExperimentError, match="not valid YAML"):
        parse_experiments("!!python/object/apply:os.system ['echo hacked']", "evil.yaml")


@pytest.mark.parametrize("text, source, message", [
    ("", "e.yaml", "e.yaml: the file holds no experiment."),
    ("[]", "e.yaml", "e.yaml: the file holds no experiment."),
    ("42", "e.yaml", "e.yaml: the file must hold an experiment (a mapping) or a list of "
                     "experiments, got the number 42."),
    ("name: [x", "e.yaml", "e.yaml: not valid YAML (expected ',' or ']', but got "
                           "'<stream end>' at line 1, column 9)."),
    ('{"name": ', "e.json", "e.json: not valid JSON (expecting value at line 1, column 10)."),
    ("- churn-v7", "e.yaml", "e.yaml: experiment #1: must be a mapping of keys, got the string "
                             '"churn-v7".'),
])
def test_bad_files_are_named_in_one_sentence(text, source, message):
    with pytest.raises(ExperimentError) as caught:
        parse_experiments(text, source)
    assert str(caught.value) == message


def test_unreadable_files_are_experiment_errors(tmp_path):
    with pytest.raises(ExperimentError, match=r"missing\.yaml: cannot read the file"):
        load_experiments(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe")
    with pytest.raises(ExperimentError, match="not UTF-8"):
        load_experiments(binary)


def test_two_experiments_with_one_name_are_an_error():
    with pytest.raises(ExperimentError) as caught:
        parse_experiments(json.dumps([BASE, {**BASE, "mode": "ab"}]), "two.json")
    assert str(caught.value) == ("two.json: experiment 'churn-v7': key 'name' duplicates the "
                                 "name of experiment #1.")


# ---------------------------------------------------------------- errors name the key

def test_the_error_names_file_experiment_and_key():
    assert error_of(alpha=1.5) == ("experiments.yaml: experiment 'churn-v7': key 'alpha' must "
                                   "be a number > 0 and <= 0.5, got 1.5.")


def test_an_experiment_without_a_usable_name_is_named_by_its_position():
    with pytest.raises(ExperimentError) as caught:
        parse_experiments(json.dumps([BASE, {**BASE, "name": 7}]), "e.json")
    assert str(caught.value).startswith("e.json: experiment #2: key 'name' must be a name of "
                                        "letters, digits and . _ : -, got the number 7")


def test_unknown_keys_are_errors_with_a_suggestion_and_the_allowed_keys():
    message = error_of(alpah=0.1)
    assert "key 'alpah' is not a known key (did you mean 'alpha'?); allowed: name, task, " \
        "mode, champion, candidates, primary, alpha," in message
    nested = error_of(primary={"metric": "accuracy", "marign": 0.1})
    assert "key 'primary.marign' is not a known key (did you mean 'margin'?); allowed: " \
        "metric, margin, clip." in nested
    assert "key 'guardrails[0].mx' is not a known key" in error_of(
        guardrails=[{"metric": "error_rate", "mx": 0.1}])


@pytest.mark.parametrize("changes, key, words", [
    ({"name": "churn v7"}, "name", "must be a name of letters, digits and . _ : -"),
    ({"task": "ranker"}, "task", "must be one of 'binary', 'multiclass', 'ranking', "
                                 "'regression'"),
    ({"mode": "abtest"}, "mode", "must be one of 'ab', 'bandit', 'canary', 'interleave', "
                                 "'shadow'"),
    ({"champion": "churn"}, "champion", "must be a 'model:version' string"),
    ({"candidates": []}, "candidates", "must be a list of 'model:version' strings of at least "
                                       "1 item, got an empty array"),
    ({"candidates": "churn:7"}, "candidates", "must be a list of 'model:version' strings"),
    ({"candidates": ["churn:6"]}, "candidates", "holds the champion \"churn:6\""),
    ({"candidates": ["churn:7", "churn:7"]}, "candidates", 'lists "churn:7" twice'),
    ({"primary": {"metric": "auc"}}, "primary.metric", "must be one of 'abs_error', "
                                                       "'accuracy', 'brier', 'hit_rate_at_k', "
                                                       "'log_loss', 'ndcg_at_k'"),
    ({"primary": {"metric": "accuracy", "margin": -0.1}}, "primary.margin",
     "must be a number >= 0, got -0.1"),
    ({"primary": {"metric": "log_loss", "clip": 0}}, "primary.clip", "must be a number > 0"),
    ({"primary": {"metric": "brier", "clip": 1}}, "primary.clip", "applies only to the "
                                                                  "unbounded losses"),
    ({"primary": {"metric": "sq_error"}}, "primary.metric", "is sq_error, which needs task "
                                                            "regression, not binary"),
    ({"task": "regression"}, "primary.metric", "is accuracy, which needs task binary or "
                                               "multiclass, not regression"),
    ({"alpha": 0}, "alpha", "must be a number > 0 and <= 0.5, got 0"),
    ({"alpha": "0.05"}, "alpha", 'must be a number > 0 and <= 0.5, got the string "0.05"'),
    ({"alpha": math.nan}, "alpha", "is NaN"),
    ({"min_samples": 0}, "min_samples", "must be an integer >= 1, got 0"),
    ({"min_samples": 10.5}, "min_samples", "must be an integer >= 1, got the number 10.5"),
    ({"min_samples": True}, "min_samples", "must be an integer >= 1, got true"),
    ({"max_samples": 100}, "max_samples", "must be >= min_samples (500), got 100"),
    ({"label_ttl": "7days"}, "label_ttl", "must be a duration: a number of seconds or a string "
                                          "like 45s, 30m, 12h, 7d, 2w, got \"7days\""),
    ({"label_ttl": 0}, "label_ttl", "must be a duration > 0, got 0"),
    ({"max_duration": -5}, "max_duration", "must be a duration"),
    ({"allowed_lateness": math.inf}, "allowed_lateness", "is infinite"),
    ({"state": "ram"}, "state", "must be one of 'auto', 'disk', 'memory'"),
    ({"segments": ["tier", "tier"]}, "segments[1]", 'lists "tier" twice'),
    ({"segments": [""]}, "segments[0]", "must be a non-empty string"),
    ({"reference": {"n": 10, "file": "ref.jsonl"}}, "reference", "takes n or file, not both"),
    ({"reference": {"n": 0}}, "reference.n", "must be an integer >= 1"),
    ({"task": "multiclass", "primary": {"metric": "accuracy"}, "positive_label": 1},
     "positive_label", "applies only to task binary, not multiclass"),
])
def test_each_bad_key_is_named_with_the_problem(changes, key, words):
    message = error_of(**changes)
    assert message.startswith(f"experiments.yaml: experiment '{changes.get('name', 'churn-v7')}'"
                              f": key '{key}' {words}"), message


# ---------------------------------------------------------------- modes and their sections

def test_traffic_applies_to_ab_and_bandit_names_every_arm_and_sums_to_one():
    exp = parse(mode="ab", traffic={"churn:7": 0.1, "churn:6": 0.9})
    assert list(exp.traffic) == ["churn:6", "churn:7"] and exp.traffic["churn:7"] == 0.1
    assert "key 'traffic' applies only to modes ab and bandit, not shadow" in error_of(
        traffic={"churn:6": 0.9, "churn:7": 0.1})
    assert "key 'traffic' lacks a share for \"churn:7\"" in error_of(
        mode="ab", traffic={"churn:6": 1.0})
    assert "key 'traffic' names \"x:1\", which is neither the champion nor a candidate" in \
        error_of(mode="ab", traffic={"churn:6": 0.8, "churn:7": 0.1, "x:1": 0.1})
    assert "key 'traffic' must hold shares that sum to 1, got a sum of 1.1" in error_of(
        mode="ab", traffic={"churn:6": 0.9, "churn:7": 0.2})
    assert "key 'traffic.churn:6' must be a number between 0 and 1, got -0.5" in error_of(
        mode="ab", traffic={"churn:6": -0.5, "churn:7": 1.5})


def test_canary_is_required_in_canary_mode_with_increasing_steps():
    exp = parse(mode="canary", canary={"steps": [0.05, 0.25, 0.5]}, min_samples=300)
    assert exp.canary.steps == (0.05, 0.25, 0.5) and exp.canary.step_samples == 300
    assert "key 'canary' is required in mode canary" in error_of(mode="canary")
    assert "key 'canary' applies only to mode canary, not shadow" in error_of(
        canary={"steps": [0.5]})
    assert "key 'canary.steps[2]' must be greater than the step before it (0.5), got 0.25" in \
        error_of(mode="canary", canary={"steps": [0.05, 0.5, 0.25]})
    assert "key 'canary.steps[1]' must be a number > 0 and < 1, got 1" in error_of(
        mode="canary", canary={"steps": [0.5, 1]})
    assert "key 'canary.steps' must be a list of numbers > 0 and < 1 of at least 1 item" in \
        error_of(mode="canary", canary={"steps": []})


def test_bandit_defaults_and_min_share_below_one_over_k():
    exp = parse(mode="bandit", candidates=["churn:7", "churn:8"])
    assert (exp.bandit.min_share, exp.bandit.update_every) == (0.05, 200)
    assert dict(exp.traffic) == {"churn:6": 1 / 3, "churn:7": 1 / 3, "churn:8": 1 / 3}
    assert "key 'bandit.min_share' must be below 1/3 (one share per arm), got 0.34" in error_of(
        mode="bandit", candidates=["churn:7", "churn:8"], bandit={"min_share": 0.34})
    assert "key 'bandit' applies only to mode bandit, not ab" in error_of(
        mode="ab", bandit={"min_share": 0.1})
    assert "key 'traffic.churn:7' must be at least bandit.min_share (0.05), got 0.01" in \
        error_of(mode="bandit", traffic={"churn:6": 0.99, "churn:7": 0.01})


@pytest.mark.parametrize("guardrail, changes, key, words", [
    ({"metric": "latency_p95_ms"}, {}, "guardrails[0]", "needs max_ratio and/or max for "
                                                        "latency_p95_ms"),
    ({"metric": "latency_p99_ms", "min": 3}, {}, "guardrails[0].min",
     "does not apply to latency_p99_ms, which takes max_ratio and/or max"),
    ({"metric": "latency_p50_ms", "max_ratio": 0}, {}, "guardrails[0].max_ratio",
     "must be a number > 0, got 0"),
    ({"metric": "error_rate", "max": 1.5}, {}, "guardrails[0].max",
     "must be a number between 0 and 1, got 1.5"),
    ({"metric": "error_rate", "max_ratio": 2}, {}, "guardrails[0].max_ratio",
     "does not apply to error_rate, which takes max and/or max_diff"),
    ({"metric": "precision", "max": 0.9}, {}, "guardrails[0].max",
     "does not apply to precision, which takes min"),
    ({"metric": "recall", "min": 0.9}, {"task": "regression",
                                        "primary": {"metric": "abs_error"}},
     "guardrails[0].metric", "is recall, which needs task binary or multiclass, not regression"),
    ({"metric": "srm"}, {}, "guardrails[0].metric",
     "is srm, which needs mode ab, canary or bandit, not shadow"),
    ({"metric": "srm", "max": 0.01}, {"mode": "ab"}, "guardrails[0].max",
     "does not apply to srm, which takes no bound"),
    ({"metric": "agreement"}, {}, "guardrails[0]", "needs min for agreement"),
    ({"metric": "score_psi", "max": 0.2}, {"task": "multiclass"}, "guardrails[0].metric",
     "is score_psi, which needs task binary, not multiclass"),
    ({"metric": "score_ks", "max": 1.5}, {}, "guardrails[0].max",
     "must be a number > 0 and <= 1, got 1.5"),
    # a limit the reference's own uncertainty leaves no room to pass: promotion never comes
    ({"metric": "score_ks", "max": 0.05}, {}, "guardrails[0].max",
     "is 0.05, which the candidate's scores can hardly ever pass against a reference of 1000 "
     "scores (the reference alone is uncertain by 0.047 at the candidate's alpha): set "
     "reference.n to at least 3506, or max to at least 0.1"),
    ({"metric": "error_rate", "max": 0.1, "segment": {"tier": "vip"}}, {},
     "guardrails[0].segment", "applies only to precision, recall and accuracy, not error_rate"),
    ({"metric": "precision", "min": 0.9, "segment": {}}, {}, "guardrails[0].segment",
     "must be an object of strings of at least 1 entry"),
    ({"metric": "precision", "min": 0.9, "segment": {"country": "DE"}}, {"segments": ["tier"]},
     "guardrails[0].segment", "uses the segment key \"country\", which 'segments' does not "
                              "keep"),
    ({"metric": "throughput", "max": 1}, {}, "guardrails[0].metric", "must be one of "
                                                                     "'accuracy', 'agreement'"),
])
def test_each_guardrail_must_make_sense_for_task_and_mode(guardrail, changes, key, words):
    message = error_of(guardrails=[guardrail], **changes)
    assert f"key '{key}' {words}" in message, message


def test_repeated_guardrails_are_an_error_but_other_segments_are_not():
    vip = {"metric": "precision", "segment": {"tier": "vip"}, "min": 0.95}
    free = {"metric": "precision", "segment": {"tier": "free"}, "min": 0.8}
    assert len(parse(guardrails=[vip, free]).guardrails) == 2
    assert "key 'guardrails[1]' repeats guardrails[0]" in error_of(guardrails=[vip, vip])


def test_every_guardrail_metric_has_a_valid_form():
    guardrails = [
        {"metric": "latency_p50_ms", "max": 50}, {"metric": "latency_p95_ms", "max_ratio": 1.1},
        {"metric": "latency_p99_ms", "max_ratio": 1.2, "max": 200},
        {"metric": "error_rate", "max": 0.01, "max_diff": 0.002},
        {"metric": "precision", "min": 0.9}, {"metric": "recall", "min": 0.8},
        {"metric": "accuracy", "min": 0.7, "segment": {"tier": "vip"}}, {"metric": "srm"},
        {"metric": "agreement", "min": 0.9}, {"metric": "score_psi", "max": 0.2},
        {"metric": "score_ks", "max": 0.1}]
    exp = parse(mode="canary", canary={"steps": [0.1]}, guardrails=guardrails)
    assert [g.metric for g in exp.guardrails] == [g["metric"] for g in guardrails]


# ---------------------------------------------------------------- the object

def test_experiments_are_immutable():
    exp = parse(mode="ab", guardrails=[{"metric": "precision", "min": 0.9,
                                        "segment": {"tier": "vip"}}])
    with pytest.raises(AttributeError):
        exp.alpha = 0.1
    with pytest.raises(TypeError):
        exp.traffic["churn:6"] = 1.0
    with pytest.raises(TypeError):
        exp.guardrails[0].segment["tier"] = "free"
    assert isinstance(exp.candidates, tuple) and isinstance(exp.guardrails, tuple)
    assert isinstance(exp.traffic, MappingProxyType)


@pytest.mark.parametrize("changes", [
    {},
    {"mode": "ab", "traffic": {"churn:6": 0.9, "churn:7": 0.1}, "max_duration": "14d",
     "allowed_lateness": "250ms", "segments": ["tier", "country"], "state": "disk",
     "guardrails": [{"metric": "srm"}, {"metric": "precision", "min": 0.9,
                                        "segment": {"tier": "vip"}}]},
    {"mode": "canary", "canary": {"steps": [0.05, 0.5]}, "positive_label": "churned",
     "reference": {"file": "ref.jsonl"}},
    {"mode": "bandit", "candidates": ["churn:7", "churn:8"], "bandit": {"min_share": 0.1},
     "task": "multiclass"},
    {"task": "regression", "primary": {"metric": "sq_error", "clip": 100.0},
     "max_samples": 10000, "label_ttl": 3600},
])
def test_to_dict_is_json_safe_and_parses_back_equal(changes):
    exp = parse(**changes)
    as_dict = exp.to_dict()
    text = json.dumps(as_dict)  # raises if anything is not JSON
    assert parse_experiments(text, "again.json") == [exp]
    assert parse_experiments(yaml.safe_dump(as_dict), "again.yaml") == [exp]
    assert Experiment.from_dict(json.loads(text)) == exp
    assert as_dict == json.loads(text)  # only dict/list/str/int/float/bool


def test_reference_files_are_relative_to_the_experiment_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**BASE, "reference": {"file": "ref.jsonl"}}))
    [exp] = load_experiments(path)
    assert exp.reference.file == str(tmp_path / "ref.jsonl")


@pytest.mark.parametrize("label, positive", [
    (True, True), (1, True), (1.0, True), ("1", True), ("true", True), ("Yes", True),
    (False, False), (0, False), ("0", False), ("no", False), ("churned", False), (2, False),
])
def test_the_default_positive_label(label, positive):
    assert parse().is_positive(label) is positive


def test_an_explicit_positive_label():
    exp = parse(positive_label="churned")
    assert exp.is_positive("churned") and not exp.is_positive(True)


def test_experiment_struct_rejects_what_the_parser_rejects():
    # the Struct itself is what JSON Schema is generated from
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**BASE, "alpha": 0.9}, Experiment)


# ---------------------------------------------------------------- durations

@pytest.mark.parametrize("text, seconds", [
    ("45s", 45.0), ("30m", 1800.0), ("12h", 43200.0), ("7d", 604800.0), ("2w", 1209600.0),
    ("250ms", 0.25), ("1.5h", 5400.0), (" 5s ", 5.0), (90, 90.0), (0.5, 0.5), (0, 0.0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["7 days", "7", "-5s", "5y", "", "1e3s", -1, math.nan,
                                 math.inf, True, None, [5]])
def test_parse_duration_rejects_with_one_line(bad):
    with pytest.raises(ValueError) as caught:
        parse_duration(bad)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("seconds", [0.0, 0.25, 1.0, 59.0, 60.0, 90.0, 3600.0, 86400.0,
                                     604800.0, 1209600.0, 0.1, 123.456, 1e6])
def test_format_duration_parses_back_exactly(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


def test_the_example_of_the_reference_page_parses():
    from pathlib import Path

    page = (Path(__file__).parent.parent / "docs" / "experiment-file.md").read_text()
    example = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    [exp] = parse_experiments(example, "experiment-file.md")
    assert exp.mode == "canary" and exp.canary.steps == (0.05, 0.25, 0.5)
    assert exp.max_duration == 14 * 86400.0 and exp.segments == ("tier", "country")
