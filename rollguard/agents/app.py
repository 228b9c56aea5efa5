"""The Faust app: two agents that move messages between the topics and the pure core.

``join`` reads the co-partitioned requests, predictions and labels (keyed by request_id);
``evaluate`` reads the join's batches (keyed by experiment) and publishes control events
and statistics snapshots. Every worker of the same app id is one consumer group: start more
of them to share the partitions.

    app, runtime = build_app(config)
    run_worker(app, runtime)          # until SIGTERM or Ctrl-C
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from pathlib import Path
from typing import Any

import faust
from confluent_kafka import KafkaException
from faust.types import TP

from rollguard.agents.checkpoint import CheckpointError
from rollguard.agents.liveness import stop_for_restart
from rollguard.agents.metrics import WorkerMetrics
from rollguard.agents.runtime import EndOffsets, Runtime, WorkerConfig
from rollguard.agents.skew import FrontierBoard
from rollguard.agents.transport import RollguardApp
from rollguard.kafka.admin import (check_copartitioned, contract_topics, ensure_topics,
                                   set_topic_configs)
from rollguard.logs import WORKER_LOG, faust_logging_config, quiet_spinner
from rollguard.notify import Notifier

log = logging.getLogger("rollguard.worker")


RESTART_HINT = "The worker stops so that its supervisor restarts it; restarted, it resumes " \
    "from its last checkpoint."


def stop_on_error(what: str, exc: BaseException) -> None:
    """End the worker with one sentence for an error it cannot recover from in place: a
    supervisor restarts it, and it resumes from its last checkpoint."""
    if isinstance(exc, CheckpointError):
        stop_for_restart(f"{exc} {RESTART_HINT}")
    elif isinstance(exc, KafkaException):
        stop_for_restart(f"{what} failed: {exc.args[0].str()}. {RESTART_HINT}")
    else:
        log.error("%s failed with an unexpected error", what, exc_info=exc)
        stop_for_restart(f"{what} failed with an unexpected error ({type(exc).__name__}, "
                         f"logged above); this is a rollguard bug, please report it. "
                         f"{RESTART_HINT}")


class BackgroundCheckpoints:
    """The worker's checkpoints, one at a time, awaiting the transactions' commits off the
    event loop (:meth:`Runtime.checkpoint_in_background`): one starts every ``interval``
    seconds (after the last one's start, at least half an interval after its end), and a
    decision is published at once by a checkpoint of its evaluation task alone
    (:meth:`Runtime.publish_in_background`).

    Faust commits the consumer group's offsets on its own timer; they never pass what the
    last committed checkpoint covers (``app.commit_ceiling``). A checkpoint that fails ends
    the process (:func:`stop_on_error`): the tasks' state is then ahead of what is durable
    (the aborted transaction took their changes with it), and only a restore from the last
    checkpoint is right.
    """

    def __init__(self, runtime: Runtime, interval: float) -> None:
        self.runtime = runtime
        self.interval = interval
        self.lock = asyncio.Lock()  # held by a checkpoint, a revocation, the final checkpoint
        self.stopped = False
        self._wake = asyncio.Event()

    def wake(self, *_: Any) -> None:
        self._wake.set()

    async def run(self) -> None:
        clock = time.monotonic
        due = clock() + self.interval  # the next full checkpoint
        while not self.stopped:
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, due - clock()))
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            async with self.lock:
                if self.stopped:
                    return
                try:
                    if clock() < due:  # woken by a decision
                        await self.runtime.publish_in_background()
                        continue
                    began = clock()
                    await self.runtime.checkpoint_in_background()
                    due = max(began + self.interval, clock() + self.interval / 2)
                except Exception as exc:
                    stop_on_error("A checkpoint", exc)
                    return


def prepare_topics(config: WorkerConfig) -> int:
    """Create the contract's and the worker's topics if missing; return the input partitions."""
    names = config.names
    partitions = check_copartitioned(config.bootstrap, list(names.inputs()))
    if partitions == 0:
        partitions = config.partitions or 6
    ensure_topics(config.bootstrap, contract_topics(names, partitions))
    internal = config.internal.specs(partitions)
    ensure_topics(config.bootstrap, internal)
    set_topic_configs(config.bootstrap, internal)  # topics an older version created
    check_copartitioned(config.bootstrap, list(names.inputs()))
    return partitions


def build_app(config: WorkerConfig) -> tuple[faust.App, Runtime]:
    """The worker's Faust app and its runtime (topics must exist: :func:`prepare_topics`)."""
    faust_dir = Path(config.data_dir) / config.app_id / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)
    app = RollguardApp(
        config.app_id,
        broker=f"kafka://{config.bootstrap}",
        web_enabled=False,
        datadir=str(faust_dir),  # not ./<app-id>-data
        store="memory://",
        processing_guarantee="at_least_once",
        broker_commit_interval=config.checkpoint_interval,
        broker_commit_every=1 << 62,   # commit on the interval only
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        stream_wait_empty=True,
        broker_max_poll_records=2000,
        consumer_max_fetch_size=8 * 1024 * 1024,  # per partition; outcomes batches are large
        broker_session_timeout=config.session_timeout,
        broker_request_timeout=max(90.0, config.session_timeout + 30.0),  # Faust: not below it
        broker_heartbeat_interval=min(3.0, config.session_timeout / 5),
        consumer_group_instance_id=config.instance_id,
    )
    names, internal = config.names, config.internal
    runtime = Runtime(config, end_offsets=EndOffsets(config.bootstrap),
                      board=FrontierBoard(config.bootstrap, internal.frontiers))
    # posts decisions to the experiments' webhooks, following the control topic (notify.py)
    notifier = Notifier.for_worker(config)

    def flow(pause: set[int], resume: set[int]) -> None:
        # Faust drops the fetched records of a partition paused while they are in flight: a
        # resumed partition is first sought back to what its state has not used (the join
        # skips what it has), and only then fetches again.
        if pause:
            app.consumer.pause_partitions({TP(t, p) for p in pause for t in names.inputs()})
        for p in resume:
            asyncio.ensure_future(seek_and_resume(p, runtime.resume_at(p)))

    async def seek_and_resume(partition: int, offsets: dict[str, int]) -> None:
        try:
            for topic, offset in offsets.items():
                await app.consumer.seek(TP(topic, partition), offset)
            if partition not in runtime.paused:  # not paused again meanwhile
                app.consumer.resume_partitions({TP(t, partition) for t in offsets})
        except Exception as exc:
            stop_on_error(f"Resuming join partition {partition}", exc)
    runtime.flow = flow
    app.commit_ceiling = runtime.commit_ceiling
    # each input partition's fetched turn reaches the join agent as one message whose value
    # is a FetchedBatch (agents/transport.py): Faust's per-message cost is paid per turn
    app.batched_topics = frozenset(names.inputs())
    inputs = app.topic(*names.inputs(), key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    # people's control requests are keyed by experiment like the outcomes, with as many
    # partitions: Faust assigns both partition p to the same worker, whose evaluator applies them
    outcomes = app.topic(internal.outcomes, names.control_requests, key_type=bytes,
                         value_type=bytes, key_serializer="raw", value_serializer="raw")

    # Every callback ends the worker with one sentence on an error it cannot recover from:
    # raised into Faust, an error crashes one service and can leave the process up doing
    # nothing (a restore that failed during a broker outage did).
    @app.agent(inputs, name="rollguard.join")
    async def join(stream: faust.Stream) -> None:
        try:
            async for event in stream.events():
                runtime.on_input(event.message)
        except Exception as exc:
            stop_on_error("Reading the input", exc)

    @app.agent(outcomes, name="rollguard.evaluate")
    async def evaluate(stream: faust.Stream) -> None:
        try:
            async for event in stream.events():
                runtime.on_outcome(event.message)
        except Exception as exc:
            stop_on_error("Evaluating the joined outcomes", exc)

    checkpoints = BackgroundCheckpoints(runtime, config.checkpoint_interval)
    runtime.publish_now = checkpoints.wake

    @app.task
    async def checkpoint() -> None:
        await checkpoints.run()

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        try:
            runtime.assigned(assigned)
        except Exception as exc:
            stop_on_error("Restoring the assigned partitions", exc)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        try:
            async with checkpoints.lock:  # a checkpoint in flight ends before its tasks go
                runtime.revoked(revoked)
        except Exception as exc:
            stop_on_error("Handing the revoked partitions back", exc)

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: Any, **kwargs: Any) -> None:
        # the consumer has stopped and committed (after a checkpoint): publish the last
        # statistics snapshot with a final checkpoint, then let go of the partitions
        runtime.watchdog.stop()
        checkpoints.stopped = True
        try:
            async with checkpoints.lock:
                runtime.checkpoint(final=True)
        except Exception as exc:
            stop_on_error("The final checkpoint", exc)
        runtime.close()
        if notifier is not None and notifier.is_alive():
            notifier.stop()  # posts what was just published, for a few seconds at most
        WORKER_LOG.stopped(config.app_id)

    @app.task
    async def announce() -> None:
        runtime.liveness.write()
        log.info("rollguard worker %s on %s: experiments %s; reading %s (%d partitions); "
                 "control to %s; liveness in %s%s", config.app_id, config.bootstrap,
                 ", ".join(e.name for e in config.experiments),
                 ", ".join(names.inputs()), config.partitions, names.control,
                 runtime.liveness.path,
                 f"; metrics on {config.metrics_host}:{config.metrics_port}/metrics"
                 if config.metrics_port is not None else "",
                 extra={"app_id": config.app_id, "broker": config.bootstrap,
                        "experiments": [e.name for e in config.experiments],
                        "partitions": config.partitions})
        if notifier is not None:
            notifier.start()

    return app, runtime


