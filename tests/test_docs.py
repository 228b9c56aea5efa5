"""The documentation agrees with the code, and stays inside the repository.

- docs/events.md: the field table of each event lists exactly the fields of the JSON Schema
  that ``rollguard schemas export`` writes from the msgspec types (names, required or not,
  JSON types and their main constraints, allowed values); its examples decode; its worked
  assignment example is what ``rollguard.serving.assignment`` computes.
- docs/design.md: the modes, primary metrics and guardrails it tables are the code's.
- README.md, docs/ and rollguard/ never point at notes that are not in the repository, and
  every relative link in README.md and docs/*.md leads to a file (and heading) that exists.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from rollguard.schemas.events import (DEADLETTER_HEADERS, Invalid, decode_control, decode_label,
                                      decode_prediction, decode_replay_line, decode_request)
from rollguard.schemas.jsonschema import SCHEMA_TYPES, json_schemas
from rollguard.serving.assignment import BUCKETS, assign, bucket, lay_order
from rollguard.streams.topics import DEFAULT_PREFIX, INPUT_KINDS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EVENTS_MD = DOCS / "events.md"
DESIGN_MD = DOCS / "design.md"

#: schema name (``rollguard schemas export``) -> heading of its field table in docs/events.md
EVENT_TABLES = {
    "request": "Request",
    "prediction": "Prediction",
    "label": "Label",
    "control": "Control event",
    "control-request": "Control request",
    "deadletter": "Dead letter",
}
#: schemas that are not events (documented in docs/experiment-file.md)
NOT_EVENTS = {"experiment"}
FIELD_HEADER = ["field", "type", "required", "meaning"]

_KIND_WORDS = re.compile(r"\b(string|number|integer|boolean|object|list|bytes|null)s?\b")
_CODE_SPAN = re.compile(r"`[^`]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


# -- reading markdown ---------------------------------------------------------------------------
def _prose_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of the lines outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def _cells(line: str) -> list[str]:
    """The cells of one table row; a ``|`` inside a code span does not split."""
    cells, current, in_code = [], "", False
    for char in line.strip().strip("|"):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append(current.strip())
            current = ""
        else:
            current += char
    cells.append(current.strip())
    return cells


def tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """Every table as ``(heading above it, header cells, rows of cells)``."""
    found: list[tuple[str, list[str], list[list[str]]]] = []
    heading = ""
    lines = _prose_lines(text)
    i = 0
    while i < len(lines):
        _, line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and i + 1 < len(lines) \
                and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1][1].strip()):
            header = _cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i][1].startswith("|"):
                rows.append(_cells(lines[i][1]))
                i += 1
            found.append((heading, header, rows))
            continue
        i += 1
    return found


def section(text: str, heading: str) -> str:
    """The text under a heading, up to the next heading of the same or a higher level."""
    lines = text.splitlines()
    for start, line in enumerate(lines):
        match = re.match(r"(#+)\s+(.*)", line)
        if match and match.group(2).strip() == heading:
            level = len(match.group(1))
            end = next((j for j in range(start + 1, len(lines))
                        if re.match(rf"#{{1,{level}}}\s", lines[j])), len(lines))
            return "\n".join(lines[start + 1:end])
    raise AssertionError(f"no heading {heading!r}")


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def _ticked(cell: str) -> list[str]:
    return [span.strip("`") for span in _CODE_SPAN.findall(cell)]


# -- what the code says ------------------------------------------------------------------------
SCHEMAS = json_schemas()


def _members(node: dict) -> list[dict]:
    """The alternatives of a schema node, nested ``anyOf`` flattened."""
    if "anyOf" in node and "type" not in node and "enum" not in node:
        return [m for branch in node["anyOf"] for m in _members(branch)]
    return [node]


def _kind(member: dict) -> set[str]:
    if "enum" in member and "type" not in member:
        names = {bool: "boolean", int: "integer", float: "number", str: "string"}
        return {names.get(type(v), "null") if v is not None else "null" for v in member["enum"]}
    kind = member.get("type")
    if kind == "string" and member.get("contentEncoding") == "base64":
        return {"bytes"}
    return {{"array": "list"}.get(kind, kind)} if kind else set()


def expected_kinds(prop: dict, required: bool) -> set[str]:
    kinds: set[str] = set()
    for member in _members(prop):
        kinds |= _kind(member)
    if {"integer", "number"} <= kinds:  # int | float: a number in JSON
        kinds.discard("integer")
    if not required:
        kinds.discard("null")  # an optional field may always be null
    return kinds


def documented_kinds(cell: str) -> set[str]:
    head = re.split(r" of | in |≥|>|\(", _CODE_SPAN.sub("", cell), maxsplit=1)[0]
    return set(_KIND_WORDS.findall(head))


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def constraint_texts(node: dict) -> list[str]:
    """What a type cell must say for the constraints of a field (and of its items/values)."""
    texts: list[str] = []
    for member in _members(node):
        if member.get("minLength") == 1:
            texts.append("non-empty")
        low, high = member.get("minimum"), member.get("maximum")
        if high is not None and high >= 2 ** 53:  # a 64-bit limit, not a documented range
            high = None
        if low is not None and high is not None:
            texts.append(f"[{_number(low)}, {_number(high)}]")
        elif low is not None:
            texts.append(f"≥ {_number(low)}")
        elif high is not None:
            texts.append(f"≤ {_number(high)}")
        if "exclusiveMinimum" in member:
            texts.append(f"> {_number(member['exclusiveMinimum'])}")
        if "pattern" in member:
            assert member["pattern"] == r"^[^:]+:.+$", f"document the pattern {member['pattern']}"
            texts.append("`model:version`")
        for inner in ("items", "additionalProperties", "propertyNames"):
            if isinstance(member.get(inner), dict):
                texts.extend(constraint_texts(member[inner]))
    return texts


def enum_values(node: dict) -> set[str]:
    return {v for member in _members(node) for v in member.get("enum", ())}


def conditional_groups(schema: dict) -> list[set[str]]:
    """Fields required only together with an alternative: ``anyOf: [{required: [a]}, ...]``."""
    groups = []
    if "anyOf" in schema and all(set(b) == {"required"} for b in schema["anyOf"]):
        groups.append({name for b in schema["anyOf"] for name in b["required"]})
    return groups


def field_table(name: str) -> list[list[str]]:
    heading = EVENT_TABLES[name]
    found = [(h, rows) for h, header, rows in tables(EVENTS_MD.read_text(encoding="utf-8"))
             if h == heading and header == FIELD_HEADER]
    assert len(found) == 1, f"docs/events.md needs one field table under '## {heading}'"
    rows = found[0][1]
    for row in rows:
        assert len(row) == 4, f"{heading}: a row needs 4 cells: {row}"
    return rows


def field_rows(name: str) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for row in field_table(name):
        ticked = _ticked(row[0])
        assert len(ticked) == 1, f"{EVENT_TABLES[name]}: name one field per row, in backticks"
        assert ticked[0] not in rows, f"{EVENT_TABLES[name]}: '{ticked[0]}' is listed twice"
        rows[ticked[0]] = row
    return rows


EVENT_NAMES = sorted(EVENT_TABLES)


# -- docs/events.md against the code -------------------------------------------------------------
def test_every_event_of_the_code_has_a_table():
    assert set(SCHEMA_TYPES) - NOT_EVENTS == set(EVENT_TABLES), (
        "an event type was added to or removed from rollguard/schemas/jsonschema.py: "
        "document it in docs/events.md and in EVENT_TABLES here")


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_documented_fields_are_the_code_fields(name):
    documented = set(field_rows(name))
    in_code = set(SCHEMAS[name]["properties"])
    assert documented == in_code, (
        f"{EVENT_TABLES[name]}: in the code but not documented: {sorted(in_code - documented)}; "
        f"documented but not in the code: {sorted(documented - in_code)}")


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_required_as_in_the_code(name):
    schema = SCHEMAS[name]
    required = set(schema.get("required", ()))
    groups = conditional_groups(schema)
    for field, row in field_rows(name).items():
        cell = row[2].strip()
        group = next((g for g in groups if field in g), None)
        if field in required:
            assert cell == "yes", f"{name}.{field} is required: its cell must be 'yes'"
        elif group is not None:
            others = group - {field}
            assert cell not in ("yes", "no") and others <= set(_ticked(cell)), (
                f"{name}.{field} is required unless {sorted(others)} is given: say so, "
                f"naming them in backticks (got {cell!r})")
        else:
            assert cell == "no", f"{name}.{field} is optional: its cell must be 'no'"


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_types_as_in_the_code(name):
    schema = SCHEMAS[name]
    required = set(schema.get("required", ()))
    for field, row in field_rows(name).items():
        prop = schema["properties"][field]
        cell = row[1]
        assert documented_kinds(cell) == expected_kinds(prop, field in required), (
            f"{name}.{field}: documented as {cell!r}, the code accepts "
            f"{sorted(expected_kinds(prop, field in required))}")
        for text in constraint_texts(prop):
            assert text in cell, f"{name}.{field}: the type {cell!r} should say {text!r}"


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_allowed_values_as_in_the_code(name):
    for field, row in field_rows(name).items():
        values = enum_values(SCHEMAS[name]["properties"][field])
        if values:
            listed = {t for t in _ticked(row[3]) if re.fullmatch(r"[a-z_]+", t)}
            assert listed == values, f"{name}.{field}: the code allows {sorted(values)}, " \
                                     f"the doc lists {sorted(listed)}"


def test_the_actions_table_lists_every_action():
    actions = enum_values(SCHEMAS["control"]["properties"]["action"])
    [rows] = [rows for heading, _, rows in tables(EVENTS_MD.read_text(encoding="utf-8"))
              if heading == "Actions"]
    listed = {_ticked(row[0])[0] for row in rows}
    assert listed == actions, f"the code's actions are {sorted(actions)}, the table lists " \
                              f"{sorted(listed)}"


def test_topics_keys_and_headers_are_documented():
    text = EVENTS_MD.read_text(encoding="utf-8")
    for kind in (*INPUT_KINDS, "control", "stats", "deadletter"):
        assert f"`<prefix>{kind}`" in text
    for header in DEADLETTER_HEADERS:
        assert f"`{header}`" in text
    assert f"`{DEFAULT_PREFIX}`" in text and "ROLLGUARD_TOPIC_PREFIX" in text


def _decode(obj: dict, raw: bytes):
    if "topic" in obj:
        return decode_replay_line(raw)
    if "action" in obj:
        return decode_control(raw)
    if "label" in obj or "engaged" in obj:
        return decode_label(raw)
    if "model" in obj:
        return decode_prediction(raw)
    return decode_request(raw)


def test_examples_are_valid_events():
    text = EVENTS_MD.read_text(encoding="utf-8")
    examples = code_blocks(text, "json")
    assert len(examples) >= 5
    for block in examples:
        raw = json.dumps(json.loads(block)).encode()
        result = _decode(json.loads(block), raw)
        assert not isinstance(result, Invalid), f"{result.reason}\n{block}"
    [replay] = code_blocks(text, "jsonl")
    for line in replay.splitlines():
        result = decode_replay_line(line.encode())
        assert not isinstance(result, Invalid), f"{result.reason}\n{line}"


def test_the_worked_assignment_example_is_what_the_code_computes():
    text = section(EVENTS_MD.read_text(encoding="utf-8"), "Worked example")
    setup = re.search(r"Experiment `([^`]+)`, champion `([^`]+)`, traffic\s+`(\{[^`]+\})`", text)
    assert setup, "the example names its experiment, champion and traffic"
    experiment, champion, traffic = setup.group(1), setup.group(2), json.loads(setup.group(3))
    laid = re.findall(r"`([^`]+)` on \[", text)
    assert tuple(laid) == lay_order(champion, traffic)
    [(_, header, rows)] = tables(text)
    assert header[0] == "unit" and header[-1] == "arm"
    assert len(rows) >= 3
    for unit_cell, hex_cell, bucket_cell, fraction_cell, arm_cell in rows:
        unit = _ticked(unit_cell)[0]
        digest = hashlib.sha256(f"{experiment}/{unit}".encode()).hexdigest()[:16]
        assert _ticked(hex_cell)[0] == digest
        assert int(bucket_cell) == bucket(experiment, unit)
        assert fraction_cell == f"{bucket(experiment, unit) / BUCKETS:.5f}"
        assert _ticked(arm_cell)[0] == assign(experiment, unit, champion, traffic)
    arms_seen = {_ticked(row[-1])[0] for row in rows}
    assert arms_seen == set(traffic), "the example shows a unit on every arm"


# -- docs/design.md against the code -------------------------------------------------------------
def _experiment_enum(definition: str, prop: str) -> set[str]:
    return set(SCHEMAS["experiment"]["$defs"][definition]["properties"][prop]["enum"])


def _first_column(text: str, heading: str, first: str) -> set[str]:
    [rows] = [rows for h, header, rows in tables(text) if h == heading and header[0] == first]
    return {name for row in rows for name in _ticked(row[0])}


def test_design_tables_modes_and_guardrails_of_the_code():
    text = DESIGN_MD.read_text(encoding="utf-8")
    assert _first_column(text, "Modes", "mode") == _experiment_enum("Experiment", "mode")
    assert _first_column(text, "Guardrails", "guardrail") == _experiment_enum("Guardrail",
                                                                               "metric")
    rule = section(text, "The decision rule")
    for metric in _experiment_enum("Primary", "metric"):
        assert f"`{metric}`" in rule


# -- readable, and nothing outside the repository --------------------------------------------------
@pytest.mark.parametrize("path", [EVENTS_MD, DESIGN_MD], ids=lambda p: p.name)
def test_lines_are_short(path):
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        assert len(line) <= 105, f"{path.name}:{number} is {len(line)} characters long"


FORBIDDEN = ("DESIGN.md", "EVENTS.md", "../shared", "/work/shared", "kept beside the project")


def _user_facing_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted(DOCS.rglob("*"))]
    files += sorted(p for p in (ROOT / "rollguard").rglob("*") if "__pycache__" not in p.parts)
    return [p for p in files if p.is_file()]


def test_nothing_points_outside_the_repository():
    found = []
    for path in _user_facing_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # not text
        for number, line in enumerate(text.splitlines(), start=1):
            for word in FORBIDDEN:
                if word in line:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {word}")
    assert not found, "user-facing text points at notes outside the repository:\n" + \
        "\n".join(found)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = _CODE_SPAN.sub(lambda m: m.group(0).strip("`"), heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for _, line in _prose_lines(path.read_text(encoding="utf-8"))
            if re.match(r"#+\s", line)}


def _links(path: Path) -> list[tuple[int, str]]:
    links = []
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        # links inside code spans are code, not links; a link's text may itself be code
        outside = re.sub(r"(?<!\[)`[^`]*`(?!\])", "", line)
        links.extend((number, target) for target in _LINK.findall(outside))
    return links


@pytest.mark.parametrize("path", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_in_the_repository(path):
    checked = 0
    for number, target in _links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        assert destination.is_relative_to(ROOT), f"{where} leaves the repository"
        assert destination.exists(), f"{where} does not exist"
        if anchor and destination.suffix == ".md":
            assert anchor in _anchors(destination), f"{where}: no such heading"
        checked += 1
    if path.name in ("README.md", "design.md", "events.md"):
        assert checked > 0


def test_readme_links_both_docs():
    documentation = section((ROOT / "README.md").read_text(encoding="utf-8"), "Documentation")
    assert "(docs/design.md)" in documentation and "(docs/events.md)" in documentation
