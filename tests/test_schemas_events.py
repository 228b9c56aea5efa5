"""The event contract: every field, every class of problem, dead letters and replay lines."""

from __future__ import annotations

import json

import pytest

from rollguard.schemas import (
    MAX_EVENT_BYTES,DEADLETTER_HEADERS, ControlEvent, DeadLetter, Invalid, Label,
                               Prediction, Request, decode_control, decode_event, decode_label,
                               decode_prediction, decode_replay_line, decode_request, encode,
                               encode_replay_line, kind_of, validate)

REQUEST = {"request_id": "r1", "experiment": "churn-v7", "ts": 1700000000.25, "unit": "u-9",
           "segments": {"tier": "vip", "country": "DE"},
           "features": {"age": 41, "income": 52000.5, "plan": "gold", "churned_before": False,
                        "missing": None}}
PREDICTION = {"request_id": "r1", "experiment": "churn-v7", "ts": 1700000000.5,
              "model": "churn", "version": "7", "served": False, "prediction": 1,
              "score": 0.83, "latency_ms": 12.5, "unit": "u-9", "segments": {"tier": "vip"}}
LABEL = {"request_id": "r1", "ts": 1700003600, "label": True, "reward": 1.0}
CONTROL = {"experiment": "churn-v7", "seq": 3, "ts": 1700003600.0, "action": "set_traffic",
           "mode": "canary", "champion": "churn:6", "traffic": {"churn:6": 0.75, "churn:7": 0.25},
           "shadow": [], "reason": "canary step 2 passed: accuracy difference >= -0.01.",
           "evidence": {"n": {"churn:6": 812, "churn:7": 790}, "bounds": [-0.004, 0.031],
                        "alpha": 0.05, "guardrails": [{"metric": "srm", "passed": True}]}}

CASES = [  # (decoder, noun, valid example)
    (decode_request, "request", REQUEST),
    (decode_prediction, "prediction", PREDICTION),
    (decode_label, "label", LABEL),
    (decode_control, "control event", CONTROL),
]


def raw(obj: dict) -> bytes:
    return json.dumps(obj).encode()


def rejected(result, noun: str, problem: str, field: str | None = None) -> str:
    """Assert an Invalid of the given kind and problem; return its reason."""
    assert isinstance(result, Invalid), result
    assert result.kind == noun
    assert result.problem == problem, result.reason
    assert result.field == field, result.reason
    reason = result.reason
    assert reason.startswith(f"{noun} rejected: ") and reason.endswith(".")
    assert "\n" not in reason
    if field is not None:
        assert f"'{field}'" in reason
    return reason


# ---------------------------------------------------------------- valid events and round trips

@pytest.mark.parametrize("decode, noun, example", CASES)
def test_valid_event_decodes_and_its_json_round_trips_unchanged(decode, noun, example):
    event = decode(raw(example))
    assert not isinstance(event, Invalid), event
    assert decode(encode(event)) == event
    assert json.loads(encode(event)) == example


def test_decoded_fields_have_the_values_sent():
    p = decode_prediction(raw(PREDICTION))
    assert (p.request_id, p.experiment, p.model, p.version, p.served) == (
        "r1", "churn-v7", "churn", "7", False)
    assert (p.prediction, p.score, p.latency_ms, p.error) == (1, 0.83, 12.5, None)
    assert p.arm == "churn:7" and p.segments == {"tier": "vip"}
    assert decode_request(raw(REQUEST)).features["income"] == 52000.5
    assert decode_label(raw(LABEL)).ts == 1700003600.0


def test_optional_fields_may_be_absent_or_null_and_are_omitted_when_encoded():
    minimal = {"request_id": "r", "experiment": "e", "ts": 0, "model": "m", "version": "1",
               "served": True, "prediction": "cat"}
    with_nulls = {**minimal, "score": None, "latency_ms": None, "unit": None}
    assert decode_prediction(raw(minimal)) == decode_prediction(raw(with_nulls))
    assert json.loads(encode(decode_prediction(raw(with_nulls)))) == minimal


def test_unknown_fields_are_ignored():
    extended = {**LABEL, "producer": "billing", "schema_version": 3, "nested": {"x": [1]}}
    assert decode_label(raw(extended)) == decode_label(raw(LABEL))


@pytest.mark.parametrize("value", [1, 0.5, -3, "churned", True, False, 2**70])
def test_prediction_and_label_take_numbers_strings_and_bools_keeping_their_type(value):
    label = decode_label(raw({**LABEL, "label": value}))
    assert label.label == value and type(label.label) is type(value)
    prediction = decode_prediction(raw({**PREDICTION, "prediction": value}))
    assert prediction.prediction == value and type(prediction.prediction) is type(value)


