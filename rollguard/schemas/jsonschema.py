"""JSON Schema (draft 2020-12) of the events and the experiment file, generated from the Structs.

Services in other languages validate what they produce with these files; they are written
by ``rollguard schemas export DIR`` and never by hand, so they cannot drift from the
decoders: the constraints, descriptions and required fields come from the same ``Struct``
definitions (msgspec's schema generation).

>>> schemas = json_schemas()
>>> sorted(schemas)
['control', 'control-request', 'deadletter', 'experiment', 'label', 'prediction', 'request']
>>> p = schemas["prediction"]
>>> p["$schema"], p["$id"]
('https://json-schema.org/draft/2020-12/schema', 'urn:rollguard:schema:prediction')
>>> p["required"]
['request_id', 'experiment', 'ts', 'model', 'version', 'served']
>>> p["properties"]["score"]["anyOf"][0]["minimum"], p["properties"]["score"]["anyOf"][0]["maximum"]
(0, 1)
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import msgspec

from rollguard.schemas.events import ControlEvent, ControlRequest, DeadLetter, Label, Prediction, Request
from rollguard.schemas.experiment import ExperimentFile

__all__ = ["DRAFT", "DEFAULT_BASE_URI", "SCHEMA_TYPES", "json_schemas", "schema_text",
           "export_json_schemas"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"
#: ``$id`` of a schema is this plus its name; a URN, as no web address serves them
DEFAULT_BASE_URI = "urn:rollguard:schema:"

#: schema name -> (type, title); a file ``<name>.schema.json`` each
SCHEMA_TYPES: dict[str, tuple[Any, str]] = {
    "request": (Request, "rollguard request"),
    "prediction": (Prediction, "rollguard prediction"),
    "label": (Label, "rollguard label"),
    "control": (ControlEvent, "rollguard control event"),
    "control-request": (ControlRequest, "rollguard control request"),
    "deadletter": (DeadLetter, "rollguard dead letter"),
    "experiment": (ExperimentFile, "rollguard experiment file"),
}

#: rules across fields that the decoders check after msgspec (a __post_init__) and that JSON
#: Schema can say; the ones it cannot (traffic shares summing to 1, the rules of the
#: experiment file across keys) are in the descriptions
_CROSS_FIELD_RULES: dict[str, dict[str, Any]] = {
    "prediction": {"anyOf": [{"required": ["prediction"]}, {"required": ["error"]},
                             {"required": ["items"]}]},
    "label": {"anyOf": [{"required": ["label"]}, {"required": ["engaged"]}]},
}

_FILE_DESCRIPTION = ("One experiment, or a list of experiments with distinct names. YAML or "
                     "JSON; see docs/experiment-file.md for the rules across keys.")


def json_schemas(base_uri: str = DEFAULT_BASE_URI) -> dict[str, dict[str, Any]]:
    """Every schema, by name: self-contained (``$defs`` inside), deterministic."""
    return {name: _schema(name, base_uri) for name in SCHEMA_TYPES}


def schema_text(schema: dict[str, Any]) -> str:
    """The stable text of a schema: sorted keys, two-space indent, a final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export_json_schemas(directory: str | Path, *,
                        base_uri: str = DEFAULT_BASE_URI) -> list[Path]:
    """Write ``<name>.schema.json`` for every schema into ``directory`` (created if needed).

    Returns the paths written, sorted; rewriting an unchanged schema leaves the same bytes.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in sorted(json_schemas(base_uri).items()):
        path = directory / f"{name}.schema.json"
        path.write_text(schema_text(schema), encoding="utf-8")
        written.append(path)
    return written


def _schema(name: str, base_uri: str) -> dict[str, Any]:
    type_, title = SCHEMA_TYPES[name]
    generated = msgspec.json.schema(type_)
    definitions = generated.pop("$defs", {})
    ref = generated.get("$ref", "")
    if ref.startswith("#/$defs/") and len(generated) == 1:
        # the root is a Struct: put its definition at the top, keep the others as $defs
        root_name = ref[len("#/$defs/"):]
        generated = dict(definitions[root_name])
        if not _is_referenced(definitions, ref, besides=root_name):
            del definitions[root_name]
    else:
        generated.setdefault("description", _FILE_DESCRIPTION)
    generated.update(_CROSS_FIELD_RULES.get(name, {}))
    schema = {"$schema": DRAFT, "$id": f"{base_uri}{name}", **generated, "title": title}
    if definitions:
        schema["$defs"] = definitions
    return _tidy(schema)


def _is_referenced(definitions: dict[str, Any], ref: str, besides: str) -> bool:
    others = {k: v for k, v in definitions.items() if k != besides}
    return f'"{ref}"' in json.dumps(others)


def _tidy(node: Any) -> Any:
    """Descriptions come from docstrings: dedent them, one line per paragraph; the description
    of an optional field (``X | None``) moves from its ``X`` branch up to the field."""
    if isinstance(node, dict):
        node = _hoist_description(node)
        return {key: (_paragraphs(value) if key == "description" and isinstance(value, str)
                      else _tidy(value)) for key, value in node.items()}
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    return node


def _hoist_description(node: dict[str, Any]) -> dict[str, Any]:
    branches = node.get("anyOf")
    if "description" in node or not isinstance(branches, list):
        return node
    described = [b for b in branches if isinstance(b, dict) and "description" in b]
    if len(described) != 1:
        return node
    branch = dict(described[0])
    description = branch.pop("description")
    return {**node, "description": description,
            "anyOf": [branch if b is described[0] else b for b in branches]}


def _paragraphs(text: str) -> str:
    blocks = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(block.split()) for block in blocks if block.strip())
