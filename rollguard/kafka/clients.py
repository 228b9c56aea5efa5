"""Configuration shared by rollguard's confluent-kafka clients.

librdkafka prints every refused connection to stderr by default; rollguard routes its log
to the ``rollguard.librdkafka`` logger instead (silent unless you configure it) and reports
failures itself, in one sentence, where they matter.

>>> config = client_config("127.0.0.1:9092", **{"client.id": "doc"})
>>> config["bootstrap.servers"], config["client.id"]
('127.0.0.1:9092', 'doc')
"""

from __future__ import annotations

import logging

LIBRDKAFKA_LOG = logging.getLogger("rollguard.librdkafka")
LIBRDKAFKA_LOG.addHandler(logging.NullHandler())
LIBRDKAFKA_LOG.propagate = False


def client_config(bootstrap: str, **extra) -> dict:
    """A confluent-kafka config for ``bootstrap`` with librdkafka's log kept off stderr."""
    return {"bootstrap.servers": bootstrap, "logger": LIBRDKAFKA_LOG, **extra}


class BrokerUnreachable(RuntimeError):
    """No Kafka broker answered at the bootstrap servers; the message says what to do."""


def require_broker(bootstrap: str, timeout: float = 5.0) -> int:
    """The number of brokers that answer a metadata request at ``bootstrap``, or
    :class:`BrokerUnreachable` in one sentence (instead of a client's traceback later).

    >>> require_broker("127.0.0.1:1", timeout=0.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    rollguard.kafka.clients.BrokerUnreachable: No Kafka broker answers at 127.0.0.1:1 (...): start one with `rollguard kafka start`, or give the right --bootstrap-servers (or KAFKA_BOOTSTRAP_SERVERS).
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(bootstrap, **{"socket.connection.setup.timeout.ms": 1000}))
    try:
        brokers = admin.list_topics(timeout=timeout).brokers
    except KafkaException as exc:
        why = exc.args[0].str().removeprefix("Failed to get metadata: ")
        raise BrokerUnreachable(
            f"No Kafka broker answers at {bootstrap} ({why}): start one with `rollguard kafka "
            "start`, or give the right --bootstrap-servers (or KAFKA_BOOTSTRAP_SERVERS).") from None
    return len(brokers)
