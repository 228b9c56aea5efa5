"""The experiment definition (``docs/experiment-file.md``): YAML or JSON, one or a list.

>>> [exp] = parse_experiments('''
... name: churn-v7
... task: binary
... mode: shadow
... champion: churn:6
... candidates: [churn:7]
... primary: {metric: accuracy, margin: 0.01}
... guardrails:
...   - {metric: latency_p99_ms, max_ratio: 1.2}
... label_ttl: 7d
... ''', "experiments.yaml")
>>> exp.arms, exp.label_ttl, exp.alpha, exp.guardrails[0].metric
(('churn:6', 'churn:7'), 604800.0, 0.05, 'latency_p99_ms')
>>> parse_experiments(exp.to_dict_json(), "again.json") == [exp]
True
>>> try:
...     parse_experiments("{name: x, task: binary, mode: ab, champion: m:1, candidates: [m:2],"
...                       " primary: {metric: accuracy}, alpha: 1.5}", "experiments.yaml")
... except ExperimentError as error:
...     print(error)
experiments.yaml: experiment 'x': key 'alpha' must be a number > 0 and <= 0.5, got 1.5.
"""

from __future__ import annotations

import json
import math
import re
import typing
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta, Struct

from rollguard.schemas.durations import DURATION_EXPECTED, DURATION_PATTERN, parse_duration
from rollguard.schemas.events import (Arm, ControlEvent, Scalar, Share,
                                      TRAFFIC_SUM_TOLERANCE, describe_rejection,
                                      describe_value, dotted_path, first_nonfinite, preview)

__all__ = [
    "Experiment", "Primary", "Guardrail", "Canary", "Bandit", "Reference", "Notify", "Ranking",
    "ExperimentError",
    "ExperimentFile", "load_experiments", "parse_experiments", "TASKS", "MODES",
    "PRIMARY_METRICS", "GUARDRAIL_METRICS", "DEFAULT_POSITIVE_LABELS",
]

TASKS = ("binary", "multiclass", "regression", "ranking")
MODES = ("shadow", "ab", "canary", "bandit", "interleave")
#: the ranking metrics of the served list (per request, in [0, 1]), primary or guardrail
RANKING_METRICS = ("hit_rate_at_k", "reciprocal_rank", "ndcg_at_k", "precision_at_k")
#: the primary metric of mode interleave: the users' preference in the interleaved lists
PREFERENCE = "preference"
#: primary metric -> the tasks it is defined for
PRIMARY_METRICS = {
    "accuracy": ("binary", "multiclass"), "log_loss": ("binary",), "brier": ("binary",),
    "abs_error": ("regression",), "sq_error": ("regression",),
    **{metric: ("ranking",) for metric in RANKING_METRICS}, "reward": ("ranking",),
    PREFERENCE: ("ranking",)}
#: the unbounded losses, which `primary.clip` may bound
CLIPPABLE_METRICS = ("log_loss", "abs_error", "sq_error")
#: labels that count as positive when `positive_label` is left at its default (true)
DEFAULT_POSITIVE_LABELS = (True, 1, "1", "true", "yes")
#: the control event's actions (a webhook's `actions` name some), and those a webhook gets
#: when its `actions` are not given: all but `start`
CONTROL_ACTIONS: tuple[str, ...] = typing.get_args(typing.get_args(
    typing.get_type_hints(ControlEvent, include_extras=True)["action"])[0])
NOTIFY_DEFAULT_ACTIONS = tuple(a for a in CONTROL_ACTIONS if a != "start")
_ControlAction = Literal[CONTROL_ACTIONS]  # type: ignore[valid-type]
#: the longest `notify[].timeout`, in seconds
NOTIFY_MAX_TIMEOUT = 60.0
_URL_PATTERN = r"^https?://[^\s/?#]+([/?#]\S*)?$"


class _GuardrailRule(Struct, frozen=True):
    bounds: dict[str, Any]          # bound key -> the msgspec type its value must satisfy
    needs_bound: bool = True        # at least one of `bounds` must be given
    tasks: tuple[str, ...] = TASKS
    modes: tuple[str, ...] = MODES
    segment: bool = False


_POSITIVE = Annotated[float, Meta(gt=0)]
_PROPORTION = Annotated[float, Meta(ge=0, le=1)]
_LATENCY_RULE = _GuardrailRule(bounds={"max_ratio": _POSITIVE, "max": _POSITIVE})
_CLASS_RATE_RULE = _GuardrailRule(bounds={"min": _PROPORTION}, tasks=("binary", "multiclass"),
                                  segment=True)
