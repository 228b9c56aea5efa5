"""The event contract (docs/events.md) and the experiment definition, validated once at the edge.

>>> from rollguard.schemas import decode_label, Invalid
>>> decode_label(b'{"request_id": "r1", "ts": 1700000000.5, "label": true}')
Label(request_id='r1', ts=1700000000.5, label=True, reward=None, engaged=None, gains=None)
>>> bad = decode_label(b'{"request_id": "r1", "ts": -1, "label": true}')
>>> isinstance(bad, Invalid), bad.problem, bad.field
(True, 'out_of_range', 'ts')
>>> bad.reason
"label rejected: field 'ts' must be a number >= 0, got -1."
"""

from rollguard.schemas.durations import format_duration, parse_duration
from rollguard.schemas.events import (DEADLETTER_HEADERS, EVENT_KINDS, HEADER_ERROR,
                                      HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC,
                                      MAX_EVENT_BYTES, REPLAY_KINDS, ControlEvent, ControlRequest,
                                      DeadLetter, Event, Invalid, Label, Prediction, Request,
                                      decode_control, decode_control_request, decode_event,
                                      decode_label,
                                      decode_prediction, decode_replay_line, decode_request,
                                      encode, encode_replay_line, kind_of, validate)
from rollguard.schemas.experiment import (Bandit, Canary, Experiment, ExperimentError,
                                          Guardrail, Primary, Reference, load_experiments,
                                          parse_experiments)
from rollguard.schemas.jsonschema import export_json_schemas, json_schemas

__all__ = [
    "DEADLETTER_HEADERS", "EVENT_KINDS", "HEADER_ERROR", "HEADER_OFFSET", "HEADER_PARTITION",
    "HEADER_TOPIC", "MAX_EVENT_BYTES", "REPLAY_KINDS",
    "Request", "Prediction", "Label", "ControlEvent", "ControlRequest", "DeadLetter", "Invalid",
    "Event", "decode_request", "decode_prediction", "decode_label", "decode_control",
    "decode_control_request", "decode_event",
    "decode_replay_line", "encode", "encode_replay_line", "validate", "kind_of",
    "Experiment", "Primary", "Guardrail", "Canary", "Bandit", "Reference", "ExperimentError",
    "load_experiments", "parse_experiments", "parse_duration", "format_duration",
    "export_json_schemas", "json_schemas",
]
