"""Property-based tests: hostile input never crashes a decoder, valid events round-trip, and
the exported JSON Schemas agree with the decoders."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rollguard.schemas import (ControlEvent, Invalid, Label, Prediction, Request,
                               decode_control, decode_label, decode_prediction,
                               decode_replay_line, decode_request, encode, export_json_schemas,
                               json_schemas, parse_experiments)
from rollguard.schemas.jsonschema import schema_text

FAST = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

DECODERS = {"request": (decode_request, Request), "prediction": (decode_prediction, Prediction),
            "label": (decode_label, Label), "control event": (decode_control, ControlEvent)}


def assert_one_sentence(result: Invalid, noun: str) -> None:
    assert isinstance(result, Invalid), result
    assert result.kind == noun
    reason = result.reason
    assert reason.startswith(f"{noun} rejected: "), reason
    assert reason.endswith("."), reason
    assert "\n" not in reason and "\r" not in reason, reason
    assert len(reason) < 400, reason  # fits a log line and a Kafka header
    if result.field is not None:
        assert f"'{result.field}'" in reason, reason


# ---------------------------------------------------------------- strategies of valid events

ids = st.text(min_size=1, max_size=12)
timestamps = st.one_of(st.integers(0, 2**40),
                       st.floats(0, 4e9, allow_nan=False, allow_infinity=False))
finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(st.integers(-2**70, 2**70), finite, st.text(max_size=10), st.booleans())
segments = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
features = st.dictionaries(st.text(max_size=8), st.one_of(st.none(), scalars), max_size=5)
arms = st.from_regex(r"[a-z][a-z0-9_-]{0,6}:[0-9a-z.]{1,4}", fullmatch=True)
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63), finite,
                        st.text(max_size=10))
json_values = st.recursive(json_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12)

requests = st.fixed_dictionaries(
    {"request_id": ids, "experiment": ids, "ts": timestamps},
    optional={"unit": ids, "segments": segments, "features": features})
_prediction_common = {"request_id": ids, "experiment": ids, "ts": timestamps, "model": ids,
                      "version": ids, "served": st.booleans()}
_prediction_optional = {"score": st.floats(0, 1), "latency_ms": st.floats(0, 1e6),
                        "unit": ids, "segments": segments}
predictions = st.one_of(
    st.fixed_dictionaries({**_prediction_common, "prediction": scalars},
                          optional={**_prediction_optional, "error": ids}),
    st.fixed_dictionaries({**_prediction_common, "error": ids},
                          optional={**_prediction_optional, "prediction": scalars}))
labels = st.fixed_dictionaries({"request_id": ids, "ts": timestamps, "label": scalars},
                               optional={"reward": finite})


@st.composite
def controls(draw) -> dict:
    names = draw(st.lists(arms, min_size=1, max_size=4, unique=True))
    weights = draw(st.lists(st.integers(0, 100), min_size=len(names), max_size=len(names)))
    assume(sum(weights) > 0)
    traffic = {name: w / sum(weights) for name, w in zip(names, weights)}
    return {"experiment": draw(ids), "seq": draw(st.integers(1, 2**63 - 1)),
            "ts": draw(timestamps),
            "action": draw(st.sampled_from(["start", "set_traffic", "promote", "rollback",
                                            "hold", "complete"])),
            "mode": draw(st.sampled_from(["shadow", "ab", "canary", "bandit"])),
            "champion": names[0], "traffic": traffic,
            "shadow": draw(st.lists(arms, max_size=3)), "reason": draw(ids),
            "evidence": draw(st.dictionaries(st.text(max_size=6), json_values, max_size=4))}


VALID = {"request": requests, "prediction": predictions, "label": labels,
         "control event": controls()}


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("noun", list(VALID))
def test_every_valid_event_round_trips_unchanged(noun):
    decode, cls = DECODERS[noun]

    @FAST
    @given(VALID[noun])
    def check(original: dict) -> None:
        event = decode(json.dumps(original).encode())
        assert isinstance(event, cls), event
        assert decode(encode(event)) == event
        assert json.loads(encode(event)) == original

    check()


@FAST
@given(labels, st.dictionaries(st.text(max_size=8).filter(
    lambda k: k not in ("request_id", "ts", "label", "reward", "engaged", "gains")), json_values,
    max_size=4))
def test_unknown_fields_never_change_the_event(label: dict, extra: dict):
    assert decode_label(json.dumps({**label, **extra}).encode()) == \
        decode_label(json.dumps(label).encode())


# ---------------------------------------------------------------- hostile input

@FAST
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes):
    for noun, (decode, cls) in DECODERS.items():
        result = decode(data)
        if isinstance(result, Invalid):
            assert_one_sentence(result, noun)
        else:
            assert isinstance(result, cls)
    result = decode_replay_line(data)
    assert isinstance(result, (Invalid, tuple))


hostile_leaves = st.one_of(json_leaves, st.sampled_from([math.nan, math.inf, -math.inf]),
                           st.integers(-2**200, 2**200), st.text(max_size=2000))
hostile_values = st.recursive(hostile_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=20)


@FAST
@given(hostile_values)
def test_random_json_values_are_events_or_one_sentence_rejections(value: Any):
    data = json.dumps(value).encode()  # NaN and Infinity as Python writes them
    for noun, (decode, cls) in DECODERS.items():
        result = decode(data)
        if isinstance(result, Invalid):
            assert_one_sentence(result, noun)
        else:
            assert isinstance(result, cls) and decode(encode(result)) == result


def _shapes_other_than(value: Any) -> st.SearchStrategy:
    """JSON values of a type the field does not take."""
    if isinstance(value, bool):
        return st.one_of(st.text(max_size=5), st.lists(st.integers(), max_size=2))
    if isinstance(value, (int, float)):
        return st.one_of(st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=2))
    if isinstance(value, str):
        return st.one_of(st.integers(), st.booleans(), st.dictionaries(st.text(max_size=3),
                                                                        st.integers(), max_size=2))
    return st.one_of(st.integers(), st.text(max_size=5), st.booleans())


REQUIRED = {"request": ("request_id", "experiment", "ts"),
            "prediction": ("request_id", "experiment", "ts", "model", "version", "served"),
            "label": ("request_id", "ts", "label"),
            "control event": ("experiment", "seq", "ts", "action", "mode", "champion",
                              "traffic", "shadow", "reason", "evidence")}
TYPED_ANY = {("prediction", "prediction"), ("label", "label")}  # number, string or bool


@pytest.mark.parametrize("noun", list(VALID))
def test_mutated_valid_events_are_rejected_naming_the_field(noun):
    decode, _ = DECODERS[noun]

    @FAST
    @given(VALID[noun], st.data())
    def check(original: dict, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(original)))
        mutation = data.draw(st.sampled_from(["drop", "swap", "nan", "inf", "utf8"]))
        value = original[name]
        mutated = dict(original)
        if mutation == "drop":
            assume(name in REQUIRED[noun])
            del mutated[name]
            expected = "missing"
        elif mutation == "swap":
            if (noun, name) in TYPED_ANY:
                mutated[name] = data.draw(st.one_of(st.lists(st.integers(), max_size=2),
                                                    st.dictionaries(st.text(max_size=2),
                                                                    st.integers(), max_size=2)))
            elif isinstance(value, dict):
                mutated[name] = data.draw(st.one_of(st.text(max_size=3), st.integers(),
                                                    st.lists(st.integers(), max_size=2)))
            elif isinstance(value, list):
                mutated[name] = data.draw(st.one_of(st.text(max_size=3), st.integers()))
            else:
                mutated[name] = data.draw(_shapes_other_than(value))
            expected = "wrong_type"
        elif mutation in ("nan", "inf"):
            assume(isinstance(value, (int, float)) and not isinstance(value, bool))
            mutated[name] = math.nan if mutation == "nan" else -math.inf
            expected = "nan" if mutation == "nan" else "infinite"
        else:
            assume(isinstance(value, str))
            mutated[name] = "@@bad-bytes@@"
            expected = "not_utf8"
        raw = json.dumps(mutated).encode().replace(b"@@bad-bytes@@", b"\xc3\x28\xff")
        result = decode(raw)
        assert_one_sentence(result, noun)
        assert result.problem == expected, (mutated, result.reason)
        if expected != "not_utf8":
            assert result.field == name, (mutated, result.reason)

    check()


@FAST
@given(labels, st.integers(1, 3))
def test_huge_values_are_rejected_as_too_large(label: dict, megabytes: int):
    big = json.dumps({**label, "request_id": "x" * (megabytes << 20)}).encode()
    result = decode_label(big)
    assert_one_sentence(result, "label")
    assert result.problem == "too_large"


@FAST
@given(labels, st.integers(0, 200))
def test_truncated_events_are_rejected(label: dict, cut: int):
    data = json.dumps(label).encode()
    assume(cut < len(data) - 1)
    result = decode_label(data[:cut])
    assert_one_sentence(result, "label")
    assert result.problem in ("empty", "not_json", "not_utf8")


# ---------------------------------------------------------------- JSON Schema, checked by a
# small validator of the keywords the export uses (jsonschema is not a dependency). The set of
# keywords is asserted, so a new keyword cannot be silently ignored here.

SUPPORTED_KEYWORDS = {
    "$schema", "$id", "$ref", "$defs", "title", "description", "default", "type", "properties",
    "required", "additionalProperties", "propertyNames", "items", "minItems", "maxItems",
    "minLength", "maxLength", "pattern", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "enum", "anyOf", "contentEncoding", "minProperties", "maxProperties"}


def _keywords(node: Any, found: set[str], under_properties: bool = False) -> set[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if not under_properties:
                found.add(key)
            _keywords(value, found, under_properties=key in ("properties", "$defs")
                      and not under_properties)
    elif isinstance(node, list):
        for item in node:
            _keywords(item, found)
    return found


def conforms(schema: dict, value: Any, root: dict) -> bool:
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        if not conforms(root["$defs"][name], value, root):
            return False
    if "anyOf" in schema and not any(conforms(s, value, root) for s in schema["anyOf"]):
        return False
    if "enum" in schema and not any(type(value) is type(v) and value == v
                                    for v in schema["enum"]):
        return False
    kind = schema.get("type")
    if kind is not None and not _type_ok(kind, value):
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and not value >= schema["minimum"]:
            return False
        if "maximum" in schema and not value <= schema["maximum"]:
            return False
        if "exclusiveMinimum" in schema and not value > schema["exclusiveMinimum"]:
            return False
        if "exclusiveMaximum" in schema and not value < schema["exclusiveMaximum"]:
            return False
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength",
                                                                                math.inf):
            return False
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            return False
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", math.inf):
            return False
        if "items" in schema and not all(conforms(schema["items"], v, root) for v in value):
            return False
    if isinstance(value, dict):
        if not schema.get("minProperties", 0) <= len(value) <= schema.get("maxProperties",
                                                                          math.inf):
            return False
        if any(name not in value for name in schema.get("required", ())):
            return False
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if "propertyNames" in schema and not conforms(schema["propertyNames"], key, root):
                return False
            if key in properties:
                if not conforms(properties[key], item, root):
                    return False
            elif extra is False or (isinstance(extra, dict) and not conforms(extra, item, root)):
                return False
    return True


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    return {"number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "string": isinstance(value, str), "boolean": isinstance(value, bool),
            "null": value is None, "array": isinstance(value, list),
            "object": isinstance(value, dict)}[kind]


SCHEMAS = json_schemas()
SCHEMA_OF = {"request": "request", "prediction": "prediction", "label": "label",
             "control event": "control"}


def test_the_schemas_use_only_keywords_the_test_validator_checks():
    for name, schema in SCHEMAS.items():
        assert _keywords(schema, set()) <= SUPPORTED_KEYWORDS, name


def test_every_schema_names_its_draft_id_title_and_description():
    assert sorted(SCHEMAS) == ["control", "control-request", "deadletter", "experiment", "label", "prediction",
                               "request"]
    for name, schema in SCHEMAS.items():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == f"urn:rollguard:schema:{name}"
        assert schema["title"].startswith("rollguard ") and schema["description"]


@pytest.mark.parametrize("noun, cls", [("request", Request), ("prediction", Prediction),
                                       ("label", Label), ("control event", ControlEvent)])
def test_schema_required_fields_are_the_fields_without_defaults(noun, cls):
    schema = SCHEMAS[SCHEMA_OF[noun]]
    required = [f.encode_name for f in msgspec.structs.fields(cls) if f.required]
    assert schema["required"] == required
    assert set(schema["properties"]) == {f.encode_name for f in msgspec.structs.fields(cls)}


def _branch(prop: dict) -> dict:
    """The non-null branch of an optional property."""
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") != "null":
            return branch
    raise AssertionError(prop)


def test_schema_ranges_are_the_decoders_ranges():
    prediction = SCHEMAS["prediction"]["properties"]
    assert (_branch(prediction["score"])["minimum"], _branch(prediction["score"])["maximum"]) \
        == (0, 1)
    assert _branch(prediction["latency_ms"])["minimum"] == 0
    assert prediction["ts"]["minimum"] == 0 and prediction["request_id"]["minLength"] == 1
    control = SCHEMAS["control"]["properties"]
    assert control["seq"]["minimum"] == 1 and control["seq"]["maximum"] == 2**63 - 1
    assert control["traffic"]["additionalProperties"] == {"type": "number", "minimum": 0,
                                                          "maximum": 1}
    assert set(control["action"]["enum"]) == {"start", "set_traffic", "promote", "rollback",
                                              "hold", "complete", "pause", "resume"}
    experiment = SCHEMAS["experiment"]["$defs"]["Experiment"]["properties"]
    assert experiment["alpha"]["exclusiveMinimum"] == 0 and experiment["alpha"]["maximum"] == 0.5
    assert SCHEMAS["experiment"]["$defs"]["Experiment"]["additionalProperties"] is False
    # each bound checked on both sides: decoders and schema reject the same numbers
    for bad in (-0.01, 1.01):
        data = json.dumps({"request_id": "r", "experiment": "e", "ts": 1, "model": "m",
                           "version": "1", "served": True, "prediction": 1, "score": bad})
        assert isinstance(decode_prediction(data.encode()), Invalid)
        assert not conforms(SCHEMAS["prediction"], json.loads(data), SCHEMAS["prediction"])


@pytest.mark.parametrize("noun", list(VALID))
def test_schemas_accept_every_valid_event_and_reject_what_decoders_reject(noun):
    schema = SCHEMAS[SCHEMA_OF[noun]]
    decode, _ = DECODERS[noun]

    @settings(max_examples=60, deadline=None)
    @given(VALID[noun], st.data())
    def check(original: dict, data: st.DataObject) -> None:
        assert conforms(schema, original, schema)
        # a wrong type or a missing required field: both must say no
        name = data.draw(st.sampled_from(sorted(original)))
        mutated = dict(original)
        if name in REQUIRED[noun] and data.draw(st.booleans()):
            del mutated[name]
        else:
            mutated[name] = [] if isinstance(original[name], (str, int, float, dict)) else "x"
        decoded = decode(json.dumps(mutated).encode())
        assert isinstance(decoded, Invalid)
        assert not conforms(schema, mutated, schema), decoded.reason

    check()


def test_prediction_schema_requires_prediction_or_error():
    schema = SCHEMAS["prediction"]
    base = {"request_id": "r", "experiment": "e", "ts": 1, "model": "m", "version": "1",
            "served": True}
    assert not conforms(schema, base, schema)
    assert conforms(schema, {**base, "error": "timeout"}, schema)
    assert conforms(schema, {**base, "prediction": 0}, schema)


def test_experiment_schema_accepts_one_or_a_list_and_refuses_unknown_keys():
    schema = SCHEMAS["experiment"]
    [exp] = parse_experiments("""
