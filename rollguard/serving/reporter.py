"""``Reporter``: produces a service's requests, predictions and labels in the event contract.

Built on confluent-kafka's producer, which batches in its own thread: ``report_*`` only
encodes one JSON object and queues it (microseconds), never waits for the broker, and
returns False (counted in ``dropped``) instead of blocking when the local queue is full.
A daemon thread serves delivery reports: ``delivered`` and ``failed`` count them and
``on_error(callback)`` hears of every message that was lost. Keys are the ``request_id``
and the partitioner is ``murmur2_random``, so a key lands on the same partition as from a
Java or aiokafka producer.

>>> reporter = Reporter("127.0.0.1:1", topic_prefix="doc.")  # queues even with no broker
>>> reporter.report_label("req-1", label=1, ts=1700000000.0)
True
>>> with reporter.timed("churn-v7", "req-1", "churn:7", served=False) as t:
...     t.prediction, t.score = 1, 0.93
>>> reporter.close(timeout=0)  # nothing could be delivered: both count as failed
>>> reporter.delivered, reporter.failed, reporter.dropped
(0, 2, 0)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import msgspec
from confluent_kafka import KafkaError, KafkaException, Producer

from rollguard.kafka.clients import client_config
from rollguard.schemas.events import (Invalid, Label, Prediction, Request, decode_label,
                                      decode_prediction, decode_request, encode)
from rollguard.streams.topics import TopicNames

log = logging.getLogger("rollguard.serving.reporter")

_RESERVED_CONFIG = ("on_delivery", "error_cb", "bootstrap.servers")


class DeliveryFailure(NamedTuple):
    """A report that did not reach Kafka: where it was going, what it was, and why."""

    topic: str
    key: bytes | None
    value: bytes | None
    reason: str
    retriable: bool = False


# -- the events (docs/events.md): rollguard.schemas builds them; a report is checked as rollguard
# will decode it, so a bad one fails here, in the service's tests, not in the dead-letter topic.

_PLAIN_TYPES = (str, int, float, bool)


def _plain(value: Any) -> Any:
    """numpy scalars (numpy.int64, numpy.float32, numpy.bool_, 0-d arrays) as Python ones."""
    if value is not None and type(value) not in _PLAIN_TYPES and hasattr(value, "item"):
        return value.item()
    return value


def _item_ids(items: Any) -> list[Any] | None:
    """A ranking's item ids as a list; integer ids (numpy's too) as their decimal strings."""
    if items is None:
        return None
    out = []
    for item in items:
        item = _plain(item)
        out.append(str(item) if isinstance(item, int) and not isinstance(item, bool) else item)
    return out


def _numbers(values: Any) -> list[Any] | None:
    return None if values is None else [_plain(v) for v in values]


def _split_arm(arm: Any) -> tuple[str, str]:
    model, colon, version = arm.rpartition(":") if isinstance(arm, str) else ("", "", "")
    if not colon or not model or not version:
        raise ValueError(f"`arm` must be a 'model:version' string, got {arm!r}.")
    return model, version


def _checked(build: Callable[[], Any], decode: Callable[[bytes], Any], noun: str) -> bytes:
    """The JSON of the event ``build()`` makes, or ValueError with the consumer's reason."""
    try:
        data = encode(build())
    except ValueError as exc:  # the schema's constructor: NaN, prediction missing, ...
        raise ValueError(f"{noun} rejected: {exc}.") from None
    except (TypeError, msgspec.EncodeError) as exc:
        raise ValueError(f"{noun} rejected: it cannot be written as JSON ({exc}).") from None
    checked = decode(data)
    if isinstance(checked, Invalid):
        raise ValueError(checked.reason)
    return data


# -- the reporter --------------------------------------------------------------------------

