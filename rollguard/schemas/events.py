"""The events of the contract (``docs/events.md``): parsed and validated once, at the edge.

Every decoder takes the bytes of one Kafka message value (or one replay line) and returns
the event, or an :class:`Invalid` whose ``reason`` is one sentence naming the kind of
event, the field and the problem. No exception escapes a decoder, whatever the bytes.

>>> ev = decode_prediction(b'{"request_id": "r1", "experiment": "churn-v7", "ts": 1700000000,'
...                        b' "model": "churn", "version": "7", "served": false,'
...                        b' "prediction": 1, "score": 0.83}')
>>> ev.arm, ev.score, ev.served
('churn:7', 0.83, False)
>>> encode(ev)[:60]
b'{"request_id":"r1","experiment":"churn-v7","ts":1700000000.0'
>>> decode_prediction(encode(ev)) == ev
True
>>> decode_prediction(b'{"request_id": "r1", "experiment": "e", "ts": 1, "model": "m",'
...                   b' "version": "7", "served": true, "prediction": 1, "score": 1.7}').reason
"prediction rejected: field 'score' must be a number between 0 and 1, got 1.7."
>>> decode_label(b'{"request_id": "r1", "ts": 5, "label": NaN}').reason
"label rejected: field 'label' is NaN."
>>> decode_request(b'{"request_id": "r1", "experiment": 7, "ts": 5}').reason
"request rejected: field 'experiment' must be a non-empty string, got the number 7."
>>> decode_event("labels", b'\\xff\\xfe').reason
'label rejected: the value is not UTF-8 (byte 0xff at position 0).'

Statistics must never see a NaN: top-level numbers of an event are finite, also when the
event is built in Python (the constructor raises ``ValueError``). Inside ``features`` and
``evidence`` a non-finite number is written as ``null`` by :func:`encode`, as JSON has none.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from typing import Annotated, Any, Iterable, Literal, Mapping, NamedTuple

import msgspec
import msgspec.inspect as mi
from msgspec import Meta, Struct

__all__ = [
    "MAX_EVENT_BYTES", "HEADER_ERROR", "HEADER_TOPIC", "HEADER_PARTITION", "HEADER_OFFSET",
    "DEADLETTER_HEADERS", "EVENT_KINDS", "REPLAY_KINDS", "TRAFFIC_SUM_TOLERANCE", "MAX_ITEMS",
    "Request", "Prediction", "Label", "ControlEvent", "ControlRequest", "DeadLetter", "Invalid",
    "Event", "decode_request", "decode_prediction", "decode_label", "decode_control",
    "decode_control_request", "decode_event",
    "decode_replay_line", "encode", "encode_replay_line", "validate", "kind_of",
]

#: values larger than this are rejected as "too large" before parsing (override per call):
#: an event is a few hundred bytes, a request with features a few kilobytes; a value of
#: hundreds of kilobytes is a producer's bug, and would cost every worker memory and time
MAX_EVENT_BYTES = 256 * 1024

#: dead-letter headers, as Kafka Connect's dead-letter queues carry the origin of a record
HEADER_ERROR = "rollguard.error"
HEADER_TOPIC = "rollguard.topic"
HEADER_PARTITION = "rollguard.partition"
HEADER_OFFSET = "rollguard.offset"
DEADLETTER_HEADERS = (HEADER_ERROR, HEADER_TOPIC, HEADER_PARTITION, HEADER_OFFSET)

#: control traffic shares must sum to 1 within this
TRAFFIC_SUM_TOLERANCE = 1e-6

# ---------------------------------------------------------------------------------------------
# Field types. Each carries its constraints and description once: the decoders enforce them
# and the JSON Schema export (jsonschema.py) writes them. ``extra["expect"]`` is how an error
# sentence names what was expected where the constraint alone would read badly (a regex).

RequestId = Annotated[str, Meta(min_length=1, description="Unique per request; joins "
                                "requests, predictions and labels (the Kafka key).")]
ExperimentName = Annotated[str, Meta(min_length=1, description="Experiment name.")]
Timestamp = Annotated[float, Meta(ge=0, description="Event time: seconds since the epoch "
                                  "(UTC), a finite number >= 0.")]
Unit = Annotated[str, Meta(min_length=1, description="Randomisation unit (user, account); "
                           "sticky assignment hashes it. Defaults to request_id.")]
Segments = Annotated[dict[str, str], Meta(description="Segment values, e.g. "
                                          '{"tier": "vip", "country": "DE"}.')]
FeatureValue = int | float | str | bool | None
Features = Annotated[dict[str, FeatureValue], Meta(
    description="Raw feature values (number, string, bool or null), used for drift against "
                "a reference.")]
Scalar = int | float | str | bool
Arm = Annotated[str, Meta(pattern=r"^[^:]+:.+$", description="An arm: 'model:version'.",
                          extra={"expect": "a 'model:version' string"})]
Share = Annotated[float, Meta(ge=0, le=1)]
#: the most items a ranked list (or a label's engaged items) may hold
MAX_ITEMS = 1000
ItemId = Annotated[str, Meta(min_length=1)]


class _Event(Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=False):
    """Base of the contract's events: immutable; unknown fields are ignored when decoding."""


class Request(_Event):
    """A request as the serving layer saw it (topic `requests`, keyed by request_id)."""

    request_id: RequestId
    experiment: ExperimentName
    ts: Timestamp
    unit: Unit | None = None
    segments: Segments | None = None
    features: Features | None = None

    def __post_init__(self) -> None:
        ts = self.ts
        if ts - ts:  # NaN or infinite (x - x is 0 for every finite x); cheap on the hot path
            _raise_nonfinite(self, ("ts",))