def test_prediction_may_be_absent_when_error_is_set():
    failed = {k: v for k, v in PREDICTION.items() if k not in ("prediction", "score")}
    event = decode_prediction(raw({**failed, "error": "timeout after 50 ms"}))
    assert event.error == "timeout after 50 ms" and event.prediction is None
    reason = rejected(decode_prediction(raw(failed)), "prediction", "missing", "prediction")
    assert "unless 'error'" in reason


def test_label_is_required_unless_engaged_items_stand_in():
    bare = {k: v for k, v in LABEL.items() if k != "label"}
    reason = rejected(decode_label(raw(bare)), "label", "missing", "label")
    assert reason == ("label rejected: field 'label' is missing (it is required unless "
                      "'engaged' is set).")


def test_decoders_accept_bytearray_memoryview_and_str():
    for data in (bytearray(raw(LABEL)), memoryview(raw(LABEL)), json.dumps(LABEL)):
        assert decode_label(data) == decode_label(raw(LABEL))


def test_bounds_are_inclusive_where_the_contract_says_so():
    for score in (0, 1, 0.0, 1.0):
        assert not isinstance(decode_prediction(raw({**PREDICTION, "score": score})), Invalid)
    assert not isinstance(decode_prediction(raw({**PREDICTION, "ts": 0, "latency_ms": 0})),
                          Invalid)
    assert not isinstance(decode_control(raw({**CONTROL, "seq": 1})), Invalid)


# ---------------------------------------------------------------- each problem, named

@pytest.mark.parametrize("decode, noun, example", CASES)
def test_each_required_field_missing_is_named(decode, noun, example):
    optional = {"unit", "segments", "features", "score", "latency_ms", "error", "reward"}
    # prediction and label are required unless another field stands in (their own tests)
    required = [k for k in example if k not in optional and k not in ("prediction", "label")]
    for name in required:
        data = raw({k: v for k, v in example.items() if k != name})
        reason = rejected(decode(data), noun, "missing", name)
        assert reason == f"{noun} rejected: field '{name}' is missing."


@pytest.mark.parametrize("decode, noun, example, field, value, expected", [
    (decode_prediction, "prediction", PREDICTION, "version", 7,
     "must be a non-empty string, got the number 7"),
    (decode_prediction, "prediction", PREDICTION, "served", "true",
     'must be true or false, got the string "true"'),
    (decode_prediction, "prediction", PREDICTION, "ts", "1700000000",
     'must be a number >= 0, got the string "1700000000"'),
    (decode_prediction, "prediction", PREDICTION, "prediction", [1],
     "must be a number, a string or a boolean, got an array of 1 item"),
    (decode_prediction, "prediction", PREDICTION, "score", "0.5",
     'must be a number between 0 and 1, got the string "0.5"'),
    (decode_prediction, "prediction", PREDICTION, "request_id", None,
     "must be a non-empty string, got null"),
    (decode_request, "request", REQUEST, "segments", ["vip"],
     "must be an object of strings, got an array of 1 item"),
    (decode_request, "request", REQUEST, "features", "age=41",
     'must be an object of numbers, strings, booleans or null, got the string "age=41"'),
    (decode_label, "label", LABEL, "reward", "1", 'must be a number, got the string "1"'),
    (decode_label, "label", LABEL, "label", {"class": 1},
     "must be a number, a string or a boolean, got an object of 1 entry"),
    (decode_control, "control event", CONTROL, "seq", 1.0,
     "must be an integer between 1 and 9223372036854775807, got the number 1.0"),
    (decode_control, "control event", CONTROL, "shadow", "churn:7",
     'must be a list of \'model:version\' strings, got the string "churn:7"'),
    (decode_control, "control event", CONTROL, "evidence", [],
     "must be an object of JSON values, got an empty array"),
])
def test_wrong_type_says_what_was_expected_and_what_came(decode, noun, example, field, value,
                                                          expected):
    reason = rejected(decode(raw({**example, field: value})), noun, "wrong_type", field)
    assert reason == f"{noun} rejected: field '{field}' {expected}."


