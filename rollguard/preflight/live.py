"""What production already told rollguard: the requests window, the champion's live figures,
and the dead letters. Thin Kafka readers around pure functions.

- :func:`read_requests_window`: the ``features`` of one experiment's requests on
  ``<prefix>requests`` whose Kafka timestamp is within the last ``last`` seconds (each
  partition is read from the offset of that time to its end as it is now; the newest
  ``max_requests`` are kept).
- :func:`live_figures`: from a statistics snapshot (``<prefix>stats``, docs/stats-snapshot.md)
  the champion's primary metric over the event-time hours of the last ``last`` seconds
  (``hourly_loss``: the n-weighted mean of the per-request loss), its metric over the whole
  experiment, and its latency quantiles.
- :func:`read_deadletter_inputs`: the inputs on ``<prefix>deadletter`` that carry
  ``features``, with the reason each was rejected.

>>> snapshot = {"experiment": "loan-v2", "champion": "loan:1",
...     "decision": {"champion": "loan:1"}, "statistics": {"arms": {"loan:1": {
...     "outcomes": {"count": 300, "accuracy": 0.88},
...     "serving": {"latency_p50_ms": 1.0, "latency_p95_ms": 2.0, "latency_p99_ms": 3.0,
...                 "latency_count": 500},
...     "hourly_loss": [{"start": 0.0, "n": 100, "mean": 0.2},
...                     {"start": 3600.0, "n": 200, "mean": 0.1}]}}}}
>>> live = live_figures(snapshot, "accuracy", last=3600)
>>> live["arm"], live["value"], live["n"], live["whole"]["value"]
('loan:1', 0.9, 200, 0.88)
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from typing import Any

from rollguard.preflight.config import PreflightInputError

__all__ = ["live_figures", "read_stats_snapshot", "read_requests_window",
           "read_deadletter_inputs"]

_METRIC_KEY = {"accuracy": "accuracy", "log_loss": "log_loss", "brier": "brier",
               "abs_error": "mae", "sq_error": "mse"}


def _utc(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def live_figures(snapshot: dict[str, Any], metric: str, last: float | None = None,
                 arm: str | None = None) -> dict[str, Any]:
    """The champion's live figures from a statistics snapshot (pure; see the module)."""
    decision = snapshot.get("decision") or {}
    arm = arm or decision.get("champion") or snapshot.get("champion")
    arms = (snapshot.get("statistics") or {}).get("arms") or {}
    figures = arms.get(arm) or {}
    outcomes = figures.get("outcomes") or {}
    out: dict[str, Any] = {"experiment": snapshot.get("experiment"), "arm": arm,
                           "metric": metric, "value": None, "n": 0,
                           "published_at": snapshot.get("published_at"),
                           "whole": {"value": outcomes.get(_METRIC_KEY[metric]),
                                     "n": outcomes.get("count")}}
    hours = [h for h in figures.get("hourly_loss") or [] if h.get("n") and
             h.get("mean") is not None]
    if hours and last is not None:
        newest_end = max(h["start"] for h in hours) + 3600.0
        chosen = [h for h in hours if h["start"] + 3600.0 > newest_end - last]
        n = sum(h["n"] for h in chosen)
        if n:
            loss = math.fsum(h["n"] * h["mean"] for h in chosen) / n
            value = 1.0 - loss if metric == "accuracy" else loss
            start = min(h["start"] for h in chosen)
            out.update(value=round(value, 6), n=n, window={
                "from": start, "to": newest_end, "hours": len(chosen)},
                window_text=f"event time {_utc(start)} to {_utc(newest_end)}")
    serving = figures.get("serving") or {}
    if serving.get("latency_count"):
        out["latency"] = {"arm": arm, **{k: serving.get(k) for k in (
            "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_count")}}
    return out


def read_stats_snapshot(bootstrap: str, topic: str, experiment: str, timeout: float = 10.0
                        ) -> dict[str, Any]:
    """The latest statistics snapshot of ``experiment``; PreflightInputError if none."""
    from rollguard.kafka.compacted import TopicUnavailable, latest_values

    try:
        latest = latest_values(bootstrap, topic, timeout=timeout)
    except TopicUnavailable as bad:
        raise PreflightInputError(str(bad)) from None
    if experiment not in latest:
        known = ", ".join(sorted(latest)) or "none"
        raise PreflightInputError(f"No statistics of experiment '{experiment}' in {topic} "
                                  f"(experiments there: {known}): is the worker running it?")
    return json.loads(latest[experiment])


