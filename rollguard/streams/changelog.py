"""What a partition's state looks like on its changelog topics: the key format, in one place.

The pure cores own their state and say what changed since the last checkpoint as keyed
bytes (:class:`Change`); the worker only writes them, in one transaction with the outputs
and the input offsets they cover (agents/checkpoint.py), and hands them back on a restore.
Two changelogs per stage: ``state`` (compacted: a join partition's pending entries kept in
memory, an evaluation partition's evaluators, and each partition's meta) and ``disk`` (a
join partition's pending entries kept in RocksDB, whose own restore starts where the last
durable checkpoint left it).

>>> pending_key("r1"), evaluator_key("churn"), META
(b'r/r1', b'e/churn', b'm')
>>> name_of(pending_key("r1")), is_pending(b"r/r1"), is_evaluator(b"r/r1")
('r1', True, False)
>>> Change("state", META, b"...")
Change(store='state', key=b'm', value=b'...')
"""

from __future__ import annotations

from typing import NamedTuple

#: the partition's meta: the input offsets its state covers, watermarks, queues
META = b"m"
_PENDING = b"r/"    # + request id: one pending join entry
_EVALUATOR = b"e/"  # + experiment name: one experiment's evaluator

#: the two changelogs of a stage
STATE, DISK = "state", "disk"


class Change(NamedTuple):
    """One key of a changelog, changed since the last checkpoint (``value`` None: deleted)."""

    store: str  # STATE or DISK
    key: bytes
    value: bytes | None


def pending_key(request_id: str) -> bytes:
    return _PENDING + request_id.encode()


def evaluator_key(name: str) -> bytes:
    return _EVALUATOR + name.encode()


def is_pending(key: bytes) -> bool:
    return key.startswith(_PENDING)


def is_evaluator(key: bytes) -> bool:
    return key.startswith(_EVALUATOR)


def name_of(key: bytes) -> str:
    """The request id or experiment name of a pending or evaluator key."""
    return key[len(_PENDING):].decode()