#: a ranking metric of the candidate's own lists: not in mode interleave, whose users see a
#: merged list (its preference is the comparison there)
_RANKING_MODES = ("shadow", "ab", "canary", "bandit")
_RANKING_RATE_RULE = _GuardrailRule(bounds={"min": _PROPORTION}, tasks=("ranking",),
                                    modes=_RANKING_MODES, segment=True)
#: what each guardrail metric takes: its bounds, the tasks and modes where it makes sense
GUARDRAIL_RULES: dict[str, _GuardrailRule] = {
    "latency_p50_ms": _LATENCY_RULE, "latency_p95_ms": _LATENCY_RULE,
    "latency_p99_ms": _LATENCY_RULE,
    "error_rate": _GuardrailRule(bounds={"max": _PROPORTION, "max_diff": _PROPORTION}),
    "precision": _CLASS_RATE_RULE, "recall": _CLASS_RATE_RULE, "accuracy": _CLASS_RATE_RULE,
    "srm": _GuardrailRule(bounds={}, needs_bound=False, modes=("ab", "canary", "bandit")),
    "agreement": _GuardrailRule(bounds={"min": _PROPORTION}, tasks=("binary", "multiclass")),
    "score_psi": _GuardrailRule(bounds={"max": _POSITIVE}, tasks=("binary",)),
    "score_ks": _GuardrailRule(bounds={"max": Annotated[float, Meta(gt=0, le=1)]},
                               tasks=("binary",)),
    **{metric: _RANKING_RATE_RULE for metric in RANKING_METRICS},
    "reward": _GuardrailRule(bounds={"min": float}, tasks=("ranking",), modes=_RANKING_MODES,
                             segment=True),
}
GUARDRAIL_METRICS = tuple(GUARDRAIL_RULES)

Duration = Annotated[
    Annotated[float, Meta(ge=0)] | Annotated[str, Meta(pattern=DURATION_PATTERN)],
    Meta(description="Seconds, or a string like 45s, 30m, 12h, 7d, 2w.",
         extra={"expect": DURATION_EXPECTED})]


class _Section(Struct, frozen=True, forbid_unknown_fields=True):
    """Base of the parts of an experiment: immutable; unknown keys are errors."""


class Primary(_Section):
    """The primary metric: a per-request loss or gain, compared as candidate minus champion."""

    metric: Annotated[Literal["accuracy", "log_loss", "brier", "abs_error", "sq_error",
                              "hit_rate_at_k", "reciprocal_rank", "ndcg_at_k",
                              "precision_at_k", "reward", "preference"], Meta(
        description="accuracy (binary, multiclass); log_loss, brier (binary); abs_error, "
                    "sq_error (regression); hit_rate_at_k, reciprocal_rank, ndcg_at_k, "
                    "precision_at_k, reward (ranking, of the served list); preference "
                    "(ranking, mode interleave).")]
    margin: Annotated[float, Meta(ge=0, description="Non-inferiority margin: the candidate "
                                  "may be worse by at most this and still be promoted.")] = 0.0
    clip: Annotated[float, Meta(gt=0, description="Upper bound of the per-request loss of "
                                "log_loss, abs_error or sq_error (larger losses count as "
                                "this).")] | None = None


class Guardrail(_Section):
    """A constraint the candidate must meet with confidence to be promoted.

    latency_p50_ms/latency_p95_ms/latency_p99_ms take max_ratio (vs champion) and/or max
    (ms); error_rate takes max and/or max_diff (vs champion); precision/recall/accuracy take
    min and an optional segment; srm takes nothing; agreement takes min; score_psi and
    score_ks take max; the ranking metrics hit_rate_at_k, reciprocal_rank, ndcg_at_k,
    precision_at_k and reward take min and an optional segment.
    """

    metric: Literal["latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "error_rate",
                    "precision", "recall", "accuracy", "srm", "agreement", "score_psi",
                    "score_ks", "hit_rate_at_k", "reciprocal_rank", "ndcg_at_k",
                    "precision_at_k", "reward"]
    min: Annotated[float, Meta(description="Lowest acceptable value.")] | None = None
    max: Annotated[float, Meta(description="Highest acceptable value.")] | None = None
    max_ratio: Annotated[float, Meta(gt=0, description="Highest acceptable ratio candidate / "
                                     "champion.")] | None = None
    max_diff: Annotated[float, Meta(ge=0, description="Highest acceptable difference "
                                    "candidate - champion.")] | None = None
    segment: Annotated[dict[str, str], Meta(min_length=1, description="Apply to requests in "
                                            "this segment only, e.g. {tier: vip}.")] | None = None


