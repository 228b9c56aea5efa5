"""Check ``constraints``: data constraints in the manner of deequ and TDDA, kept in a file.

``rollguard preflight constraints infer`` writes the constraints the training set satisfies
into a YAML file a person reviews and edits; every preflight run verifies them on the
production window (without a file, they are inferred from the training set for that run,
and the report says so). Each constraint names a ``feature``, a ``check`` and its
arguments, and ``mostly``: the share of rows that must satisfy it (as Great Expectations'
``mostly``; default 1).

| check | arguments | a row satisfies it when |
| --- | --- | --- |
| ``type`` | ``type``: number, string or boolean | its present value has that type |
| ``not_null`` | | its value is present (not null, not NaN, key not absent) |
| ``range`` | ``min`` and/or ``max`` | its number is within them |
| ``integer`` | | its number is integral |
| ``allowed_values`` | ``values`` | its present value is one of them |
| ``max_length`` | ``max`` | its string is at most that long |
| ``unique`` | | no earlier row has its present value |

Inferred ``range`` and ``allowed_values`` get ``mostly: 0.99``: a new row from the training
distribution falls outside the range of n training rows with chance 2/(n + 1), so demanding
every production row inside would fail healthy data.

>>> from rollguard.preflight.data import Feature
>>> schema = {"age": Feature("age", "numeric", integer=True)}
>>> rows = [{"age": a} for a in range(18, 80)]
>>> inferred = infer_constraints(rows, schema)
>>> [(c.check, c.min, c.max) for c in inferred if c.check == "range"]
[('range', 18.0, 79.0)]
>>> result = verify([{"age": 30}, {"age": 130}, {"age": None}], inferred)
>>> [(r["check"], r["violations"], r["status"]) for r in result if r["status"] == "fail"]
[('not_null', 1, 'fail'), ('range', 1, 'fail')]
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta, Struct

from rollguard.preflight.base import FAIL, PASS, SKIPPED, CheckResult, Context
from rollguard.preflight.config import PreflightInputError
from rollguard.preflight.data import Feature, is_missing, is_number

__all__ = ["Constraint", "ConstraintsCheck", "infer_constraints", "verify",
           "load_constraints", "dump_constraints", "CHECKS"]

CHECKS = ("type", "not_null", "range", "integer", "allowed_values", "max_length", "unique")
#: categorical features with at most this many categories get an allowed_values constraint
MAX_ALLOWED_VALUES = 50
INFERRED_MOSTLY = 0.99
Value = bool | int | float | str


class Constraint(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One constraint on one feature (see the module docstring)."""

    feature: Annotated[str, Meta(min_length=1)]
    check: Literal["type", "not_null", "range", "integer", "allowed_values", "max_length",
                   "unique"]
    type: Literal["number", "string", "boolean"] | None = None
    min: float | None = None
    max: float | None = None
    values: tuple[Value, ...] | None = None
    mostly: Annotated[float, Meta(ge=0, le=1)] = 1.0

    def describe(self) -> str:
        if self.check == "type":
            return f"is a {self.type}"
        if self.check == "not_null":
            return "is present"
        if self.check == "range":
            parts = [f">= {self.min:g}" if self.min is not None else "",
                     f"<= {self.max:g}" if self.max is not None else ""]
            return "is " + " and ".join(p for p in parts if p)
        if self.check == "integer":
            return "is an integer"
        if self.check == "allowed_values":
            shown = ", ".join(repr(v) for v in (self.values or ())[:8])
            more = f" … ({len(self.values)} values)" if len(self.values or ()) > 8 else ""
            return f"is one of {shown}{more}"
        if self.check == "max_length":
            return f"is at most {self.max:g} characters long"
        return "is unique"