class Prediction(_Event):
    """One model's prediction for one request (topic `predictions`, keyed by request_id).

    `prediction` is required unless `error` is set.
    """

    request_id: RequestId
    experiment: ExperimentName
    ts: Timestamp
    model: Annotated[str, Meta(min_length=1, description="Model name.")]
    version: Annotated[str, Meta(min_length=1, description="Model version (a string); "
                                 "model and version identify an arm, 'model:version'.")]
    served: Annotated[bool, Meta(description="True if this prediction was returned to the "
                                 "caller.")]
    prediction: Annotated[Scalar, Meta(description="Class label, or value for regression. "
                                       "Required unless error is set.")] | None = None
    score: Annotated[float, Meta(ge=0, le=1, description="Probability of the positive class "
                                 "(binary tasks).")] | None = None
    latency_ms: Annotated[float, Meta(ge=0, description="Model latency in milliseconds.")] \
        | None = None
    error: Annotated[str, Meta(min_length=1, description="Set when the model failed; "
                               "prediction may then be absent.")] | None = None
    unit: Unit | None = None
    segments: Segments | None = None
    items: Annotated[list[ItemId], Meta(min_length=1, max_length=MAX_ITEMS, description=(
        "Ranking tasks: the ranked item ids, best first (the top k), each once; in place of "
        "prediction."))] | None = None
    item_scores: Annotated[list[float], Meta(max_length=MAX_ITEMS, description=(
        "Ranking tasks: the model's score of each item of items, in the same order."))] \
        | None = None

    def __post_init__(self) -> None:
        prediction, score, latency, ts = self.prediction, self.score, self.latency_ms, self.ts
        if prediction is None and self.error is None and self.items is None:
            raise ValueError("field 'prediction' is missing (it is required unless 'error' "
                             "or 'items' is set)")
        if (ts - ts or (score is not None and score - score)
                or (latency is not None and latency - latency)
                or (type(prediction) is float and prediction - prediction)):
            _raise_nonfinite(self, ("ts", "score", "latency_ms", "prediction"))
        if self.items is not None or self.item_scores is not None:
            _check_listed(self.items, self.item_scores, prediction,
                          ("items", "item_scores", "prediction"),
                          "a ranking gives its items instead of a prediction")

    @property
    def arm(self) -> str:
        """``"model:version"``: the arm this prediction belongs to."""
        return f"{self.model}:{self.version}"

    @property
    def output(self) -> Scalar | list[str] | None:
        """What the model answered: the ranked ``items`` of a ranking, else ``prediction``."""
        return self.prediction if self.items is None else self.items


class Label(_Event):
    """Ground truth for one request, possibly months later (topic `labels`)."""

    request_id: RequestId
    ts: Annotated[float, Meta(ge=0, description="When the truth became known: seconds since "
                              "the epoch (UTC), a finite number >= 0.")]
    label: Annotated[Scalar, Meta(description="True class, or true value for regression. "
                                  "Required unless engaged is set.")] | None = None
    reward: Annotated[float, Meta(description="Business reward, for bandit allocation and the "
                                  "reward metric; default: 1 if the served prediction was "
                                  "correct (ranking: had an engaged item in its top k) else "
                                  "0.")] | None = None
    engaged: Annotated[list[ItemId], Meta(max_length=MAX_ITEMS, description=(
        "Ranking tasks: the items the user engaged with (clicked, watched, bought), each "
        "once; empty when none; in place of label."))] | None = None
    gains: Annotated[list[Annotated[float, Meta(gt=0)]], Meta(
        max_length=MAX_ITEMS, description="Ranking tasks: the graded gain of each engaged "
                                          "item, in the same order (default: 1 each).")] \
        | None = None

    def __post_init__(self) -> None:
        ts, label, reward = self.ts, self.label, self.reward
        if label is None and self.engaged is None:
            raise ValueError("field 'label' is missing (it is required unless 'engaged' is "
                             "set)")
        if (ts - ts or (type(label) is float and label - label)
                or (reward is not None and reward - reward)):
            _raise_nonfinite(self, ("ts", "label", "reward"))
        if self.engaged is not None or self.gains is not None:
            _check_listed(self.engaged, self.gains, label, ("engaged", "gains", "label"),
                          "a ranking's label gives the engaged items instead of a label")

    @property
    def truth(self) -> Scalar | list[str] | dict[str, float] | None:
        """What the join carries as the truth: ``label``; for a ranking, the engaged items (a
        list), or item → gain when ``gains`` are given."""
        engaged = self.engaged
        if engaged is None:
            return self.label
        return list(engaged) if self.gains is None else dict(zip(engaged, self.gains))


class ControlEvent(_Event):
    """A decision of rollguard (topic `control`, compacted, keyed by experiment).

    The latest event per experiment is the state the serving layer applies; a consumer
    ignores any event whose seq is not greater than the last it applied. Traffic shares
    sum to 1 (within 1e-6).
    """

    experiment: ExperimentName
    seq: Annotated[int, Meta(ge=1, le=2**63 - 1, description="Per-experiment sequence number, "
                             "from 1 (a signed 64-bit integer).")]
    ts: Annotated[float, Meta(ge=0, description="Event time of the evidence that triggered "
                              "it.")]
    action: Annotated[Literal["start", "set_traffic", "promote", "rollback", "hold",
                              "complete", "pause", "resume"],
                      Meta(description="What the serving layer must do.")]
    mode: Literal["shadow", "ab", "canary", "bandit", "interleave"]
    champion: Annotated[Arm, Meta(description="The 'model:version' that serves by default.")]
    traffic: Annotated[dict[Arm, Share], Meta(
        description="'model:version' -> share of served traffic, summing to 1.")]
    shadow: Annotated[list[Arm], Meta(description="Arms scored but not served.")]
    reason: Annotated[str, Meta(min_length=1, description="One human sentence: why.")]
    evidence: Annotated[dict[str, Any], Meta(
        description="The figures behind the decision: per arm n, metric estimates, confidence "
                    "sequence bounds, test statistic, alpha, guardrail results.")]

    def __post_init__(self) -> None:
        _raise_nonfinite(self, ("ts",))
        total = 0.0
        for arm, share in self.traffic.items():
            if share - share:
                raise ValueError(f"field 'traffic.{arm}' is "
                                 f"{'NaN' if share != share else 'infinite'}")
            total += share
        if abs(total - 1.0) > TRAFFIC_SUM_TOLERANCE:
            raise ValueError(f"field 'traffic' must hold shares that sum to 1, got a sum of "
                             f"{total!r}")