class Canary(_Section):
    """Canary steps: the candidate's share rises through them, each after a passing analysis."""

    steps: Annotated[tuple[Annotated[float, Meta(gt=0, lt=1)], ...], Meta(
        min_length=1, description="Candidate shares, strictly increasing, each in (0, 1).")]
    step_samples: Annotated[int, Meta(ge=1, description="Labelled outcomes per arm before a "
                                      "step may pass; default: min_samples.")] | None = None


class Bandit(_Section):
    """Thompson-sampling allocation."""

    min_share: Annotated[float, Meta(ge=0, lt=1, description="Least share of any arm, below "
                                     "1/k for k arms.")] = 0.05
    update_every: Annotated[int, Meta(ge=1, description="Outcomes between two traffic "
                                      "updates.")] = 200


class Bake(_Section):
    """The bake window after a promotion: the new champion keeps being compared with the
    former one, which a breach brings back."""

    duration: Annotated[Duration, Meta(description="Event time the window lasts after the "
                                       "promotion, e.g. 2h.")]
    min_samples: Annotated[int, Meta(ge=1, description="Labelled outcomes of the new champion "
                                     "before the window may complete.")] = 2000
    holdback: Annotated[float, Meta(gt=0, le=0.5, description="ab, canary, bandit: the share "
                                    "the former champion keeps serving during the window "
                                    "(shadow mode: it scores every request instead).")] = 0.05


class Ranking(_Section):
    """Ranking tasks: the depth of the metrics, and where the labels come from."""

    k: Annotated[int, Meta(ge=1, le=1000, description="The depth of hit_rate_at_k, "
                           "reciprocal_rank, ndcg_at_k and precision_at_k: the top k items "
                           "of each list.")] = 10
    labels_independent_of_serving: Annotated[bool, Meta(description=(
        "True when the labels do not depend on what users were shown (purchases from the "
        "whole catalogue, ratings collected apart): then mode shadow can judge a candidate's "
        "list that was never shown."))] = False


class Reference(_Section):
    """The reference for drift (PSI, KS): the first n requests, or a JSONL file of requests."""

    n: Annotated[int, Meta(ge=1, description="Use the first n requests (default 1000).")] \
        | None = None
    file: Annotated[str, Meta(min_length=1, description="A .jsonl file of requests; relative "
                              "paths are relative to the experiment file.")] | None = None


class Notify(_Section):
    """A webhook: each decision whose action is listed is POSTed to it as JSON, with a
    Slack-compatible `text` (docs/operating.md)."""

    url: Annotated[str, Meta(pattern=_URL_PATTERN, description="The http or https URL the "
                             "decisions are POSTed to.",
                             extra={"expect": "an http or https URL such as "
                                              "https://hooks.slack.com/services/..."})]
    actions: Annotated[tuple[_ControlAction, ...], Meta(
        min_length=1, description="The actions posted; default: every one but start.")] = \
        NOTIFY_DEFAULT_ACTIONS
    timeout: Annotated[Duration, Meta(description="How long one attempt waits for an answer "
                                      "(at most 60s).")] = 5.0
    attempts: Annotated[int, Meta(ge=1, le=10, description="Attempts before the notifier "
                                  "gives a decision up for this hook.")] = 5


