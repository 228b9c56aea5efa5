"""Check ``edge_cases``: inputs a model meets in production sooner or later.

Cases are generated from the features' observed types, starting from a complete training
row and changing one thing at a time:

- every feature null, and every feature's key missing; all features null; no key at all;
  an extra key the model never saw;
- numeric features: NaN, ±infinity, ±1e308, zero, far below and far above the training
  range, a fraction where the training set has integers, and a string;
- categorical features: a category the training set never had, an empty string, a very
  long string (``edge_cases.long_string`` characters), and a value of the other type;

and collected from production: the rows of the production window holding each numeric
feature's most extreme values (``edge_cases.production_extremes`` per side) and each
categorical feature's rarest category, and the inputs of the dead-letter topic (requests
the worker could not use, with their reason).

Each case is one call ``predict([row])``. The candidate must return a valid prediction (a
class of the training set, or a finite number; a score in [0, 1]) or raise a clean, typed
error: an exception that is an instance of one of ``edge_cases.clean_errors`` (default
``ValueError``, ``TypeError``: "this input is not acceptable"). Anything else is listed
with the input that caused it: another exception (a crash), an invalid output, or no answer
within ``edge_cases.timeout``. The champion gets the same cases, to tell new failures
from old ones.

>>> from rollguard.preflight.data import Feature
>>> schema = {"age": Feature("age", "numeric", integer=True),
...           "plan": Feature("plan", "categorical", strings=True)}
>>> cases = generate_cases({"age": 40, "plan": "pro"}, schema, {"plan": {"pro", "basic"}})
>>> [name for name, _ in cases][:6]
['null:age', 'missing:age', 'null:plan', 'missing:plan', 'all null', 'no keys']
>>> def model(rows):
...     return [{"pro": 1, "basic": 0}[r["plan"]] for r in rows]
>>> outcome = call_case(model, {"age": 40, "plan": "gold"}, 1.0, ("ValueError",), "binary",
...                     {0, 1})
>>> outcome["outcome"], outcome["detail"]
('crash', "KeyError: 'gold'")
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Any

from rollguard.preflight.base import FAIL, PASS, CheckResult, Context
from rollguard.preflight.data import Feature, is_missing, is_number
from rollguard.preflight.models import InvalidOutput, normalise_output, valid_prediction

__all__ = ["EdgeCaseCheck", "generate_cases", "production_cases", "call_case"]

EXTRA_KEY = "rollguard_unexpected_feature"
UNSEEN = "rollguard-unseen-category"
OK, CLEAN, CRASH, INVALID, TIMEOUT = "ok", "clean error", "crash", "invalid output", "timeout"


def base_row(rows: Sequence[dict[str, Any]], schema: dict[str, Feature]) -> dict[str, Any]:
    """The first training row with every feature present (else the first row, filled)."""
    for row in rows:
        if all(not is_missing(row.get(name)) for name in schema):
            return {name: row[name] for name in schema}
    first = rows[0] if rows else {}
    return {name: first.get(name, 0) for name in schema}


def generate_cases(base: dict[str, Any], schema: dict[str, Feature],
                   categories: dict[str, set], ranges: dict[str, tuple[float, float]] | None = None,
                   long_string: int = 100_000) -> list[tuple[str, dict[str, Any]]]:
    """Edge cases from the features' types: (name, features) pairs."""
    ranges = ranges or {}
    cases: list[tuple[str, dict[str, Any]]] = []
    for name in schema:
        cases.append((f"null:{name}", {**base, name: None}))
        cases.append((f"missing:{name}", {k: v for k, v in base.items() if k != name}))
    cases.append(("all null", {k: None for k in base}))
    cases.append(("no keys", {}))
    cases.append(("extra key", {**base, EXTRA_KEY: 1.0}))
    for name, feature in schema.items():
        if feature.kind == "numeric":
            low, high = ranges.get(name, (0.0, 1.0))
            span = max(high - low, 1.0)
            values = [("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf),
                      ("1e308", 1e308), ("-1e308", -1e308), ("zero", 0),
                      ("far below range", low - 1000 * span),
                      ("far above range", high + 1000 * span), ("string", "not a number")]
            if feature.integer:
                values.append(("fraction", low + 0.5))
        else:
            known = categories.get(name, set())
            numeric_codes = [v for v in known if is_number(v)]
            unseen: Any = (max(numeric_codes) + 1) if numeric_codes and not feature.strings \
                else UNSEEN
            while unseen in known:
                unseen = f"{unseen}-"
            values = [("unseen category", unseen), ("empty string", ""),
                      ("very long string", "x" * long_string),
                      ("number" if feature.strings else "string",
                       12345 if feature.strings else "rollguard-string")]
            if unseen != UNSEEN:
                values.append(("unseen string category", UNSEEN))
        for label, value in values:
            cases.append((f"{label}:{name}", {**base, name: value}))
    return cases


def production_cases(rows: Sequence[dict[str, Any]], schema: dict[str, Feature],
                     per_side: int) -> list[tuple[str, dict[str, Any]]]:
    """Rows of the production window with the extremes of each numeric feature and the
    rarest category of each categorical feature."""
    cases: list[tuple[str, dict[str, Any]]] = []
    if per_side <= 0 or not rows:
        return cases
    seen: set[int] = set()
    for name, feature in schema.items():
        if feature.kind == "numeric":
            valued = [(row[name], i) for i, row in enumerate(rows)
                      if is_number(row.get(name)) and math.isfinite(row[name])]
            valued.sort()
            picks = [("lowest", v, i) for v, i in valued[:per_side]] + \
                    [("highest", v, i) for v, i in valued[-per_side:]]
        else:
            counts: dict[Any, list[int]] = {}
            for i, row in enumerate(rows):
                value = row.get(name)
                if not is_missing(value):
                    try:
                        counts.setdefault(value, []).append(i)
                    except TypeError:
                        continue
            rare = sorted(counts.items(), key=lambda kv: len(kv[1]))[:per_side]
            picks = [("rarest", value, idx[0]) for value, idx in rare]
        for label, value, i in picks:
            if i in seen:
                continue
            seen.add(i)
            cases.append((f"production {label} {name} = {_short(value)}", dict(rows[i])))
    return cases


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 20]}… ({len(text)} characters)"


