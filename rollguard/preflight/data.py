"""Tables preflight reads: the training and holdout sets, and the production window.

CSV (types inferred per column: integers, numbers, booleans, else strings; an empty cell is
missing, and so are ``NA``, ``NaN``, ``null`` and ``None`` in a numeric column), Parquet
(with pyarrow) and JSON Lines (requests with ``features``, as on ``rollguard.requests``, or
plain objects). A row is a dict; a missing value is ``None`` (or a float NaN from Parquet or
JSON). :func:`infer_schema` says which columns are features and of which kind.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "train.csv"
>>> _ = path.write_text("age,plan,approved\\n31,pro,1\\n,basic,0\\n45.5,pro,1\\n")
>>> table = read_table(path, "train")
>>> table.rows[1], table.columns
({'age': None, 'plan': 'basic', 'approved': 0}, ['age', 'plan', 'approved'])
>>> schema = infer_schema(table, target="approved")
>>> [(f.name, f.kind) for f in schema.values()]
[('age', 'numeric'), ('plan', 'categorical')]
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollguard.preflight.config import PreflightInputError

__all__ = ["Table", "Feature", "read_table", "read_production_file", "infer_schema",
           "is_missing", "is_number", "table_from_requests"]

_MISSING_TOKENS = {"", "na", "nan", "null", "none", "n/a"}
_BOOL_TOKENS = {"true": True, "false": False}


def is_missing(value: Any) -> bool:
    """None, or a float NaN (Parquet and JSON may carry those).

    >>> is_missing(None), is_missing(float("nan")), is_missing(0), is_missing("")
    (True, True, False, False)
    """
    return value is None or (isinstance(value, float) and math.isnan(value))


def is_number(value: Any) -> bool:
    """An int or a float that is not a bool (NaN and infinities included)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Table:
    """Rows of one input, where they came from and (production) when they were made."""

    name: str
    source: str
    rows: list[dict[str, Any]]
    columns: list[str]
    ts: list[float] | None = None
    skipped: int = 0          # lines or rows that could not be read (JSONL)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list[Any]:
        return [row.get(name) for row in self.rows]

    def time_range(self) -> tuple[float, float] | None:
        stamps = [t for t in self.ts or () if t is not None and math.isfinite(t)]
        return (min(stamps), max(stamps)) if stamps else None

    def describe(self) -> dict[str, Any]:
        span = self.time_range()
        out: dict[str, Any] = {"source": self.source, "rows": len(self.rows)}
        if span is not None:
            out["time_range"] = list(span)
        if self.skipped:
            out["skipped"] = self.skipped
        if self.notes:
            out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class Feature:
    """A feature's kind as the training set shows it: numeric or categorical."""

    name: str
    kind: str               # "numeric" or "categorical"
    integer: bool = False   # numeric and every training value integral
    strings: bool = False   # categorical with string values

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "integer": self.integer,
                "strings": self.strings}