class Experiment(_Section):
    """One experiment: which arms to compare, how, and when to decide."""

    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9._:-]+$", description="Unique name; the "
                              "'experiment' field of events.",
                              extra={"expect": "a name of letters, digits and . _ : -"})]
    task: Annotated[Literal["binary", "multiclass", "regression", "ranking"], Meta(
        description="What the models predict.")]
    mode: Annotated[Literal["shadow", "ab", "canary", "bandit", "interleave"], Meta(
        description="How traffic is split between the arms.")]
    champion: Annotated[Arm, Meta(description="The arm in production: 'model:version'.")]
    candidates: Annotated[tuple[Arm, ...], Meta(min_length=1, description="Arms to evaluate, "
                                                "distinct, none equal to the champion.")]
    primary: Primary
    alpha: Annotated[float, Meta(gt=0, le=0.5, description="Error level of every test "
                                 "(primary and guardrails).")] = 0.05
    min_samples: Annotated[int, Meta(ge=1, description="Labelled outcomes per arm before any "
                                     "promotion.")] = 500
    max_samples: Annotated[int, Meta(ge=1, description="Labelled outcomes per arm after which "
                                     "the experiment ends with hold; default: no limit.")] \
        | None = None
    max_duration: Annotated[Duration, Meta(description="Event time after which the experiment "
                                           "ends with hold; default: no limit.")] | None = None
    label_ttl: Annotated[Duration, Meta(description="How long a prediction waits for its "
                                        "label.")] = 604800.0
    allowed_lateness: Annotated[Duration, Meta(description="The reorder buffer: how late an "
                                               "outcome may arrive in event time.")] = 5.0
    positive_label: Annotated[Scalar, Meta(description="Binary tasks: the positive label; "
                                           "default true (true, 1, '1', 'true', 'yes').")] \
        | None = None
    traffic: Annotated[dict[Arm, Share], Meta(description="ab and bandit: starting shares of "
                                              "champion and candidates, summing to 1; default:"
                                              " equal.")] | None = None
    guardrails: tuple[Guardrail, ...] = ()
    canary: Canary | None = None
    bandit: Bandit | None = None
    bake: Bake | None = None
    ranking: Ranking | None = None
    reference: Reference | None = None
    segments: Annotated[tuple[Annotated[str, Meta(min_length=1)], ...], Meta(
        description="Segment keys to keep statistics for; default: all keys seen.")] | None = None
    state: Annotated[Literal["memory", "disk", "auto"], Meta(
        description="Where pending joins live.")] = "auto"
    notify: Annotated[tuple[Notify, ...], Meta(description="Webhooks the decisions are POSTed "
                                               "to.")] | None = None

    @property
    def arms(self) -> tuple[str, ...]:
        """The champion first, then the candidates in file order."""
        return (self.champion, *self.candidates)

    def is_positive(self, label: object) -> bool:
        """Is ``label`` the positive class (binary tasks)?

        >>> exp = Experiment.from_dict({"name": "x", "task": "binary", "mode": "shadow",
        ...     "champion": "m:1", "candidates": ["m:2"], "primary": {"metric": "brier"}})
        >>> [exp.is_positive(v) for v in (True, 1, "yes", "TRUE", 0, "no", False)]
        [True, True, True, True, False, False, False]
        """
        if label is True or label is False:  # the usual label and prediction: no lookups
            return label if self.positive_label is True else label == self.positive_label
        if self.positive_label is True:
            if isinstance(label, str):
                return label.strip().lower() in ("1", "true", "yes")
            return label is True or (type(label) in (int, float) and label == 1)
        return label == self.positive_label

    def to_dict(self) -> dict[str, Any]:
        """The experiment as JSON-safe builtins (durations in seconds); parses back equal."""
        return _drop_none(msgspec.to_builtins(self, enc_hook=_plain))

    def to_dict_json(self) -> str:
        """``to_dict()`` as JSON text, keys in file order."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], source_name: str = "<dict>") -> Experiment:
        """One experiment from builtins (as ``to_dict`` gives); raises ExperimentError."""
        return _parse_one(data, 0, source_name, None)


#: the content of an experiment file: one experiment, or a non-empty list of them
ExperimentFile = Experiment | Annotated[list[Experiment], Meta(min_length=1)]


class ExperimentError(ValueError):
    """A bad experiment file: one sentence naming the file, the experiment and the key."""

    def __init__(self, source: str, detail: str, experiment: str | None = None,
                 key: str | None = None) -> None:
        self.source, self.experiment, self.key = source, experiment, key
        where = f"{source}: experiment {experiment}" if experiment else source
        text = f"{where}: key '{key}' {detail}" if key else f"{where}: {detail}"
        text = " ".join(text.split())
        super().__init__(text if text.endswith(".") else text + ".")


class _KeyProblem(Exception):
    def __init__(self, key: str | None, detail: str) -> None:
        super().__init__(detail)
        self.key, self.detail = key, detail


def load_experiments(path: str | Path) -> list[Experiment]:
    """Every experiment of a YAML or JSON file (``.json`` is read as JSON, all else as YAML)."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as bad:
        raise ExperimentError(source, f"the file is not UTF-8 (byte {bad.start})") from None
    except OSError as bad:
        raise ExperimentError(source, f"cannot read the file ({bad.strerror or bad})") from None
    return parse_experiments(text, source, base_dir=Path(path).parent)