class ControlRequest(_Event):
    """A person's request to steer an experiment (topic `control-requests`, keyed by
    experiment): ``rollguard promote | rollback | pause | resume``, or the dashboard.

    The worker that evaluates the experiment applies it at the point the analysis has
    reached and publishes the control event, with who and why under ``evidence.manual``; a
    request it cannot apply (an unknown or finished experiment) goes to the dead-letter
    topic with the reason.
    """

    experiment: ExperimentName
    action: Annotated[Literal["promote", "rollback", "pause", "resume"], Meta(
        description="promote: the candidate becomes the champion (after its bake window, "
                    "if the experiment has one); rollback: the champion keeps everything; "
                    "pause: no traffic change and no automatic decision until resume.")]
    reason: Annotated[str, Meta(min_length=1, description="Why, in the person's words.")]
    by: Annotated[str, Meta(min_length=1, description="Who asks (a name, an e-mail).")]
    request_id: Annotated[str, Meta(min_length=1, description="Unique per request: the "
                                    "control event it leads to carries it.")]
    requested_at: Annotated[float, Meta(ge=0, description="Wall-clock time of the request, "
                                        "seconds since the epoch.")]
    candidate: Arm | None = None

    def __post_init__(self) -> None:
        _raise_nonfinite(self, ("requested_at",))


#: actions after which nothing follows for the experiment; a ``promote`` ends it too when it
#: gives the new champion all traffic and nothing scores in shadow (no bake window follows)
ENDING_ACTIONS = frozenset({"rollback", "hold", "complete"})


def ends_experiment(action: str, champion: str | None, traffic: Mapping[str, float] | None,
                    shadow: Iterable[str] | None) -> bool:
    """True for the control event that ends an experiment (docs/events.md, "Actions").

    One rule for every reader (Router, registry, status, dashboard), from the fields a
    consumer applies anyway: a ``promote`` that leaves the former champion a holdback share
    or a shadow slot opens a bake window, and ``complete`` or ``rollback`` follows.

    >>> ends_experiment("promote", "m:2", {"m:2": 1.0}, [])
    True
    >>> ends_experiment("promote", "m:2", {"m:2": 1.0}, ["m:1"])       # baking in shadow
    False
    >>> ends_experiment("promote", "m:2", {"m:2": 0.95, "m:1": 0.05}, [])  # holdback
    False
    >>> ends_experiment("complete", "m:2", {"m:2": 1.0}, []), ends_experiment("pause", "m:1", {}, [])
    (True, False)
    """
    if action in ENDING_ACTIONS:
        return True
    return action == "promote" and not list(shadow or ()) and dict(traffic or {}) == {champion: 1.0}