@pytest.mark.parametrize("decode, noun, example, field, value, expected", [
    (decode_prediction, "prediction", PREDICTION, "score", 1.7,
     "must be a number between 0 and 1, got 1.7"),
    (decode_prediction, "prediction", PREDICTION, "score", -0.01,
     "must be a number between 0 and 1, got -0.01"),
    (decode_prediction, "prediction", PREDICTION, "latency_ms", -3,
     "must be a number >= 0, got -3"),
    (decode_request, "request", REQUEST, "ts", -1, "must be a number >= 0, got -1"),
    (decode_control, "control event", CONTROL, "seq", 0,
     "must be an integer between 1 and 9223372036854775807, got 0"),
    (decode_control, "control event", CONTROL, "seq", 2**63,
     "must be an integer between 1 and 9223372036854775807, got 9223372036854775808"),
])
def test_out_of_range_numbers_are_named_with_the_range(decode, noun, example, field, value,
                                                       expected):
    reason = rejected(decode(raw({**example, field: value})), noun, "out_of_range", field)
    assert reason == f"{noun} rejected: field '{field}' {expected}."


@pytest.mark.parametrize("decode, noun, example, field, value, expected", [
    (decode_prediction, "prediction", PREDICTION, "request_id", "",
     'must be a non-empty string, got ""'),
    (decode_prediction, "prediction", PREDICTION, "error", "",
     'must be a non-empty string, got ""'),
    (decode_control, "control event", CONTROL, "action", "stop",
     "must be one of 'complete', 'hold', 'pause', 'promote', 'resume', 'rollback', 'set_traffic', 'start', got \"stop\""),
    (decode_control, "control event", CONTROL, "mode", "AB",
     "must be one of 'ab', 'bandit', 'canary', 'interleave', 'shadow', got \"AB\""),
    (decode_control, "control event", CONTROL, "champion", "churn",
     "must be a 'model:version' string, got \"churn\""),
])
def test_values_outside_the_allowed_set_are_named(decode, noun, example, field, value, expected):
    reason = rejected(decode(raw({**example, field: value})), noun, "invalid", field)
    assert reason == f"{noun} rejected: field '{field}' {expected}."


def test_entries_of_objects_and_lists_are_named_by_their_key_or_index():
    bad_segment = decode_request(raw({**REQUEST, "segments": {"tier": "vip", "country": 49}}))
    rejected(bad_segment, "request", "wrong_type", "segments.country")
    bad_feature = decode_request(raw({**REQUEST, "features": {"a": 1, "b c": {"x": 1}}}))
    rejected(bad_feature, "request", "wrong_type", 'features["b c"]')
    bad_share = decode_control(raw({**CONTROL, "traffic": {"churn:6": 1.5, "churn:7": -0.5}}))
    rejected(bad_share, "control event", "out_of_range", "traffic.churn:6")
    bad_arm = decode_control(raw({**CONTROL, "shadow": ["churn:7", "churn8"]}))
    rejected(bad_arm, "control event", "invalid", "shadow[1]")
    bad_key = decode_control(raw({**CONTROL, "traffic": {"churn:6": 0.5, "churn7": 0.5}}))
    reason = rejected(bad_key, "control event", "wrong_type", "traffic")
    assert reason.endswith("has a key that is not a 'model:version' string: the string "
                           '"churn7".')


@pytest.mark.parametrize("literal, problem, word", [
    ("NaN", "nan", "is NaN"), ("Infinity", "infinite", "is infinite"),
    ("-Infinity", "infinite", "is infinite"), ("1e999", "infinite", "is infinite"),
])
@pytest.mark.parametrize("decode, noun, example, field", [
    (decode_prediction, "prediction", PREDICTION, "score"),
    (decode_prediction, "prediction", PREDICTION, "ts"),
    (decode_label, "label", LABEL, "reward"),
    (decode_label, "label", LABEL, "label"),
    (decode_request, "request", REQUEST, "features.income"),
    (decode_control, "control event", CONTROL, "evidence.alpha"),
])
def test_nan_and_infinity_are_named_with_the_field(literal, problem, word, decode, noun,
                                                   example, field):
    # Python's json.dumps writes NaN/Infinity literals; 1e999 overflows a float
    data = with_literal(example, field, literal)
    result = decode(data)
    rejected(result, noun, problem, field)
    assert result.reason == f"{noun} rejected: field '{field}' {word}." or \
        result.reason.startswith(f"{noun} rejected: field '{field}' {word} (")


def with_literal(example: dict, dotted: str, literal: str) -> bytes:
    """The JSON of ``example`` with the value at ``dotted`` replaced by a raw JSON literal."""
    copy = json.loads(json.dumps(example))
    *parents, last = dotted.split(".")
    target = copy
    for part in parents:
        target = target[part]
    target[last] = "@@literal@@"
    return json.dumps(copy).replace('"@@literal@@"', literal).encode()


def test_nan_inside_evidence_is_named_with_its_path():
    text = json.dumps({**CONTROL, "evidence": {"bounds": {"lower": float("nan")}}})
    rejected(decode_control(text.encode()), "control event", "nan", "evidence.bounds.lower")