def infer_constraints(rows: Sequence[dict[str, Any]], schema: dict[str, Feature]
                      ) -> list[Constraint]:
    """The constraints the rows satisfy, per feature of ``schema``."""
    found: list[Constraint] = []
    for name, feature in schema.items():
        values = [row.get(name) for row in rows]
        present = [v for v in values if not is_missing(v)]
        if not present:
            continue
        if all(isinstance(v, bool) for v in present):
            kind = "boolean"
        elif all(is_number(v) for v in present):
            kind = "number"
        elif all(isinstance(v, str) for v in present):
            kind = "string"
        else:
            kind = None
        if kind is not None:
            found.append(Constraint(name, "type", type=kind))
        if len(present) == len(values):
            found.append(Constraint(name, "not_null"))
        numbers = [float(v) for v in present if is_number(v) and math.isfinite(v)]
        if feature.kind == "numeric" and numbers:
            found.append(Constraint(name, "range", min=min(numbers), max=max(numbers),
                                    mostly=INFERRED_MOSTLY))
            if feature.integer:
                found.append(Constraint(name, "integer"))
        distinct = set(present)
        if feature.kind == "categorical" and len(distinct) <= MAX_ALLOWED_VALUES:
            found.append(Constraint(name, "allowed_values",
                                    values=tuple(sorted(distinct, key=_order)),
                                    mostly=INFERRED_MOSTLY))
        if kind == "string":
            found.append(Constraint(name, "max_length", max=float(max(map(len, present))),
                                    mostly=INFERRED_MOSTLY))
        if len(present) >= 20 and len(distinct) == len(present) and (
                kind == "string" or (kind == "number" and feature.integer)):
            found.append(Constraint(name, "unique"))
    return found


def _order(value: Any) -> tuple:
    return (type(value).__name__, value)


def _satisfies(c: Constraint, value: Any, seen: set) -> bool | None:
    """True or False for a row's value, None when the constraint does not apply to it."""
    if c.check == "not_null":
        return not is_missing(value)
    if is_missing(value):
        return None
    if c.check == "type":
        if c.type == "number":
            return is_number(value)
        return isinstance(value, str) if c.type == "string" else isinstance(value, bool)
    if c.check == "range":
        if not is_number(value):
            return None
        return (c.min is None or value >= c.min) and (c.max is None or value <= c.max)
    if c.check == "integer":
        if not is_number(value):
            return None
        return math.isfinite(value) and float(value).is_integer()
    if c.check == "allowed_values":
        return _hashable(value) in set(c.values or ())
    if c.check == "max_length":
        return len(value) <= c.max if isinstance(value, str) else None
    key = _hashable(value)  # unique
    if key in seen:
        return False
    seen.add(key)
    return True


def _hashable(value: Any) -> Any:
    try:
        hash(value)
        return value
    except TypeError:
        return repr(value)


def verify(rows: Sequence[dict[str, Any]], constraints: Sequence[Constraint]
           ) -> list[dict[str, Any]]:
    """Each constraint's figures on ``rows``: rows checked, violations, share satisfied,
    status, and examples of violating values."""
    results = []
    for c in constraints:
        seen: set = set()
        checked = violations = 0
        examples: list[Any] = []
        extreme: float | None = None
        for row in rows:
            ok = _satisfies(c, row.get(c.feature), seen)
            if ok is None:
                continue
            checked += 1
            if not ok:
                violations += 1
                value = row.get(c.feature)
                if len(examples) < 5 and value not in examples:
                    examples.append(_shown(value))
                if c.check == "range" and is_number(value) and (
                        extreme is None or _distance(c, value) > _distance(c, extreme)):
                    extreme = value
        share = 1.0 - violations / checked if checked else 1.0
        status = PASS if share >= c.mostly else FAIL
        result = {"feature": c.feature, "check": c.check, "constraint": c.describe(),
                  "mostly": c.mostly, "checked": checked, "violations": violations,
                  "satisfied": round(share, 6), "status": status, "examples": examples}
        if extreme is not None:
            result["most_extreme"] = extreme
        results.append(result)
    return results


def _distance(c: Constraint, value: float) -> float:
    if c.max is not None and value > c.max:
        return value - c.max
    if c.min is not None and value < c.min:
        return c.min - value
    return 0.0