def _consumer(bootstrap: str) -> Any:
    from rollguard.kafka.compacted import reader

    return reader(bootstrap, "preflight")


def _partitions(consumer: Any, bootstrap: str, topic: str, timeout: float) -> list[int]:
    from rollguard.kafka.compacted import TopicUnavailable, partitions_of

    try:
        return partitions_of(consumer, bootstrap, topic, timeout)
    except TopicUnavailable as exc:
        raise PreflightInputError(str(exc)) from None


def _read(consumer: Any, starts: dict[int, int], ends: dict[int, int], topic: str,
          timeout: float) -> list[Any]:
    from confluent_kafka import KafkaError, TopicPartition

    todo = {p for p in starts if ends[p] > starts[p]}
    if not todo:
        return []
    consumer.assign([TopicPartition(topic, p, starts[p]) for p in todo])
    messages = []
    deadline = time.monotonic() + timeout
    while todo and time.monotonic() < deadline:
        for message in consumer.consume(1000, timeout=0.5):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    todo.discard(message.partition())
                continue
            messages.append(message)
            if message.offset() + 1 >= ends[message.partition()]:
                todo.discard(message.partition())
    return messages


def read_requests_window(bootstrap: str, topic: str, experiment: str, last: float,
                         max_requests: int, timeout: float = 30.0
                         ) -> tuple[list[dict[str, Any]], int]:
    """The requests of ``experiment`` with ``features`` produced within the last ``last``
    seconds (newest ``max_requests`` kept, oldest first), decoded as the worker decodes them,
    and how many were not valid requests (the worker dead-letters those)."""
    from confluent_kafka import TopicPartition

    from rollguard.schemas.events import Invalid, decode_request

    consumer = _consumer(bootstrap)
    try:
        partitions = _partitions(consumer, bootstrap, topic, timeout)
        since_ms = int((time.time() - last) * 1000)
        asked = [TopicPartition(topic, p, since_ms) for p in partitions]
        found = consumer.offsets_for_times(asked, timeout=timeout)
        starts, ends = {}, {}
        for tp in found:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition),
                                                       timeout=timeout)
            ends[tp.partition] = high
            starts[tp.partition] = high if tp.offset < 0 else max(low, tp.offset)
        requests = []
        invalid = 0
        for message in _read(consumer, starts, ends, topic, timeout):
            request = decode_request(message.value() or b"")
            if isinstance(request, Invalid):
                invalid += 1
            elif request.experiment == experiment and request.features:
                requests.append({"request_id": request.request_id, "ts": request.ts,
                                 "features": dict(request.features)})
    finally:
        consumer.close()
    requests.sort(key=lambda r: r["ts"])
    return requests[-max_requests:], invalid


def read_deadletter_inputs(bootstrap: str, topic: str, experiment: str | None, limit: int,
                           timeout: float = 15.0) -> list[dict[str, Any]]:
    """Up to ``limit`` of the newest dead letters whose value is a JSON object with
    ``features`` (and, when it names one, ``experiment``): ``{features, error, origin}``."""
    from confluent_kafka import TopicPartition

    from rollguard.schemas.events import HEADER_ERROR, HEADER_OFFSET, HEADER_PARTITION, \
        HEADER_TOPIC

    if limit <= 0:
        return []
    consumer = _consumer(bootstrap)
    try:
        partitions = _partitions(consumer, bootstrap, topic, timeout)
        starts, ends = {}, {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            starts[p], ends[p] = max(low, high - 20 * limit), high
        found = []
        for message in _read(consumer, starts, ends, topic, timeout):
            try:
                value = json.loads(message.value() or b"")
            except (TypeError, ValueError):
                continue
            if not isinstance(value, dict) or not isinstance(value.get("features"), dict):
                continue
            if experiment is not None and value.get("experiment") not in (None, experiment):
                continue
            headers = {k: (v or b"").decode("utf-8", "replace")
                       for k, v in message.headers() or []}
            origin = (f"{headers.get(HEADER_TOPIC, '?')}[{headers.get(HEADER_PARTITION, '?')}]"
                      f"@{headers.get(HEADER_OFFSET, '?')}")
            found.append({"features": value["features"], "error": headers.get(HEADER_ERROR, ""),
                          "origin": origin})
    finally:
        consumer.close()
    return found[-limit:]