class DeadLetter(Struct, frozen=True):
    """An input that could not be used, on topic `deadletter`.

    The Kafka record keeps the original key and value bytes unchanged; error, topic,
    partition and offset travel as the headers rollguard.error, rollguard.topic,
    rollguard.partition and rollguard.offset (UTF-8 strings).
    """

    key: Annotated[bytes, Meta(description="The original record key, unchanged.")] | None
    value: Annotated[bytes, Meta(description="The original record value, unchanged (null for "
                                 "a tombstone).")] | None
    error: Annotated[str, Meta(min_length=1, description=f"Header {HEADER_ERROR}: one "
                               "sentence, why the input was rejected.")]
    topic: Annotated[str, Meta(min_length=1, description=f"Header {HEADER_TOPIC}: the topic "
                               "the input came from.")]
    partition: Annotated[int, Meta(ge=0, description=f"Header {HEADER_PARTITION}: its "
                                   "partition, a decimal string in the header.")]
    offset: Annotated[int, Meta(ge=0, description=f"Header {HEADER_OFFSET}: its offset, a "
                                "decimal string in the header.")]

    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka headers of this dead letter, in the order of ``DEADLETTER_HEADERS``."""
        return [
            (HEADER_ERROR, self.error.encode("utf-8")),
            (HEADER_TOPIC, self.topic.encode("utf-8")),
            (HEADER_PARTITION, str(self.partition).encode("ascii")),
            (HEADER_OFFSET, str(self.offset).encode("ascii")),
        ]

    @classmethod
    def from_headers(cls, key: bytes | None, value: bytes | None,
                     headers: Iterable[tuple[str, bytes | str | None]]
                     | Mapping[str, bytes | str | None] | None) -> DeadLetter | Invalid:
        """The dead letter of a record read back from the dead-letter topic, or Invalid.

        >>> dl = DeadLetter(b"r1", b"{", "prediction rejected: ...", "rollguard.predictions", 3, 42)
        >>> DeadLetter.from_headers(b"r1", b"{", dl.headers()) == dl
        True
        >>> DeadLetter.from_headers(None, b"{", []).reason
        "dead letter rejected: header 'rollguard.error' is missing."
        """
        try:
            items = headers.items() if isinstance(headers, Mapping) else (headers or ())
            found: dict[str, str] = {}
            for name, raw in items:
                if name in DEADLETTER_HEADERS and name not in found:
                    found[name] = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) \
                        else ("" if raw is None else str(raw))
            for name in DEADLETTER_HEADERS:
                if not found.get(name):
                    return _rejected("dead letter", "missing", f"header '{name}' is missing",
                                     name)
            numbers = {}
            for name in (HEADER_PARTITION, HEADER_OFFSET):
                text = found[name]
                if not (text.isascii() and text.isdigit()):
                    return _rejected("dead letter", "wrong_type", f"header '{name}' must be "
                                     f"a decimal integer >= 0, got {preview(text)}", name)
                numbers[name] = int(text)
            return cls(key=None if key is None else bytes(key),
                       value=None if value is None else bytes(value),
                       error=found[HEADER_ERROR], topic=found[HEADER_TOPIC],
                       partition=numbers[HEADER_PARTITION], offset=numbers[HEADER_OFFSET])
        except Exception as error:  # noqa: BLE001 - a reader of dead letters must not crash
            return _invalid("dead letter", "invalid", f"its headers cannot be read "
                            f"({_clean(str(error))})", None)


class Invalid(Struct, frozen=True):
    """Why an input was rejected.

    ``reason`` is one sentence for people (and the ``rollguard.error`` header); ``field`` is
    the dotted path of the offending field, if any; ``problem`` is a short code to count by:
    ``not_bytes``, ``empty``, ``too_large``, ``not_utf8``, ``not_json``, ``too_deep``,
    ``not_object`` (the value as a whole); ``missing``, ``wrong_type``, ``nan``, ``infinite``,
    ``out_of_range``, ``invalid`` (a field: empty string, not one of the allowed values, a
    rule across fields). Other modules add their own (``unknown_experiment``, …).
    """

    kind: str
    problem: str
    reason: str
    field: str | None = None


Event = Request | Prediction | Label | ControlEvent | ControlRequest

#: topic kind -> event class, for the topics rollguard reads
EVENT_KINDS: dict[str, type[Struct]] = {
    "requests": Request, "predictions": Prediction, "labels": Label, "control": ControlEvent,
    "control-requests": ControlRequest}
#: the kinds a replay file line may hold
REPLAY_KINDS = ("requests", "predictions", "labels")

_NOUN = {Request: "request", Prediction: "prediction", Label: "label",
         ControlEvent: "control event", ControlRequest: "control request"}
_KIND_OF = {cls: kind for kind, cls in EVENT_KINDS.items()}


class _ReplayTopic(Struct, forbid_unknown_fields=False):
    topic: Literal["requests", "predictions", "labels"]


_NOUN[_ReplayTopic] = "replay line"

# one Decoder per type, created once: the hot path is a length check and msgspec's decode
_REQUEST_DECODER = msgspec.json.Decoder(Request)
_PREDICTION_DECODER = msgspec.json.Decoder(Prediction)
_LABEL_DECODER = msgspec.json.Decoder(Label)
_CONTROL_DECODER = msgspec.json.Decoder(ControlEvent)
_CONTROL_REQUEST_DECODER = msgspec.json.Decoder(ControlRequest)
_TOPIC_DECODER = msgspec.json.Decoder(_ReplayTopic)
_DECODERS = {Request: _REQUEST_DECODER, Prediction: _PREDICTION_DECODER,
             Label: _LABEL_DECODER, ControlEvent: _CONTROL_DECODER,
             ControlRequest: _CONTROL_REQUEST_DECODER}
_ENCODER = msgspec.json.Encoder()


def decode_request(data: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> Request | Invalid:
    """A :class:`Request` from one JSON object, or :class:`Invalid`; never raises."""
    try:
        if len(data) <= max_bytes:
            event = _REQUEST_DECODER.decode(data)
            if type(data) is bytes and data.isascii():  # ~15 ns; msgspec skips ignored fields
                return event
            return _utf8_checked(event, data)
    except Exception as error:  # noqa: BLE001 - every failure becomes an Invalid
        return _explain(Request, data, error)
    return _too_large(Request, data, max_bytes)


def decode_prediction(data: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> Prediction | Invalid:
    """A :class:`Prediction` from one JSON object, or :class:`Invalid`; never raises."""
    try:
        if len(data) <= max_bytes:
            event = _PREDICTION_DECODER.decode(data)
            if type(data) is bytes and data.isascii():  # ~15 ns; msgspec skips ignored fields
                return event
            return _utf8_checked(event, data)
    except Exception as error:  # noqa: BLE001
        return _explain(Prediction, data, error)
    return _too_large(Prediction, data, max_bytes)


def decode_label(data: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> Label | Invalid:
    """A :class:`Label` from one JSON object, or :class:`Invalid`; never raises."""
    try:
        if len(data) <= max_bytes:
            event = _LABEL_DECODER.decode(data)
            if type(data) is bytes and data.isascii():  # ~15 ns; msgspec skips ignored fields
                return event
            return _utf8_checked(event, data)
    except Exception as error:  # noqa: BLE001
        return _explain(Label, data, error)
    return _too_large(Label, data, max_bytes)


def decode_control(data: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> ControlEvent | Invalid:
    """A :class:`ControlEvent` from one JSON object, or :class:`Invalid`; never raises."""
    try:
        if len(data) <= max_bytes:
            event = _CONTROL_DECODER.decode(data)
            if type(data) is bytes and data.isascii():  # ~15 ns; msgspec skips ignored fields
                return event
            return _utf8_checked(event, data)
    except Exception as error:  # noqa: BLE001
        return _explain(ControlEvent, data, error)
    return _too_large(ControlEvent, data, max_bytes)


def decode_control_request(data: bytes, *, max_bytes: int = MAX_EVENT_BYTES
                           ) -> ControlRequest | Invalid:
    """A :class:`ControlRequest` from one JSON object, or :class:`Invalid`; never raises.

    >>> decode_control_request(b'{"experiment": "e", "action": "stop", "reason": "x", '
    ...     b'"by": "ana", "request_id": "q1", "requested_at": 1}').reason[:60]
    "control request rejected: field 'action' must be one of 'pau"
    """
    try:
        if len(data) <= max_bytes:
            return _utf8_checked(_CONTROL_REQUEST_DECODER.decode(data), data)
    except Exception as error:  # noqa: BLE001
        return _explain(ControlRequest, data, error)
    return _too_large(ControlRequest, data, max_bytes)


_DECODE_BY_KIND = {"requests": decode_request, "predictions": decode_prediction,
                   "labels": decode_label, "control": decode_control}


def decode_event(topic_kind: str, data: bytes, *,
                 max_bytes: int = MAX_EVENT_BYTES) -> Event | Invalid:
    """The event of a topic kind (``requests``, ``predictions``, ``labels``, ``control``)."""
    decode = _DECODE_BY_KIND.get(topic_kind) if isinstance(topic_kind, str) else None
    if decode is None:
        return _invalid("event", "invalid", f"the topic kind {preview(topic_kind)} is not one "
                        f"of 'requests', 'predictions', 'labels', 'control'", None)
    return decode(data, max_bytes=max_bytes)


def decode_replay_line(line: bytes, *, max_bytes: int = MAX_EVENT_BYTES
                       ) -> tuple[str, Request | Prediction | Label] | Invalid:
    """``(kind, event)`` from one line of a replay file, or :class:`Invalid`.

    The line is an event plus ``"topic": "requests" | "predictions" | "labels"``; the
    ``topic`` field is not part of the event.

    >>> decode_replay_line(b'{"topic": "labels", "request_id": "r1", "ts": 9, "label": true}')
    ('labels', Label(request_id='r1', ts=9.0, label=True, reward=None, engaged=None, gains=None))
    >>> print(decode_replay_line(b'{"topic": "control"}').reason)  # doctest: +NORMALIZE_WHITESPACE
    replay line rejected: field 'topic' must be one of 'labels', 'predictions', 'requests',
    got "control".
    """
    try:
        if len(line) <= max_bytes:
            kind = _TOPIC_DECODER.decode(line).topic
        else:
            return _too_large(_ReplayTopic, line, max_bytes)
    except Exception as error:  # noqa: BLE001
        return _explain(_ReplayTopic, line, error)
    event = _DECODE_BY_KIND[kind](line, max_bytes=max_bytes)
    if isinstance(event, Invalid):
        return event
    return kind, event


def encode(event: Event) -> bytes:
    """Compact JSON of an event, fields that are None omitted (so ``decode(encode(e)) == e``)."""
    return _ENCODER.encode(event)


def encode_replay_line(event: Request | Prediction | Label) -> bytes:
    """One replay-file line (no trailing newline): the event with its ``topic`` first.

    >>> encode_replay_line(Label(request_id="r1", ts=9.0, label=True))
    b'{"topic":"labels","request_id":"r1","ts":9.0,"label":true}'
    """
    kind = _KIND_OF.get(type(event))
    if kind not in REPLAY_KINDS:
        raise TypeError(f"a replay line holds a request, prediction or label, not "
                        f"{type(event).__name__}")
    return b'{"topic":"' + kind.encode() + b'",' + _ENCODER.encode(event)[1:]


def validate(event: Event) -> Event | Invalid:
    """The event itself if it satisfies the contract, else :class:`Invalid`.

    The constructors check only what :func:`encode` cannot write (NaN, infinity) and the rules
    across fields; a producer that builds events in Python calls this to check the rest
    (ranges, non-empty strings) exactly as a consumer will:

    >>> print(validate(Label(request_id="", ts=1.0, label=0)).reason)
    label rejected: field 'request_id' must be a non-empty string, got "".
    """
    decoder = _DECODERS.get(type(event))
    if decoder is None:
        return _invalid("event", "wrong_type", f"a {type(event).__name__} is not an event of "
                        "the contract", None)
    try:
        data = _ENCODER.encode(event)
    except Exception as error:  # noqa: BLE001 - e.g. a field holding a non-JSON object
        return _invalid(_NOUN[type(event)], "wrong_type", f"it cannot be written as JSON "
                        f"({_clean(str(error))})", None)
    try:
        return decoder.decode(data)
    except Exception as error:  # noqa: BLE001
        return _explain(type(event), data, error)


def kind_of(event: Event) -> str:
    """The topic kind of an event: ``requests``, ``predictions``, ``labels`` or ``control``."""
    return _KIND_OF[type(event)]


def _utf8_checked(event: Struct, data: Any) -> Struct | Invalid:
    """The event if ``data`` is all UTF-8 (msgspec checks only the strings it decodes)."""
    if isinstance(data, str):
        return event
    raw = bytes(data)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return _invalid(_NOUN[type(event)], "not_utf8", f"the value is not UTF-8 (byte "
                        f"0x{raw[bad.start]:02x} at position {bad.start})", None)
    return event


def _check_listed(items: list[str] | None, values: list[float] | None, other: Any,
                  names: tuple[str, str, str], why: str) -> None:
    """A ranking's list (``items``, or a label's ``engaged``): without the field it stands in
    for (``other``), each item once, its numbers (``values``) one per item and finite."""
    listed, numbered, other_name = names
    if items is None:
        raise ValueError(f"field '{numbered}' applies only with '{listed}'")
    if other is not None:
        raise ValueError(f"field '{listed}' is set, and so is '{other_name}': {why}")
    _check_distinct(listed, items)
    if values is not None:
        if len(values) != len(items):
            raise ValueError(f"field '{numbered}' must hold one number per item of '{listed}' "
                             f"({len(items)}), got {len(values)}")
        _check_finite(numbered, values)


def _check_distinct(name: str, items: list[str]) -> None:
    if len(set(items)) != len(items):
        seen: set[str] = set()
        for item in items:
            if item in seen:
                raise ValueError(f"field '{name}' lists the item {preview(item)} twice")
            seen.add(item)


def _check_finite(name: str, numbers: list[float]) -> None:
    for i, x in enumerate(numbers):
        if x - x:
            raise ValueError(f"field '{name}[{i}]' is {'NaN' if x != x else 'infinite'}")


def _raise_nonfinite(event: Struct, names: tuple[str, ...]) -> None:
    """Raise ValueError naming the first of ``names`` that holds a NaN or infinite float."""
    for name in names:
        value = getattr(event, name)
        if type(value) is float and not math.isfinite(value):
            raise ValueError(f"field '{name}' is {'NaN' if value != value else 'infinite'}")


# ---------------------------------------------------------------------------------------------
# Why a value was rejected. msgspec reports the first problem as a short message and a path
# (`$.traffic[...]`); people need the field, what was expected and what came. This turns the
# message, the path, the type's constraints (msgspec.inspect) and the offending value (found
# by a slower second parse, on the error path only) into one sentence. Hand-written because
# no library phrases msgspec's errors; experiment.py uses it too.

_INSPECT_CACHE: dict[Any, mi.Type] = {}
_ELLIPSIS = object()  # a dict entry msgspec does not name: `[...]`
_NOTHING = object()   # no value could be located
_PREVIEW_CHARS = 40


class Rejection(NamedTuple):
    """What is wrong, for sentences: ``problem`` code, dotted ``field`` (or None), ``detail``.

    ``detail`` follows the field's name: ``"must be a number >= 0, got -1"``, or stands alone
    when ``field`` is None: ``"the value is a JSON array, not an object"``.
    """

    problem: str
    field: str | None
    detail: str


def _invalid(noun: str, problem: str, detail: str, field: str | None) -> Invalid:
    """An Invalid whose reason reads "<noun> rejected: field '<field>' <detail>."."""
    text = f"field '{field}' {detail}" if field else detail
    return _rejected(noun, problem, text, field)


def _rejected(noun: str, problem: str, text: str, field: str | None) -> Invalid:
    return Invalid(kind=noun, problem=problem, reason=_sentence(f"{noun} rejected: {text}"),
                   field=field)


def _sentence(text: str) -> str:
    text = " ".join(text.split())  # one line, whatever a message held
    return text if text.endswith(".") else text + "."


def _clean(message: str) -> str:
    return " ".join(message.split()).rstrip(".")


def _too_large(cls: type, data: Any, max_bytes: int) -> Invalid:
    return _invalid(_NOUN[cls], "too_large", f"the value is too large ({len(data)} bytes, the "
                    f"limit is {max_bytes})", None)


def _explain(cls: type, data: Any, error: BaseException) -> Invalid:
    noun = _NOUN[cls]
    try:
        rejection = _explain_event(cls, data, error)
    except Exception:  # noqa: BLE001 - explaining must never fail: fall back to msgspec's words
        rejection = Rejection("invalid", None, f"the value is invalid ({_clean(str(error))})")
    return _invalid(noun, rejection.problem, rejection.detail, rejection.field)


def _explain_event(cls: type, data: Any, error: BaseException) -> Rejection:
    if data is None:
        return Rejection("empty", None, "the value is empty (null)")
    if not isinstance(data, (bytes, bytearray, memoryview, str)):
        return Rejection("not_bytes", None, f"the value is a Python {type(data).__name__}, "
                         "not bytes")
    if isinstance(error, RecursionError):
        return Rejection("too_deep", None, "the value is nested too deeply")
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if not raw.strip():
        return Rejection("empty", None, "the value is empty")
    try:  # first, as a value that is not text has no fields worth naming
        text = raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return Rejection("not_utf8", None, f"the value is not UTF-8 (byte 0x{raw[bad.start]:02x}"
                         f" at position {bad.start})")
    if isinstance(error, msgspec.ValidationError):
        parsed = _python_parse(raw)
        return describe_rejection(str(error), cls, parsed, noun="field")
    # msgspec could not read it as JSON: say why in the terms a producer can act on
    try:
        parsed = json.loads(text)  # Python's json reads NaN and Infinity: find which field
    except RecursionError:
        return Rejection("too_deep", None, "the value is nested too deeply")
    except ValueError as bad:
        where = (f" at line {bad.lineno}, column {bad.colno}"
                 if isinstance(bad, json.JSONDecodeError) else "")
        message = bad.msg if isinstance(bad, json.JSONDecodeError) else str(bad)
        return Rejection("not_json", None, f"the value is not valid JSON "
                         f"({message[:1].lower()}{message[1:]}{where})")
    found = first_nonfinite(parsed, ())
    if found is not None:
        path, number = found
        return Rejection("nan" if number != number else "infinite", dotted_path(path) or None,
                         "is NaN" if number != number else "is infinite")
    found = _first_surrogate(parsed, ())
    if found is not None:
        return Rejection("not_utf8", dotted_path(found) or None, "holds an escaped lone surrogate "
                         "(\\ud800-\\udfff), which is not Unicode text")
    return Rejection("not_json", None, f"the value is not valid JSON "
                     f"({_clean(str(error)).lower()})")


def _python_parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except Exception:  # noqa: BLE001 - RecursionError, or JSON msgspec read and json did not
        return _NOTHING


def _first_surrogate(value: Any, path: tuple) -> tuple | None:
    if isinstance(value, str):
        return None if not _SURROGATE.search(value) else path
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(key, str) and _SURROGATE.search(key):
            return (*path, key)
        found = _first_surrogate(item, (*path, key))
        if found is not None:
            return found
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")


def first_nonfinite(value: Any, path: tuple) -> tuple[tuple, float] | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, dict):
        for key, item in value.items():
            found = first_nonfinite(item, (*path, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = first_nonfinite(item, (*path, index))
            if found is not None:
                return found
    return None


_AT = re.compile(r"^(?P<body>.*?)(?: - at (?:`key` in )?`(?P<path>\$[^`]*)`)?$", re.S)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]+)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]+)`$")
_WRONG_TYPE = re.compile(r"^Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`$")
_CONSTRAINT = re.compile(r"^Expected `(?P<expected>[^`]+)` (?P<rule>.+)$")
_OUR_FIELD = re.compile(r"^field '(?P<name>[^']*)' (?P<rest>.+)$", re.S)
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[(\.\.\.)\]")


def describe_rejection(message: str, root: Any, parsed: Any = _NOTHING, *,
                       noun: str = "field") -> Rejection:
    """A :class:`Rejection` from a msgspec ValidationError message about ``root`` (a type).

    ``parsed`` is the same input as plain Python objects (json.loads / yaml), used to quote
    the offending value; ``noun`` is how the caller names fields (``field``, ``key``).
    """
    whole = _AT.match(message.strip())
    body, path_text = whole.group("body"), whole.group("path")
    key_error = "`key` in `" in message
    path = _parse_path(path_text or "$")
    root_info = _type_info(root)

    ours = _OUR_FIELD.match(body)
    if ours:  # raised by a __post_init__ of ours: already phrased
        rest = ours.group("rest")
        where = dotted_path((*path, *ours.group("name").split(".")))
        problem = ("nan" if rest == "is NaN" else "infinite" if rest == "is infinite"
                   else "missing" if rest.startswith("is missing") else "invalid")
        return Rejection(problem, where, rest)

    missing = _MISSING.match(body)
    if missing:
        return Rejection("missing", dotted_path((*path, missing.group("name"))), "is missing")

    unknown = _UNKNOWN.match(body)
    if unknown:
        name = unknown.group("name")
        allowed = _field_names(_info_at(root_info, path, parsed)[0])
        hint = difflib.get_close_matches(name, allowed, n=1)
        detail = "is not a known " + noun
        if hint:
            detail += f" (did you mean '{hint[0]}'?)"
        if allowed:
            detail += "; allowed: " + ", ".join(allowed)
        return Rejection("unknown_key", dotted_path((*path, name)), detail)

    info, path, value = _info_at(root_info, path, parsed, key_error=key_error)
    where = dotted_path(path) or None
    if key_error:
        shown = "" if value is _NOTHING else f": {describe_value(value)}"
        return Rejection("wrong_type", where,
                         f"has a key that is not {describe_expected(info)}{shown}")
    if isinstance(value, float) and not math.isfinite(value):
        return Rejection("nan" if value != value else "infinite", where,
                         "is NaN" if value != value else "is infinite")
    if where is None and body.startswith("Expected `object"):
        got = _WRONG_TYPE.match(body)
        kind = got.group("got") if got else "something else"
        return Rejection("not_object", None, f"the value is {_article(kind)}, not an object")

    wrong = _WRONG_TYPE.match(body)
    if wrong:
        got = describe_value(value) if value is not _NOTHING else _article(wrong.group("got"))
        return Rejection("wrong_type", where, f"must be {describe_expected(info)}, got {got}")
    shown = "" if value is _NOTHING else f", got {preview(value)}"
    numeric = [m for m in _members(info) if isinstance(m, (mi.FloatType, mi.IntType))]
    if body == "Number out of range":
        if value is _NOTHING or any(isinstance(m, mi.FloatType) for m in numeric):
            return Rejection("infinite", where, "is infinite (a number too large for a float)")
        return Rejection("out_of_range", where, f"must be {describe_expected(info)}{shown}")
    if body.startswith("Invalid enum value"):
        return Rejection("invalid", where, f"must be {describe_expected(info)}{shown}")
    constraint = _CONSTRAINT.match(body)
    if constraint:
        return Rejection("out_of_range" if numeric else "invalid", where,
                         f"must be {describe_expected(info)}{shown}")
    return Rejection("invalid", where, f"is invalid ({_clean(body)})")


def _type_info(root: Any) -> mi.Type:
    info = _INSPECT_CACHE.get(root)
    if info is None:
        info = _INSPECT_CACHE[root] = mi.type_info(root)
    return info


def _parse_path(text: str) -> tuple:
    parts: list[Any] = []
    for name, index, dots in _PATH_PART.findall(text[1:]):
        parts.append(name if name else int(index) if index else _ELLIPSIS)
    return tuple(parts)


def _unwrap(info: mi.Type) -> mi.Type:
    while isinstance(info, mi.Metadata):
        info = info.type
    return info


def _members(info: mi.Type) -> list[mi.Type]:
    info = _unwrap(info)
    if isinstance(info, mi.UnionType):
        return [member for item in info.types for member in _members(item)]
    return [info]


def _info_at(root: mi.Type, path: tuple, parsed: Any, *,
             key_error: bool = False) -> tuple[mi.Type, tuple, Any]:
    """The type expected at ``path``, the path with ``[...]`` resolved, and the value there.

    With ``key_error`` the path names a dict whose key is wrong: the key's type and the first
    offending key are returned instead.
    """
    info, value, resolved = root, parsed, []
    for step in path:
        container = _container_for(info, step)
        if isinstance(container, mi.DictType):
            info = container.value_type
            if step is _ELLIPSIS:
                step = _bad_entry(value, container, bad_key=False)
        elif isinstance(container, mi.StructType):
            field = next((f for f in container.fields if f.encode_name == step), None)
            info = field.type if field else mi.AnyType()
        elif isinstance(container, (mi.ListType, mi.VarTupleType, mi.SetType,
                                    mi.FrozenSetType)):
            info = container.item_type
        else:
            info = mi.AnyType()
        resolved.append(step)
        value = _child(value, step)
    if key_error:
        container = _container_for(info, _ELLIPSIS)
        if isinstance(container, mi.DictType):
            return container.key_type, tuple(resolved), _bad_entry(value, container,
                                                                   bad_key=True)
    return info, tuple(resolved), value


def _container_for(info: mi.Type, step: Any) -> mi.Type:
    members = _members(info)
    for member in members:
        if step is _ELLIPSIS and isinstance(member, mi.DictType):
            return member
        if isinstance(step, int) and isinstance(member, (mi.ListType, mi.VarTupleType,
                                                         mi.SetType, mi.FrozenSetType)):
            return member
        if isinstance(step, str) and isinstance(member, (mi.StructType, mi.DictType)):
            return member
    return members[0] if members else mi.AnyType()


def _child(value: Any, step: Any) -> Any:
    if value is _NOTHING or step is _NOTHING:
        return _NOTHING
    if isinstance(value, dict):
        return value.get(step, _NOTHING) if not isinstance(step, int) or step in value \
            else _NOTHING
    if isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value):
        return value[step]
    return _NOTHING


def _bad_entry(value: Any, dict_info: mi.DictType, *, bad_key: bool) -> Any:
    """The key of the first entry of ``value`` (a dict) that does not conform, else NOTHING."""
    if not isinstance(value, dict):
        return _NOTHING
    for key, item in value.items():
        if not (_conforms(dict_info.key_type, key) if bad_key
                else _conforms(dict_info.value_type, item)):
            return key
    return _NOTHING


def _conforms(info: mi.Type, value: Any) -> bool:
    """Does a plain value satisfy a scalar type's constraints (containers: shallowly)?"""
    info = _unwrap(info)
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if isinstance(info, mi.UnionType):
        return any(_conforms(member, value) for member in info.types)
    if isinstance(info, mi.AnyType):
        return first_nonfinite(value, ()) is None
    if isinstance(info, mi.NoneType):
        return value is None
    if isinstance(info, mi.BoolType):
        return isinstance(value, bool)
    if isinstance(info, (mi.IntType, mi.FloatType)):
        kinds = int if isinstance(info, mi.IntType) else (int, float)
        return (isinstance(value, kinds) and not isinstance(value, bool)
                and _within(info, value))
    if isinstance(info, mi.StrType):
        return isinstance(value, str) and _length_ok(info, value) and (
            info.pattern is None or re.search(info.pattern, value) is not None)
    if isinstance(info, mi.LiteralType):
        return any(type(value) is type(v) and value == v for v in info.values)
    if isinstance(info, (mi.DictType, mi.StructType)):
        return isinstance(value, dict)
    if isinstance(info, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)):
        return isinstance(value, list)
    return True