def shown_input(row: dict[str, Any]) -> str:
    """A row for the report: long strings cut, non-finite numbers as Python writes them."""
    parts = [f"{k!r}: {_short(v, 40)}" for k, v in row.items()]
    return "{" + ", ".join(parts) + "}"


def call_case(function: Any, row: dict[str, Any], timeout: float, clean: Sequence[str],
              task: str, classes: set | None) -> dict[str, Any]:
    """One call ``function([row])``: its outcome (ok, clean error, crash, invalid output,
    timeout) and a one-line detail."""
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["value"] = function([dict(row)])
        except BaseException as error:  # noqa: BLE001 - classified below
            box["error"] = error

    worker = threading.Thread(target=call, daemon=True, name="rollguard-edge-case")
    started = time.perf_counter()
    worker.start()
    worker.join(timeout)
    seconds = time.perf_counter() - started
    if worker.is_alive():
        return {"outcome": TIMEOUT, "detail": f"no answer within {timeout:g} s",
                "seconds": seconds}
    if "error" in box:
        error = box["error"]
        names = {f"{c.__module__}.{c.__qualname__}" for c in type(error).__mro__} | \
            {c.__name__ for c in type(error).__mro__}
        message = str(error).strip().splitlines()
        first = message[0] if message else ""
        if len(first) > 120:
            first = f"{first[:100]}… ({len(first)} characters)"
        detail = f"{type(error).__name__}: {first}".rstrip(": ")
        outcome = CLEAN if names & set(clean) else CRASH
        return {"outcome": outcome, "detail": detail, "seconds": seconds}
    try:
        [pair] = normalise_output(box.get("value"), 1)
    except InvalidOutput as bad:
        return {"outcome": INVALID, "detail": f"it {bad}", "seconds": seconds}
    why = valid_prediction(pair, task, classes)
    if why is not None:
        return {"outcome": INVALID, "detail": why, "seconds": seconds}
    return {"outcome": OK, "detail": f"prediction {_short(pair[0], 30)}"
            + (f", score {pair[1]:.3g}" if isinstance(pair[1], float) else ""),
            "seconds": seconds}


