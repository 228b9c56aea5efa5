"""The preflight file (``docs/preflight.md``): what to check, on which data, against what.

YAML (or JSON when the name ends in ``.json``), read with the experiment file's rules (a
key given twice is an error; ``1e-3`` is a number) and checked key by key: an unusable file
raises :class:`PreflightInputError` with one sentence naming the file and the key.
Relative paths are relative to the preflight file's folder. With ``experiment:`` the live
experiment file supplies ``task``, ``primary``, ``alpha``, ``positive_label`` and the latency
guardrail, so that one file drives both the preflight and the live test.

>>> config = parse_config('''
... candidate: loanmodels:predict_v2
... champion: loanmodels:predict_v1
... task: binary
... target: approved
... train: train.csv
... holdout: holdout.csv
... production: {file: recent.csv}
... primary: {metric: accuracy, margin: 0.01}
... ''', "preflight.yaml", base_dir="/ci")
>>> config.primary.metric, config.primary.margin, config.alpha, str(config.train)
('accuracy', 0.01, 0.05, '/ci/train.csv')
>>> config.latency.metric, config.latency.max_ratio
('latency_p99_ms', 1.2)
>>> try:
...     parse_config("candidate: m:p\\nchampion: m:q\\n", "preflight.yaml")
... except PreflightInputError as error:
...     print(error)
preflight.yaml: key 'target' is missing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from rollguard.schemas.durations import DURATION_PATTERN, parse_duration
from rollguard.schemas.events import describe_rejection, first_nonfinite, dotted_path, preview
from rollguard.schemas.experiment import Guardrail, Primary

__all__ = ["PreflightConfig", "PreflightInputError", "parse_config", "load_config",
           "ModelSpec", "LatencyRule", "TASKS"]

TASKS = ("binary", "multiclass", "regression")
Duration = Annotated[float, Meta(ge=0)] | Annotated[str, Meta(pattern=DURATION_PATTERN)]


class PreflightInputError(ValueError):
    """An input preflight cannot use: one sentence saying which and why (exit code 2)."""

    def __init__(self, message: str) -> None:
        text = " ".join(str(message).split())
        super().__init__(text if text.endswith((".", "?")) else text + ".")


class _Section(Struct, frozen=True, forbid_unknown_fields=True):
    pass


class _Model(_Section):
    predict: Annotated[str, Meta(min_length=1)]
    fit: Annotated[str, Meta(min_length=1)] | None = None


class _KafkaWindow(_Section):
    experiment: Annotated[str, Meta(min_length=1)]
    last: Duration = "7d"
    max_requests: Annotated[int, Meta(ge=1)] = 100_000


class _Production(_Section):
    file: Annotated[str, Meta(min_length=1)] | None = None
    ts: str | None = None          # CSV: the column with the request time (epoch seconds)
    experiment: str | None = None  # JSONL requests: keep only this experiment's
    kafka: _KafkaWindow | None = None


class _Experiment(_Section):
    file: Annotated[str, Meta(min_length=1)]
    name: str | None = None


class _Drift(_Section):
    psi_max: Annotated[float, Meta(gt=0)] = 0.2
    ks_max: Annotated[float, Meta(gt=0, le=1)] = 0.1
    unseen_max: Annotated[float, Meta(ge=0, le=1)] = 0.01
    missing_max_increase: Annotated[float, Meta(ge=0, le=1)] = 0.05
    min_rows: Annotated[int, Meta(ge=1)] = 100


class _Live(_Section):
    last: Duration = "1d"
    tolerance: Annotated[float, Meta(ge=0)] = 0.0


class _Threshold(_Section):
    min: float | None = None
    max: float | None = None
    live: _Live | None = None
    on: Literal["estimate", "lower"] = "estimate"


class _Overfitting(_Section):
    max_gap: Annotated[float, Meta(ge=0)] | None = None
    max_ratio: Annotated[float, Meta(ge=1)] | None = None
    folds: Annotated[int, Meta(ge=2, le=20)] = 5
    learning_curve: tuple[Annotated[float, Meta(gt=0, le=1)], ...] = (0.1, 0.25, 0.5, 1.0)
    seed: int = 0


class _EdgeCases(_Section):
    timeout: Duration = "5s"
    production_extremes: Annotated[int, Meta(ge=0)] = 2
    deadletters: Annotated[int, Meta(ge=0)] = 200
    clean_errors: tuple[str, ...] = ("ValueError", "TypeError")
    long_string: Annotated[int, Meta(ge=1)] = 100_000


class _Stress(_Section):
    concurrency: Annotated[int, Meta(ge=1, le=256)] = 4
    batch_size: Annotated[int, Meta(ge=1)] = 1
    min_requests: Annotated[int, Meta(ge=1)] = 200
    max_requests: Annotated[int, Meta(ge=1)] = 5000
    max_duration: Duration = "60s"
    round_requests: Annotated[int, Meta(ge=1)] = 100
    undecided: Literal["fail", "pass"] = "fail"
    guardrail: Guardrail | None = None


class _Mlflow(_Section):
    tracking_uri: str | None = None
    registry_uri: str | None = None


class _Register(_Section):
    registry: str | None = None
    mlflow: _Mlflow | None = None
    alias: Annotated[str, Meta(min_length=1)] = "candidate"
    model_version: Annotated[str, Meta(pattern=r"^[^:]+:.+$",
                                       extra={"expect": "a 'model:version' string"})] | None = None


class _Kafka(_Section):
    bootstrap_servers: str | None = None
    topic_prefix: str | None = None
    timeout: Duration = "10s"


class _File(_Section):
    candidate: str | _Model
    champion: str | _Model
    target: Annotated[str, Meta(min_length=1)]
    train: Annotated[str, Meta(min_length=1)]
    holdout: Annotated[str, Meta(min_length=1)]
    production: _Production
    task: Literal["binary", "multiclass", "regression"] | None = None
    primary: Primary | None = None
    alpha: Annotated[float, Meta(gt=0, le=0.5)] | None = None
    positive_label: bool | int | float | str | None = None
    experiment: str | _Experiment | None = None
    features: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    constraints: str | None = None
    drift: _Drift = _Drift()
    threshold: _Threshold | None = None
    overfitting: _Overfitting = _Overfitting()
    edge_cases: _EdgeCases = _EdgeCases()
    stress: _Stress = _Stress()
    register: _Register = _Register()
    kafka: _Kafka = _Kafka()
    batch_size: Annotated[int, Meta(ge=1)] = 1000
    skip: tuple[Literal["drift", "missing", "constraints", "non_inferiority", "threshold",
                        "overfitting", "edge_cases", "latency"], ...] = ()


class ModelSpec(Struct, frozen=True):
    """Where a model comes from: an entry point ``module:function`` or an MLflow model URI."""

    predict: str
    fit: str | None = None

    @property
    def is_mlflow(self) -> bool:
        return self.predict.startswith(("models:/", "runs:/"))


class LatencyRule(Struct, frozen=True):
    """The latency guardrail the stress test applies: a quantile and its bounds."""

    metric: str = "latency_p99_ms"
    max_ratio: float | None = 1.2
    max: float | None = None
    source: str = "default"

    @property
    def q(self) -> float:
        return {"latency_p50_ms": 0.5, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}[
            self.metric]


class PreflightConfig(Struct, frozen=True):
    """The preflight file, checked and completed (paths absolute, durations in seconds)."""

    source: str
    base_dir: Path
    candidate: ModelSpec
    champion: ModelSpec
    task: str
    target: str
    train: Path
    holdout: Path
    production: dict[str, Any]  # {"file": Path, "ts": ..., "experiment": ...} or {"kafka": {...}}
    primary: Primary
    alpha: float
    positive_label: Any
    features: tuple[str, ...] | None
    ignore: tuple[str, ...]
    categorical: tuple[str, ...]
    constraints: Path | None
    drift: _Drift
    threshold: _Threshold | None
    live_last: float | None
    overfitting: _Overfitting
    edge_cases: _EdgeCases
    edge_timeout: float
    stress: _Stress
    stress_max_duration: float
    latency: LatencyRule
    register: _Register
    kafka: _Kafka
    kafka_timeout: float
    batch_size: int
    skip: tuple[str, ...]
    experiment_name: str | None
    experiment_arms: tuple[str, ...] | None
    #: where task, primary, alpha and the latency guardrail came from
    origins: dict[str, str]

    @property
    def live_experiment(self) -> str | None:
        """The live experiment whose statistics give the champion's live figures."""
        kafka = self.production.get("kafka")
        if kafka is not None:
            return kafka["experiment"]
        return self.experiment_name

    def is_positive(self, label: Any) -> bool:
        """The live rule (docs/experiment-file.md): with ``positive_label`` left at true,
        true, 1, "1", "true" and "yes" (any case) are positive.

        >>> c = parse_config(_EXAMPLE, "p.yaml")
        >>> [c.is_positive(v) for v in (1, True, "yes", 0, "0", None)]
        [True, True, True, False, False, False]
        """
        if self.positive_label is True:
            if isinstance(label, str):
                return label.strip().lower() in ("1", "true", "yes")
            return label is True or (type(label) in (int, float) and label == 1)
        return label == self.positive_label