name: churn-v7
task: binary
mode: canary
champion: churn:6
candidates: [churn:7]
primary: {metric: log_loss, clip: 10}
label_ttl: 7d
canary: {steps: [0.05, 0.25]}
guardrails: [{metric: precision, segment: {tier: vip}, min: 0.95}, {metric: srm}]
""", "e.yaml")
    written = {**exp.to_dict(), "label_ttl": "7d"}
    assert conforms(schema, written, schema)
    assert conforms(schema, [written, {**written, "name": "other"}], schema)
    assert not conforms(schema, [], schema)
    assert not conforms(schema, {**written, "alpah": 0.1}, schema)
    assert not conforms(schema, {**written, "label_ttl": "7 days"}, schema)
    assert not conforms(schema, {**written, "alpha": 0.9}, schema)


def test_deadletter_schema_documents_the_headers():
    text = json.dumps(SCHEMAS["deadletter"])
    for header in ("rollguard.error", "rollguard.topic", "rollguard.partition",
                   "rollguard.offset"):
        assert header in text


def test_export_writes_stable_sorted_files(tmp_path):
    paths = export_json_schemas(tmp_path / "out")
    assert [p.name for p in paths] == ["control.schema.json", "control-request.schema.json", "deadletter.schema.json",
                                       "experiment.schema.json", "label.schema.json",
                                       "prediction.schema.json", "request.schema.json"]
    first = {p.name: p.read_bytes() for p in paths}
    again = {p.name: p.read_bytes() for p in export_json_schemas(tmp_path / "out")}
    assert first == again
    for name, content in first.items():
        loaded = json.loads(content)
        assert content.decode() == json.dumps(loaded, indent=2, sort_keys=True,
                                              ensure_ascii=False) + "\n"
        assert content.decode() == schema_text(SCHEMAS[name.split(".")[0]])