def parse_experiments(text: str, source_name: str, *,
                      base_dir: str | Path | None = None) -> list[Experiment]:
    """Every experiment of a YAML or JSON text; ``source_name`` names it in errors.

    A ``source_name`` ending in ``.json`` is read as JSON, anything else as YAML (a superset).
    ``base_dir`` is where relative ``reference.file`` paths start (default: left as given).
    """
    content = _load_text(text, source_name)
    if content is None or content == []:
        raise ExperimentError(source_name, "the file holds no experiment")
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        raise ExperimentError(source_name, f"the file must hold an experiment (a mapping) or a "
                              f"list of experiments, got {describe_value(content)}")
    experiments: list[Experiment] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(content):
        exp = _parse_one(raw, index, source_name, base_dir)
        if exp.name in first_index:
            raise ExperimentError(source_name, f"duplicates the name of experiment "
                                  f"#{first_index[exp.name] + 1}", _label(raw, index), "name")
        first_index[exp.name] = index
        experiments.append(exp)
    return experiments


# ---------------------------------------------------------------------------------------------
# Reading text. PyYAML's SafeLoader reads YAML 1.1, where `1e-3` is a string and duplicate keys
# silently keep the last value: this loader (still SafeLoader: no Python objects, ever) reads
# exponent floats as numbers and rejects duplicate keys, so a typo cannot pass.

class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: PyYAML itself reports it below
                continue
            if duplicate:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key: object, line: int | None) -> None:
        where = f" (line {line})" if line else ""
        super().__init__(f"key {preview(key)} appears twice in one mapping{where}")


_Loader.add_implicit_resolver(  # YAML 1.2 floats: 1e-3 and 5E+2 are numbers
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _load_text(text: str, source: str) -> Any:
    if source.lower().endswith(".json"):
        try:
            return json.loads(text, object_pairs_hook=_no_duplicates,
                              parse_constant=_json_constant)
        except _DuplicateKey as bad:
            raise ExperimentError(source, str(bad)) from None
        except (ValueError, RecursionError) as bad:
            where = (f" at line {bad.lineno}, column {bad.colno}"
                     if isinstance(bad, json.JSONDecodeError) else "")
            message = bad.msg if isinstance(bad, json.JSONDecodeError) else str(bad)
            raise ExperimentError(source, f"not valid JSON ({message[:1].lower()}{message[1:]}"
                                          f"{where})") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except _DuplicateKey as bad:
        raise ExperimentError(source, str(bad)) from None
    except yaml.YAMLError as bad:
        mark = getattr(bad, "problem_mark", None)
        problem = getattr(bad, "problem", None) or str(bad)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ExperimentError(source, f"not valid YAML ({problem}{where})") from None
    except RecursionError:
        raise ExperimentError(source, "not valid YAML (nested too deeply)") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    result: dict = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key, None)
        result[key] = value
    return result


def _json_constant(name: str) -> float:
    return float(name.replace("Infinity", "inf"))  # rejected later, naming the key


# ---------------------------------------------------------------------------------------------
# One experiment: msgspec checks each key's type and range; the rules across keys follow.

def _label(raw: Any, index: int) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    if isinstance(name, str) and name.strip():
        return f"'{name}'" if len(name) <= 60 and "'" not in name else preview(name)
    return f"#{index + 1}"


def _parse_one(raw: Any, index: int, source: str, base_dir: str | Path | None) -> Experiment:
    label = _label(raw, index)
    try:
        if not isinstance(raw, dict):
            raise _KeyProblem(None, f"must be a mapping of keys, got {describe_value(raw)}")
        nonfinite = first_nonfinite(raw, ())
        if nonfinite is not None:
            path, number = nonfinite
            raise _KeyProblem(dotted_path(path), "is NaN" if number != number else "is infinite")
        try:
            exp = msgspec.convert(raw, Experiment)
        except msgspec.ValidationError as error:
            rejection = describe_rejection(str(error), Experiment, raw, noun="key")
            raise _KeyProblem(rejection.field, rejection.detail) from None
        return _check_and_complete(exp, base_dir)
    except _KeyProblem as problem:
        raise ExperimentError(source, problem.detail, label, problem.key) from None


