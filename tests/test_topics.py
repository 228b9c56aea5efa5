"""Topic creation on a real broker: idempotent, compacted control/stats, co-partitioned inputs."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from rollguard.kafka.admin import TopicError, create_contract_topics, partition_counts
from rollguard.streams.topics import TopicNames

pytestmark = pytest.mark.kafka


def test_create_is_idempotent_and_lays_out_the_contract(kafka_bootstrap, topic_prefix):
    names = TopicNames(topic_prefix)
    first = create_contract_topics(kafka_bootstrap, names, partitions=3)
    assert set(first.values()) == {"created"}
    assert set(create_contract_topics(kafka_bootstrap, names, partitions=3).values()) == {"exists"}

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    counts = partition_counts(admin, [names.requests, names.predictions, names.labels])
    assert counts == {names.requests: 3, names.predictions: 3, names.labels: 3}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t)
                 for t in (names.control, names.stats, names.requests)]
    configs = {r.name: f.result() for r, f in admin.describe_configs(resources).items()}
    assert configs[names.control]["cleanup.policy"].value == "compact"
    assert configs[names.stats]["cleanup.policy"].value == "compact"
    assert configs[names.requests]["cleanup.policy"].value == "delete"


def test_unequal_input_partitions_are_refused(kafka_bootstrap, topic_prefix):
    names = TopicNames(topic_prefix)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(names.labels, num_partitions=2, replication_factor=1)])[
        names.labels].result(30)
    with pytest.raises(TopicError, match="equal partition counts.*labels has 2"):
        create_contract_topics(kafka_bootstrap, names, partitions=4)


def test_configs_of_topics_an_older_version_created_are_brought_up_to_date(
        kafka_bootstrap, topic_prefix):
    from rollguard.kafka.admin import TopicSpec, ensure_topics, set_topic_configs

    name = f"{topic_prefix}old-internal"
    ensure_topics(kafka_bootstrap, [TopicSpec(name, 1, {})])
    spec = TopicSpec(name, 1, {"max.message.bytes": str(64 << 20)})
    set_topic_configs(kafka_bootstrap, [spec])
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    config = admin.describe_configs([resource])[resource].result(30)
    assert config["max.message.bytes"].value == str(64 << 20)