_EXAMPLE = """
candidate: m:p
champion: m:q
task: binary
target: y
train: t.csv
holdout: h.csv
production: {file: r.csv}
primary: {metric: accuracy}
"""


def load_config(path: str | Path) -> PreflightConfig:
    """The preflight file at ``path``; raises :class:`PreflightInputError`."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise PreflightInputError(f"The preflight file {path} does not exist: give the path of "
                                  "a YAML file") from None
    except UnicodeDecodeError as bad:
        raise PreflightInputError(f"{path}: the file is not UTF-8 (byte {bad.start})") from None
    except OSError as bad:
        raise PreflightInputError(f"{path}: cannot read the file ({bad.strerror})") from None
    return parse_config(text, str(path), base_dir=path.resolve().parent)


def _load_text(text: str, source: str) -> Any:
    from rollguard.schemas.experiment import ExperimentError
    from rollguard.schemas.experiment import _load_text as load  # the experiment file's rules

    try:
        return load(text, source)
    except ExperimentError as bad:
        raise PreflightInputError(str(bad)) from None


def parse_config(text: str, source: str, *, base_dir: str | Path | None = None
                 ) -> PreflightConfig:
    """A preflight file's text; ``source`` names it in errors, ``base_dir`` anchors paths."""
    base = Path(base_dir) if base_dir is not None else Path(".")
    raw = _load_text(text, source)
    if not isinstance(raw, dict):
        raise PreflightInputError(f"{source}: the file must hold a mapping of keys, got "
                                  f"{preview(raw)}")
    nonfinite = first_nonfinite(raw, ())
    if nonfinite is not None:
        raise PreflightInputError(f"{source}: key '{dotted_path(nonfinite[0])}' is not a finite "
                                  "number")
    try:
        given = msgspec.convert(raw, _File)
    except msgspec.ValidationError as error:
        rejection = describe_rejection(str(error), _File, raw, noun="key")
        where = f"key '{rejection.field}' " if rejection.field else ""
        raise PreflightInputError(f"{source}: {where}{rejection.detail}") from None
    return _complete(given, source, base)


