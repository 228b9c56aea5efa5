"""The worker's partition tasks: the pure core plus transactional checkpoints.

A :class:`JoinTask` owns one partition of the co-partitioned input topics; an
:class:`EvalTask` owns one partition of the internal outcomes topic (keyed by experiment).
The Faust agents (:mod:`rollguard.agents.app`) hand them raw messages, an input partition's
fetched turn at a time; the cores own their state and the tasks only move bytes between
Faust, the cores and the checkpointer. The consumer group never commits past what a committed
checkpoint covers (:meth:`Runtime.commit_ceiling`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import msgspec

from rollguard.agents.checkpoint import INTERNAL_MESSAGE_MAX, Checkpointer, Output, read_changelog
from rollguard.agents.liveness import Liveness, Progress, Watchdog, liveness_path
from rollguard.agents.skew import FrontierBoard, encode_frontier, paused, slowest
from rollguard.agents.transport import FetchedBatch
from rollguard.decisions.evaluator import ExperimentEvaluator
from rollguard.decisions.partition import EvalPartition
from rollguard.kafka.admin import COMPACTED, TopicSpec
from rollguard.logs import WORKER_LOG
from rollguard.schemas.events import encode
from rollguard.streams.changelog import DISK, STATE
from rollguard.streams.idle import RecentInput
from rollguard.streams.join import INPUT_KINDS, uses_disk
from rollguard.streams.partition import JoinPartition
from rollguard.streams.pending import DiskStore
from rollguard.streams.outbox import Outbox
from rollguard.streams.topics import TopicNames

log = logging.getLogger("rollguard.worker")

#: input messages between two looks at a join partition's skew (agents/skew.py)
SKEW_CHECK_EVERY = 256
#: input messages between two releases of a join partition between checkpoints: a busy
#: interval's settling is spread over its turns instead of stalling the next checkpoint
RELEASE_EVERY = 2000

_JSON = msgspec.json.Encoder()


@dataclass(frozen=True)
class InternalTopics:
    """The worker's own topics, named after the contract's prefix and the app id."""

    names: TopicNames
    app_id: str

    def _name(self, what: str) -> str:
        return f"{self.names.prefix}{self.app_id}.{what}"

    @property
    def outcomes(self) -> str:
        return self._name("outcomes")

    @property
    def join_state(self) -> str:
        return self._name("join-state")

    @property
    def join_disk(self) -> str:
        return self._name("join-disk")

    @property
    def eval_state(self) -> str:
        return self._name("eval-state")

    @property
    def frontiers(self) -> str:
        """Every join partition's frontier (agents/skew.py): one message per partition."""
        return self._name("frontiers")

    def specs(self, partitions: int) -> list[TopicSpec]:
        large = {"max.message.bytes": str(INTERNAL_MESSAGE_MAX)}
        return [TopicSpec(self.outcomes, partitions, dict(large)),
                TopicSpec(self.join_state, partitions, {**COMPACTED, **large}),
                TopicSpec(self.join_disk, partitions, {**COMPACTED, **large}),
                TopicSpec(self.eval_state, partitions, {**COMPACTED, **large}),
                TopicSpec(self.frontiers, 1, dict(COMPACTED))]


@dataclass
class WorkerConfig:
    bootstrap: str
    experiments: list[Any]
    names: TopicNames = field(default_factory=TopicNames)
    app_id: str = "rollguard"
    data_dir: Path = Path(".rollguard")
    #: seconds between checkpoints: a decision follows its deciding label by about two of
    #: them plus the hops (docs/operating.md); shorter ones cost little (bench/RESULTS.md)
    checkpoint_interval: float = 0.25
    snapshot_interval: float = 5.0
    partitions: int = 0  # of the input topics; the worker reads it from the cluster
    instance_id: str | None = None  # static group membership: a restart takes its partitions back
    session_timeout: float = 45.0   # a worker that stops heartbeating loses its partitions after
    stall_timeout: float = 120.0    # no complete checkpoint for this long: the worker stops
    max_skew: float = 300.0         # event-time seconds a join partition may run ahead (skew.py)
    idle_after: float = 5.0         # seconds an input read to its end still holds the watermark
    metrics_port: int | None = None  # serve Prometheus /metrics here
    metrics_host: str = "0.0.0.0"

    @property
    def internal(self) -> InternalTopics:
        return InternalTopics(self.names, self.app_id)


