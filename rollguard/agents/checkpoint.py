"""Transactional checkpoints of one partition's state, and their restore.

The processing guarantee (documented in docs/processing-guarantee.md): each partition task
keeps its state in memory (or RocksDB) and, once per checkpoint interval, writes in ONE
Kafka transaction the state that changed (to a compacted changelog topic), the input
offsets that state covers, and everything the task produced since the last checkpoint
(records for the evaluator, control events, dead letters, statistics). Readers use
``read_committed``, so either all of a checkpoint is visible or none of it. After a crash
the task restores the changelog and skips every input message below the restored offsets:
nothing is lost and nothing counts twice, whatever the consumer group had committed.

The transactional id is per partition (``<app>-<stage>-<partition>``): a task that takes
a partition over fences the previous owner, so a zombie cannot write stale state.

Why not Faust's own ``exactly_once``: faust-streaming's transactional mode has open reports
of duplicates after a kill and of crashes on rebalance (faust-streaming/faust issues #517,
#323, #440), and a Faust table write per event costs 12–25 µs, more than all of rollguard's
own work per event. Writing state once per checkpoint and per changed key is what makes the
throughput aim reachable.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from rollguard.kafka.clients import client_config

log = logging.getLogger(__name__)

#: the largest message a checkpoint may write to the worker's own topics: a backlog can make
#: one experiment's evaluator state (its reorder buffer) several MiB, beyond Kafka's 1 MiB
#: default; the internal topics are created with this max.message.bytes
INTERNAL_MESSAGE_MAX = 64 * 1024 * 1024


@dataclass
class Output:
    """One message a task produced; written with the task's next checkpoint."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    partition: int | None = None


class CheckpointError(RuntimeError):
    """A checkpoint could not be written; the task must stop and be restored."""


class Checkpointer:
    """Writes one partition task's checkpoints, each in one transaction."""

    def __init__(self, bootstrap: str, transactional_id: str, *, timeout: float = 60.0) -> None:
        self.transactional_id = transactional_id
        self.timeout = timeout
        self.last_offsets: dict[str, int] = {}  # topic -> offset of the last message written
        self._refused: Any = None  # the first delivery error of the current transaction
        self._began = 0.0  # perf_counter when the current transaction began
        self._producer = Producer(client_config(bootstrap, **{
            "transactional.id": transactional_id,
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            "transaction.timeout.ms": 60000,
            "message.max.bytes": INTERNAL_MESSAGE_MAX,
            "partitioner": "murmur2_random",
        }))
        try:
            self._producer.init_transactions(timeout)  # fences an older owner of this id
        except KafkaException as exc:
            raise CheckpointError(f"Starting transactions for {transactional_id} failed: "
                                  f"{exc.args[0].str()}.") from None

    def _on_delivery(self, err, msg) -> None:
        if err is not None:  # keep it; read it after the flush (a fatal error may be pending here)
            if self._refused is None:
                self._refused = err
            return
        topic, offset = msg.topic(), msg.offset()
        if offset > self.last_offsets.get(topic, -1):
            self.last_offsets[topic] = offset

    def commit(self, outputs: list[Output]) -> float:
        """Write ``outputs`` (state changes and products alike) atomically.

        Returns the seconds the transaction took. Raises :class:`CheckpointError` when it
        fails (fenced by a newer owner, broker gone past the timeout). The same as
        :meth:`begin` then :meth:`finish`.
        """
        self.begin(outputs)
        return self.finish()

    def begin(self, outputs: list[Output]) -> None:
        """Open the transaction and hand ``outputs`` to the producer (no waiting on the
        broker): several checkpointers can begin, then finish while the others' messages are
        in flight."""
        self._began = time.perf_counter()
        self._refused = None
        try:
            self._producer.begin_transaction()
            for out in outputs:
                self._produce(out.topic, out.key, out.value, out.headers, out.partition)
        except KafkaException as exc:
            self._fail(exc)

    def finish(self) -> float:
        """Wait for the messages :meth:`begin` handed over and commit; the seconds since
        :meth:`begin`."""
        try:
            # deliver first: a refused message (too large, unknown topic) fails the checkpoint
            # at once with its reason, instead of a commit waiting out its timeout
            self._flush()
            if self._refused is not None:
                self._abort()
                raise CheckpointError(f"The checkpoint of {self.transactional_id} failed: a "
                                      f"message was refused ({self._refused.str()}).")
            self._producer.commit_transaction(self.timeout)
        except KafkaException as exc:
            self._fail(exc)
        return time.perf_counter() - self._began

    def _fail(self, exc: KafkaException) -> None:
        error = exc.args[0]
        if error.txn_requires_abort():
            self._abort()
        raise CheckpointError(f"The checkpoint of {self.transactional_id} failed: "
                              f"{error.str()}.") from None

    def _flush(self) -> None:
        try:
            self._producer.flush(self.timeout)
        except SystemError as exc:
            # a fatal producer error (fenced by a newer owner) is raised inside the delivery
            # callbacks, which confluent-kafka then reports as a SystemError: unwrap it
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, KafkaException):
                raise cause from None
            # sometimes the error is lost on its way out of the callback ("returned NULL
            # without setting an exception"): the producer failed all the same
            raise CheckpointError(f"The checkpoint of {self.transactional_id} failed: its "
                                  "producer failed while delivering (fenced by a newer owner "
                                  "of this partition, or a fatal producer error).") from None

    def _abort(self) -> None:
        try:
            self._producer.abort_transaction(self.timeout)
        except KafkaException:
            pass

    def _produce(self, topic, key, value, headers, partition) -> None:
        kwargs = {"key": key, "value": value, "on_delivery": self._on_delivery}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                return
            except BufferError:  # local queue full: let librdkafka send, then retry
                self._producer.poll(0.05)

    def close(self) -> None:
        self._producer.flush(10)


