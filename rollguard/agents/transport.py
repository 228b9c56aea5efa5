"""Faust's aiokafka transport, reading committed messages, partitions in turn.

*read_committed.* rollguard's worker writes its internal topics in transactions
(agents/checkpoint.py); a reader that saw messages of an aborted transaction would count them
twice. Faust's aiokafka driver reads committed data only in its own ``exactly_once`` mode,
which rollguard does not use (see agents/checkpoint.py), so this subclass sets the isolation
level itself: the driver builds an un-started aiokafka consumer, whose isolation level is read
when it starts. For topics nobody writes transactionally it changes nothing.

*Partitions in turn.* aiokafka hands out prefetched records partition by partition, each
partition's whole fetch (up to ``max_partition_fetch_bytes``, 8 MiB here: tens of thousands of
events) before the next. On a backlog the worker then reads one input partition after another
(their event times drift hours apart, and the evaluator holds every record in between to keep
event-time order) and reads the outcomes topic only between whole rounds (decisions wait for
the backlog). :func:`fetch_in_turn` moves each partition it just drained to the back of the
queue, so every call serves another partition: turns of at most ``max_poll_records``. Smaller
fetches would interleave too, but a record batch larger than the fetch size stalls aiokafka.

*Batches.* Faust hands an agent one message at a time, and its path from the fetch to the
agent (a task and a future per message, a queue per stream) costs about 74 µs a message on
the machine of bench/RESULTS.md, four times all of rollguard's own work. For the topics in
``app.batched_topics`` (the input topics), each partition's turn reaches the agent as ONE
message: its offset is the last record's, its value a :class:`FetchedBatch` of every record
of the turn. Faust acks it like any message, pauses and seeks as before, and commits what
the worker's checkpoints cover (the commit ceiling, below); the framework's cost is paid once
per turn of up to ``max_poll_records`` messages.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any, NamedTuple

import faust
from faust.transport.drivers import aiokafka as driver


async def fetch_in_turn(consumer: Any, partitions: Any, timeout: float | None,
                        max_records: int | None) -> dict:
    """Prefetched records of ``consumer`` (an aiokafka consumer), the next partition's turn.

    The same call as aiokafka's ``fetched_records``; afterwards every partition it returned
    records of goes to the back of the prefetch queue (an ``OrderedDict`` in aiokafka, drained
    front first). If aiokafka ever stores it otherwise, this is aiokafka's own order.
    """
    fetcher = consumer._fetcher
    records = await fetcher.fetched_records(partitions, timeout=timeout,
                                            max_records=max_records)
    queue = getattr(fetcher, "_records", None)
    if isinstance(queue, OrderedDict):
        for tp in records:
            if tp in queue:
                queue.move_to_end(tp)
    return records


class FetchedBatch(NamedTuple):
    """The records of one partition's turn, in offset order: a batched message's value."""

    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]


def coalesce(records: list[Any]) -> Any:
    """One aiokafka record standing for ``records`` (one partition's, in offset order).

    >>> from aiokafka.structs import ConsumerRecord
    >>> records = [ConsumerRecord("t", 0, o, 0, 0, b"k", b"v%d" % o, None, 1, 2, ())
    ...            for o in (7, 8)]
    >>> one = coalesce(records)
    >>> one.offset, one.value.offsets, one.value.values, one.serialized_value_size
    (8, [7, 8], [b'v7', b'v8'], 4)
    """
    batch = FetchedBatch([r.offset for r in records], [r.key for r in records],
                         [r.value for r in records])
    return dataclasses.replace(records[-1], key=None, value=batch, headers=(),
                               serialized_key_size=sum(r.serialized_key_size for r in records),
                               serialized_value_size=sum(r.serialized_value_size
                                                         for r in records))


#: the longest a fetch waits at the broker for new data (Faust's driver asks 1,500 ms): a
#: decision travels join → outcomes → evaluator → control, and every hop may wait this long
FETCH_MAX_WAIT_MS = 100


class ReadCommittedConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    async def _fetch_records(self, consumer: Any, active_partitions: Any,
                             timeout: float | None = None,
                             max_records: int | None = None) -> dict:
        # Faust's own method with fetch_in_turn in place of fetched_records
        if not self.consumer.flow_active:
            return {}
        fetcher = consumer._fetcher
        if consumer._closed or fetcher._closed:
            raise driver.ConsumerStoppedError()
        with fetcher._subscriptions.fetch_context():
            records = await fetch_in_turn(consumer, active_partitions, timeout, max_records)
        batched = getattr(self.consumer.app, "batched_topics", ())
        return {tp: [coalesce(rs)] if tp.topic in batched and rs else rs
                for tp, rs in records.items()}


class ReadCommittedConsumer(driver.Consumer):
    def _new_consumer_thread(self) -> ReadCommittedConsumerThread:
        return ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _filter_committable_offsets(self, tps: Any) -> dict:
        """The offsets to commit: what the worker's state covers, never beyond.

        Faust commits the offset after the last message it *acked*, and counts as acked any
        gap it saw in a partition's offsets: records it fetched but dropped (it drops those
        of a partition paused while they were in flight) are then committed as if used. The
        worker's own checkpoint knows which input it has used: ``app.commit_ceiling(tp)``
        (the next offset the last checkpoint covers, or None for a partition the worker
        holds no state of) is the offset committed, so the group's offsets never pass the
        state.

        Faust's own reckoning is skipped: it expands every gap into a list of its offsets and
        sorts them, and a batched turn (one message for up to ``max_poll_records`` offsets)
        leaves a gap the size of the turn, so that cost a Python step per input offset, in the
        event loop: about a quarter of the worker's time under load. Its acked offsets below
        the committed one are dropped instead, and no gap is recorded.
        """
        ceiling = getattr(self.app, "commit_ceiling", None)
        if ceiling is None:
            return super()._filter_committable_offsets(tps)
        committable = {}
        for tp in tps:
            limit = ceiling(tp.topic, tp.partition)
            if limit is None:
                continue
            self._forget_acks_below(tp, limit)
            if self._should_commit(tp, limit):
                committable[tp] = limit
        return committable

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        # the gaps serve only Faust's own reckoning above, which the ceiling replaces; Faust
        # rebuilt the partition's interval tree at every gap, i.e. at every batched turn
        if getattr(self.app, "commit_ceiling", None) is None:
            await super()._add_gap(tp, offset_from, offset_to)

    def _forget_acks_below(self, tp: Any, offset: int) -> None:
        """Drop Faust's acked offsets of ``tp`` below ``offset`` (committed)."""
        acked = self._acked[tp]
        kept = [o for o in acked if o >= offset]  # a few: one per turn of a batched topic
        if len(kept) < len(acked):
            acked[:] = kept
            self._acked_index[tp] = set(kept)


class ReadCommittedTransport(driver.Transport):
    Consumer = ReadCommittedConsumer


class RollguardApp(faust.App):
    """A Faust app whose consumer reads committed messages only, and hands the agents of
    ``batched_topics`` one message per partition's turn (a :class:`FetchedBatch`)."""

    batched_topics: frozenset[str] = frozenset()

    def _new_transport(self) -> ReadCommittedTransport:
        return ReadCommittedTransport(self.conf.broker_consumer, self)