def _check_and_complete(exp: Experiment, base_dir: str | Path | None) -> Experiment:
    """The rules across keys, then the defaults that depend on other keys."""
    arms = exp.arms
    for i, arm in enumerate(exp.candidates):
        if arm == exp.champion:
            raise _KeyProblem("candidates", f"holds the champion {preview(arm)}; a candidate "
                              "must differ from it")
        if arm in exp.candidates[:i]:
            raise _KeyProblem("candidates", f"lists {preview(arm)} twice")

    metric = exp.primary.metric
    if exp.task not in PRIMARY_METRICS[metric]:
        raise _KeyProblem("primary.metric", f"is {metric}, which needs task "
                          f"{_either(PRIMARY_METRICS[metric])}, not {exp.task}")
    ranking = _checked_ranking(exp)
    if exp.primary.clip is not None and metric not in CLIPPABLE_METRICS:
        raise _KeyProblem("primary.clip", f"applies only to the unbounded losses "
                          f"{_either(CLIPPABLE_METRICS, 'and')}, not {metric}")

    if exp.max_samples is not None and exp.max_samples < exp.min_samples:
        raise _KeyProblem("max_samples", f"must be >= min_samples ({exp.min_samples}), got "
                          f"{exp.max_samples}")
    durations = {}
    for key, lowest in (("max_duration", 0.0), ("label_ttl", 0.0), ("allowed_lateness", None)):
        value = getattr(exp, key)
        if value is None:
            continue
        seconds = parse_duration(value)  # msgspec checked the form already
        if lowest is not None and seconds <= lowest:
            raise _KeyProblem(key, f"must be a duration > 0, got {preview(value)}")
        durations[key] = seconds

    positive_label = exp.positive_label
    if exp.task == "binary":
        positive_label = True if positive_label is None else positive_label
    elif positive_label is not None:
        raise _KeyProblem("positive_label", f"applies only to task binary, not {exp.task}")

    bandit = exp.bandit
    if exp.mode == "bandit":
        bandit = bandit or Bandit()
        if bandit.min_share >= 1 / len(arms):
            raise _KeyProblem("bandit.min_share", f"must be below 1/{len(arms)} (one share per "
                              f"arm), got {bandit.min_share!r}")
    elif bandit is not None:
        raise _KeyProblem("bandit", f"applies only to mode bandit, not {exp.mode}")

    canary = exp.canary
    if exp.mode == "canary":
        if canary is None:
            raise _KeyProblem("canary", "is required in mode canary (e.g. {steps: [0.05, "
                              "0.25, 0.5]})")
        for i in range(1, len(canary.steps)):
            if canary.steps[i] <= canary.steps[i - 1]:
                raise _KeyProblem(f"canary.steps[{i}]", f"must be greater than the step before"
                                  f" it ({canary.steps[i - 1]!r}), got {canary.steps[i]!r}")
        if canary.step_samples is None:
            canary = msgspec.structs.replace(canary, step_samples=exp.min_samples)
    elif canary is not None:
        raise _KeyProblem("canary", f"applies only to mode canary, not {exp.mode}")

    bake = exp.bake
    if bake is not None:
        seconds = parse_duration(bake.duration)
        if seconds <= 0:
            raise _KeyProblem("bake.duration", f"must be a duration > 0, got "
                              f"{preview(bake.duration)}")
        bake = msgspec.structs.replace(bake, duration=seconds)

    traffic = _checked_traffic(exp, bandit)
    segments = exp.segments
    if segments is not None:
        for i, key in enumerate(segments):
            if key in segments[:i]:
                raise _KeyProblem(f"segments[{i}]", f"lists {preview(key)} twice")
    guardrails = tuple(_checked_guardrail(exp, i, g) for i, g in enumerate(exp.guardrails))

    reference = exp.reference or Reference()
    if reference.n is not None and reference.file is not None:
        raise _KeyProblem("reference", "takes n or file, not both")
    if reference.file is None and reference.n is None:
        reference = Reference(n=1000)
    if reference.file is not None and base_dir is not None:
        reference = Reference(file=str(Path(base_dir) / reference.file))
    notify = _checked_notify(exp.notify) if exp.notify is not None else None

    return msgspec.structs.replace(
        exp, positive_label=positive_label, bandit=bandit, canary=canary, bake=bake,
        traffic=traffic, guardrails=guardrails, reference=reference, notify=notify,
        ranking=ranking, **durations)