def serve_metrics(runtime: Runtime, port: int, host: str = "0.0.0.0") -> WorkerMetrics:
    """Serve the worker's Prometheus metrics on ``host:port`` (raises OSError when the port
    is taken)."""
    metrics = WorkerMetrics(runtime.liveness, runtime)
    runtime.on_checkpoint = metrics.observe_checkpoint
    metrics.serve(port, host)
    return metrics


#: the cyclic collector's thresholds in the worker (Python's default: 700, 10, 10)
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Keep the cyclic garbage collector's full passes out of the event loop's way.

    A full pass walks every long-lived object, and held the loop about 100 ms every few
    seconds under load (bench_latency.py, 11,700 events/s): a young collection every 700 new
    objects promoted a batch's short-lived objects (fetched records, a checkpoint's messages)
    until the old generation grew enough to trigger one. Every 50,000 new objects, most are
    gone by then: 4 full passes in two minutes instead of 44. The modules, classes and
    functions imported by now are frozen, so the passes left never walk them (they halved).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_worker(app: faust.App, runtime: Runtime, loglevel: str = "WARNING") -> None:
    """Run the app's worker until SIGTERM/SIGINT, then stop cleanly (final checkpoint)."""
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False,
                          logging_config=faust_logging_config(loglevel))
    quiet_spinner(worker)  # no cursor escape codes in a log file
    runtime.watchdog.start()  # from the start: joining the group and restoring count too
    tune_gc()
    worker.execute_from_commandline()
