"""Topic names of the event contract (docs/events.md) and rollguard's internal topics.

Every name starts with a prefix, ``rollguard.`` by default, configurable with
``ROLLGUARD_TOPIC_PREFIX`` (give the trailing separator yourself):

>>> names = TopicNames()
>>> names.requests, names.control
('rollguard.requests', 'rollguard.control')
>>> TopicNames(prefix="staging.rg.").labels
'staging.rg.labels'
>>> TopicNames().kind_of("rollguard.predictions")
'predictions'
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_PREFIX = "rollguard."

#: the input topics services produce to; keyed by request_id and co-partitioned
INPUT_KINDS = ("requests", "predictions", "labels")


def default_prefix() -> str:
    return os.environ.get("ROLLGUARD_TOPIC_PREFIX", DEFAULT_PREFIX)


@dataclass(frozen=True)
class TopicNames:
    """The full names of rollguard's topics under one prefix."""

    prefix: str = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.prefix is None:
            object.__setattr__(self, "prefix", default_prefix())

    # the contract (docs/events.md)
    @property
    def requests(self) -> str:
        return f"{self.prefix}requests"

    @property
    def predictions(self) -> str:
        return f"{self.prefix}predictions"

    @property
    def labels(self) -> str:
        return f"{self.prefix}labels"

    @property
    def control(self) -> str:
        return f"{self.prefix}control"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}deadletter"

    @property
    def stats(self) -> str:
        return f"{self.prefix}stats"

    @property
    def control_requests(self) -> str:
        """People's requests to steer an experiment (``rollguard pause`` …), keyed by
        experiment; as many partitions as the inputs, read by the experiment's evaluator."""
        return f"{self.prefix}control-requests"

    @property
    def history(self) -> str:
        """The evaluator's history points (docs/history.md), keyed by experiment."""
        return f"{self.prefix}history"

    def inputs(self) -> tuple[str, str, str]:
        return (self.requests, self.predictions, self.labels)

    def kind_of(self, topic: str) -> str | None:
        """``requests``/``predictions``/``labels``/… for a full topic name, else None."""
        if topic.startswith(self.prefix):
            kind = topic[len(self.prefix):]
            if kind in (*INPUT_KINDS, "control", "deadletter", "stats", "history",
                        "control-requests"):
                return kind
        return None