def _checked_ranking(exp: Experiment) -> Ranking | None:
    """The rules of ranking tasks and of mode interleave; the ``ranking`` section filled in."""
    ranking, metric = exp.ranking, exp.primary.metric
    if exp.task != "ranking":
        if ranking is not None:
            raise _KeyProblem("ranking", f"applies only to task ranking, not {exp.task}")
        if exp.mode == "interleave":
            raise _KeyProblem("mode", f"is interleave, which merges two rankers' lists: it "
                              f"needs task ranking, not {exp.task}")
        return None
    ranking = ranking or Ranking()
    if exp.mode == "shadow" and not ranking.labels_independent_of_serving:
        raise _KeyProblem("mode", "is shadow, which cannot judge a ranker by what users engage "
                          "with, as a shadow candidate's list is never shown and so nothing "
                          "it ranks can be engaged: use mode interleave (or ab), or set "
                          "ranking.labels_independent_of_serving: true if the labels do not "
                          "depend on what users were shown")
    if exp.mode == "interleave":
        if len(exp.candidates) != 1:
            raise _KeyProblem("candidates", f"must hold one candidate in mode interleave, "
                              f"which merges two rankers' lists, got {len(exp.candidates)}")
        if metric != PREFERENCE:
            raise _KeyProblem("primary.metric", f"is {metric}, but mode interleave compares "
                              "the rankers by which one's items users engage with in the "
                              "merged list: set it to preference")
    elif metric == PREFERENCE:
        raise _KeyProblem("primary.metric", f"is preference, which needs mode interleave, "
                          f"not {exp.mode}")
    return ranking


def _checked_notify(hooks: tuple[Notify, ...]) -> tuple[Notify, ...]:
    """Each webhook's URL and actions checked, its timeout in seconds."""
    from urllib.parse import urlsplit

    checked = []
    for index, hook in enumerate(hooks):
        key = f"notify[{index}]"
        parts = urlsplit(hook.url)
        try:
            port_ok = parts.hostname is not None and (parts.port is None or parts.port > 0)
        except ValueError:  # a port that is not a number, or out of range
            port_ok = False
        if not port_ok:
            raise _KeyProblem(f"{key}.url", f"must be an http or https URL with a host (and a "
                              f"port from 1 to 65535 if any), got {preview(hook.url)}")
        for earlier_index, earlier in enumerate(hooks[:index]):
            if earlier.url == hook.url:
                raise _KeyProblem(f"{key}.url", f"repeats notify[{earlier_index}]'s URL: list "
                                  "the actions of one hook once")
        for i, action in enumerate(hook.actions):
            if action in hook.actions[:i]:
                raise _KeyProblem(f"{key}.actions", f"lists {action} twice")
        timeout = parse_duration(hook.timeout)  # msgspec checked the form already
        if not 0 < timeout <= NOTIFY_MAX_TIMEOUT:
            raise _KeyProblem(f"{key}.timeout", f"must be a duration > 0 and at most "
                              f"{NOTIFY_MAX_TIMEOUT:g}s, got {preview(hook.timeout)}")
        checked.append(msgspec.structs.replace(hook, timeout=timeout))
    return tuple(checked)


def _checked_traffic(exp: Experiment, bandit: Bandit | None) -> MappingProxyType | None:
    arms = exp.arms
    if exp.mode not in ("ab", "bandit"):
        if exp.traffic is not None:
            raise _KeyProblem("traffic", f"applies only to modes ab and bandit, not {exp.mode}")
        return None
    if exp.traffic is None:
        return MappingProxyType({arm: 1 / len(arms) for arm in arms})
    for arm in exp.traffic:
        if arm not in arms:
            raise _KeyProblem("traffic", f"names {preview(arm)}, which is neither the champion "
                              "nor a candidate")
    for arm in arms:
        if arm not in exp.traffic:
            raise _KeyProblem("traffic", f"lacks a share for {preview(arm)}: it must name the "
                              "champion and every candidate")
    total = math.fsum(exp.traffic.values())
    if abs(total - 1) > TRAFFIC_SUM_TOLERANCE:
        raise _KeyProblem("traffic", f"must hold shares that sum to 1, got a sum of {total!r}")
    if bandit is not None:
        for arm, share in exp.traffic.items():
            if share < bandit.min_share:
                raise _KeyProblem(f"traffic.{arm}", f"must be at least bandit.min_share "
                                  f"({bandit.min_share!r}), got {share!r}")
    # in the order of `arms`, so that equal files give equal experiments
    return MappingProxyType({arm: exp.traffic[arm] for arm in arms})


