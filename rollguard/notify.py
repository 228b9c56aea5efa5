"""Webhook notifications: each decision POSTed as JSON to the hooks of its experiment.

An experiment lists its hooks under ``notify:`` (docs/experiment-file.md). Each decision
whose action a hook lists is POSTed to it as one JSON object: the control event's
``experiment``, ``seq``, ``ts``, ``action``, ``mode``, ``champion``, ``traffic`` and
``reason``, a summary of its ``evidence``, an ``id`` (``experiment/seq``, also sent as the
``Idempotency-Key`` header) and a Slack-compatible ``text``: one readable line, so that a
Slack, Mattermost or Teams incoming webhook shows it as it is.

**Where notifications come from.** A :class:`Notifier` follows the control topic itself,
in a thread of the worker with its own consumer: ``read_committed``, consumer group
``<app-id>-notify``, whose offset of a message is committed only after every post of that
message has succeeded or been given up. The alternative, posting from the evaluator as it
decides, would have to happen either before the decision's transaction commits (a post of
a decision that an aborted transaction then never published) or after it, in memory (lost
when the worker is SIGKILLed between the commit and the post). Following the topic posts
exactly what was published, and the group's committed offset is the durable record of what
was posted: a worker SIGKILLed after publishing a decision, or in the middle of posting it,
leaves that message uncommitted, and whichever worker of the group holds the partition next
posts it. So **every decision is posted at least once** (unless a hook keeps failing for all
its attempts); it may be posted twice after a crash, which is why each post carries
``experiment`` and ``seq``: a receiver drops an ``(experiment, seq)`` it has seen. Several
workers of one app share the control topic's partitions in that group, as they share the
input's. The notifier never touches the event loop: a hook that is slow or down delays only
later posts, never a decision. A new group (no committed offset) starts with the decisions
published in the hour before it first ran, rather than every decision the compacted topic
still holds; from then on, its committed offsets say where it is.

**Attempts.** One attempt waits at most the hook's ``timeout``; a failed one (no answer, a
refused connection, HTTP 5xx, 408 or 429) is tried again after 1 s, 2 s, 4 s … (at most
30 s, or what ``Retry-After`` asks within that), up to the hook's ``attempts``; another
HTTP 4xx, or a redirect, is not tried again. Giving up writes one warning line; the
decision stands.

>>> event = {"experiment": "churn-v7", "seq": 2, "ts": 1700000279.5, "action": "promote",
...          "mode": "shadow", "champion": "churn:7", "traffic": {"churn:7": 1.0},
...          "shadow": [], "reason": "churn:7 is promoted: its accuracy is at least the "
...          "champion's (Δ ≥ +0.063).", "evidence": {"metric": "accuracy", "records": 500}}
>>> body = payload(event)
>>> body["text"]
"rollguard · churn-v7 · promote (seq 2): churn:7 is promoted: its accuracy is at least the champion's (Δ ≥ +0.063)."
>>> body["id"], body["evidence"]
('churn-v7/2', {'metric': 'accuracy', 'records': 500})
>>> result = deliver("http://127.0.0.1:1/hook", encode_payload(body), timeout=1.0,
...                  attempts=2, backoff=0.0)  # nothing listens on port 1
>>> result.ok, result.attempts, result.problem
(False, 2, 'connection refused')
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

from rollguard import __version__

__all__ = ["payload", "encode_payload", "slack_text", "evidence_summary", "deliver", "Delivery",
           "Notifier", "redact", "RETRY_STATUSES", "NEW_GROUP_LOOKBACK_S"]

log = logging.getLogger("rollguard.notify")

#: HTTP statuses worth another attempt (besides 5xx)
RETRY_STATUSES = frozenset({408, 425, 429})
#: a new notify group starts with the decisions published this long before it first ran
NEW_GROUP_LOOKBACK_S = 3600.0
#: the longest pause between two attempts, in seconds
MAX_BACKOFF_S = 30.0

_SCALAR = (str, int, float, bool, type(None))


# -- the payload ----------------------------------------------------------------------------
def slack_text(event: Mapping[str, Any]) -> str:
    """One readable line for people (Slack's ``text``; ``&``, ``<``, ``>`` escaped as Slack
    asks)."""
    line = (f"rollguard · {event['experiment']} · {event['action']} (seq {event['seq']}): "
            f"{event.get('reason', '')}")
    line = " ".join(line.split())
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def evidence_summary(evidence: Mapping[str, Any] | None) -> dict[str, Any]:
    """The evidence's figures that fit a notification: its plain values and the plain
    values of its mappings (``traffic``, ``srm`` …), and per candidate its status, n, the
    bounds of Δ and each guardrail's status; not the tests' internals.

    >>> evidence_summary({"metric": "accuracy", "traffic": {"m:1": 1.0}, "candidates": {
    ...     "m:2": {"status": "active", "n": {"m:1": 9, "m:2": 9}, "alpha": 0.05,
    ...             "delta": {"estimate": 0.1, "lower": 0.02, "upper": 0.2, "method": "…"},
    ...             "guardrails": [{"guardrail": "error_rate <= 0.05", "status": "pass"}]}}})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'metric': 'accuracy', 'traffic': {'m:1': 1.0}, 'candidates': {'m:2': {'status': 'active',
     'n': {'m:1': 9, 'm:2': 9}, 'delta': {'estimate': 0.1, 'lower': 0.02, 'upper': 0.2},
     'guardrails': {'error_rate <= 0.05': 'pass'}}}}
    """
    summary: dict[str, Any] = {}
    for key, value in (evidence or {}).items():
        if isinstance(value, _SCALAR):
            summary[key] = value
        elif key == "candidates" and isinstance(value, Mapping):
            summary[key] = {arm: _candidate_summary(c) for arm, c in value.items()
                            if isinstance(c, Mapping)}
        elif isinstance(value, Mapping):
            plain = {k: v for k, v in value.items() if isinstance(v, _SCALAR)}
            if plain:
                summary[key] = plain
    return summary


def _candidate_summary(candidate: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"status": candidate.get("status"), "n": candidate.get("n")}
    delta = candidate.get("delta")
    if isinstance(delta, Mapping):
        out["delta"] = {k: delta.get(k) for k in ("estimate", "lower", "upper") if k in delta}
    guardrails = candidate.get("guardrails")
    if isinstance(guardrails, list):
        out["guardrails"] = {
            str(g.get("guardrail", g.get("metric", f"#{i}"))): g.get("status")
            for i, g in enumerate(guardrails) if isinstance(g, Mapping)}
    return out


def payload(event: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object a hook receives for one control event (a decoded JSON object)."""
    body: dict[str, Any] = {"text": slack_text(event),
                            "id": f"{event['experiment']}/{event['seq']}"}
    for key in ("experiment", "seq", "ts", "action", "mode", "champion", "traffic", "shadow",
                "reason"):
        if key in event:
            body[key] = event[key]
    body["evidence"] = evidence_summary(event.get("evidence"))
    return body


