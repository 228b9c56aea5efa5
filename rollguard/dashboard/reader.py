"""The dashboard's own consumer of ``control``, ``stats``, ``history`` and ``deadletter``.

It assigns itself every partition of those topics from the beginning (no consumer group is
joined and no offset is committed), so any number of dashboards run beside any number of
workers, and a restarted dashboard shows each experiment's whole history again. It reads
``read_committed`` (the worker writes in transactions), follows the topics as they grow,
picks them up when a worker creates them after the dashboard started, and says what is wrong
when Kafka stops answering (the page shows it) instead of stopping.

>>> from rollguard.streams.topics import TopicNames
>>> followed_topics(TopicNames("t."))
{'t.control': 'control', 't.stats': 'stats', 't.history': 'history', 't.deadletter': 'deadletter'}
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from rollguard.dashboard.board import Board, UNATTRIBUTED
from rollguard.streams.topics import TopicNames

#: seconds between two looks for topics (and partitions) that did not exist yet
REFRESH_S = 3.0


def followed_topics(names: TopicNames) -> dict[str, str]:
    """``{topic: kind}`` of the topics the dashboard reads."""
    return {names.control: "control", names.stats: "stats", names.history: "history",
            names.deadletter: "deadletter"}


class TopicReader:
    """A thread that feeds ``board`` (under ``lock``, a Condition notified on each change)."""

    def __init__(self, bootstrap: str, names: TopicNames, board: Board,
                 lock: threading.Condition) -> None:
        self.bootstrap = bootstrap
        self.names = names
        self.kinds = followed_topics(names)
        self.board = board
        self.lock = lock
        self.assigned: set[tuple[str, int]] = set()
        self.at_end: set[tuple[str, int]] = set()
        self.caught_up_once = False
        self.problem: str | None = None     # what is wrong with Kafka now, for the page
        self.problem_since: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollguard-dashboard-reader",
                                        daemon=True)
        self._consumer: Any = None

    # -- life -------------------------------------------------------------------------------
    def start(self) -> None:
        from confluent_kafka import Consumer

        from rollguard.kafka.clients import client_config

        self._consumer = Consumer(client_config(self.bootstrap, **{
            "group.id": f"rollguard-dashboard-{uuid.uuid4().hex}",  # never joined nor committed
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "isolation.level": "read_committed", "enable.partition.eof": True,
            "fetch.wait.max.ms": 100, "client.id": "rollguard-dashboard",
            "error_cb": self._on_error}))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    @property
    def caught_up(self) -> bool:
        """Every partition assigned so far was read to its end at least once."""
        return self.caught_up_once

    def status(self) -> dict[str, Any]:
        return {"caught_up": self.caught_up, "problem": self.problem,
                "problem_since": self.problem_since,
                "topics": sorted({t for t, _ in self.assigned})}

    # -- the loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        consumer = self._consumer
        next_refresh = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_refresh:
                    self._refresh()
                    next_refresh = now + REFRESH_S
                if not self.assigned:
                    self._stop.wait(0.5)
                    continue
                messages = consumer.consume(num_messages=1000, timeout=0.25)
                if messages:
                    self._take(messages)
        finally:
            consumer.close()

    def _take(self, messages: list[Any]) -> None:
        from confluent_kafka import KafkaError

        changed = False
        with self.lock:
            for msg in messages:
                error = msg.error()
                tp = (msg.topic(), msg.partition())
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        self.at_end.add(tp)
                        self._clear_problem()
                    continue
                self.at_end.discard(tp)
                self._clear_problem()
                kind = self.kinds.get(msg.topic())
                stamp_kind, stamp = msg.timestamp()
                published = stamp / 1000.0 if stamp_kind and stamp > 0 else None
                headers = dict(msg.headers() or ()) if kind == "deadletter" else None
                if self.board.take(kind, msg.key(), msg.value(), published_at=published,
                                   headers=headers) is not None:
                    changed = True
            if not self.caught_up_once and self.assigned and self.at_end >= self.assigned:
                self.caught_up_once = True
                changed = True
            if changed:
                self._bump()

    def _bump(self, name: str = UNATTRIBUTED) -> None:
        """Tell the pages something changed (the caller holds the lock)."""
        if self.board.changed_at.get(name) != self.board.version:
            self.board.version += 1
            self.board.changed_at[name] = self.board.version
        self.lock.notify_all()

    def _refresh(self) -> None:
        """Assign, from their beginning, the partitions of followed topics not yet assigned."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        try:
            topics = self._consumer.list_topics(timeout=5.0).topics
        except KafkaException as exc:
            with self.lock:
                self._set_problem(exc.args[0].str())
            return
        new = [TopicPartition(topic, p, OFFSET_BEGINNING)
               for topic in self.kinds if topic in topics and topics[topic].error is None
               for p in topics[topic].partitions if (topic, p) not in self.assigned]
        if new:
            self._consumer.incremental_assign(new)
            self.assigned.update((tp.topic, tp.partition) for tp in new)
        with self.lock:
            self._clear_problem()
            if not self.assigned and not self.caught_up_once:
                # nothing published yet under this prefix: there is nothing to wait for
                self.caught_up_once = True
                self._bump()

    # -- Kafka's health, for the page -------------------------------------------------------
    def _on_error(self, error: Any) -> None:
        # librdkafka calls this from poll (our thread) for errors it retries by itself
        with self.lock:
            self._set_problem(error.str())

    def _set_problem(self, text: str) -> None:
        if self.problem is None:
            self.problem_since = time.time()
        if self.problem != text:
            self.problem = text
            self._bump()

    def _clear_problem(self) -> None:
        if self.problem is not None:
            self.problem, self.problem_since = None, None
            self._bump()