def _problem(source: str, key: str, detail: str) -> PreflightInputError:
    return PreflightInputError(f"{source}: key '{key}' {detail}")


def _model(value: str | _Model, key: str, source: str) -> ModelSpec:
    spec = ModelSpec(value) if isinstance(value, str) else ModelSpec(value.predict, value.fit)
    for name, ref in (("predict", spec.predict), ("fit", spec.fit)):
        if ref is None or (name == "predict" and spec.is_mlflow):
            continue
        module, colon, attr = ref.partition(":")
        if not colon or not module or not attr:
            where = key if isinstance(value, str) else f"{key}.{name}"
            raise _problem(source, where, f"must be an entry point 'package.module:function' or "
                           f"an MLflow model URI (models:/name@alias), got {preview(ref)}")
    return spec


def _complete(given: _File, source: str, base: Path) -> PreflightConfig:
    origins: dict[str, str] = {}
    exp = None
    if given.experiment is not None:
        exp = _read_experiment(given.experiment, source, base)
        origins["experiment"] = exp.name

    def pick(key: str, own: Any, theirs: Any) -> Any:
        if own is not None and theirs is not None and own != theirs:
            raise _problem(source, key, f"differs from the live experiment {exp.name}'s "
                           f"({preview(_plain(own))} here, {preview(_plain(theirs))} there): "
                           "keep one of the two")
        if own is not None:
            origins[key] = "preflight file"
            return own
        if theirs is not None:
            origins[key] = f"experiment {exp.name}"
        return theirs

    task = pick("task", given.task, exp.task if exp else None)
    if task is None:
        raise _problem(source, "task", "is missing (binary, multiclass or regression), and no "
                       "experiment gives it")
    primary = pick("primary", given.primary, exp.primary if exp else None)
    if primary is None:
        raise _problem(source, "primary", "is missing (e.g. {metric: accuracy, margin: 0.01}), "
                       "and no experiment gives it")
    from rollguard.schemas.experiment import PRIMARY_METRICS

    if task not in PRIMARY_METRICS[primary.metric]:
        raise _problem(source, "primary.metric", f"is {primary.metric}, which needs task "
                       f"{' or '.join(PRIMARY_METRICS[primary.metric])}, not {task}")
    alpha = pick("alpha", given.alpha, exp.alpha if exp else None)
    if alpha is None:
        alpha, origins["alpha"] = 0.05, "default"
    positive = given.positive_label
    if exp is not None and positive is None:
        positive = exp.positive_label
    if task == "binary" and positive is None:
        positive = True
    if task != "binary" and given.positive_label is not None:
        raise _problem(source, "positive_label", f"applies only to task binary, not {task}")

    latency = _latency_rule(given.stress.guardrail, exp, source)
    origins["latency"] = latency.source

    production: dict[str, Any]
    given_production = given.production
    if (given_production.file is None) == (given_production.kafka is None):
        raise _problem(source, "production", "takes file (a JSONL or CSV file) or kafka "
                       "({experiment: …, last: 7d}), one of the two")
    if given_production.file is not None:
        production = {"file": base / given_production.file, "ts": given_production.ts,
                      "experiment": given_production.experiment}
    else:
        if given_production.ts is not None or given_production.experiment is not None:
            raise _problem(source, "production", "takes ts and experiment only with file "
                           "(with kafka, the experiment goes under kafka)")
        window = given_production.kafka
        production = {"kafka": {"experiment": window.experiment,
                                "last": _seconds(window.last, "production.kafka.last", source),
                                "max_requests": window.max_requests}}

    threshold = given.threshold
    live_last = None
    if threshold is not None:
        bounds = [b for b in ("min", "max") if getattr(threshold, b) is not None]
        if len(bounds) + (threshold.live is not None) != 1:
            raise _problem(source, "threshold", "takes one of min, max or live (the champion's "
                           "live metric)")
        higher_better = primary.metric == "accuracy"
        if bounds and bounds[0] != ("min" if higher_better else "max"):
            want = "min" if higher_better else "max"
            raise _problem(source, f"threshold.{bounds[0]}", f"does not fit {primary.metric} "
                           f"({'higher' if higher_better else 'lower'} is better): use "
                           f"threshold.{want}")
        if threshold.live is not None:
            live_last = _seconds(threshold.live.last, "threshold.live.last", source)
    overfitting = given.overfitting
    if overfitting.max_gap is not None and overfitting.max_ratio is not None:
        raise _problem(source, "overfitting", "takes max_gap or max_ratio, not both")

    register = given.register
    if register.registry is not None and register.mlflow is not None:
        raise _problem(source, "register", "takes registry (a JSON file) or mlflow, not both")
    if register.registry is not None:
        register = msgspec.structs.replace(register, registry=str(base / register.registry))

    for key in ("features", "ignore", "categorical"):
        names = getattr(given, key) or ()
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _problem(source, key, f"lists {preview(name)} twice")
            if name == given.target:
                raise _problem(source, key, f"lists the target {preview(name)}")

    return PreflightConfig(
        source=source, base_dir=base,
        candidate=_model(given.candidate, "candidate", source),
        champion=_model(given.champion, "champion", source),
        task=task, target=given.target, train=base / given.train,
        holdout=base / given.holdout, production=production, primary=primary, alpha=alpha,
        positive_label=positive, features=given.features, ignore=given.ignore,
        categorical=given.categorical,
        constraints=base / given.constraints if given.constraints else None,
        drift=given.drift, threshold=threshold, live_last=live_last,
        overfitting=overfitting, edge_cases=given.edge_cases,
        edge_timeout=_seconds(given.edge_cases.timeout, "edge_cases.timeout", source),
        stress=given.stress,
        stress_max_duration=_seconds(given.stress.max_duration, "stress.max_duration", source),
        latency=latency, register=register, kafka=given.kafka,
        kafka_timeout=_seconds(given.kafka.timeout, "kafka.timeout", source),
        batch_size=given.batch_size,
        skip=tuple(given.skip), experiment_name=exp.name if exp else None,
        experiment_arms=exp.arms if exp else None, origins=origins)