def encode_payload(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def redact(url: str) -> str:
    """The URL as logs show it: scheme, host and port; a path (Slack's holds the secret)
    becomes ``/…``.

    >>> redact("https://hooks.slack.com/services/T000/B000/XXXX")
    'https://hooks.slack.com/…'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{rest}"


# -- one hook, several attempts -----------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    """How posting one notification to one hook went."""

    ok: bool
    attempts: int
    status: int | None = None      # the last HTTP status, if any answer came
    problem: str | None = None     # why the last attempt failed, in a few words
    seconds: float = 0.0
    abandoned: bool = False        # stopped before it succeeded or gave up (worker stopping)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is an answer (HTTPError), never a silent GET elsewhere


_OPENER = urllib.request.build_opener(_NoRedirect)


def _attempt(url: str, body: bytes, timeout: float, headers: Mapping[str, str]
             ) -> tuple[bool, bool, int | None, str | None, float | None]:
    """One POST: (ok, worth retrying, status, problem, Retry-After seconds)."""
    request = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            answer.read(65536)
            return True, False, answer.status, None, None
    except urllib.error.HTTPError as error:
        status = error.code
        retry_after = _retry_after(error.headers.get("Retry-After") if error.headers else None)
        error.close()
        problem = f"HTTP {status} {error.reason}".strip()
        if 300 <= status < 400:
            return False, False, status, problem + " (a redirect: give the final URL)", None
        return False, status >= 500 or status in RETRY_STATUSES, status, problem, retry_after
    except urllib.error.URLError as error:
        return False, True, None, _network_problem(error.reason, timeout), None
    except (OSError, http.client.HTTPException) as error:
        return False, True, None, _network_problem(error, timeout), None


def _network_problem(reason: Any, timeout: float) -> str:
    if isinstance(reason, (TimeoutError, socket.timeout)) or "timed out" in str(reason):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return "host not found"
    if isinstance(reason, http.client.RemoteDisconnected):
        return "the connection closed without an answer"
    text = str(getattr(reason, "strerror", None) or reason) or type(reason).__name__
    return " ".join(text.split())


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when is not None else None


def deliver(url: str, body: bytes, *, timeout: float = 5.0, attempts: int = 5,
            backoff: float = 1.0, max_backoff: float = MAX_BACKOFF_S,
            headers: Mapping[str, str] | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> Delivery:
    """POST ``body`` (JSON) to ``url`` until it succeeds (2xx) or ``attempts`` are used.

    Between attempts it waits ``backoff`` × 1, 2, 4 … seconds (at most ``max_backoff``, or
    a ``Retry-After`` within it); ``should_stop()`` true ends it early (``abandoned``).
    """
    began = time.monotonic()
    sent = {"Content-Type": "application/json", "User-Agent": f"rollguard/{__version__}",
            **(headers or {})}
    status = problem = None
    for attempt in range(1, attempts + 1):
        ok, retry, status, problem, retry_after = _attempt(url, body, timeout, sent)
        if ok:
            return Delivery(True, attempt, status, None, time.monotonic() - began)
        if not retry or attempt == attempts:
            return Delivery(False, attempt, status, problem, time.monotonic() - began)
        pause = min(max_backoff, backoff * 2 ** (attempt - 1))
        if retry_after is not None:
            pause = min(max_backoff, max(pause, retry_after))
        if _sleep_unless(pause, should_stop):
            return Delivery(False, attempt, status, problem, time.monotonic() - began,
                            abandoned=True)
    return Delivery(False, attempts, status, problem, time.monotonic() - began)  # attempts < 1


def _sleep_unless(seconds: float, should_stop: Callable[[], bool]) -> bool:
    """Sleep ``seconds`` unless ``should_stop()`` turns true first (then return True)."""
    end = time.monotonic() + seconds
    while True:
        if should_stop():
            return True
        left = end - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(left, 0.1))


def worst_case_seconds(timeout: float, attempts: int, backoff: float = 1.0,
                       max_backoff: float = MAX_BACKOFF_S) -> float:
    """The longest :func:`deliver` can take with these settings.

    >>> worst_case_seconds(5.0, 5)  # 5 attempts of 5 s, pauses of 1 + 2 + 4 + 8 s
    40.0
    """
    pauses = sum(min(max_backoff, backoff * 2 ** i) for i in range(attempts - 1))
    return attempts * timeout + pauses


# -- following the control topic ----------------------------------------------------------------
class Notifier(threading.Thread):
    """Posts the decisions of the control topic to the hooks of their experiment.

    ``hooks``: experiment name -> its ``notify`` entries (``url``, ``actions``, ``timeout``,
    ``attempts``). Start it with :meth:`start`; :meth:`stop` lets it post what was already
    published for up to ``drain`` seconds, then leaves the group.
    """

    def __init__(self, bootstrap: str, topic: str, group: str,
                 hooks: Mapping[str, Sequence[Any]], *, backoff: float = 1.0,
                 max_backoff: float = MAX_BACKOFF_S, lookback: float = NEW_GROUP_LOOKBACK_S,
                 instance_id: str | None = None, session_timeout: float = 10.0) -> None:
        super().__init__(name="rollguard-notify", daemon=True)
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.instance_id, self.session_timeout = instance_id, session_timeout
        self.hooks = {name: tuple(entries) for name, entries in hooks.items() if entries}
        self.backoff, self.max_backoff, self.lookback = backoff, max_backoff, lookback
        self.started_at = time.time()
        self.posted = 0     # posts that succeeded
        self.given_up = 0   # posts given up
        self._stop_asked = threading.Event()
        self._deadline = float("inf")
        self._assigned: set[int] = set()
        self._at_end: set[int] = set()
        self._kafka_problem: str | None = None
        widest = max((len(entries) for entries in self.hooks.values()), default=1)
        self._pool = ThreadPoolExecutor(max_workers=max(1, widest),
                                        thread_name_prefix="rollguard-notify-post")

    @classmethod
    def for_worker(cls, config: Any, **kwargs: Any) -> Notifier | None:
        """The notifier of a worker's config (its experiments' ``notify``), or None when no
        experiment has a hook."""
        hooks = {e.name: e.notify for e in config.experiments if getattr(e, "notify", None)}
        if not hooks:
            return None
        instance = f"{config.instance_id}-notify" if config.instance_id else None
        return cls(config.bootstrap, config.names.control, f"{config.app_id}-notify", hooks,
                   instance_id=instance, **kwargs)

    # -- the thread ---------------------------------------------------------------------------
    def stop(self, drain: float = 5.0, wait: float | None = None) -> bool:
        """Post what was published up to now for at most ``drain`` seconds, then stop; wait
        for that up to ``wait`` seconds (default: ``drain`` + 2). True if it stopped: what
        it did not post stays uncommitted, for the next worker to post."""
        self._deadline = time.monotonic() + drain
        self._stop_asked.set()
        if self.is_alive():
            self.join(drain + 2.0 if wait is None else wait)
        stopped = not self.is_alive()
        if not stopped:
            log.warning("The notifier is still waiting on a hook after %.0f s; what it has not "
                        "posted is posted when a worker of the group starts again.",
                        drain + 2.0 if wait is None else wait)
        return stopped

    def _stopping(self) -> bool:
        return self._stop_asked.is_set() and time.monotonic() >= self._deadline

    def run(self) -> None:
        try:
            self._follow()
        except Exception:  # noqa: BLE001 - never take the worker down; say it once
            log.exception("The notifier stopped on an unexpected error: decisions are still "
                          "published, but not posted until the worker restarts; this is a "
                          "rollguard bug, please report it.")
        finally:
            self._pool.shutdown(wait=False)

    def _follow(self) -> None:
        from confluent_kafka import Consumer, KafkaError, KafkaException

        from rollguard.kafka.clients import client_config

        longest = max(worst_case_seconds(h.timeout, h.attempts, self.backoff, self.max_backoff)
                      for entries in self.hooks.values() for h in entries)
        settings = {
            "group.id": self.group, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "isolation.level": "read_committed",
            "enable.partition.eof": True,
            # a SIGKILLed worker's partitions go to the others after this (heartbeats come
            # from librdkafka's thread, posting does not hold them up)
            "session.timeout.ms": int(self.session_timeout * 1000),
            # one message's posts run between two polls: the group must wait that long
            "max.poll.interval.ms": int(max(300.0, longest + 60.0) * 1000)}
        if self.instance_id:  # static membership: a restarted worker takes its partitions back
            settings["group.instance.id"] = self.instance_id
        consumer = Consumer(client_config(self.bootstrap, **settings))
        consumer.subscribe([self.topic], on_assign=self._on_assign,
                           on_revoke=self._on_revoke, on_lost=self._on_revoke)
        log.info("notifications: following %s as consumer group %s for %d hook%s of %s",
                 self.topic, self.group, sum(map(len, self.hooks.values())),
                 "" if sum(map(len, self.hooks.values())) == 1 else "s",
                 ", ".join(sorted(self.hooks)),
                 extra={"topic": self.topic, "group": self.group,
                        "experiments": sorted(self.hooks)})
        try:
            while True:
                if self._stop_asked.is_set() and (
                        self._stopping() or self._at_end >= self._assigned):
                    break
                message = consumer.poll(0.2)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        self._at_end.add(message.partition())
                    else:
                        self._kafka_trouble(error.str())
                    continue
                self._at_end.discard(message.partition())
                if self._kafka_problem is not None:
                    log.info("notifications: reading %s again", self.topic)
                    self._kafka_problem = None
                if not self.handle(message.key(), message.value()):
                    break  # stopping in the middle of its posts: left for the next run
                try:
                    consumer.commit(message=message, asynchronous=False)
                except KafkaException as exc:  # the partition moved on, or the broker is gone
                    self._kafka_trouble(f"its offset could not be committed "
                                        f"({exc.args[0].str()}); it may be posted again")
        finally:
            consumer.close()

    def _kafka_trouble(self, what: str) -> None:
        if self._kafka_problem is None:
            log.warning("notifications: %s: %s; the notifier keeps trying.", self.topic, what)
        self._kafka_problem = what

    def _on_assign(self, consumer: Any, partitions: list) -> None:
        """Partitions of a new group start with the decisions of the last ``lookback``
        seconds (an offset committed at once, so a restart continues from there)."""
        from confluent_kafka import KafkaException, TopicPartition

        self._assigned = {tp.partition for tp in partitions}
        self._at_end &= self._assigned
        try:
            committed = consumer.committed(partitions, timeout=10)
            fresh = [tp.partition for tp in committed if tp.offset < 0]
            starts: dict[int, int] = {}
            if fresh:
                since = int((self.started_at - self.lookback) * 1000)
                found = consumer.offsets_for_times(
                    [TopicPartition(self.topic, p, since) for p in fresh], timeout=10)
                latest = {tp.partition: tp.offset for tp in consumer.offsets_for_times(
                    [TopicPartition(self.topic, p, -1) for p in fresh], timeout=10)}
                for tp in found:
                    start = tp.offset if tp.offset >= 0 else latest.get(tp.partition, -1)
                    if start >= 0:
                        starts[tp.partition] = start
                if starts:
                    consumer.commit(offsets=[TopicPartition(self.topic, p, o)
                                             for p, o in starts.items()], asynchronous=False)
            for tp in partitions:
                if tp.partition in starts:
                    tp.offset = starts[tp.partition]
        except KafkaException as exc:  # the group's offsets then decide (or the earliest)
            self._kafka_trouble(f"the assigned partitions' offsets could not be read "
                                f"({exc.args[0].str()})")
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Any, partitions: list) -> None:
        gone = {tp.partition for tp in partitions}
        self._assigned -= gone
        self._at_end -= gone

    # -- one message --------------------------------------------------------------------------
    def handle(self, key: bytes | None, value: bytes | None) -> bool:
        """Post one control message to its experiment's hooks; False if it was abandoned
        (the worker is stopping) and must be posted again."""
        name = (key or b"").decode("utf-8", "replace")
        hooks = self.hooks.get(name)
        if not hooks or value is None:
            return True
        try:
            event = json.loads(value)
            action, seq = event["action"], event["seq"]
            targets = [hook for hook in hooks if action in hook.actions]
            body = encode_payload(payload(event)) if targets else b""
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("notifications: a message of %s for %s is not a control event; "
                        "skipped", self.topic, name)
            return True
        if not targets:
            return True
        headers = {"Idempotency-Key": f"{name}/{seq}"}

        def post(hook: Any) -> Delivery:
            return deliver(hook.url, body, timeout=hook.timeout, attempts=hook.attempts,
                           backoff=self.backoff, max_backoff=self.max_backoff,
                           headers=headers, should_stop=self._stopping)

        results = ([post(targets[0])] if len(targets) == 1
                   else list(self._pool.map(post, targets)))
        for hook, result in zip(targets, results):
            if result.ok:
                self.posted += 1
                log.debug("notifications: %s seq %s (%s) posted to %s", name, seq, action,
                          redact(hook.url))
            elif not result.abandoned:
                self.given_up += 1
                log.warning(
                    "notifications: gave up posting %s seq %s (%s) to %s after %d attempt%s "
                    "in %.0f s (%s); the decision stands, only this post is lost.", name, seq,
                    action, redact(hook.url), result.attempts,
                    "" if result.attempts == 1 else "s", result.seconds, result.problem,
                    extra={"experiment": name, "seq": seq, "action": action,
                           "hook": redact(hook.url), "attempts": result.attempts,
                           "problem": result.problem})
        return not any(result.abandoned for result in results)