def test_control_traffic_must_sum_to_one_within_a_millionth():
    ok = {**CONTROL, "traffic": {"churn:6": 0.7 + 5e-7, "churn:7": 0.3}}
    assert not isinstance(decode_control(raw(ok)), Invalid)
    off = {**CONTROL, "traffic": {"churn:6": 0.7 + 2e-6, "churn:7": 0.3}}
    reason = rejected(decode_control(raw(off)), "control event", "invalid", "traffic")
    assert "sum to 1" in reason
    empty = {**CONTROL, "traffic": {}}
    rejected(decode_control(raw(empty)), "control event", "invalid", "traffic")


# ---------------------------------------------------------------- values that are not events

@pytest.mark.parametrize("data, problem, words", [
    (b"", "empty", "the value is empty."),
    (b"  \n ", "empty", "the value is empty."),
    (None, "empty", "the value is empty (null)."),
    (42, "not_bytes", "the value is a Python int, not bytes."),
    (b"\xff\xfe{}", "not_utf8", "the value is not UTF-8 (byte 0xff at position 0)."),
    (b'{"request_id": "r\xe9"}', "not_utf8", "the value is not UTF-8 (byte 0xe9 at position 17)."),
    (b"[1, 2]", "not_object", "the value is an array, not an object."),
    (b'"r1"', "not_object", "the value is a string, not an object."),
    (b"null", "not_object", "the value is null, not an object."),
    (b"7", "not_object", "the value is a number, not an object."),
    (b'{"request_id": "r1",', "not_json", "the value is not valid JSON (expecting property name "
                                          "enclosed in double quotes at line 1, column 21)."),
    (b"{'request_id': 'r1'}", "not_json", "the value is not valid JSON (expecting property name "
                                          "enclosed in double quotes at line 1, column 2)."),
    (b"<html>502</html>", "not_json", "the value is not valid JSON (expecting value at line 1, "
                                      "column 1)."),
])
def test_values_that_are_not_json_objects_are_rejected_with_the_reason(data, problem, words):
    for decode, noun, _ in CASES:
        result = decode(data)
        rejected(result, noun, problem)
        assert result.reason == f"{noun} rejected: {words}"


def test_too_large_values_are_rejected_before_parsing_and_the_limit_is_configurable():
    big = raw({**LABEL, "padding": "x" * 1_000_000})  # a 1 MB value
    reason = rejected(decode_label(big), "label", "too_large")
    assert f"({len(big)} bytes, the limit is {MAX_EVENT_BYTES})" in reason
    assert not isinstance(decode_label(big, max_bytes=2 << 20), Invalid)
    rejected(decode_label(raw(LABEL), max_bytes=10), "label", "too_large")


def test_deeply_nested_json_is_rejected_not_a_crash():
    deep = b'{"request_id": "r", "ts": 1, "label": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 \
        + b"}"
    rejected(decode_label(deep, max_bytes=1 << 21), "label", "too_deep")
    deeper_evidence = json.dumps(CONTROL)[:-1] + ', "evidence": ' + '{"a": ' * 5000 + "1" \
        + "}" * 5000 + "}"
    rejected(decode_control(deeper_evidence.encode()), "control event", "too_deep")


def test_a_lone_surrogate_escape_is_named():
    data = raw(LABEL).replace(b'"r1"', b'"r\\ud800"')
    rejected(decode_label(data), "label", "not_utf8", "request_id")


# ---------------------------------------------------------------- constructors, encode, validate

def test_constructors_refuse_nan_and_infinity_that_encode_could_not_write():
    with pytest.raises(ValueError, match="field 'score' is NaN"):
        Prediction("r", "e", 1.0, "m", "1", True, prediction=1, score=float("nan"))
    with pytest.raises(ValueError, match="field 'ts' is infinite"):
        Label("r", float("inf"), 1)
    with pytest.raises(ValueError, match="field 'prediction' is infinite"):
        Prediction("r", "e", 1.0, "m", "1", True, prediction=float("-inf"))
    with pytest.raises(ValueError, match="field 'prediction' is missing"):
        Prediction("r", "e", 1.0, "m", "1", True)
    with pytest.raises(ValueError, match="sum to 1"):
        ControlEvent("e", 1, 1.0, "start", "ab", "m:1", {"m:1": 0.5}, [], "go", {})


def test_validate_checks_a_constructed_event_as_a_consumer_would():
    good = Prediction("r", "e", 1.0, "m", "1", True, prediction=1, score=0.5)
    assert validate(good) == good
    bad = Prediction("r", "e", 1.0, "m", "1", True, prediction=1, score=1.5)
    rejected(validate(bad), "prediction", "out_of_range", "score")
    rejected(validate(Request("", "e", 1.0)), "request", "invalid", "request_id")