def _within(info: mi.IntType | mi.FloatType, x: float) -> bool:
    gt = getattr(info, "gt", None)
    lt = getattr(info, "lt", None)
    return ((info.ge is None or x >= info.ge) and (info.le is None or x <= info.le)
            and (gt is None or x > gt) and (lt is None or x < lt))


def _length_ok(info: Any, value: Any) -> bool:
    return ((info.min_length is None or len(value) >= info.min_length)
            and (info.max_length is None or len(value) <= info.max_length))


def describe_expected(info: mi.Type, in_union: bool = False) -> str:
    """What a type accepts, in words: 'a number between 0 and 1', 'a non-empty string'."""
    if isinstance(info, mi.Metadata):
        if info.extra and "expect" in info.extra:
            return info.extra["expect"]
        return describe_expected(info.type, in_union)
    if isinstance(info, mi.UnionType):
        members = [m for m in info.types if not isinstance(_unwrap(m), mi.NoneType)]
        kinds = {type(_unwrap(m)) for m in members}
        if {mi.IntType, mi.FloatType} <= kinds:  # int | float is "a number" in JSON
            members = [m for m in members if not isinstance(_unwrap(m), mi.IntType)]
        words = [describe_expected(m, len(members) > 1) for m in members] or ["null"]
        return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
    if isinstance(info, mi.FloatType):
        return "a number" + _bounds(info)
    if isinstance(info, mi.IntType):
        return "an integer" + _bounds(info)
    if isinstance(info, mi.StrType):
        if info.pattern is not None:
            return f"a string matching {info.pattern}"
        if info.min_length == 1 and info.max_length is None:
            return "a non-empty string"
        return "a string" + _lengths(info, "characters")
    if isinstance(info, mi.BoolType):
        return "a boolean" if in_union else "true or false"
    if isinstance(info, mi.NoneType):
        return "null"
    if isinstance(info, mi.LiteralType):
        return "one of " + ", ".join(preview(v).replace('"', "'") for v in info.values)
    if isinstance(info, mi.DictType):
        return f"an object of {_plural(info.value_type)}" + _lengths(info, "entries")
    if isinstance(info, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)):
        return f"a list of {_plural(info.item_type)}" + _lengths(info, "items")
    if isinstance(info, mi.StructType):
        return "an object"
    if isinstance(info, mi.BytesType):
        return "base64 bytes"
    return "a JSON value"