class JoinTask:
    """One input partition: a :class:`JoinPartition` and its checkpoints. It moves bytes
    between the consumer, the core and the checkpointer, and looks into neither."""

    def __init__(self, config: WorkerConfig, partition: int) -> None:
        self.config = config
        self.partition = partition
        internal = config.internal
        self.internal = internal
        disk = None
        if any(uses_disk(e) for e in config.experiments):
            disk = DiskStore(Path(config.data_dir) / config.app_id / f"join-{partition}")
        names = config.names
        self.core = JoinPartition(partition, config.experiments, disk=disk, topics={
            "requests": names.requests, "predictions": names.predictions,
            "labels": names.labels})
        self.changelogs = {STATE: internal.join_state, DISK: internal.join_disk}
        self.checkpointer = Checkpointer(config.bootstrap, f"{config.app_id}-join-{partition}")
        self.outbox = Outbox(partition, config.partitions)
        self.frontier = -math.inf  # this partition's, as the last settle gave it
        self.unchecked = 0  # input messages since the last look at the skew
        self.unreleased = 0  # input messages since the last release between checkpoints
        self.progress = Progress()
        self._published_frontier: float | None = None
        self.staged_dead: dict[str, int] = {}  # dead letters by reason, logged once committed
        #: the input offsets the staged checkpoint covers, by (topic, partition)
        self.staged_covers: dict[tuple[str, int], int] = {}
        self.restore()
        self.recent = RecentInput(config.idle_after, self.core.next_offset,
                                  started=time.monotonic())

    def restore(self) -> None:
        began = time.monotonic()
        bootstrap, p, core = self.config.bootstrap, self.partition, self.core
        for _, key, value in read_changelog(bootstrap, self.changelogs[STATE], p):
            core.restore(key, value)
        restored_disk, last = 0, None
        if core.pending_counts()[1] is not None:
            for last, key, value in read_changelog(bootstrap, self.changelogs[DISK], p,
                                                   core.disk_restore_from):
                core.restore_disk(key, value)
                restored_disk += 1
        core.durable(last)
        core.restored()
        memory, disk = core.pending_counts()
        log.info("join partition %d restored: %d pending in memory, %d on disk (%d read from "
                 "the changelog) in %.1f s", p, memory, disk or 0, restored_disk,
                 time.monotonic() - began)

    def on_messages(self, kind: str, offsets: list[int], keys: list, values: list) -> None:
        self.core.on_messages(kind, offsets, keys, values)
        self.unreleased += len(offsets)
        if self.unreleased >= RELEASE_EVERY:
            self.unreleased = 0
            self.core.release_ready()

    def stage(self, backlogged: set[str]) -> None:
        """Settle and hand the checkpoint's messages to this partition's transaction
        (:meth:`finish` commits it, :meth:`committed` follows; :meth:`Runtime.checkpoint`
        does all three)."""
        core = self.core
        quiet = core.events_since_settle == 0
        internal, names, p = self.internal, self.config.names, self.partition
        outputs: list[Output] = []
        self.staged_dead = core.dead_letter_counts()
        holding = backlogged | self.recent.update(core.next_offset, time.monotonic())
        settled = core.settle(backlogged=holding, quiet=quiet)
        if settled:
            self.frontier = settled[-1][1].frontier  # the same in every experiment's batch
        outputs += [Output(internal.outcomes, m.key, m.value, None, m.partition)
                    for m in self.outbox.messages(settled)]
        for dead in core.take_dead_letters():
            outputs.append(Output(names.deadletter, dead.key, dead.value, dead.headers()))
        outputs += [Output(self.changelogs[c.store], c.key, c.value, None, p)
                    for c in core.changes()]
        if self.frontier != self._published_frontier:
            outputs.append(Output(internal.frontiers, str(p).encode(),
                                  encode_frontier(self.frontier), None, 0))
            self._published_frontier = self.frontier
        self.staged_covers = self.covers()
        self.checkpointer.begin(outputs)

    def covers(self) -> dict[tuple[str, int], int]:
        """The next offset of each input topic the core's state has not used."""
        names, p = self.config.names, self.partition
        return {(getattr(names, kind), p): offset for kind, offset in self.core.next_offset.items()}

    def finish(self) -> None:
        """Wait for the broker to commit the staged transaction (any thread: it touches
        only the checkpointer)."""
        self.checkpointer.finish()

    def committed(self) -> None:
        """The staged transaction is committed: the core learns what is durable."""
        WORKER_LOG.dead_letters.add(self.staged_dead)
        self.staged_dead = {}
        self.core.durable(self.checkpointer.last_offsets.get(self.changelogs[DISK]))

    def close(self) -> None:
        self.checkpointer.close()
        self.core.close()