def read_changelog(bootstrap: str, changelog: str, partition: int, start: int | None = None,
                   *, timeout: float = 60.0) -> Iterator[tuple[int, bytes, bytes | None]]:
    """Every committed record of ``changelog[partition]`` from ``start`` (else the beginning)
    to its current end, as ``(offset, key, value or None)``; fails when no record arrives
    for ``timeout`` seconds. Call it once the partition's :class:`Checkpointer` is made: its
    ``init_transactions`` completes the previous owner's last transaction, whose markers
    otherwise reach the partition a moment after its commit returned (until then the end
    of what ``read_committed`` may read stays before it)."""
    consumer = Consumer(client_config(bootstrap, **{
        "group.id": f"rollguard-restore-{changelog}",  # never commits; required by the API
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        # modest fetches and prefetch queue (restores run in parallel); a single larger
        # message still comes whole: brokers return the first record batch of a fetch
        # even when it exceeds the fetch size
        "fetch.max.bytes": 8 * 1024 * 1024,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        "queued.max.messages.kbytes": 16 * 1024,
        "receive.message.max.bytes": INTERNAL_MESSAGE_MAX + 1024 * 1024,
    }))
    try:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(changelog, partition),
                                                       timeout=10)
        except KafkaException as exc:
            raise CheckpointError(f"Reading {changelog}[{partition}] to restore it failed: "
                                  f"{exc.args[0].str()}.") from None
        if high <= max(low, start or 0):
            return
        consumer.assign([TopicPartition(changelog, partition,
                                        OFFSET_BEGINNING if start is None else start)])
        deadline = time.monotonic() + timeout
        while True:
            # short waits: consume() waits its whole timeout when fewer messages are ready,
            # and the end of the partition arrives as its own event
            messages = consumer.consume(10000, timeout=0.05)
            if messages:
                deadline = time.monotonic() + timeout
            for msg in messages:
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return
                    raise CheckpointError(f"Reading {changelog}[{partition}] failed: {error.str()}.")
                yield msg.offset(), msg.key(), msg.value()
            if time.monotonic() > deadline:
                raise CheckpointError(
                    f"Restoring {changelog}[{partition}] read nothing for {timeout:.0f} s "
                    "before its end: check the broker, then restart the worker.")
    finally:
        consumer.close()