def read_table(path: str | Path, name: str) -> Table:
    """A CSV, Parquet or JSONL file as a :class:`Table`; raises PreflightInputError."""
    path = Path(path)
    if not path.exists():
        raise PreflightInputError(f"The {name} set {path} does not exist: give the path of a "
                                  "CSV or Parquet file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return _read_parquet(path, name)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _read_jsonl(path, name)
    return _read_csv(path, name)


def _read_csv(path: Path, name: str, ts_column: str | None = None) -> Table:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            raw = [row for row in reader if row]
    except UnicodeDecodeError as bad:
        raise PreflightInputError(f"The {name} set {path} is not UTF-8 text (byte {bad.start}):"
                                  " give a CSV or Parquet file") from None
    except (OSError, csv.Error) as bad:
        raise PreflightInputError(f"The {name} set {path} cannot be read as CSV ({bad})") \
            from None
    if not header:
        raise PreflightInputError(f"The {name} set {path} is empty: it needs a header row and "
                                  "data rows")
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        twice = next(h for h in header if header.count(h) > 1)
        raise PreflightInputError(f"The {name} set {path} has the column {twice!r} twice")
    for number, row in enumerate(raw, start=2):
        if len(row) != len(header):
            raise PreflightInputError(f"The {name} set {path} has {len(row)} cells on line "
                                      f"{number}, its header {len(header)}")
    columns = list(zip(*raw)) if raw else [() for _ in header]
    parsed = [_parse_column(cells) for cells in columns]
    rows = [dict(zip(header, values)) for values in zip(*parsed)] if raw else []
    table = Table(name, str(path), rows, header)
    if ts_column is not None:
        if ts_column not in header:
            raise PreflightInputError(f"The {name} file {path} has no column {ts_column!r} "
                                      "(production.ts)")
        table.ts = [v if is_number(v) else None for v in (r.pop(ts_column) for r in rows)]
        table.columns = [c for c in header if c != ts_column]
    return table


def _parse_column(cells: Sequence[str]) -> list[Any]:
    """Typed values of one CSV column: all integers, all numbers, all booleans, or strings."""
    stripped = [c.strip() for c in cells]
    present = [c for c in stripped if c.lower() not in _MISSING_TOKENS]
    try:
        ints = [int(c) for c in present]
        return [None if c.lower() in _MISSING_TOKENS else v
                for c, v in zip(stripped, _spread(stripped, ints))]
    except ValueError:
        pass
    try:
        floats = [float(c) for c in present]
        return [None if c.lower() in _MISSING_TOKENS else v
                for c, v in zip(stripped, _spread(stripped, floats))]
    except ValueError:
        pass
    if present and all(c.lower() in _BOOL_TOKENS for c in present):
        return [None if c == "" else _BOOL_TOKENS[c.lower()] for c in stripped]
    return [None if c == "" else original for c, original in zip(stripped, cells)]


def _spread(cells: Sequence[str], values: list[Any]) -> list[Any]:
    """``values`` (one per present cell) placed back among the missing ones."""
    it = iter(values)
    return [None if c.lower() in _MISSING_TOKENS else next(it) for c in cells]


def _read_parquet(path: Path, name: str) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise PreflightInputError(f"The {name} set {path} is Parquet, which needs pyarrow: "
                                  "pip install 'rollguard[parquet]'") from None
    try:
        table = pq.read_table(path)
    except Exception as bad:  # noqa: BLE001 - ArrowInvalid, OSError: one sentence
        raise PreflightInputError(f"The {name} set {path} cannot be read as Parquet "
                                  f"({str(bad).splitlines()[0]})") from None
    return Table(name, str(path), table.to_pylist(), list(table.column_names))


def _read_jsonl(path: Path, name: str, experiment: str | None = None) -> Table:
    rows: list[dict[str, Any]] = []
    stamps: list[float] = []
    skipped = 0
    columns: dict[str, None] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as bad:
        raise PreflightInputError(f"The {name} file {path} cannot be read as UTF-8 JSON Lines "
                                  f"({bad})") from None
    for line in lines:
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            skipped += 1
            continue
        row, ts = _request_features(value, experiment)
        if row is None:
            skipped += 1 if ts != "other" else 0
            continue
        rows.append(row)
        stamps.append(ts)
        columns.update(dict.fromkeys(row))
    table = Table(name, str(path), rows, list(columns), skipped=skipped)
    if any(t is not None for t in stamps):
        table.ts = stamps
    if skipped:
        table.notes.append(f"{skipped} line(s) were not valid requests with features (or "
                           "JSON objects of features) and were left out")
    return table


def _request_features(value: Any, experiment: str | None) -> tuple[dict | None, Any]:
    """(features, ts) of a request event, or of a plain object of features."""
    if not isinstance(value, dict):
        return None, None
    if "features" in value:
        if experiment is not None and value.get("experiment") != experiment:
            return None, "other"
        from rollguard.schemas.events import Invalid, decode_request

        request = decode_request(json.dumps(value, allow_nan=True).encode())
        if isinstance(request, Invalid) or not request.features:
            return None, None  # the worker would dead-letter it
        return dict(request.features), request.ts
    return dict(value), None


def table_from_requests(name: str, source: str, requests: Iterable[dict[str, Any]]) -> Table:
    """A table of the ``features`` of request events (already decoded)."""
    rows, stamps, columns = [], [], {}
    for request in requests:
        features = request.get("features")
        if not isinstance(features, dict):
            continue
        rows.append(dict(features))
        ts = request.get("ts")
        stamps.append(ts if is_number(ts) else None)
        columns.update(dict.fromkeys(features))
    return Table(name, source, rows, list(columns), ts=stamps)


def read_production_file(path: Path, ts_column: str | None = None,
                         experiment: str | None = None) -> Table:
    """The production window from a file: JSONL requests (``features``) or CSV rows."""
    if not Path(path).exists():
        raise PreflightInputError(f"The production file {path} does not exist: give a JSONL "
                                  "file of requests or a CSV file of rows")
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        table = _read_jsonl(Path(path), "production", experiment)
    elif suffix in (".parquet", ".pq"):
        table = _read_parquet(Path(path), "production")
    else:
        table = _read_csv(Path(path), "production", ts_column)
        if ts_column is None and "ts" in table.columns:
            table.ts = [v if is_number(v) else None for v in (r.pop("ts") for r in table.rows)]
            table.columns.remove("ts")
    table.name = "production"
    return table


def infer_schema(train: Table, target: str | None, features: Sequence[str] | None = None,
                 ignore: Sequence[str] = (), categorical: Sequence[str] = ()
                 ) -> dict[str, Feature]:
    """The features (every column but the target and ``ignore``, or ``features``) and their
    kinds: numeric when every present training value is a number, else categorical
    (strings, booleans, mixed), and categorical when listed in ``categorical``."""
    if target is not None and target not in train.columns:
        raise PreflightInputError(f"The training set {train.source} has no target column "
                                  f"{target!r} (its columns: {', '.join(train.columns[:20])})")
    names = list(features) if features is not None else [
        c for c in train.columns if c != target and c not in ignore]
    for name in [*names, *categorical]:
        if name not in train.columns:
            raise PreflightInputError(f"The training set {train.source} has no column {name!r}"
                                      " (listed in the preflight file)")
    if not names:
        raise PreflightInputError(f"The training set {train.source} has no feature column "
                                  "besides the target")
    schema: dict[str, Feature] = {}
    for name in names:
        present = [v for v in train.column(name) if not is_missing(v)]
        numeric = bool(present) and all(is_number(v) for v in present)
        if numeric and name not in categorical:
            integer = all(float(v).is_integer() for v in present if math.isfinite(v))
            schema[name] = Feature(name, "numeric", integer=integer)
        else:
            schema[name] = Feature(name, "categorical",
                                   strings=any(isinstance(v, str) for v in present))
    return schema
