"""``Router``: reads the compacted control topic and answers "who serves this unit" locally.

A daemon thread assigns every partition of the control topic from the beginning (no
consumer group, no commits, ``read_committed``), applies each control event whose ``seq``
is newer than the last applied for its experiment, and swaps in a new immutable routing
snapshot. :meth:`Router.route` reads that snapshot: no lock, no network call, safe from
any thread and from asyncio code.

Fail-safe: before any state for an experiment, the champion you give (``experiments=``)
serves (given the experiment file, a shadow experiment's candidates also score from the
first request); when the control topic stays unreachable for ``fail_safe_after`` seconds,
every experiment falls back to its last known champion until the topic answers again.

>>> router = Router("127.0.0.1:1", experiments={"churn-v7": "churn:6"})  # not started
>>> router.route("churn-v7", "user-42")
Route(serve='churn:6', shadow=())
>>> router.state("churn-v7") is None
True
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import logging
import threading
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from rollguard.kafka.clients import client_config
from rollguard.schemas.events import ENDING_ACTIONS, ControlEvent, decode_control, ends_experiment
from rollguard.serving.assignment import Layout, TrafficError
from rollguard.serving.interleaving import CANDIDATE, team_draft
from rollguard.streams.topics import TopicNames

log = logging.getLogger("rollguard.serving.router")

#: actions after which the champion serves everything and nothing follows (a ``promote``
#: routes by its own traffic and shadow: see :func:`~rollguard.schemas.events.ends_experiment`)
FINAL_ACTIONS = ENDING_ACTIONS


# -- what the router holds -----------------------------------------------------------------

class Route(NamedTuple):
    """Who answers a request (``serve``) and which arms score it without serving (``shadow``).

    ``interleave``: mode interleave, where the user sees the team-draft interleaving of the
    ``serve`` arm's and the ``shadow`` arm's rankings (:meth:`shown` builds it).
    """

    serve: str
    shadow: tuple[str, ...] = ()
    interleave: bool = False

    @property
    def arms(self) -> tuple[str, ...]:
        """Every arm to call: the served one first.

        >>> Route("m:1", ("m:2",)).arms
        ('m:1', 'm:2')
        """
        return (self.serve, *self.shadow)

    def shown(self, experiment: str, request_id: str,
              lists: Mapping[str, Sequence[str]], length: int | None = None
              ) -> list[tuple[str, str]]:
        """The list to show a user, as ``(item, arm)`` pairs: the team-draft interleaving of
        the arms' rankings when :attr:`interleave`, else the served arm's ranking.

        ``lists``: each arm's ranked item ids (best first); ``length``: at most this many
        items (default: the longer list's length). The worker builds the same interleaving
        from the reported predictions, so it credits each engaged item to the arm that
        placed it (docs/serving.md, "The interleaving rule").

        >>> lists = {"recs:1": ["a", "b", "c"], "recs:2": ["b", "d", "a"]}
        >>> Route("recs:1", ("recs:2",), interleave=True).shown("recs-v2", "req-1", lists)
        [('b', 'recs:2'), ('a', 'recs:1'), ('d', 'recs:2')]
        >>> Route("recs:1").shown("recs-v2", "req-1", lists, length=2)
        [('a', 'recs:1'), ('b', 'recs:1')]
        """
        if not self.interleave or not self.shadow:
            ranked = list(lists[self.serve])
            return [(item, self.serve) for item in ranked[:len(ranked) if length is None
                                                             else length]]
        other = self.shadow[0]
        merged = team_draft(lists[self.serve], lists[other], experiment, request_id, length)
        return [(item, other if team == CANDIDATE else self.serve) for item, team in merged]

    def __repr__(self) -> str:
        text = f"Route(serve={self.serve!r}, shadow={self.shadow!r}"
        return text + (", interleave=True)" if self.interleave else ")")


class UnknownExperiment(LookupError):
    """``route()`` was asked about an experiment with no state and no champion to fall back to."""


@dataclass(frozen=True)
class ExperimentState:
    """The latest control event applied for one experiment."""

    experiment: str
    seq: int
    ts: float
    action: str
    mode: str
    champion: str
    traffic: Mapping[str, float]
    shadow: tuple[str, ...]
    reason: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    applied_at: float = 0.0  # time.time() when the router applied it

    @property
    def final(self) -> bool:
        """True after ``rollback``, ``hold`` or ``complete`` (and ``promote`` without a bake
        window: its traffic is then the new champion's alone)."""
        return ends_experiment(self.action, self.champion, self.traffic, self.shadow)

    @classmethod
    def from_event(cls, event: Any, applied_at: float | None = None) -> ExperimentState:
        """From a decoded control event (any object with the fields of docs/events.md)."""
        return cls(
            experiment=event.experiment, seq=event.seq, ts=event.ts, action=event.action,
            mode=event.mode, champion=event.champion,
            traffic=MappingProxyType(dict(event.traffic or {event.champion: 1.0})),
            shadow=tuple(event.shadow or ()), reason=event.reason or "",
            evidence=MappingProxyType(dict(event.evidence or {})),
            applied_at=time.time() if applied_at is None else applied_at,
        )


@dataclass(frozen=True)
class _Table:
    """The routing of one experiment: one Route per arm with a share, and their bounds."""

    routes: tuple[Route, ...]
    bounds: tuple[int, ...]

    @classmethod
    def champion_only(cls, champion: str) -> _Table:
        return cls((Route(champion),), ())

    @classmethod
    def of(cls, state: ExperimentState) -> _Table:
        """The routing a state asks for; raises TrafficError when its traffic is unusable."""
        if state.final:  # rollback / hold / complete: the champion takes everything
            return cls.champion_only(state.champion)
        extra = tuple(dict.fromkeys(state.shadow))  # de-duplicated, order kept
        if state.mode in ("shadow", "interleave"):
            others = tuple(a for a in extra if a != state.champion)
            return cls((Route(state.champion, others,
                              interleave=state.mode == "interleave" and bool(others)),), ())
        layout = Layout.of(state.champion, state.traffic)
        routes = tuple(Route(arm, tuple(a for a in extra if a != arm)) for arm in layout.arms)
        return cls(routes, layout.bounds if len(routes) > 1 else ())


def _routes_before_state(experiments: Any) -> dict[str, Route]:
    """What each experiment routes before its first control event: its champion serves, and
    a shadow experiment's candidates score at once (they serve nobody, so this is safe
    without the worker's word: the first requests join too).

    ``experiments``: a mapping experiment → champion ``model:version`` (no candidates known:
    they shadow once the worker's ``start`` arrives), objects with ``.name`` and
    ``.champion`` (and ``.mode``, ``.candidates``: parsed experiment files), or the path of
    an experiment file.

    >>> _routes_before_state({"churn-v7": "churn:6"})
    {'churn-v7': Route(serve='churn:6', shadow=())}
    """
    if experiments is None:
        return {}
    if isinstance(experiments, (str, os.PathLike)):
        from rollguard.schemas import load_experiments

        experiments = load_experiments(experiments)
    if isinstance(experiments, Mapping):
        routes = [(name, champion, ()) for name, champion in experiments.items()]
    else:
        try:
            routes = [(e.name, e.champion, tuple(e.candidates)
                       if getattr(e, "mode", None) == "shadow" else ()) for e in experiments]
        except AttributeError:
            raise TypeError(
                "experiments must be a mapping experiment -> 'model:version', a list of "
                "objects with .name and .champion, or an experiment file's path.") from None
    for name, champion, _ in routes:
        if not isinstance(name, str) or not isinstance(champion, str) or ":" not in champion:
            raise ValueError(
                f"the champion of experiment {name!r} must be a 'model:version' string, "
                f"got {champion!r}.")
    return {name: Route(champion, shadow) for name, champion, shadow in routes}


def _serves_champion(state: ExperimentState) -> bool:
    """True when the state's routing already serves only its champion (a final decision, or
    a shadow experiment, whose candidates score without serving): failing safe keeps it."""
    return state.final or state.mode == "shadow"


# -- the router ----------------------------------------------------------------------------

class Router:
    """Routes units to arms from the control topic's state, failing safe to the champion.

    ``bootstrap_servers``: Kafka's ``host:port`` list. ``experiments``: what to route before
    any state: the experiment file's path (or its parsed experiments), so that the champion
    serves and a shadow experiment's candidates score from the first request; or a mapping
    experiment → champion ``model:version`` (candidates then shadow from the worker's
    ``start``, which comes with the first record: the first requests do not join).
    ``topic_prefix``: as in
    :class:`TopicNames` (default ``ROLLGUARD_TOPIC_PREFIX`` or ``rollguard.``).
    ``fail_safe_after``: seconds the control topic may stay unreachable before every
    experiment is served by its last known champion (0: at once; None: never, keep the last
    state; a shadow experiment keeps scoring its candidates, which serve nobody).
    ``consumer_config``: extra librdkafka settings.
    """

    def __init__(self, bootstrap_servers: str, experiments: Any = None,
                 topic_prefix: str | None = None, *, fail_safe_after: float | None = 5.0,
                 consumer_config: Mapping[str, Any] | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = TopicNames(topic_prefix).control
        self.fail_safe_after = fail_safe_after
        self._consumer_config = dict(consumer_config or {})
        self._fallback = _routes_before_state(experiments)
        self._states: dict[str, ExperimentState] = {}
        self._failed_safe = False
        # the snapshot route() reads; replaced whole, never mutated
        self._tables: dict[str, _Table] = {}
        self._listeners: list[Callable[[ExperimentState], None]] = []
        self._listeners_lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unreachable_since: float | None = None  # confirmed by a failed metadata request
        self._down_hint: float | None = None  # librdkafka said "all brokers down": to confirm
        self._warned_unreachable = False
        #: control events applied, ignored as stale (seq not newer) and skipped as invalid
        self.applied = 0
        self.stale = 0
        self.invalid = 0
        self._publish()

    # -- the request path --------------------------------------------------------------
    def route(self, experiment: str, unit: str | None = None, *,
              request_id: str | None = None) -> Route:
        """The arm serving ``unit`` (or, with no unit, ``request_id``) and the arms to shadow.

        Sticky and deterministic by the assignment rule of docs/events.md; no lock, no network call.
        """
        table = self._tables.get(experiment)
        if table is None:
            raise UnknownExperiment(
                f"experiment {experiment!r} has no control state yet and no champion to fall "
                "back to: pass the experiment file (experiments='experiments.yaml') to Router.")
        routes = table.routes
        if len(routes) == 1:
            return routes[0]
        key = unit if unit is not None else request_id
        if key is None:
            raise ValueError("route() needs a unit or a request_id to assign by.")
        digest = hashlib.sha256(f"{experiment}/{key}".encode()).digest()
        return routes[bisect_right(table.bounds, int.from_bytes(digest[:8], "big"))]

    def state(self, experiment: str) -> ExperimentState | None:
        """The latest control event applied for ``experiment``, or None before any."""
        return self._states.get(experiment)

    def states(self) -> dict[str, ExperimentState]:
        """Every experiment's latest applied control event."""
        return dict(self._states)

    @property
    def ready(self) -> bool:
        """True once the router has read the control topic up to its end as seen at start."""
        return self._ready.is_set()

    @property
    def failed_safe(self) -> bool:
        """True while the control topic is unreachable and every experiment serves its champion."""
        return self._failed_safe

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until caught up with the control topic; False if ``timeout`` passed first."""
        return self._ready.wait(timeout)

    async def wait_ready_async(self, timeout: float | None = None) -> bool:
        """:meth:`wait_ready` for asyncio code (waits in a worker thread)."""
        return await asyncio.to_thread(self._ready.wait, timeout)

    def on_change(self, callback: Callable[[ExperimentState], None], replay: bool = True) -> None:
        """Call ``callback(state)`` from the router's thread after each applied control event.

        With ``replay`` it is first called with every state already applied, so a listener
        added late misses nothing. Keep it quick (hand slow work to your own thread); an
        exception it raises is logged and does not stop the router.
        """
        with self._listeners_lock:
            if replay:
                for state in list(self._states.values()):
                    self._notify_one(callback, state)
            self._listeners.append(callback)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Router:
        """Start following the control topic in a daemon thread; returns at once."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="rollguard-router", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and close the consumer. Routing keeps answering from the last state."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Router:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Router:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    # -- the consumer thread --------------------------------------------------------------
    def _consumer(self) -> Consumer:
        config = client_config(
            self.bootstrap_servers,
            **{"group.id": f"rollguard-router-{uuid.uuid4().hex}",  # required; never joined
               "enable.auto.commit": False,
               "enable.auto.offset.store": False,
               "isolation.level": "read_committed",  # control events come in transactions
               "enable.partition.eof": True,  # how we know we caught up
               "fetch.wait.max.ms": 100,  # a committed event is fetched within ~0.1 s
               "reconnect.backoff.max.ms": 1000,
               "client.id": "rollguard-router",
               "error_cb": self._on_kafka_error})
        config.update(self._consumer_config)
        return Consumer(config)

    def _run(self) -> None:
        try:
            consumer = self._consumer()
        except KafkaException as exc:
            log.error("The router could not create its Kafka consumer (%s); it serves "
                      "champions.", exc)
            return
        try:
            partitions = None
            eof: set[int] = set()
            next_probe = 0.0
            while not self._stop.is_set():
                now = time.monotonic()
                suspect = self._unreachable_since is not None or self._down_hint is not None
                if partitions is None or (suspect and now >= next_probe):
                    next_probe = now + 1.0
                    found = self._partitions(consumer)
                    if found is None:
                        self._check_fail_safe()
                        self._stop.wait(0.5)
                        continue
                    self._set_reachable()
                    if partitions is None:
                        partitions = found
                        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING)
                                         for p in partitions])
                # poll() returns at the first message; consume() would wait out its timeout
                first = consumer.poll(0.2)
                if first is None:
                    self._check_fail_safe()
                    continue
                messages = [first, *consumer.consume(num_messages=500, timeout=0)]
                with self._listeners_lock:  # on_change's replay sees a whole batch or none of it
                    self._handle(messages, partitions, eof)
                self._check_fail_safe()
        except Exception:  # noqa: BLE001 - never let the thread die silently
            log.exception("The router's consumer thread stopped on an unexpected error; routing "
                          "keeps its last state.")
        finally:
            consumer.close()

    def _handle(self, messages: list[Any], partitions: list[int], eof: set[int]) -> None:
        """Apply a batch of control messages, then publish once and tell the listeners."""
        changed: list[ExperimentState] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._set_reachable()
                    eof.add(message.partition())
                else:
                    log.debug("Control topic consumer error: %s", error)
                continue
            self._set_reachable()
            state = self._apply(message)
            if state is not None:
                changed.append(state)
        if changed:
            self._publish()
            self._notify(changed)
        if not self._ready.is_set() and eof >= set(partitions):  # after publishing, not before
            self._ready.set()
            log.info("The router caught up with %s (%d experiments).",
                     self.topic, len(self._states))

    def _partitions(self, consumer: Consumer) -> list[int] | None:
        """The control topic's partitions, or None (warned once) when it cannot be had."""
        try:
            metadata = consumer.list_topics(self.topic, timeout=2.0).topics.get(self.topic)
        except KafkaException as exc:
            self._set_unreachable(
                f"Kafka at {self.bootstrap_servers} does not answer ({exc.args[0].str()})")
            return None
        if metadata is None or metadata.error is not None or not metadata.partitions:
            self._set_unreachable(f"the control topic {self.topic} does not exist")
            return None
        return sorted(metadata.partitions)

    def _apply(self, message: Any) -> ExperimentState | None:
        """Apply one control message; the new state, or None when stale, invalid or a tombstone."""
        value = message.value()
        if value is None:  # a tombstone: the compacted topic forgets; the router keeps its state
            return None
        event = decode_control(value)
        where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
        if not isinstance(event, ControlEvent):
            self.invalid += 1
            log.warning("Skipped the control event at %s: %s", where, event.reason)
            return None
        current = self._states.get(event.experiment)
        if current is not None and event.seq <= current.seq:
            self.stale += 1
            log.debug("Ignored control event at %s: seq %d is not newer than %d.",
                      where, event.seq, current.seq)
            return None
        state = ExperimentState.from_event(event)
        try:
            _Table.of(state)
        except TrafficError as exc:
            self.invalid += 1
            log.warning("Skipped invalid control event at %s: %s", where, exc)
            return None
        self._states[state.experiment] = state
        self.applied += 1
        return state

    def _publish(self) -> None:
        """Build and swap in the routing snapshot from the fallback champions and the states."""
        tables = {name: _Table((route,), ()) for name, route in self._fallback.items()}
        for name, state in self._states.items():
            tables[name] = (_Table.of(state) if not self._failed_safe or _serves_champion(state)
                            else _Table.champion_only(state.champion))
        self._tables = tables  # one reference swap: route() sees the old or the new, whole

    def _notify(self, states: Iterable[ExperimentState]) -> None:
        for state in states:  # the caller holds _listeners_lock
            for callback in self._listeners:
                self._notify_one(callback, state)

    @staticmethod
    def _notify_one(callback: Callable[[ExperimentState], None], state: ExperimentState) -> None:
        try:
            callback(state)
        except Exception:  # noqa: BLE001 - a listener's bug must not stop routing
            log.exception("A router listener failed on %s seq %d.", state.experiment, state.seq)

    # -- reachability ---------------------------------------------------------------------
    def _on_kafka_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            # a hint only: such reports can arrive after the broker is back, so the loop
            # confirms with a metadata request before anything changes
            if self._down_hint is None:
                self._down_hint = time.monotonic()
        elif error.fatal():
            log.error("The router's Kafka consumer failed: %s.", error.str())
        else:
            log.debug("Kafka: %s", error.str())

    def _set_unreachable(self, why: str) -> None:
        if self._unreachable_since is None:  # the outage began at the first sign of it
            self._unreachable_since = self._down_hint or time.monotonic()
        if not self._warned_unreachable:
            self._warned_unreachable = True
            if self.fail_safe_after is None:
                then = "it keeps its last state until it can"
            elif self.fail_safe_after == 0 or not self._states:
                then = "it serves champions until it can"
            else:
                then = (f"it keeps its last state for {self.fail_safe_after:g} s, then serves "
                        "champions")
            log.warning("The router cannot read the control topic %s: %s; %s.",
                        self.topic, why, then)

    def _set_reachable(self) -> None:
        self._down_hint = None
        if self._unreachable_since is None:
            return
        self._unreachable_since = None
        if self._warned_unreachable:
            self._warned_unreachable = False
            log.warning("The router reads the control topic %s again.", self.topic)
        if self._failed_safe:
            self._failed_safe = False
            self._publish()

    def _check_fail_safe(self) -> None:
        if (self._unreachable_since is None or self._failed_safe or self.fail_safe_after is None
                or time.monotonic() - self._unreachable_since < self.fail_safe_after):
            return
        self._failed_safe = True
        self._publish()
        log.warning("The control topic %s has been unreachable for %.1f s: every experiment is "
                    "now served by its champion.",
                    self.topic, time.monotonic() - self._unreachable_since)
