"""The Faust app: two agents that move messages between the topics and the pure core.

``join`` reads the co-partitioned requests, predictions and labels (keyed by request_id);
``evaluate`` reads the join's batches (keyed by experiment) and publishes control events
and statistics snapshots. Every worker of the same app id is one consumer group: start more
of them to share the partitions.

    app, runtime = build_app(config)
    run_worker(app)          # until SIGTERM or Ctrl-C
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from rollguard.agents.checkpoint import CheckpointError
from rollguard.agents.runtime import EndOffsets, Runtime, WorkerConfig
from rollguard.agents.transport import RollguardApp
from rollguard.kafka.admin import (check_copartitioned, contract_topics, ensure_topics,
                                   set_topic_configs)

log = logging.getLogger("rollguard.worker")


class CheckpointBeforeCommit(faust.Sensor):
    """Faust calls this just before it commits consumer offsets: checkpoint first, so the
    group's committed offsets never run ahead of the state (see agents/checkpoint.py)."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime

    def on_commit_initiated(self, consumer: Any) -> Any:
        try:
            self.runtime.checkpoint()
        except CheckpointError as exc:
            # raising stops Faust's commit: offsets never pass the last checkpoint
            log.error("%s The worker stops; restarted, it resumes from its last checkpoint.", exc)
            raise
        return None


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
    app = RollguardApp(
        config.app_id,
        broker=f"kafka://{config.bootstrap}",
        web_enabled=False,
        store="memory://",
        processing_guarantee="at_least_once",
        broker_commit_interval=config.checkpoint_interval,
        broker_commit_every=1 << 62,   # commit (and checkpoint) on the interval only
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        stream_wait_empty=True,
        broker_max_poll_records=2000,
        consumer_max_fetch_size=8 * 1024 * 1024,  # per partition; outcomes batches are large
        broker_session_timeout=config.session_timeout,
        broker_heartbeat_interval=min(3.0, config.session_timeout / 5),
        consumer_group_instance_id=config.instance_id,
    )
    runtime = Runtime(config, end_offsets=EndOffsets(config.bootstrap))
    names, internal = config.names, config.internal
    inputs = app.topic(*names.inputs(), key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    outcomes = app.topic(internal.outcomes, key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")

    @app.agent(inputs, name="rollguard.join")
    async def join(stream: faust.Stream) -> None:
        async for event in stream.events():
            runtime.on_input(event.message)

    @app.agent(outcomes, name="rollguard.evaluate")
    async def evaluate(stream: faust.Stream) -> None:
        async for event in stream.events():
            runtime.on_outcome(event.message)

    app.sensors.add(CheckpointBeforeCommit(runtime))

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        runtime.assigned(assigned)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        runtime.revoked(revoked)

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: Any, **kwargs: Any) -> None:
        # the consumer has stopped and committed (after a checkpoint): publish the last
        # statistics snapshot with a final checkpoint, then let go of the partitions
        runtime.checkpoint(final=True)
        runtime.close()

    @app.task
    async def announce() -> None:
        log.info("rollguard worker %s on %s: experiments %s; reading %s; control to %s",
                 config.app_id, config.bootstrap,
                 ", ".join(e.name for e in config.experiments),
                 ", ".join(names.inputs()), names.control)

    return app, runtime


def run_worker(app: faust.App, loglevel: str = "WARNING") -> None:
    """Run the app's worker until SIGTERM/SIGINT, then stop cleanly (final checkpoint)."""
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
