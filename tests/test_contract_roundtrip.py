"""One event of each kind through the real broker and back through the schemas, field by field."""

from __future__ import annotations

import msgspec
import pytest

from rollguard.kafka.roundtrip import round_trip
from rollguard.schemas import DeadLetter, Invalid
from rollguard.streams.topics import TopicNames

pytestmark = pytest.mark.kafka


def test_every_kind_comes_back_field_by_field(kafka_bootstrap, topic_prefix):
    trips = round_trip(kafka_bootstrap, TopicNames(topic_prefix))
    assert sorted(t.kind for t in trips) == ["control", "deadletter", "labels", "predictions",
                                             "requests"]
    for trip in trips:
        assert not isinstance(trip.received, Invalid), trip.received
        sent, received = msgspec.structs.asdict(trip.sent), msgspec.structs.asdict(trip.received)
        assert sent.keys() == received.keys()
        for field, value in sent.items():
            assert received[field] == value, f"{trip.kind}.{field}: {received[field]!r} != {value!r}"
            assert type(received[field]) is type(value), f"{trip.kind}.{field} changed type"
    dead = next(t.received for t in trips if t.kind == "deadletter")
    assert isinstance(dead, DeadLetter) and dead.value == b"{not json" and dead.offset == 7