class EvalTask:
    """One partition of the outcomes topic: an :class:`EvalPartition` and its checkpoints;
    it publishes the control events, history points and snapshots the core makes."""

    def __init__(self, config: WorkerConfig, partition: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.partition = partition
        self.internal = config.internal
        self.core = EvalPartition(partition, config.experiments, sources=config.partitions,
                                  requests_topic=config.names.control_requests)
        self.outputs: list[Output] = []
        self.decisions: list[Any] = []  # control events of self.outputs, for the log
        self.staged_decisions: list[Any] = []
        self.urgent = False
        self.clock = clock
        self.last_snapshot = -math.inf
        #: the input offsets the staged checkpoint covers, by (topic, partition)
        self.staged_covers: dict[tuple[str, int], int] = {}
        self.progress = Progress()
        self.checkpointer = Checkpointer(config.bootstrap, f"{config.app_id}-eval-{partition}")
        for _, key, value in read_changelog(config.bootstrap, self.internal.eval_state,
                                            partition):
            self.core.restore(key, value)

    @property
    def evaluators(self) -> dict[str, ExperimentEvaluator]:
        return self.core.evaluators

    def on_message(self, offset: int, key: bytes, value: bytes) -> list:
        """Take one batch; return the control events it led to (staged for the checkpoint)."""
        return self._publish(self.core.on_batch(offset, key, value))

    def on_request(self, offset: int, key: bytes | None, value: bytes | None) -> list:
        """Apply a person's control request; one that cannot apply goes to the dead-letter
        topic with the reason, at once (the person waits for the answer)."""
        events = self._publish(self.core.on_request(offset, key, value))
        for dead in self.core.take_dead_letters():
            self.outputs.append(Output(self.config.names.deadletter, dead.key, dead.value,
                                       dead.headers()))
            self.urgent = True
        return events

    def _publish(self, events: list) -> list:
        control = self.config.names.control
        for event in events:
            self.outputs.append(Output(control, event.experiment.encode(), encode(event)))
            self.decisions.append(event)
            self.urgent = True
        return events

    def checkpoint(self, *, force_snapshot: bool = False) -> None:
        """Save and commit this partition's checkpoint (:meth:`stage` then :meth:`complete`)."""
        self.stage(force_snapshot=force_snapshot)
        self.complete()

    def stage(self, *, force_snapshot: bool = False) -> None:
        """Hand the control events, evaluator states and due snapshots to the transaction."""
        names, core, p = self.config.names, self.core, self.partition
        outputs, self.outputs = self.outputs, []
        self.staged_decisions, self.decisions = self.staged_decisions + self.decisions, []
        outputs += [Output(self.internal.eval_state, c.key, c.value, None, p)
                    for c in core.changes()]
        # points made with this state: in its transaction
        outputs += [Output(names.history, name.encode(), _JSON.encode(point))
                    for name, point in core.take_history()]
        now = self.clock()
        if force_snapshot or now - self.last_snapshot >= self.config.snapshot_interval:
            self.last_snapshot = now
            for name, snapshot in core.take_snapshots():
                snapshot["published_at"] = time.time()
                outputs.append(Output(names.stats, name.encode(), _JSON.encode(snapshot)))
        self.staged_covers = self.covers()
        self.checkpointer.begin(outputs)
        self.urgent = False

    def stalled_for(self, published: dict[int, float]) -> float:
        """Seconds this partition has read no outcomes while some were waiting: a join
        partition had ``published`` (committed, on the frontiers topic) a frontier beyond the
        one the outcomes read here told."""
        told = self.core.read_frontiers()
        waiting = bool(told) and any(frontier > told.get(source, -math.inf)
                                     for source, frontier in published.items())
        return self.progress.stalled_for(self.core.next_offset, waiting)

    def covers(self) -> dict[tuple[str, int], int]:
        """The next offset of the outcomes and the control requests the state has not used."""
        p = self.partition
        return {(self.internal.outcomes, p): self.core.next_offset,
                (self.config.names.control_requests, p): self.core.next_request_offset}

    def finish(self) -> None:
        """Wait for the broker to commit the staged transaction (any thread)."""
        self.checkpointer.finish()

    def committed(self) -> None:
        """The staged transaction is committed: its decisions are published; log them."""
        published, self.staged_decisions = self.staged_decisions, []
        WORKER_LOG.published(published)

    def complete(self) -> None:
        """Commit the staged transaction, waiting here."""
        self.finish()
        self.committed()

    def close(self) -> None:
        self.checkpointer.close()


class EndOffsets:
    """The current end of input partitions, asked of the broker at each checkpoint.

    The join holds its watermark back for topics with unread messages (streams/join.py).
    The consumer's own high watermarks are only as fresh as its last fetch of each
    partition, which is how a topic with new messages can look read to its end; one
    ListOffsets request per checkpoint gives the truth.

    A partition whose end could not be read is missing from the answer (the join then
    counts it as unread), and :attr:`unknown` says so until an answer is whole again.

    librdkafka's admin client does not live well through broker failures, so after any
    anomaly the next call uses a new one (a new client reads fresh metadata, and answers in
    milliseconds where the old one took its whole timeout):
    - after a broker restart it kept asking with the leader epoch it had cached and failed
      with FENCED_LEADER_EPOCH for as long as it lived (the consumer had the same fault,
      confluentinc/librdkafka#4620); one broker restart then left every end unknown for
      good, and the join held every record back while its offsets were committed;
    - after one broker of three was lost, every request took the whole request timeout and
      some partitions came back with offset -1001 (no offset) instead of an error: such an
      end counts as unknown, never as the end, which would let the watermark pass unread
      messages.
    """

    #: an answer slower than this means the client waits on a broker that is gone
    SLOW_S = 1.0

    def __init__(self, bootstrap: str, *, timeout: float = 5.0) -> None:
        self.bootstrap = bootstrap
        self.timeout = timeout
        self.unknown: str | None = None  # why the last answer was not whole, else None
        self._admin = self._new_admin()

    def _new_admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        from rollguard.kafka.clients import client_config

        return AdminClient(client_config(self.bootstrap))

    def __call__(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        if not tps:
            self.unknown = None
            return {}
        began = time.monotonic()
        request = {TopicPartition(t, p): OffsetSpec.latest() for t, p in tps}
        ends: dict[tuple[str, int], int] = {}
        problem = None
        try:
            futures = self._admin.list_offsets(
                request, isolation_level=IsolationLevel.READ_COMMITTED,
                request_timeout=self.timeout)
            for tp, future in futures.items():
                try:
                    offset = future.result().offset
                except KafkaException as exc:
                    problem = problem or f"{tp.topic}[{tp.partition}]: {exc.args[0].str()}"
                    continue
                if offset < 0:
                    problem = problem or f"{tp.topic}[{tp.partition}]: no offset in the answer"
                    continue
                ends[tp.topic, tp.partition] = offset
        except KafkaException as exc:
            problem = exc.args[0].str()
        took = time.monotonic() - began
        if problem is not None or took > self.SLOW_S:
            if problem is not None and self.unknown is None:
                log.warning("The end offsets of the input could not be read (%s); the join "
                            "waits for them and retries with a new admin client.", problem)
            elif problem is None:
                log.info("Reading the input's end offsets took %.1f s (a broker is gone?): "
                         "the next read uses a new admin client.", took)
            self._admin = self._new_admin()
        if problem is None and self.unknown is not None:
            log.info("The end offsets of the input are read again.")
        self.unknown = problem
        return ends


class Runtime:
    """Routes Faust's messages to partition tasks and checkpoints them on Faust's commits."""

    def __init__(self, config: WorkerConfig,
                 end_offsets: Callable[[list[tuple[str, int]]], dict[tuple[str, int], int]],
                 liveness: Liveness | None = None, board: FrontierBoard | None = None) -> None:
        self.config = config
        #: every join partition's frontier, to pause partitions too far ahead (None: never)
        self.board = board
        #: pauses and resumes fetching input partitions: set by the Faust app
        self.flow: Callable[[set[int], set[int]], None] = lambda pause, resume: None
        self.paused: set[int] = set()
        self.skew_limit = math.inf  # a join partition whose frontier passes this pauses
        self.liveness = liveness if liveness is not None else Liveness(
            liveness_path(config.data_dir, config.app_id))
        self.watchdog = Watchdog(self.liveness, config.stall_timeout)  # started by run_worker
        #: called with each checkpoint's seconds (the metrics' histogram)
        self.on_checkpoint: Callable[[float], None] = lambda seconds: None
        names = config.names
        self.kind_of = {names.requests: "requests", names.predictions: "predictions",
                        names.labels: "labels"}
        self.topic_of = {kind: topic for topic, kind in self.kind_of.items()}
        self.outcomes = config.internal.outcomes
        self.requests_topic = names.control_requests
        self.end_offsets = end_offsets
        self.join_tasks: dict[int, JoinTask] = {}
        self.eval_tasks: dict[int, EvalTask] = {}
        #: the input offsets committed checkpoints cover, by (topic, partition): the most
        #: the consumer group may commit
        self.durable: dict[tuple[str, int], int] = {}
        self._stuck: list[int] = []  # join partitions with unread input read none lately
        self._stuck_eval: list[int] = []  # evaluation partitions likewise with outcomes
        #: publishes an evaluation task's decision now: a checkpoint of it in place, or (set
        #: by the app) a wake-up of the background checkpoints
        self.publish_now: Callable[[EvalTask], None] = lambda task: task.checkpoint()
        self.last_checkpoint_s = 0.0
        # process counters for the metrics (agents/metrics.py): messages read per input topic,
        # dead letters per "deadletter:<kind>:<problem>", control events per (experiment, action)
        self.consumed = dict.fromkeys(self.kind_of, 0)
        self.dead_letters: Counter[str] = Counter()
        self.decisions: Counter[tuple[str, str]] = Counter()
        #: the input's end offsets as the broker gave them at the last checkpoint
        self.input_ends: dict[tuple[str, int], int] = {}
        # blocking work that mostly waits on the broker or RocksDB: restores and commits
        self._io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="rollguard-io")

    def join_task(self, partition: int) -> JoinTask:
        task = self.join_tasks.get(partition)
        if task is None:
            task = self._adopt(self.join_tasks, JoinTask(self.config, partition))
        return task

    def eval_task(self, partition: int) -> EvalTask:
        task = self.eval_tasks.get(partition)
        if task is None:
            task = self._adopt(self.eval_tasks, EvalTask(self.config, partition))
        return task

    def _adopt(self, tasks: dict, task: Any) -> Any:
        """Own a restored task: what its restore covers is durable already."""
        tasks[task.partition] = task
        self.durable.update(task.covers())
        return task

    # -- messages ---------------------------------------------------------------------------
    def on_input(self, message: Any) -> None:
        """One input partition's turn: a message whose value is a :class:`FetchedBatch`
        (agents/transport.py)."""
        batch: FetchedBatch = message.value
        task = self.join_tasks.get(message.partition) or self.join_task(message.partition)
        task.on_messages(self.kind_of[message.topic], *batch)
        self.consumed[message.topic] += len(batch.offsets)
        task.unchecked += len(batch.offsets)
        if task.unchecked >= SKEW_CHECK_EVERY:  # between checkpoints too: a catch-up is fast
            task.unchecked = 0
            if self.board is not None:  # the others' latest frontiers (a read that never waits)
                self.skew_limit = self._lowest_frontier() + self.config.max_skew
            if task.core.frontier > self.skew_limit and task.partition not in self.paused:
                self._pause({task.partition})
                self.paused.add(task.partition)

    def on_outcome(self, message: Any) -> None:
        """A batch of the outcomes topic, or a person's control request (same partitions)."""
        task = self.eval_tasks.get(message.partition) or self.eval_task(message.partition)
        take = task.on_request if message.topic == self.requests_topic else task.on_message
        for event in take(message.offset, message.key, message.value):
            self.decisions[event.experiment, event.action] += 1
        if task.urgent:  # a decision: publish it now, not at the next interval
            self.publish_now(task)

    def commit_ceiling(self, topic: str, partition: int) -> int | None:
        """The highest offset the consumer group may commit on ``topic[partition]``: the next
        message the last committed checkpoint has not used (None: this worker holds no state
        of it)."""
        return self.durable.get((topic, partition))

    def resume_at(self, partition: int) -> dict[str, int]:
        """Where each input topic of a paused join partition must be read again from: the
        next message its state has not used (Faust drops what was in flight at the pause)."""
        core = self.join_tasks[partition].core
        return {self.topic_of[kind]: core.next_offset[kind] for kind in INPUT_KINDS}

    # -- assignment -------------------------------------------------------------------------
    def assigned(self, tps: Any) -> None:
        """Create (and restore) the tasks of newly assigned partitions, several at once:
        a restore is mostly waiting on the broker and on RocksDB."""
        join = sorted({tp.partition for tp in tps if tp.topic in self.kind_of} - set(self.join_tasks))
        evaluate = sorted({tp.partition for tp in tps if tp.topic == self.outcomes}
                          - set(self.eval_tasks))
        if not join and not evaluate:
            return
        began = time.monotonic()
        with self.liveness.restore():
            joins = {p: self._io.submit(JoinTask, self.config, p) for p in join}
            evals = {p: self._io.submit(EvalTask, self.config, p) for p in evaluate}
            for future in joins.values():
                self._adopt(self.join_tasks, future.result())
            for future in evals.values():
                self._adopt(self.eval_tasks, future.result())
        self._count_partitions()
        log.info("restored %d join and %d evaluation partitions in %.1f s", len(join),
                 len(evaluate), time.monotonic() - began)

    def revoked(self, tps: Any) -> None:
        for tp in tps:
            tasks = self.join_tasks if tp.topic in self.kind_of else \
                self.eval_tasks if tp.topic == self.outcomes else None
            if tasks is not None and tp.partition in tasks:
                task = tasks.pop(tp.partition)
                for key in task.covers():
                    self.durable.pop(key, None)
                task.close()
        self.paused &= set(self.join_tasks)
        self._count_partitions()

    def _count_partitions(self) -> None:
        self.liveness.partitions = {"join": len(self.join_tasks), "evaluate": len(self.eval_tasks),
                                    "paused": len(self.paused)}

    # -- checkpoints ----------------------------------------------------------------------
    # A checkpoint asks the broker where the input ends, stages every task (the cores settle
    # and say what changed: CPU work, in the event loop), commits the tasks' transactions
    # side by side, and only then lets the consumer group commit the input offsets they
    # cover (:meth:`commit_ceiling`). :meth:`checkpoint` waits for the broker in place (the
    # final checkpoint, tests); :meth:`checkpoint_in_background` awaits the commits in the
    # I/O threads, so the agents go on reading while the transactions commit.
    def checkpoint(self, *, final: bool = False) -> None:
        began = time.perf_counter()
        staged = self._stage(self.end_offsets(self._input_partitions()), final=final)
        self.commit(staged)
        self._committed(staged, began)

    async def checkpoint_in_background(self) -> None:
        loop = asyncio.get_running_loop()
        began = time.perf_counter()
        # the end offsets are asked in place (one ListOffsets, milliseconds): had the agents
        # read on while waiting for them, a partition whose new input arrived after the
        # answer, not read yet, would count as idle while another had already read its own,
        # and the evaluator would release that one's records first
        staged = self._stage(self.end_offsets(self._input_partitions()), final=False)
        await asyncio.gather(*(loop.run_in_executor(self._io, task.finish) for task in staged))
        self._committed(staged, began)

    async def publish_in_background(self) -> bool:
        """Commit the evaluation tasks that hold a decision, and only them, off the event loop:
        a decision goes out without waiting for the join's next checkpoint (the join tasks'
        state and the other evaluators' wait for it). False when no decision was waiting."""
        urgent = [task for task in self.eval_tasks.values() if task.urgent]
        if not urgent:
            return False
        loop = asyncio.get_running_loop()
        for task in urgent:
            task.stage()
        await asyncio.gather(*(loop.run_in_executor(self._io, task.finish) for task in urgent))
        self._made_durable(urgent)
        return True

    def _input_partitions(self) -> list[tuple[str, int]]:
        return [(self.topic_of[k], p) for p in self.join_tasks for k in INPUT_KINDS]

    def _stage(self, ends: dict[tuple[str, int], int], *,
               final: bool) -> list[JoinTask | EvalTask]:
        self.input_ends = ends
        staged: list[JoinTask | EvalTask] = []
        self._stuck = []
        for p, task in list(self.join_tasks.items()):
            backlogged = {kind for kind in INPUT_KINDS
                          if ends.get((self.topic_of[kind], p), math.inf) > task.core.next_offset[kind]}
            waiting = bool(backlogged) and p not in self.paused
            if task.progress.stalled_for(sum(task.core.next_offset.values()), waiting) \
                    > self.config.stall_timeout / 2:
                self._stuck.append(p)
            task.stage(backlogged)
            self.dead_letters.update(task.staged_dead)  # those since the last settle
            staged.append(task)
        # the frontiers committed on the frontiers topic as last read (never waits)
        published = self.board.frontiers if self.board is not None else {}
        self._stuck_eval = []
        for eval_task in list(self.eval_tasks.values()):
            if eval_task.stalled_for(published) > self.config.stall_timeout / 2:
                self._stuck_eval.append(eval_task.partition)
            eval_task.stage(force_snapshot=final)
            staged.append(eval_task)
        return staged

    def _made_durable(self, staged: list[JoinTask | EvalTask]) -> None:
        """The staged transactions of ``staged`` are committed: what they cover becomes
        committable (a full checkpoint's, or a decision's alone)."""
        for task in staged:
            task.committed()
            if self.join_tasks.get(task.partition) is task \
                    or self.eval_tasks.get(task.partition) is task:  # not revoked meanwhile
                self.durable.update(task.staged_covers)

    def _committed(self, staged: list[JoinTask | EvalTask], began: float) -> None:
        """Every staged transaction is committed: what they cover becomes committable."""
        self._made_durable(staged)
        self.last_checkpoint_s = time.perf_counter() - began
        # complete only if the join knew where its input ends (else it may hold records back)
        # and every partition with unread input read some lately
        problem = getattr(self.end_offsets, "unknown", None) if self.join_tasks else None
        if self._stuck and problem is None:
            problem = (f"join partitions {self._stuck} have unread input but read none for "
                       f"more than {self.config.stall_timeout / 2:.0f} s")
        if self._stuck_eval and problem is None:
            problem = (f"evaluation partitions {self._stuck_eval} have committed outcomes to "
                       f"read but read none for more than {self.config.stall_timeout / 2:.0f} s")
        self.liveness.checkpointed(self.last_checkpoint_s, problem)
        self.on_checkpoint(self.last_checkpoint_s)
        WORKER_LOG.dead_letters.flush()  # at most one line per 30 s
        if self.board is not None:
            self.limit_skew()

    def limit_skew(self) -> None:
        """Pause the join partitions too far ahead of the slowest one; resume the others
        (agents/skew.py). Paused again at every checkpoint: Faust may resume partitions
        after a rebalance."""
        own = {p: task.frontier for p, task in self.join_tasks.items()}
        lowest = self._lowest_frontier(own)
        self.skew_limit = lowest + self.config.max_skew
        pause = paused(own, lowest, self.config.max_skew)
        resume = self.paused - pause
        if resume:
            log.info("join partitions %s resume", sorted(resume))
            self.flow(set(), resume)
        self._pause(pause)  # all of them: Faust may have resumed some after a rebalance
        self.paused = pause
        self._count_partitions()

    def _lowest_frontier(self, own: dict[int, float] | None = None) -> float:
        """The slowest join partition's frontier, ours (``own``, else read off the tasks)
        being the freshest we know."""
        if own is None:
            own = {p: task.frontier for p, task in self.join_tasks.items()}
        return slowest({**self.board.read(), **own})

    def _pause(self, partitions: set[int]) -> None:
        """Stop fetching ``partitions`` (saying so for those not paused yet)."""
        newly = partitions - self.paused
        if newly:
            log.info("join partitions %s pause: more than %.0f s of event time ahead of the "
                     "slowest partition (limit %.0f); they wait in Kafka until it catches up",
                     sorted(newly), self.config.max_skew, self.skew_limit)
        if partitions:
            self.flow(partitions, set())

    def commit(self, staged: list[JoinTask | EvalTask]) -> None:
        """Commit the staged partitions' transactions side by side, waiting here.

        Every transaction is open with its messages in flight; each commit mostly waits on the
        broker, outside the GIL, so together they take about one round trip instead of one per
        partition.
        """
        for _ in self._io.map(lambda task: task.finish(), staged):
            pass

    def close(self) -> None:
        for tasks in (self.join_tasks, self.eval_tasks):
            for task in tasks.values():
                task.close()
            tasks.clear()
        self._io.shutdown(wait=True)
        if self.board is not None:
            self.board.close()