def _check_ks_passable(exp: Experiment, key: str, limit: float) -> None:
    """A ``score_ks`` limit the first ``reference.n`` scores cannot pass blocks promotion for
    good: the KS bounds include the reference's own uncertainty, which never shrinks. Asks
    for a reference whose uncertainty is at most half the limit (the current scores' share
    then falls below the other half within tens of thousands of scores)."""
    from rollguard.stats.sequential.cdf_distance import dkw_radius
    from rollguard.stats.sequential.multiple import per_candidate_alpha

    if exp.reference is not None and exp.reference.file is not None:
        return  # a reference file's size is checked when it is read
    n = exp.reference.n if exp.reference is not None and exp.reference.n else 1000
    alpha = min(per_candidate_alpha(exp.alpha, exp.candidates).values()) / 2  # the reference's
    radius = dkw_radius(n, alpha)
    if radius > limit / 2:
        need = math.ceil(math.log(2.0 / alpha) / (2.0 * (limit / 2) ** 2))
        raise _KeyProblem(f"{key}.max", f"is {limit:g}, which the candidate's scores can "
                          f"hardly ever pass against a reference of {n} scores (the reference "
                          f"alone is uncertain by {radius:.3f} at the candidate's alpha): set "
                          f"reference.n to at least {need}, or max to at least "
                          f"{math.ceil(200 * radius) / 100:g}")


def _checked_guardrail(exp: Experiment, index: int, guardrail: Guardrail) -> Guardrail:
    key = f"guardrails[{index}]"
    rule = GUARDRAIL_RULES[guardrail.metric]
    name = preview(guardrail.metric).replace('"', "")
    if exp.task not in rule.tasks:
        raise _KeyProblem(f"{key}.metric", f"is {name}, which needs task "
                          f"{_either(rule.tasks)}, not {exp.task}")
    if exp.mode not in rule.modes:
        raise _KeyProblem(f"{key}.metric", f"is {name}, which needs mode "
                          f"{_either(rule.modes)}, not {exp.mode}")
    given = [b for b in ("min", "max", "max_ratio", "max_diff")
             if getattr(guardrail, b) is not None]
    for bound in given:
        if bound not in rule.bounds:
            takes = _either(tuple(rule.bounds), "and/or") if rule.bounds else "no bound"
            raise _KeyProblem(f"{key}.{bound}", f"does not apply to {name}, which takes "
                              f"{takes}")
        value = getattr(guardrail, bound)
        try:
            msgspec.convert(value, rule.bounds[bound])
        except msgspec.ValidationError as error:
            rejection = describe_rejection(str(error), rule.bounds[bound], value, noun="key")
            raise _KeyProblem(f"{key}.{bound}", rejection.detail) from None
    if rule.needs_bound and not given:
        raise _KeyProblem(key, f"needs {_either(tuple(rule.bounds), 'and/or')} for {name}")
    if guardrail.metric == "score_ks" and guardrail.max is not None:
        _check_ks_passable(exp, key, guardrail.max)
    if guardrail.segment is not None:
        if not rule.segment:
            takes = tuple(m for m, r in GUARDRAIL_RULES.items()
                          if r.segment and exp.task in r.tasks)
            raise _KeyProblem(f"{key}.segment", f"applies only to {_either(takes, 'and')}, "
                              f"not {name}")
        for segment_key in guardrail.segment:
            if exp.segments is not None and segment_key not in exp.segments:
                raise _KeyProblem(f"{key}.segment", f"uses the segment key "
                                  f"{preview(segment_key)}, which 'segments' does not keep")
    for earlier_index, earlier in enumerate(exp.guardrails[:index]):
        if earlier.metric == guardrail.metric and earlier.segment == guardrail.segment:
            raise _KeyProblem(key, f"repeats guardrails[{earlier_index}] (same metric and "
                              "segment): merge them")
    if guardrail.segment is not None:
        return msgspec.structs.replace(guardrail,
                                       segment=MappingProxyType(dict(guardrail.segment)))
    return guardrail


def _either(options: tuple[str, ...], word: str = "or") -> str:
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} {word} {options[-1]}"


def _plain(value: Any) -> Any:
    if isinstance(value, MappingProxyType):
        return dict(value)
    raise TypeError(f"cannot write a {type(value).__name__}")


def _drop_none(value: Any) -> Any:
    """Builtins without None-valued keys, tuples as lists: what a JSON or YAML file holds."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value]
    return value