def test_encode_is_compact_and_omits_none():
    label = Label("r1", 5.0, "yes")
    assert encode(label) == b'{"request_id":"r1","ts":5.0,"label":"yes"}'
    assert kind_of(label) == "labels" and kind_of(decode_control(raw(CONTROL))) == "control"


def test_decode_event_dispatches_by_topic_kind():
    assert isinstance(decode_event("labels", raw(LABEL)), Label)
    assert isinstance(decode_event("predictions", raw(PREDICTION)), Prediction)
    assert isinstance(decode_event("requests", raw(REQUEST)), Request)
    assert isinstance(decode_event("control", raw(CONTROL)), ControlEvent)
    result = decode_event("deadletter", raw(LABEL))
    assert isinstance(result, Invalid) and "topic kind" in result.reason


# ---------------------------------------------------------------- replay lines

def test_replay_lines_carry_a_topic_that_is_not_part_of_the_event():
    for kind, example, cls in [("requests", REQUEST, Request),
                               ("predictions", PREDICTION, Prediction),
                               ("labels", LABEL, Label)]:
        line = raw({"topic": kind, **example})
        got_kind, event = decode_replay_line(line + b"\n")
        assert got_kind == kind and isinstance(event, cls)
        assert event == decode_event(kind, raw(example))
        written = encode_replay_line(event)
        assert written.startswith(b'{"topic":"' + kind.encode() + b'",')
        assert json.loads(written) == {"topic": kind, **example}
        assert decode_replay_line(written) == (kind, event)


def test_bad_replay_lines_name_the_topic_or_the_event_kind():
    rejected(decode_replay_line(raw(LABEL)), "replay line", "missing", "topic")
    rejected(decode_replay_line(raw({"topic": "control", **CONTROL})), "replay line",
             "invalid", "topic")
    rejected(decode_replay_line(b"not json"), "replay line", "not_json")
    bad = raw({"topic": "labels", **{k: v for k, v in LABEL.items() if k != "label"}})
    rejected(decode_replay_line(bad), "label", "missing", "label")
    with pytest.raises(TypeError):
        encode_replay_line(decode_control(raw(CONTROL)))


# ---------------------------------------------------------------- dead letters

def test_dead_letter_headers_round_trip_and_keep_key_and_value_unchanged():
    value = b'{"request_id": "r1", "score": NaN}\xff'
    letter = DeadLetter(key=b"r1", value=value, error="prediction rejected: field 'score' is "
                        "NaN.", topic="rollguard.predictions", partition=4, offset=1234567)
    headers = letter.headers()
    assert [name for name, _ in headers] == list(DEADLETTER_HEADERS)
    assert dict(headers)["rollguard.offset"] == b"1234567"
    assert all(isinstance(v, bytes) for _, v in headers)
    again = DeadLetter.from_headers(b"r1", value, headers)
    assert again == letter and again.value == value
    # as aiokafka / confluent-kafka hand them over, with other headers around
    mixed = [("traceparent", b"00-abc"), *headers, ("rollguard.error", b"a later duplicate")]
    assert DeadLetter.from_headers(b"r1", value, mixed) == letter
    assert DeadLetter.from_headers(None, None, dict(headers)).key is None


@pytest.mark.parametrize("headers, problem, field", [
    ([], "missing", "rollguard.error"),
    ([("rollguard.error", b"x"), ("rollguard.topic", b"t"), ("rollguard.partition", b"-1"),
      ("rollguard.offset", b"5")], "wrong_type", "rollguard.partition"),
    ([("rollguard.error", b"x"), ("rollguard.topic", b"t"), ("rollguard.partition", b"1")],
     "missing", "rollguard.offset"),
    (None, "missing", "rollguard.error"),
])
def test_dead_letters_with_bad_headers_are_invalid_not_exceptions(headers, problem, field):
    result = DeadLetter.from_headers(b"k", b"v", headers)
    assert isinstance(result, Invalid) and result.problem == problem and result.field == field
    assert result.reason.startswith(f"dead letter rejected: header '{field}'")


def test_an_invalid_reason_fits_a_dead_letter_header():
    result = decode_prediction(raw({**PREDICTION, "score": "high"}))
    letter = DeadLetter(b"r1", raw(PREDICTION), result.reason, "rollguard.predictions", 0, 9)
    assert DeadLetter.from_headers(b"r1", raw(PREDICTION), letter.headers()).error == \
        result.reason
