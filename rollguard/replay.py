"""``rollguard replay``: what would rollguard have decided on these events?

The pure core without a broker: the same :class:`~rollguard.streams.partition.JoinPartition`
and :class:`~rollguard.decisions.evaluator.ExperimentEvaluator` the live worker runs, fed
from a replay file (docs/events.md, "Replay files") or from a range of the input topics. For the
same events it gives the same control events (action, seq, reason, evidence) as the worker.

>>> from rollguard.schemas import parse_experiments
>>> exps = parse_experiments("{name: e, task: binary, mode: shadow, champion: m:1, "
...                          "candidates: [m:2], primary: {metric: accuracy}}", "doc.yaml")
>>> line = ('{"topic": "predictions", "request_id": "r1", "experiment": "e", "ts": 1, '
...         '"model": "m", "version": "%s", "served": %s, "prediction": 1}')
>>> lines = [(line % ("1", "true")).encode(), b'oops', (line % ("2", "false")).encode()]
>>> replay = Replay(exps)
>>> events = replay.run_lines(lines)
>>> [e.action for e in events], replay.bad_lines
(['start'], [(2, 'replay line rejected: the value is not valid JSON (expecting value at line 1, column 1).')])
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from rollguard.decisions.evaluator import ExperimentEvaluator
from rollguard.decisions.manual import scheduled_request
from rollguard.schemas.events import ControlEvent, Invalid, decode_replay_line
from rollguard.streams.join import INPUT_KINDS
from rollguard.streams.partition import JoinPartition

#: how many events between two settles of the join (any value gives the same decisions)
SETTLE_EVERY = 512


class Replay:
    """Joins and evaluates a stream of events offline, one join partition per input
    partition (a replay file is one partition)."""

    def __init__(self, experiments: Iterable[Any], partitions: int = 1,
                 on_bad: Callable[[int, str], None] | None = None, *,
                 history: bool = False) -> None:
        self.experiments = list(experiments)
        self.on_bad = on_bad
        self.history = history  # make the history points too (they cost a little)
        self.parts = [JoinPartition(p, self.experiments) for p in range(partitions)]
        self.evaluators = {e.name: ExperimentEvaluator(e, partitions, history=history)
                           for e in self.experiments}
        self.bad_lines: list[tuple[int, str]] = []
        self.events = 0

    def settle(self, partition: int, backlogged: Iterable[str] = (), flush: bool = False
               ) -> list[ControlEvent]:
        out: list[ControlEvent] = []
        part = self.parts[partition]
        for name, batch in part.settle(backlogged=backlogged, flush=flush):
            out.extend(self.evaluators[name].add_batch(batch))
        for dead in part.take_dead_letters():
            self._bad(dead.offset + 1, dead.error)
        return out

    def take_history(self) -> list[dict[str, Any]]:
        """The history points made since the last call, experiment by experiment: those the
        live worker publishes to ``<prefix>history`` (docs/history.md). Made only by a
        ``Replay(..., history=True)``."""
        return [p for ev in self.evaluators.values() for p in ev.take_history()]

    def schedule_requests(self, lines: Iterable[bytes]) -> None:
        """People's control requests, applied where the worker applied them: the control
        events it published for them (their ``evidence.manual``), or control requests with
        an ``at_record`` key, one JSON object per line (bad lines go to ``on_bad``)."""
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                at_record, request = scheduled_request(json.loads(line))
            except ValueError as exc:
                self._bad(number, f"control request rejected: {str(exc).rstrip('.')}.")
                continue
            evaluator = self.evaluators.get(request.experiment)
            if evaluator is None:
                self._bad(number, f"control request rejected: experiment "
                                  f"'{request.experiment}' is not in the experiment files.")
                continue
            evaluator.schedule(at_record, request)

    def refused_requests(self) -> list[str]:
        """The scheduled requests that could not apply, one sentence each."""
        return [reason for ev in self.evaluators.values() for reason in ev.refused]

    def _bad(self, number: int, reason: str) -> None:
        self.bad_lines.append((number, reason))
        if self.on_bad is not None:
            self.on_bad(number, reason)

    def finish(self) -> list[ControlEvent]:
        """Input is over: flush every partition and evaluator."""
        out: list[ControlEvent] = []
        for p in range(len(self.parts)):
            out.extend(self.settle(p, flush=True))
        for evaluator in self.evaluators.values():
            out.extend(evaluator.flush())
        return out

    # -- a replay file ----------------------------------------------------------------------
    def run_lines(self, lines: Iterable[bytes], on_event: Callable[[ControlEvent], None] | None = None
                  ) -> list[ControlEvent]:
        """Replay file lines (one partition); returns (and passes to ``on_event``) the
        control events in order. Bad lines are kept in ``bad_lines`` as (line number,
        reason) and skipped, as the worker would dead-letter them."""
        part = self.parts[0]
        collected: list[ControlEvent] = []

        def emit(events: list[ControlEvent]) -> None:
            for event in events:
                collected.append(event)
                if on_event is not None:
                    on_event(event)

        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            parsed = decode_replay_line(line)
            if type(parsed) is Invalid:
                self._bad(number, parsed.reason)
                continue
            kind, event = parsed
            part.on_event(kind, number - 1, event, None, line)
            self.events += 1
            if self.events % SETTLE_EVERY == 0:
                emit(self.settle(0))
        emit(self.finish())
        return collected


def read_lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from handle


# -- a range of the input topics ------------------------------------------------------------
def run_from_kafka(replay: Replay, bootstrap: str, names: Any, start_ts: float | None,
                   end_ts: float | None, on_event: Callable[[ControlEvent], None],
                   progress: Callable[[int], None] | None = None,
                   on_warning: Callable[[str], None] | None = None) -> None:
    """Replay the input topics between two event times (message timestamps), partition by
    partition as the live worker joins them, with the backlog of each topic known.

    A partition is read up to the offset its range ends at, as the consumer's position says:
    records that retention deleted meanwhile, or transaction markers, never make it wait."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from rollguard.kafka.clients import client_config

    consumer = Consumer(client_config(bootstrap, **{
        "group.id": f"rollguard-replay-{time.time_ns()}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": False,
        "auto.offset.reset": "earliest"}))
    try:
        topics = {kind: getattr(names, kind) for kind in INPUT_KINDS}
        metadata = consumer.list_topics(timeout=10).topics
        n = len(metadata[topics["predictions"]].partitions)
        ends: dict[tuple[str, int], int] = {}
        starts: dict[tuple[str, int], int] = {}
        assignment = []
        for kind, topic in topics.items():
            for p in range(n):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                lo = low
                if start_ts:
                    found = consumer.offsets_for_times(
                        [TopicPartition(topic, p, int(start_ts * 1000))], timeout=10)[0].offset
                    lo = found if found >= 0 else high  # nothing at or after start_ts
                if end_ts is not None:
                    hit = consumer.offsets_for_times(
                        [TopicPartition(topic, p, int(end_ts * 1000))], timeout=10)[0].offset
                    high = hit if hit >= 0 else high
                ends[kind, p], starts[kind, p] = high, lo
                assignment.append(TopicPartition(topic, p, lo))
        consumer.assign(assignment)
        replay.parts = [JoinPartition(p, replay.experiments) for p in range(n)]
        replay.evaluators = {e.name: ExperimentEvaluator(e, n, history=replay.history)
                             for e in replay.experiments}
        kind_of = {topic: kind for kind, topic in topics.items()}
        done = {key for key in ends if starts[key] >= ends[key]}
        read = 0
        skipped: set[tuple[str, int]] = set()  # partitions where records were gone
        while len(done) < len(ends):
            messages = consumer.consume(2000, timeout=1.0)
            for msg in messages:
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._AUTO_OFFSET_RESET \
                            and msg.topic() in kind_of:
                        skipped.add((kind_of[msg.topic()], msg.partition()))
                    continue
                kind, p = kind_of[msg.topic()], msg.partition()
                if msg.offset() + 1 >= ends[kind, p]:
                    done.add((kind, p))
                if msg.offset() >= ends[kind, p]:
                    continue
                replay.parts[p].on_message(kind, msg.offset(), msg.key(), msg.value())
                read += 1
            if not messages:
                done.update(_read_to_the_end(consumer, topics, ends, done))
                if len(done) < len(ends):
                    continue
            for p in range(n):
                backlogged = {k for k in INPUT_KINDS if (k, p) not in done}
                for event in replay.settle(p, backlogged):
                    on_event(event)
            if progress is not None:
                progress(read)
        for event in replay.finish():
            on_event(event)
        if skipped and on_warning is not None:
            names_ = ", ".join(f"{topics[k]}[{p}]" for k, p in sorted(skipped))
            on_warning(f"Records of {names_} in this range were deleted by the topics' retention "
                       "before the replay read them, and are not in its decisions: raise "
                       "retention.ms on the input topics to replay them.")
    finally:
        consumer.close()


def _read_to_the_end(consumer: Any, topics: dict[str, str], ends: dict[tuple[str, int], int],
                     done: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """The partitions whose position has reached the end of their range, although no message
    said so: the last records were transaction markers, or retention deleted them."""
    from confluent_kafka import TopicPartition

    waiting = [key for key in ends if key not in done]
    positions = consumer.position([TopicPartition(topics[k], p) for k, p in waiting])
    return {key for key, tp in zip(waiting, positions) if tp.offset >= ends[key]}