def classes_of(context: Context) -> set | None:
    if context.config.task == "regression":
        return None
    return {v for v in context.labels(context.train) if not is_missing(v)}


class EdgeCaseCheck:
    name = "edge_cases"
    title = "Edge cases (generated, and collected from production)"

    def run(self, context: Context) -> CheckResult:
        started = time.perf_counter()
        config = context.config
        settings = config.edge_cases
        schema = context.schema
        train_rows = context.features(context.train)
        categories = {name: {r.get(name) for r in train_rows if not is_missing(r.get(name))}
                      for name, f in schema.items() if f.kind == "categorical"}
        ranges = {}
        for name, f in schema.items():
            if f.kind == "numeric":
                nums = [r[name] for r in train_rows if is_number(r.get(name))
                        and math.isfinite(r[name])]
                if nums:
                    ranges[name] = (min(nums), max(nums))
        base = base_row(train_rows, schema)
        cases = [("generated", name, row) for name, row in generate_cases(
            base, schema, categories, ranges, settings.long_string)]
        cases += [("production", name, row) for name, row in production_cases(
            context.production.rows, schema, settings.production_extremes)]
        for letter in context.deadletters[:settings.deadletters]:
            cases.append(("dead letter", f"dead letter {letter.get('origin', '?')}: "
                          f"{letter.get('error', '')}", letter["features"]))
        classes = classes_of(context)
        results = []
        counts: dict[str, int] = {}
        for source, name, row in cases:
            cand = call_case(context.candidate.function, row, config.edge_timeout,
                             settings.clean_errors, config.task, classes)
            counts[cand["outcome"]] = counts.get(cand["outcome"], 0) + 1
            entry = {"case": name, "source": source, "outcome": cand["outcome"],
                     "detail": cand["detail"]}
            if cand["outcome"] not in (OK, CLEAN):
                champ = call_case(context.champion.function, row, config.edge_timeout,
                                  settings.clean_errors, config.task, classes)
                entry["champion"] = champ["outcome"]
                entry["input"] = shown_input(row)
            results.append(entry)
        bad = [r for r in results if r["outcome"] not in (OK, CLEAN)]
        sentences = []
        for r in bad[:20]:
            also = " (the champion too)" if r.get("champion") not in (OK, CLEAN) else ""
            sentences.append(f"{r['outcome'].capitalize()} on {r['case']}{also}: {r['detail']}; "
                             f"input {r['input']}.")
        if len(bad) > 20:
            sentences.append(f"… and {len(bad) - 20} more (the JSON report lists every one).")
        summary = (f"{len(cases)} cases ({sum(s == 'generated' for s, _, _ in cases)} generated,"
                   f" {sum(s == 'production' for s, _, _ in cases)} from the production window, "
                   f"{sum(s == 'dead letter' for s, _, _ in cases)} dead letters): "
                   f"{counts.get(OK, 0)} valid predictions, {counts.get(CLEAN, 0)} clean errors "
                   f"({', '.join(settings.clean_errors)}), {len(bad)} failures.")
        sentences.insert(0, summary)
        if context.deadletters_error:
            sentences.append(f"Dead letters were not read: {context.deadletters_error}")
        figures = {"cases": results, "counts": counts, "clean_errors": list(settings.clean_errors),
                   "failures": len(bad)}
        return CheckResult(self.name, FAIL if bad else PASS, self.title, sentences, figures,
                           seconds=time.perf_counter() - started)
