"""A worker whose partitions stop reading while input waits says so: its checkpoints count as
incomplete (liveness), so the watchdog ends it for its supervisor to restart. No broker: a
real Runtime with the tasks' pure cores, the Kafka parts left out."""

from __future__ import annotations

import math
from functools import partial
from types import SimpleNamespace

from rollguard.agents.liveness import Liveness, Progress
from rollguard.agents.runtime import EvalTask, Runtime, WorkerConfig
from rollguard.decisions.partition import EvalPartition
from rollguard.schemas import parse_experiments
from rollguard.streams.records import FRONTIER_KEY, Batch, JoinedRecord, OUTCOME, encode_batch
from rollguard.streams.topics import TopicNames

NAMES = TopicNames("t.")
EXPERIMENTS = parse_experiments("""
- {name: e, task: binary, mode: shadow, champion: m:1, candidates: [m:2],
   primary: {metric: accuracy, margin: 0.01}}
""", "test.yaml")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def evaluation_task(partition: int, clock: Clock) -> SimpleNamespace:
    """An evaluation task's pure core and its stall check, without its Kafka checkpointer."""
    task = SimpleNamespace(partition=partition, progress=Progress(clock=clock),
                           core=EvalPartition(partition, EXPERIMENTS, sources=2),
                           stage=lambda force_snapshot: None, finish=lambda: None,
                           committed=lambda: None, covers=dict, staged_covers={},
                           close=lambda: None)
    task.stalled_for = partial(EvalTask.stalled_for, task)
    return task


def outcome(ts: float) -> JoinedRecord:
    return JoinedRecord(OUTCOME, ts, f"r{ts}", "e", None, None, (), True, ts)


def worker(published: dict[int, float]) -> Runtime:
    """A runtime with no join partition of its own; ``published``: the frontiers topic."""
    board = SimpleNamespace(frontiers=published, read=lambda: published, close=lambda: None)
    return Runtime(WorkerConfig("unused:9092", EXPERIMENTS, names=NAMES, stall_timeout=10.0),
                   end_offsets=lambda tps: {}, liveness=Liveness(), board=board)


def test_an_evaluation_partition_that_reads_no_committed_outcomes_makes_checkpoints_incomplete():
    clock, published = Clock(), {0: 20.0, 1: 20.0}
    runtime = worker(published)
    task = runtime.eval_tasks[2] = evaluation_task(2, clock)
    task.core.on_batch(0, b"e", encode_batch(Batch(0, [outcome(5.0)], 20.0)))
    task.core.on_batch(1, b"e", encode_batch(Batch(1, [], 20.0)))
    assert task.core.read_frontiers() == {0: 20.0, 1: 20.0}
    runtime.checkpoint()
    assert runtime.liveness.problem is None

    published[0] = 60.0  # join partition 0 committed more, which partition 2 never reads
    for now in (1.0, 4.0, 5.5):
        clock.now = now
        runtime.checkpoint()
    assert runtime.liveness.problem == ("evaluation partitions [2] have committed outcomes "
                                        "to read but read none for more than 5 s")
    assert runtime.liveness.incomplete == 1

    clock.now = 6.0  # it reads again: the frontier message of that checkpoint arrives
    told = encode_batch(Batch(0, [], 60.0))
    task.core.on_batch(2, FRONTIER_KEY, told)
    runtime.checkpoint()
    assert runtime.liveness.problem is None
    runtime.close()


def test_a_slow_evaluation_partition_that_keeps_reading_is_not_stalled():
    clock, published = Clock(), {0: 20.0, 1: 20.0}
    runtime = worker(published)
    task = runtime.eval_tasks[2] = evaluation_task(2, clock)
    task.core.on_batch(0, b"e", encode_batch(Batch(1, [], 1.0)))
    for step in range(1, 30):  # far behind all along, one batch a second
        clock.now = float(step)
        task.core.on_batch(step, b"e", encode_batch(Batch(0, [outcome(step)], step + 0.5)))
        runtime.checkpoint()
        assert runtime.liveness.problem is None, f"flagged at {step} s"
    runtime.close()


def test_a_partition_with_nothing_to_read_or_no_evaluator_waits_without_a_problem():
    clock, published = Clock(), {0: math.inf, 1: math.inf}
    runtime = worker(published)
    idle = runtime.eval_tasks[1] = evaluation_task(1, clock)
    for source in (0, 1):  # both join partitions went idle, and said so
        idle.core.on_batch(source, b"e", encode_batch(Batch(source, [], math.inf)))
    runtime.eval_tasks[2] = evaluation_task(2, clock)  # no experiment's outcomes come here
    for now in (1.0, 30.0, 60.0):
        clock.now = now
        runtime.checkpoint()
        assert runtime.liveness.problem is None
    runtime.close()