_NOUNS = re.compile(r"\b(string|number|integer|object|boolean|list|name|duration|value)\b")


def _plural(info: mi.Type) -> str:
    """'numbers between 0 and 1'; a union: 'numbers, strings, booleans or null'."""
    members = _members(info)
    if len(members) == 1:
        return _pluralise(describe_expected(info))
    kinds = {type(m) for m in members}
    words = [_pluralise(describe_expected(m, in_union=True)) for m in members
             if not isinstance(m, mi.NoneType)
             and not (isinstance(m, mi.IntType) and mi.FloatType in kinds)]
    if mi.NoneType in kinds:
        words.append("null")
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _pluralise(words: str) -> str:
    for article in ("an ", "a "):
        if words.startswith(article):
            return _NOUNS.sub(lambda m: m.group(1) + "s", words[len(article):], count=1)
    return words


def _bounds(info: mi.IntType | mi.FloatType) -> str:
    low = (">=", info.ge) if info.ge is not None else (">", info.gt) if info.gt is not None \
        else None
    high = ("<=", info.le) if info.le is not None else ("<", info.lt) if info.lt is not None \
        else None
    if low and high and low[0] == ">=" and high[0] == "<=":
        return f" between {_number(low[1])} and {_number(high[1])}"
    parts = [f"{bound[0]} {_number(bound[1])}" for bound in (low, high) if bound]
    return (" " + " and ".join(parts)) if parts else ""


