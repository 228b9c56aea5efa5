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
