"""Running a preflight: read the inputs once, run every check, build the report.

:func:`build_context` reads the tables, loads the models, and (only when the file asks for
them) reads Kafka: the production window, the champion's live figures from the stats topic
and the dead letters. Every input it cannot use raises
:class:`~rollguard.preflight.config.PreflightInputError` (exit code 2). :func:`run_checks`
then runs the checks on that context, with no Kafka; a check that raises is reported as
failed with its error, never as a traceback.

>>> [check.name for check in CHECKS]
['drift', 'missing', 'constraints', 'non_inferiority', 'threshold', 'overfitting', 'edge_cases', 'latency']
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from typing import Any

from rollguard.preflight.base import FAIL, SKIPPED, CheckResult, Context
from rollguard.preflight.config import PreflightConfig, PreflightInputError
from rollguard.preflight.constraints import ConstraintsCheck, load_constraints
from rollguard.preflight.data import (infer_schema, is_missing, read_production_file, read_table,
                                      table_from_requests)
from rollguard.preflight.drift import DriftCheck
from rollguard.preflight.edge_cases import EdgeCaseCheck
from rollguard.preflight.missing import MissingCheck
from rollguard.preflight.models import load_model
from rollguard.preflight.overfitting import OverfittingCheck
from rollguard.preflight.quality import NonInferiorityCheck, ThresholdCheck
from rollguard.preflight.report import Report
from rollguard.preflight.stress import LatencyCheck

__all__ = ["CHECKS", "build_context", "run_checks", "run_preflight", "kafka_settings"]

CHECKS = [DriftCheck(), MissingCheck(), ConstraintsCheck(), NonInferiorityCheck(),
          ThresholdCheck(), OverfittingCheck(), EdgeCaseCheck(), LatencyCheck()]

Progress = Callable[[str], None]


def kafka_settings(config: PreflightConfig, bootstrap: str | None, prefix: str | None
                   ) -> tuple[str, str | None]:
    """The broker and topic prefix: the command line (or its environment variables) first,
    then the preflight file's ``kafka``, then rollguard's defaults."""
    return (bootstrap or config.kafka.bootstrap_servers or "127.0.0.1:9092",
            prefix if prefix is not None else config.kafka.topic_prefix)


def _check_labels(config: PreflightConfig, table: Any) -> None:
    if config.target not in table.columns:
        raise PreflightInputError(f"The {table.name} set {table.source} has no target column "
                                  f"{config.target!r}")
    labels = table.column(config.target)
    missing = sum(is_missing(v) for v in labels)
    if missing:
        raise PreflightInputError(f"The {table.name} set {table.source} has {missing} rows "
                                  f"without a {config.target!r} label: drop or fill them")
    if not labels:
        raise PreflightInputError(f"The {table.name} set {table.source} has no rows")
    if config.task == "binary" and len(set(labels)) > 2:
        raise PreflightInputError(f"The {table.name} set {table.source} has {len(set(labels))} "
                                  f"distinct {config.target!r} values; task binary needs two")


def build_context(config: PreflightConfig, *, bootstrap: str | None = None,
                  topic_prefix: str | None = None, progress: Progress | None = None) -> Context:
    """Everything the checks need, read once; raises PreflightInputError."""
    say = progress or (lambda _: None)
    say("reading the training and holdout sets")
    train = read_table(config.train, "training")
    train.name = "train"
    holdout = read_table(config.holdout, "holdout")
    for table in (train, holdout):
        _check_labels(config, table)
    schema = infer_schema(train, config.target, config.features, config.ignore,
                          config.categorical)
    for name in schema:
        if name not in holdout.columns:
            raise PreflightInputError(f"The holdout set {holdout.source} lacks the feature "
                                      f"column {name!r} the training set has")
    broker, prefix = kafka_settings(config, bootstrap, topic_prefix)
    from rollguard.streams.topics import TopicNames

    names = TopicNames(prefix)
    deadletters: list[dict[str, Any]] = []
    deadletters_error = None
    if "file" in config.production:
        say("reading the production window from a file")
        production = read_production_file(config.production["file"], config.production["ts"],
                                          config.production["experiment"])
    else:
        window = config.production["kafka"]
        say(f"reading the last {window['last']:g} s of {names.requests} from {broker}")
        from rollguard.preflight.live import read_deadletter_inputs, read_requests_window

        _require_broker(broker, config.kafka_timeout)
        requests, invalid = read_requests_window(broker, names.requests, window["experiment"],
                                        window["last"], window["max_requests"],
                                        timeout=3 * config.kafka_timeout)
        production = table_from_requests(
            "production", f"{names.requests} on {broker}, experiment {window['experiment']}, "
            f"the last {_duration(window['last'])}", requests)
        if invalid:
            production.skipped = invalid
            production.notes.append(f"{invalid} message(s) were not valid requests and were "
                                    "left out (the worker dead-letters them)")
        if config.edge_cases.deadletters and "edge_cases" not in config.skip:
            try:
                deadletters = read_deadletter_inputs(broker, names.deadletter,
                                                     window["experiment"],
                                                     config.edge_cases.deadletters,
                                                     timeout=config.kafka_timeout)
            except PreflightInputError as bad:
                deadletters_error = str(bad)
    if not len(production):
        raise PreflightInputError(f"The production window ({production.source}) holds no "
                                  "request with features: widen it or check its source")
    live, live_error = None, None
    wants_live = config.threshold is not None and config.threshold.live is not None
    experiment = config.live_experiment
    if experiment is not None and (wants_live or "kafka" in config.production):
        from rollguard.preflight.live import live_figures, read_stats_snapshot

        say(f"reading the champion's live figures from {names.stats}")
        try:
            if "kafka" not in config.production:
                _require_broker(broker, config.kafka_timeout)
            snapshot = read_stats_snapshot(broker, names.stats, experiment,
                                           timeout=config.kafka_timeout)
            live = live_figures(snapshot, config.primary.metric,
                                config.live_last or 86400.0)
        except PreflightInputError as bad:
            if wants_live:
                raise PreflightInputError(f"threshold.live needs the champion's live figures:"
                                          f" {bad}") from None
            live_error = str(bad)
    elif wants_live:
        raise PreflightInputError(f"{config.source}: threshold.live needs the live experiment: "
                                  "give production {kafka: {experiment: …}} or experiment")
    say("loading the candidate and the champion")
    candidate = load_model(config.candidate, config.base_dir, "candidate")
    champion = load_model(config.champion, config.base_dir, "champion")
    constraints, constraints_source = None, None
    if config.constraints is not None:
        constraints = load_constraints(config.constraints)
        constraints_source = str(config.constraints)
    return Context(config=config, train=train, holdout=holdout, production=production,
                   schema=schema, candidate=candidate, champion=champion,
                   constraints=constraints, constraints_source=constraints_source, live=live,
                   live_error=live_error, deadletters=deadletters,
                   deadletters_error=deadletters_error)


def _require_broker(broker: str, timeout: float) -> None:
    from rollguard.kafka.clients import BrokerUnreachable, require_broker

    try:
        require_broker(broker, timeout=timeout)
    except BrokerUnreachable as bad:
        raise PreflightInputError(str(bad)) from None


def _duration(seconds: float) -> str:
    from rollguard.schemas.durations import format_duration

    return format_duration(seconds)


def run_checks(context: Context, progress: Progress | None = None) -> list[CheckResult]:
    """Every check on the context, in order (those in ``skip`` marked skipped)."""
    say = progress or (lambda _: None)
    results = []
    for check in CHECKS:
        if check.name in context.config.skip:
            results.append(CheckResult(check.name, SKIPPED, check.title,
                                       ["Skipped by the preflight file (skip)."]))
            continue
        say(f"check {check.name}")
        started = time.perf_counter()
        try:
            result = check.run(context)
        except PreflightInputError:
            raise
        except Exception as bad:  # noqa: BLE001 - one check's failure must not hide the others
            result = CheckResult(check.name, FAIL, check.title, [
                f"The check could not run: {type(bad).__name__}: "
                f"{str(bad).strip()[:300] or 'no message'}."],
                {"traceback": traceback.format_exc(limit=8)})
        result.seconds = result.seconds or (time.perf_counter() - started)
        results.append(result)
    return results


def describe_inputs(context: Context) -> dict[str, Any]:
    production = context.production.describe()
    production["name"] = "production"
    if context.production.time_range() is None:
        production["time_range"] = None
    return {"training": context.train.describe(), "holdout": context.holdout.describe(),
            "production": production}


def describe_features(schema: dict[str, Any]) -> str:
    numeric = [n for n, f in schema.items() if f.kind == "numeric"]
    categorical = [n for n, f in schema.items() if f.kind != "numeric"]
    parts = [f"{', '.join(names)} {kind}" for names, kind in
             ((numeric, "numeric"), (categorical, "categorical")) if names]
    return f"{len(schema)}: " + "; ".join(parts)


def run_preflight(config: PreflightConfig, *, bootstrap: str | None = None,
                  topic_prefix: str | None = None, register: bool = False,
                  progress: Progress | None = None) -> Report:
    """Read the inputs, run the checks, and (``register``, on a pass) register the candidate.
    Raises PreflightInputError for unusable inputs (exit 2)."""
    started_at, started = time.time(), time.perf_counter()
    context = build_context(config, bootstrap=bootstrap, topic_prefix=topic_prefix,
                            progress=progress)
    model_version = None
    if register:
        from rollguard.preflight.registration import model_version_of

        model_version = model_version_of(config, context.candidate)
        if config.register.registry is None and config.register.mlflow is None:
            raise PreflightInputError(f"{config.source}: --register needs a registry: "
                                      "register.registry (a JSON file) or register.mlflow")
    checks = run_checks(context, progress)
    settings = {"features": describe_features(context.schema), "task": config.task,
                "metric": config.primary.metric,
                "margin": config.primary.margin, "alpha": config.alpha,
                "latency guardrail": {"metric": config.latency.metric,
                                      "max_ratio": config.latency.max_ratio,
                                      "max": config.latency.max},
                "from": dict(config.origins)}
    if config.live_experiment:
        settings["live experiment"] = config.live_experiment
    report = Report(source=config.source, candidate=context.candidate.name,
                    champion=context.champion.name, checks=checks,
                    inputs=describe_inputs(context), settings=settings, started_at=started_at)
    if context.live_error and config.live_experiment:
        report.notes.append(f"The champion's live figures were not read: {context.live_error}")
    report.seconds = time.perf_counter() - started
    if register:
        _register(config, report, context, model_version)
    return report


def _register(config: PreflightConfig, report: Report, context: Context, model_version: str
              ) -> None:
    from rollguard.preflight.registration import register_json, register_mlflow

    alias = config.register.alias
    if report.status != "pass":
        report.registration = {"registered": False, "sentence": (
            f"Not registered: {len(report.failed)} check(s) failed, so the alias {alias} "
            "stays where it was.")}
        return
    report_json, report_html = report.to_json(), report.to_html()
    if config.register.registry is not None:
        report.registration = register_json(config.register.registry, alias, model_version,
                                            report_json, report_html)
    else:
        mlflow = config.register.mlflow
        tracking = mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        report.registration = register_mlflow(tracking, mlflow.registry_uri, alias,
                                              model_version, context.candidate.run_id,
                                              report.headline(), report_json, report_html)
    report.registration["registered"] = True