def _lengths(info: Any, unit: str) -> str:
    if info.min_length and info.max_length is not None:
        return f" of {info.min_length} to {info.max_length} {unit}"
    if info.min_length:
        return f" of at least {info.min_length} {unit[:-1] if info.min_length == 1 else unit}" \
            if unit != "entries" else f" of at least {info.min_length} " \
            f"{'entry' if info.min_length == 1 else 'entries'}"
    if info.max_length is not None:
        return f" of at most {info.max_length} {unit}"
    return ""


def _number(x: float) -> str:
    if isinstance(x, int):
        return str(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def _field_names(info: mi.Type) -> list[str]:
    container = _container_for(info, "")
    if isinstance(container, mi.StructType):
        return [f.encode_name for f in container.fields]
    return []


def dotted_path(path: Iterable[Any]) -> str:
    text = ""
    for step in path:
        if isinstance(step, int) and not isinstance(step, bool):
            text += f"[{step}]"
        elif isinstance(step, str) and re.fullmatch(r"[A-Za-z0-9_:-]{1,40}", step):
            text += f".{step}" if text else step
        elif step is _NOTHING or step is _ELLIPSIS:
            text += "[...]"
        else:
            text += f"[{preview(step)}]"
    return text


_JSON_KIND = {"int": "number", "float": "number", "str": "string", "bool": "boolean",
              "null": "null", "array": "array", "object": "object", "bytes": "string"}


def _article(kind: str) -> str:
    kind = _JSON_KIND.get(kind, kind)
    if kind == "null":
        return "null"
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


def describe_value(value: Any) -> str:
    """A value with its JSON type: 'the number 7', 'the string "7"', 'true', 'an array'."""
    if value is None or isinstance(value, bool):
        return preview(value)
    if isinstance(value, (int, float)):
        return f"the number {preview(value)}"
    if isinstance(value, str):
        return f"the string {preview(value)}"
    if isinstance(value, (list, tuple, dict)):
        return preview(value)
    return f"{_article(type(value).__name__)} ({preview(str(value))})"


def preview(value: Any) -> str:
    """A short, one-line, ASCII rendering of a value, as JSON where it is JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        text = str(value) if abs(value) < 10 ** 30 else f"an integer of {len(str(value))} digits"
        return text
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        shown = json.dumps(value[:_PREVIEW_CHARS])
        return shown[:-1] + '..."' if len(value) > _PREVIEW_CHARS else shown
    if isinstance(value, (list, tuple)):
        return f"an array of {len(value)} item{'' if len(value) == 1 else 's'}" if value \
            else "an empty array"
    if isinstance(value, dict):
        return f"an object of {len(value)} entr{'y' if len(value) == 1 else 'ies'}" if value \
            else "an empty object"
    return json.dumps(str(value)[:_PREVIEW_CHARS])