def _shown(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 40:
        return value[:37] + f"... ({len(value)} characters)"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


# -- the file -------------------------------------------------------------------------------

HEADER = """\
# Data constraints for `rollguard preflight` (docs/preflight.md), inferred from
# {source} ({rows} rows) on {when}.
# Review and edit: delete what does not hold, widen a range, add allowed values.
# Each constraint: feature, check (type, not_null, range, integer, allowed_values,
# max_length, unique), its arguments, and mostly: the share of rows that must satisfy it
# (default 1). Inferred ranges and allowed values get mostly 0.99: a new row falls outside
# the range of n training rows with chance 2/(n + 1) even when nothing changed.
"""


def dump_constraints(constraints: Sequence[Constraint], source: str, rows: int) -> str:
    """The YAML text of a constraints file, one constraint per line."""
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [HEADER.format(source=source, rows=rows, when=when).rstrip("\n"),
             f"source: {yaml.safe_dump(source, default_style=None).splitlines()[0]}",
             f"rows: {rows}", "constraints:"]
    for c in constraints:
        item = msgspec.to_builtins(c)
        text = yaml.safe_dump(item, default_flow_style=True, sort_keys=False, width=10_000)
        lines.append(f"  - {text.strip()}")
    return "\n".join(lines) + "\n"


class _File(Struct, forbid_unknown_fields=True):
    constraints: list[Constraint]
    source: str | None = None
    rows: int | None = None


def load_constraints(path: Path) -> list[Constraint]:
    """The constraints of a file; raises PreflightInputError naming the entry and the key."""
    from rollguard.schemas.events import describe_rejection
    from rollguard.schemas.experiment import ExperimentError
    from rollguard.schemas.experiment import _load_text as load

    if not Path(path).exists():
        raise PreflightInputError(f"The constraints file {path} does not exist: write one with "
                                  "`rollguard preflight constraints infer`")
    try:
        raw = load(Path(path).read_text(encoding="utf-8"), str(path))
    except ExperimentError as bad:
        raise PreflightInputError(str(bad)) from None
    except (OSError, UnicodeDecodeError) as bad:
        raise PreflightInputError(f"The constraints file {path} cannot be read ({bad})") \
            from None
    try:
        data = msgspec.convert(raw, _File)
    except msgspec.ValidationError as error:
        rejection = describe_rejection(str(error), _File, raw, noun="key")
        where = f"key '{rejection.field}' " if rejection.field else ""
        raise PreflightInputError(f"{path}: {where}{rejection.detail}") from None
    for index, c in enumerate(data.constraints):
        need = {"type": ("type",), "range": ("min", "max"), "allowed_values": ("values",),
                "max_length": ("max",)}.get(c.check, ())
        if need and all(getattr(c, key) is None for key in need):
            raise PreflightInputError(f"{path}: key 'constraints[{index}]' ({c.check} of "
                                      f"{c.feature}) needs {' or '.join(need)}")
    return data.constraints


class ConstraintsCheck:
    """Verifies the constraints (from the file, or inferred for this run) on production."""

    name = "constraints"
    title = "Data constraints (verified on the production window)"

    def run(self, context: Context) -> CheckResult:
        started = time.perf_counter()
        inferred = context.constraints is None
        constraints = context.constraints if not inferred else infer_constraints(
            context.train.rows, context.schema)
        source = context.constraints_source if not inferred else \
            f"inferred from {context.train.source} for this run (no constraints file)"
        if not len(context.production):
            return CheckResult(self.name, SKIPPED, self.title,
                               ["The production window holds no request."], {"source": source})
        results = verify(context.production.rows, constraints)
        failed = [r for r in results if r["status"] == FAIL]
        sentences = []
        if inferred:
            sentences.append(f"No constraints file was given: {len(constraints)} constraints "
                             f"were inferred from the training set for this run (keep them "
                             "with `rollguard preflight constraints infer`).")
        for r in failed:
            by = f"; most extreme {r['most_extreme']!r}" if "most_extreme" in r else ""
            examples = ", ".join(repr(e) for e in r["examples"][:3])
            sentences.append(
                f"{r['feature']} {r['constraint']} in {100 * r['satisfied']:.4g}% of "
                f"{r['checked']} production rows, below the {100 * r['mostly']:g}% required "
                f"({r['violations']} violate it, e.g. {examples}{by}).")
        if not failed:
            sentences.append(f"All {len(results)} constraints hold on {len(context.production)}"
                             " production requests.")
        return CheckResult(self.name, FAIL if failed else PASS, self.title, sentences,
                           {"source": source, "inferred": inferred, "constraints": results},
                           seconds=time.perf_counter() - started)
