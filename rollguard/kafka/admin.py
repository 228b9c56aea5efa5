"""Create rollguard's topics idempotently, with the settings the contract needs.

- requests, predictions and labels get the SAME partition count (joins are co-partitioned
  by ``request_id``); an existing set with unequal counts is an error, never "fixed" silently;
- the control and stats topics are compacted (the latest event per experiment is the state);
- the history topic keeps every point (cleanup.policy delete, a year's retention);
- the replication factor is taken from the cluster: min(3, number of brokers).
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from rollguard.kafka.clients import client_config
from rollguard.streams.topics import TopicNames


class TopicError(RuntimeError):
    """Topics could not be created or are laid out wrongly; the message says what to do."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


COMPACTED = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1",
             "segment.ms": "600000"}
#: the history points (docs/history.md): all of them, for a year
HISTORY = {"cleanup.policy": "delete", "retention.ms": str(365 * 86400 * 1000)}


def contract_topics(names: TopicNames, partitions: int = 6) -> list[TopicSpec]:
    """The contract's topics (docs/events.md): inputs with ``partitions`` each, control and
    stats compacted, history (docs/history.md) kept a year."""
    if partitions < 1:
        raise TopicError(f"partitions must be at least 1, got {partitions}.")
    return [
        TopicSpec(names.requests, partitions, {}),
        TopicSpec(names.predictions, partitions, {}),
        TopicSpec(names.labels, partitions, {}),
        TopicSpec(names.control, 1, dict(COMPACTED)),
        TopicSpec(names.stats, 1, dict(COMPACTED)),
        TopicSpec(names.deadletter, 1, {}),
        TopicSpec(names.history, 1, dict(HISTORY)),
        # co-partitioned with the worker's outcomes (keyed by experiment, same count): the
        # worker that evaluates an experiment reads its requests
        TopicSpec(names.control_requests, partitions, {}),
    ]


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient(client_config(bootstrap))


def replication_factor(admin: AdminClient, timeout: float = 10.0) -> int:
    try:
        brokers = len(admin.list_topics(timeout=timeout).brokers)
    except KafkaException as exc:
        raise TopicError(
            f"Kafka did not answer a metadata request ({exc.args[0].str()}): check the "
            "bootstrap servers and that the broker runs (rollguard kafka status).") from None
    return max(1, min(3, brokers))


def partition_counts(admin: AdminClient, topics: list[str], timeout: float = 10.0) -> dict[str, int]:
    """Partition count of each existing topic among ``topics``."""
    metadata = admin.list_topics(timeout=timeout).topics
    return {t: len(metadata[t].partitions) for t in topics if t in metadata and not metadata[t].error}


def ensure_topics(bootstrap: str, specs: list[TopicSpec], timeout: float = 30.0) -> dict[str, str]:
    """Create the missing topics of ``specs``; return ``{topic: "created" | "exists"}``."""
    admin = admin_client(bootstrap)
    replicas = replication_factor(admin, min(timeout, 10.0))
    existing = partition_counts(admin, [s.name for s in specs], timeout)
    missing = [s for s in specs if s.name not in existing]
    result = {s.name: "exists" for s in specs if s.name in existing}
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, num_partitions=s.partitions, replication_factor=replicas,
                      config=s.config) for s in missing],
            operation_timeout=timeout, request_timeout=timeout)
        for name, future in futures.items():
            try:
                future.result(timeout)
                result[name] = "created"
            except KafkaException as exc:
                error = exc.args[0]
                if error.name() == "TOPIC_ALREADY_EXISTS":  # another worker raced us
                    result[name] = "exists"
                else:
                    raise TopicError(f"Creating topic {name} failed: {error.str()}.") from None
    return result


def set_topic_configs(bootstrap: str, specs: list[TopicSpec], timeout: float = 30.0) -> None:
    """Set each existing topic's configs to its spec's (an older version created it)."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    resources = [ConfigResource(ConfigResource.Type.TOPIC, spec.name, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
        for k, v in spec.config.items()]) for spec in specs if spec.config]
    if not resources:
        return
    admin = admin_client(bootstrap)  # keep the client alive until the futures resolve
    for resource, future in admin.incremental_alter_configs(
            resources, request_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            raise TopicError(f"Setting the configs of topic {resource.name} failed: "
                             f"{exc.args[0].str()}.") from None


def check_copartitioned(bootstrap: str, topics: list[str], timeout: float = 10.0) -> int:
    """The common partition count of ``topics``; a clear error when they differ."""
    counts = partition_counts(admin_client(bootstrap), topics, timeout)
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{t} has {n}" for t, n in counts.items())
        raise TopicError(
            f"Joined topics must have equal partition counts but {listed}: add partitions "
            "to the smaller ones (kafka-topics --alter) before starting the worker.")
    return next(iter(counts.values()), 0)


def create_contract_topics(bootstrap: str, names: TopicNames | None = None,
                           partitions: int = 6) -> dict[str, str]:
    """``rollguard topics create``: the contract's topics, idempotently, co-partitioned."""
    names = names or TopicNames()
    result = ensure_topics(bootstrap, contract_topics(names, partitions))
    check_copartitioned(bootstrap, list(names.inputs()))
    return result


def delete_topics(bootstrap: str, topics: list[str], timeout: float = 30.0) -> list[str]:
    """Delete those of ``topics`` that exist (best effort: the names of those that could not
    be deleted are returned)."""
    admin = admin_client(bootstrap)
    try:
        existing = [t for t in topics if t in admin.list_topics(timeout=10).topics]
    except KafkaException:
        return list(topics)
    if not existing:
        return []
    left = []
    for topic, future in admin.delete_topics(existing, operation_timeout=timeout,
                                             request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException:
            left.append(topic)
    return left