def _plain(value: Any) -> Any:
    return msgspec.to_builtins(value) if isinstance(value, Struct) else value


def _seconds(value: Any, key: str, source: str) -> float:
    seconds = parse_duration(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise _problem(source, key, f"must be a duration > 0, got {preview(value)}")
    return seconds


def _read_experiment(spec: str | _Experiment, source: str, base: Path) -> Any:
    from rollguard.schemas.experiment import ExperimentError, load_experiments

    path, name = (spec, None) if isinstance(spec, str) else (spec.file, spec.name)
    try:
        experiments = load_experiments(base / path)
    except ExperimentError as bad:
        raise PreflightInputError(f"{source}: the experiment file is unusable: {bad}") from None
    if name is None:
        if len(experiments) != 1:
            names = ", ".join(e.name for e in experiments)
            raise _problem(source, "experiment", f"names a file of {len(experiments)} "
                           f"experiments ({names}): say which with {{file: {path}, name: ...}}")
        return experiments[0]
    for exp in experiments:
        if exp.name == name:
            return exp
    raise _problem(source, "experiment.name", f"is {preview(name)}, which {path} does not "
                   f"define (it has {', '.join(e.name for e in experiments)})")


def _latency_rule(own: Guardrail | None, exp: Any, source: str) -> LatencyRule:
    rule = own
    origin = "preflight file"
    if rule is None and exp is not None:
        latency = [g for g in exp.guardrails if g.metric.startswith("latency_")]
        if latency:
            rule, origin = latency[-1], f"experiment {exp.name}"
    if rule is None:
        return LatencyRule()
    if not rule.metric.startswith("latency_"):
        raise _problem(source, "stress.guardrail.metric", f"is {rule.metric}; the stress test "
                       "judges latency_p50_ms, latency_p95_ms or latency_p99_ms")
    if rule.max_ratio is None and rule.max is None:
        raise _problem(source, "stress.guardrail", "needs max_ratio and/or max")
    return LatencyRule(rule.metric, rule.max_ratio, rule.max, origin)