class Reporter:
    """Produces requests, predictions and labels; never blocks the request path.

    ``producer_config`` are librdkafka settings, given as ``**{"linger.ms": 5}``; the
    defaults batch for 20 ms, compress with lz4 and are idempotent (a retried write keeps
    its place in the partition, and is not written twice).
    """

    def __init__(self, bootstrap_servers: str, topic_prefix: str | None = None,
                 **producer_config: Any) -> None:
        taken = [key for key in _RESERVED_CONFIG if key in producer_config]
        if taken:
            raise ValueError(f"Reporter sets {', '.join(taken)} itself: give bootstrap_servers "
                             "as the first argument and use on_error() for failures.")
        self.topics = TopicNames(topic_prefix)
        config = client_config(
            bootstrap_servers,
            **{"partitioner": "murmur2_random",  # Java's default: same key, same partition
               "linger.ms": 20,
               "compression.type": "lz4",
               # each topic's partitions keep the order of the writes, also across retries
               # (without it a retried batch lands after later ones: input then arrives
               # late and is counted as late_input), and a retry writes no duplicate
               "enable.idempotence": True,
               "client.id": "rollguard-reporter",
               # a topic made by auto-creation would have the broker's default partition
               # count and break the co-partitioned join: report a missing topic instead
               "allow.auto.create.topics": False,
               "on_delivery": self._on_delivery,
               "error_cb": self._on_kafka_error})
        config.update(producer_config)
        self._producer = Producer(config)
        self._counts_lock = threading.Lock()
        self._error_callbacks: list[Callable[[DeliveryFailure], None]] = []
        self._warned_down = False
        #: messages acknowledged by Kafka, lost after queueing, refused because the local
        #: queue was full, and reports of a timed() block that could not be written
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self.invalid = 0
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="rollguard-reporter", daemon=True)
        self._poller.start()

    # -- reports -------------------------------------------------------------------------
    def report_request(self, experiment: str, request_id: str, *, unit: str | None = None,
                       segments: Mapping[str, str] | None = None,
                       features: Mapping[str, Any] | None = None, ts: float | None = None) -> bool:
        """Queue a request; False (and ``dropped`` + 1) if the local queue is full."""
        value = _checked(lambda: Request(
            request_id=request_id, experiment=experiment,
            ts=_plain(time.time() if ts is None else ts), unit=unit,
            segments=None if segments is None else dict(segments),
            features=None if features is None else {k: _plain(v) for k, v in features.items()}),
            decode_request, "request")
        return self._produce(self.topics.requests, request_id, value)

    def report_prediction(self, experiment: str, request_id: str, arm: str, *, served: bool,
                          prediction: Any = None, score: float | None = None,
                          latency_ms: float | None = None, error: str | None = None,
                          unit: str | None = None, segments: Mapping[str, str] | None = None,
                          ts: float | None = None, items: Any = None,
                          item_scores: Any = None) -> bool:
        """Queue one arm's (``model:version``) prediction; ``served`` if it went to the caller.

        A ranking gives ``items`` (its ranked item ids, best first; integer ids are written
        as strings) and optionally ``item_scores`` instead of ``prediction``.
        """
        model, version = _split_arm(arm)
        value = _checked(lambda: Prediction(
            request_id=request_id, experiment=experiment,
            ts=_plain(time.time() if ts is None else ts), model=model, version=version,
            served=_plain(served), prediction=_plain(prediction), score=_plain(score),
            latency_ms=_plain(latency_ms), error=error, unit=unit,
            segments=None if segments is None else dict(segments), items=_item_ids(items),
            item_scores=_numbers(item_scores)),
            decode_prediction, "prediction")
        return self._produce(self.topics.predictions, request_id, value)

    def report_label(self, request_id: str, label: Any = None, *, reward: float | None = None,
                     ts: float | None = None, engaged: Any = None, gains: Any = None) -> bool:
        """Queue the ground truth of a request (``ts``: when it became known).

        A ranking gives ``engaged`` (the item ids the user engaged with, ``[]`` for none) and
        optionally their ``gains`` instead of ``label``.
        """
        value = _checked(lambda: Label(
            request_id=request_id, ts=_plain(time.time() if ts is None else ts),
            label=_plain(label), reward=_plain(reward), engaged=_item_ids(engaged),
            gains=_numbers(gains)), decode_label, "label")
        return self._produce(self.topics.labels, request_id, value)

    def timed(self, experiment: str, request_id: str, arm: str, *, served: bool,
              unit: str | None = None, segments: Mapping[str, str] | None = None,
              ts: float | None = None) -> Timing:
        """A context manager that times the model call and reports its prediction.

        Set ``t.prediction`` (and ``t.score``) inside the block. If the block raises, the
        prediction is reported with ``error`` = the exception's class and message and the
        exception goes on. Works around ``await`` too (it only reads the clock).
        """
        return Timing(self, experiment, request_id, arm, served, unit, segments, ts)

    def call(self, experiment: str, request_id: str, arm: str, model: Callable[..., Any],
             *args: Any, served: bool, unit: str | None = None,
             segments: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        """``model(*args, **kwargs)``, timed and reported; returns what the model returned.

        The result is the prediction, or a ``(prediction, score)`` pair.
        """
        with self.timed(experiment, request_id, arm, served=served, unit=unit,
                        segments=segments) as timing:
            result = model(*args, **kwargs)
            if isinstance(result, tuple) and len(result) == 2:
                timing.prediction, timing.score = result
            else:
                timing.prediction = result
        return result

    # -- delivery ------------------------------------------------------------------------
    def on_error(self, callback: Callable[[DeliveryFailure], None]) -> None:
        """Call ``callback(failure)`` for every report lost: failed delivery or dropped.

        Failed deliveries are reported from the reporter's thread, drops from the thread
        that reported; keep it quick.
        """
        self._error_callbacks.append(callback)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` s for queued reports to be delivered; how many remain."""
        return self._producer.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout`` s), count the rest as failed, stop."""
        if self._stop.is_set():
            return
        remaining = self._producer.flush(timeout)
        if remaining:
            log.warning("%d reports were not delivered within %g s and are dropped on close.",
                        remaining, timeout)
            self._producer.purge()  # their delivery reports come with _PURGE_QUEUE: failed
            self._producer.flush(1.0)
        self._stop.set()
        self._poller.join(timeout)

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _produce(self, topic: str, request_id: str, value: bytes) -> bool:
        key = str(request_id).encode()  # a uuid.UUID passed the schema as its string
        try:
            self._producer.produce(topic, value, key)
        except BufferError:
            with self._counts_lock:
                self.dropped += 1
            self._report_failure(DeliveryFailure(
                topic, key, value, "the local queue is full (queue.buffering.max.messages); "
                "the report was dropped", retriable=True))
            return False
        except KafkaException as exc:  # refused locally, e.g. larger than message.max.bytes
            with self._counts_lock:
                self.failed += 1
            self._report_failure(DeliveryFailure(topic, key, value, exc.args[0].str()))
            return False
        return True

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def _on_delivery(self, error: KafkaError | None, message: Any) -> None:
        if error is None:
            with self._counts_lock:
                self.delivered += 1
            self._warned_down = False
            return
        with self._counts_lock:
            self.failed += 1
        self._report_failure(DeliveryFailure(message.topic(), message.key(), message.value(),
                                             error.str(), error.retriable()))

    def _report_failure(self, failure: DeliveryFailure) -> None:
        log.debug("Report to %s lost: %s.", failure.topic, failure.reason)
        for callback in self._error_callbacks:
            try:
                callback(failure)
            except Exception:  # noqa: BLE001 - a callback's bug must not stop delivery
                log.exception("A Reporter on_error callback failed.")

    def _on_kafka_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN and not self._warned_down:
            self._warned_down = True
            log.warning("The reporter cannot reach Kafka (%s); reports wait in its queue "
                        "(message.timeout.ms) and count as failed if it does not come back.",
                        error.str())
        elif error.fatal():
            log.error("The reporter's Kafka producer failed: %s.", error.str())
        else:
            log.debug("Kafka: %s", error.str())


class Timing:
    """What :meth:`Reporter.timed` yields: set ``prediction`` and ``score`` (a ranking:
    ``items`` and ``item_scores``); read ``latency_ms``."""

    def __init__(self, reporter: Reporter, experiment: str, request_id: str, arm: str,
                 served: bool, unit: str | None, segments: Mapping[str, str] | None,
                 ts: float | None) -> None:
        self._reporter = reporter
        self._fields = (experiment, request_id, arm)
        self._served, self._unit, self._segments, self.ts = served, unit, segments, ts
        self.prediction: Any = None
        self.score: float | None = None
        self.items: Any = None
        self.item_scores: Any = None
        self.latency_ms: float | None = None
        self.error: str | None = None
        self.reported = False
        self._start = 0.0

    def __enter__(self) -> Timing:
        if self.ts is None:
            self.ts = time.time()
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: object) -> bool:
        self.latency_ms = (time.perf_counter() - self._start) * 1000.0
        if exc is not None:
            self.error = f"{exc_type.__name__}: {exc}"
        experiment, request_id, arm = self._fields
        try:
            if self.error is None and self.prediction is None and self.items is None:
                raise ValueError("the timed block set no prediction")
            self.reported = self._reporter.report_prediction(
                experiment, request_id, arm, served=self._served,
                prediction=None if self.error else self.prediction,
                score=None if self.error else self.score, latency_ms=self.latency_ms,
                error=self.error, unit=self._unit, segments=self._segments, ts=self.ts,
                items=None if self.error else self.items,
                item_scores=None if self.error else self.item_scores)
        except ValueError as invalid:  # never break the request over its report
            with self._reporter._counts_lock:
                self._reporter.invalid += 1
            log.warning("Prediction of %s for request %s not reported: %s",
                        arm, request_id, invalid)
        return False  # the model's exception, if any, goes on
