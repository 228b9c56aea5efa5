"""Steering an experiment by hand: ``rollguard promote | rollback | pause | resume``.

A request goes to ``<prefix>control-requests`` (keyed by experiment, docs/events.md); the
worker that evaluates the experiment applies it at the point its analysis has reached and
publishes the control event, or refuses it in one sentence on the dead-letter topic.
:func:`send_request` writes the request and waits for either answer, so the person learns
what happened::

    answer = send_request("127.0.0.1:9092", TopicNames(), new_request(
        "loan-v2", "pause", reason="release freeze", by="ana"))
    print(answer.sentence)

The dashboard's buttons (``--allow-control``) go through the same function.

>>> request = new_request("loan-v2", "pause", reason="release freeze", by="ana")
>>> request.action, request.by, len(request.request_id) > 8
('pause', 'ana', True)
"""

from __future__ import annotations

import getpass
import json
import socket
import time
import uuid
from dataclasses import dataclass

from rollguard.schemas.events import HEADER_ERROR, ControlEvent, ControlRequest, decode_control, encode
from rollguard.streams.topics import TopicNames


class SteerError(RuntimeError):
    """The request could not be sent or answered; the message is one sentence."""


class UnknownExperiment(SteerError):
    """No experiment of that name has started on the topic prefix."""


@dataclass(frozen=True)
class Answer:
    """What the worker did with a request: the control event, or why it refused."""

    request: ControlRequest
    event: ControlEvent | None = None
    refused: str | None = None

    @property
    def sentence(self) -> str:
        if self.event is not None:
            return f"{self.event.experiment} seq {self.event.seq} {self.event.action}: " \
                   f"{self.event.reason}"
        return self.refused or ""


def who() -> str:
    """``user@host``: the default ``by`` of a request."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def new_request(experiment: str, action: str, *, reason: str, by: str | None = None,
                candidate: str | None = None) -> ControlRequest:
    """A control request (raises ValueError in one sentence for an empty reason)."""
    if not reason.strip():
        raise ValueError("Give a reason with --reason: it is recorded in the control event.")
    return ControlRequest(experiment=experiment, action=action, reason=reason.strip(),
                          by=by or who(), request_id=uuid.uuid4().hex, requested_at=time.time(),
                          candidate=candidate)


def send_request(bootstrap: str, names: TopicNames, request: ControlRequest, *,
                 wait: float = 30.0) -> Answer | None:
    """Write ``request`` and wait up to ``wait`` seconds for the worker's answer (None when
    ``wait`` is 0). Raises :class:`SteerError` in one sentence."""
    from confluent_kafka import KafkaException, Producer, TopicPartition

    from rollguard.kafka.clients import BrokerUnreachable, client_config, require_broker
    from rollguard.kafka.compacted import reader

    try:
        require_broker(bootstrap)
    except BrokerUnreachable as exc:
        raise SteerError(str(exc)) from None
    consumer = reader(bootstrap, "steer")
    try:
        topics = consumer.list_topics(timeout=10).topics
        if names.control_requests not in topics or topics[names.control_requests].error:
            raise SteerError(f"Topic {names.control_requests} does not exist: no rollguard "
                             "worker has run with this topic prefix; start one with "
                             "`rollguard worker` (it creates the topic) or check --topic-prefix.")
        _known_or_fail(bootstrap, names, request.experiment)
        # where the answers will appear: the ends of the control and dead-letter topics now
        start = []
        for topic in (names.control, names.deadletter):
            for p in (topics[topic].partitions if topic in topics else {}):
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                start.append(TopicPartition(topic, p, high))
        producer = Producer(client_config(bootstrap, **{
            "partitioner": "murmur2_random", "enable.idempotence": True}))
        producer.produce(names.control_requests, key=request.experiment.encode(),
                         value=encode(request))
        if producer.flush(15) != 0:
            raise SteerError(f"The request could not be written to {names.control_requests} "
                             "within 15 s: is the broker healthy? Try again.")
        if wait <= 0:
            return None
        consumer.assign(start)
        return _answer(consumer, names, request, wait)
    except KafkaException as exc:
        raise SteerError(f"Kafka refused the request: {exc.args[0].str()}.") from None
    finally:
        consumer.close()


def _known_or_fail(bootstrap: str, names: TopicNames, experiment: str) -> None:
    """Refuse at once an experiment the control topic has never heard of."""
    from rollguard.kafka.compacted import TopicUnavailable, latest_values

    try:
        known = set(latest_values(bootstrap, names.control))
    except TopicUnavailable as exc:
        raise SteerError(str(exc)) from None
    if experiment not in known:
        listed = ", ".join(sorted(known)) or "none yet"
        raise UnknownExperiment(f"No experiment '{experiment}' has started on this topic prefix "
                         f"(started: {listed}); check the name, or wait for its first "
                         "traffic.")


def _answer(consumer, names: TopicNames, request: ControlRequest, wait: float) -> Answer:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for msg in consumer.consume(200, timeout=0.5):
            if msg.error() is not None or msg.value() is None:
                continue
            if msg.topic() == names.control:
                event = decode_control(msg.value())
                manual = getattr(event, "evidence", {}).get("manual") or {}
                if manual.get("request_id") == request.request_id:
                    return Answer(request, event=event)
            else:
                try:
                    asked = json.loads(msg.value())
                except ValueError:
                    continue
                if isinstance(asked, dict) and asked.get("request_id") == request.request_id:
                    headers = dict(msg.headers() or ())
                    return Answer(request, refused=headers.get(HEADER_ERROR, b"").decode())
    raise SteerError(f"No worker answered within {wait:g} s: is `rollguard worker` running for "
                     f"experiment '{request.experiment}' with this topic prefix? The request "
                     f"stays in {names.control_requests} and applies when a worker reads it.")
