"""Pending joins: what is known of a request until its label arrives or its TTL runs out.

Two stores share one interface. :class:`MemoryStore` keeps entries in a dict (labels that
arrive within seconds or minutes). :class:`DiskStore` keeps them in RocksDB through
``rocksdict`` with a small write-back cache (labels that take months: docs/design.md). Both track
what changed since the last checkpoint (``drain_dirty``), so durability is paid once per
checkpoint and per changed request, never per event, and both expire entries by event time.

A finished request stays as a small ``done`` marker until its deadline, so a duplicate
prediction or label arriving later is recognised and counted once.

>>> store = MemoryStore()
>>> store.put("r1", PendingEntry(experiment="e", deadline=10.0))
>>> store.get("r1").experiment, len(store)
('e', 1)
>>> [rid for rid, _ in store.expire(before=11.0)]
['r1']
>>> sorted(rid for rid, entry in store.drain_dirty())
['r1']
"""

from __future__ import annotations

import heapq
import math
import shutil
from pathlib import Path
from typing import Iterator

import msgspec

from rollguard.streams.records import ArmView, Value


class LabelPart(msgspec.Struct, array_like=True, gc=False, frozen=True):
    ts: float
    label: Value
    reward: float | None = None


class PendingEntry(msgspec.Struct, array_like=True, gc=False):
    """The parts of one request seen so far (first arrival of each part wins)."""

    experiment: str | None = None
    deadline: float = 0.0
    unit: str | None = None                   # as the first prediction carried them
    segments: dict[str, str] | None = None
    request_ts: float | None = None
    request_unit: str | None = None           # as the request carried them (these win)
    request_segments: dict[str, str] | None = None
    preds: dict[str, ArmView] | None = None
    label: LabelPart | None = None
    scored: bool = False
    done: bool = False
    unpaired: bool = False                    # counted as without its pair (join.py)


_ENTRY_ENCODER = msgspec.msgpack.Encoder()
_ENTRY_DECODER = msgspec.msgpack.Decoder(PendingEntry)


def encode_entry(entry: PendingEntry) -> bytes:
    return _ENTRY_ENCODER.encode(entry)


def decode_entry(data: bytes) -> PendingEntry:
    return _ENTRY_DECODER.decode(data)


class _Head(msgspec.Struct, array_like=True, gc=False):
    """The first two items of an encoded :class:`PendingEntry` (the rest is skipped)."""

    experiment: msgspec.Raw = msgspec.Raw(b"")
    deadline: float = 0.0


_HEAD_DECODER = msgspec.msgpack.Decoder(_Head)

_UNCHANGED = object()

#: widths (seconds of event time) of the deadline index's buckets, finest first, and how many
#: request ids a bucket takes (except the finest) before later ones go to a finer level
BUCKET_WIDTHS_S = (1.0, 16.0, 256.0, 4096.0, 65536.0)
BUCKET_IDS = 4096


class MemoryStore:
    """Pending entries in a dict, each kept packed (``encode_entry`` bytes, decoded on access).

    A pending request costs its key, one bytes object and about a slot in a list of the
    deadline index (bench/RESULTS.md, "Pending join state"), not a tree of Python objects.
    Entries changed since the last ``drain_dirty`` stay objects until it packs them (a
    write-back cache bounded by one checkpoint interval of traffic, as on :class:`DiskStore`),
    so the parts of a request arriving close together, its release and its checkpoint cost
    one encoding and no decoding. A change is kept by ``put`` only: ``get`` may return a copy.

    Deadlines live inside the entries; the index only says where to look. A request id waits
    in a bucket of deadlines: the coarsest one (``BUCKET_WIDTHS_S``, up to 18 h) that is not
    full (``BUCKET_IDS``) and not opened yet. ``expire`` opens every bucket that starts before
    its limit, coarse ones first, and files each id again by its entry's current deadline, one
    level finer; ids from opened fine buckets go to an exact heap of ``(deadline,
    request_id)``, from which entries leave in that order. So only about a second's worth of
    deadlines is held as tuples, and an expiry moves at most a few full buckets at once. An id
    stays in the bucket of its current deadline: ``put`` files it again only when the deadline
    moved to another second; an opened bucket drops ids whose entry is gone or whose deadline
    lies elsewhere (until then they wait, as stale heap items did before).

    >>> store = MemoryStore()
    >>> for rid, deadline in (("b", 5000.0), ("a", 5000.0), ("c", 3.5)):
    ...     store.put(rid, PendingEntry(experiment="e", deadline=deadline))
    >>> [rid for rid, _ in store.expire(before=4.0)], len(store)
    (['c'], 2)
    >>> entry = store.get("a"); entry.deadline = 9000.0; store.put("a", entry)
    >>> [(rid, entry.deadline) for rid, entry in store.expire(before=6000.0)]
    [('b', 5000.0)]
    """

    def __init__(self) -> None:
        # every pending request: its entry packed as of the last drain_dirty (b"" if newer)
        self._entries: dict[str, bytes] = {}
        # changed since the last drain_dirty: the entry (None: removed) and the deadline its
        # id is filed for (see _refile)
        self._changed: dict[str, PendingEntry | None] = {}
        self._filed: dict[str, float] = {}
        # the deadline index, per level (finest first): bucket number -> request ids, and the
        # bucket numbers in a heap; buckets starting before ``_opened_to`` have been opened
        self._buckets: list[dict[float, list[str]]] = [{} for _ in BUCKET_WIDTHS_S]
        self._order: list[list[float]] = [[] for _ in BUCKET_WIDTHS_S]
        self._near: list[tuple[float, str]] = []
        self._opened_to = -math.inf
        self._buffer = bytearray(256)

    def _pack(self, entry: PendingEntry) -> bytes:
        """``encode_entry(entry)`` in a bytes object of its exact size (what ``encode`` returns
        keeps its spare capacity: 17 B more for a shadow request's entry)."""
        _ENTRY_ENCODER.encode_into(entry, self._buffer)
        return bytes(self._buffer)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, request_id: str) -> PendingEntry | None:
        entry = self._changed.get(request_id, _UNCHANGED)
        if entry is not _UNCHANGED:
            return entry
        data = self._entries.get(request_id)
        return None if data is None else _ENTRY_DECODER.decode(data)

    def put(self, request_id: str, entry: PendingEntry, *, deadline_changed: bool = True) -> None:
        """Store ``entry`` (new or changed); pass ``deadline_changed=False`` for cheap updates."""
        entries = self._entries
        if deadline_changed:
            deadline, filed = entry.deadline, self._filed
            before = filed.get(request_id)
            if before is None:
                data = entries.get(request_id)
                if data:
                    before = _HEAD_DECODER.decode(data).deadline
            filed[request_id] = deadline
            self._refile(request_id, deadline, before)
        self._changed[request_id] = entry
        if request_id not in entries:
            entries[request_id] = b""

    def remove(self, request_id: str) -> None:
        if self._entries.pop(request_id, None) is not None:
            self._changed[request_id] = None
            self._filed.pop(request_id, None)

    def expire(self, before: float) -> Iterator[tuple[str, PendingEntry]]:
        """Remove and yield every entry whose deadline is earlier than ``before``."""
        if before > self._opened_to:
            self._opened_to = before
        for level in range(len(BUCKET_WIDTHS_S) - 1, -1, -1):
            width, buckets, order = BUCKET_WIDTHS_S[level], self._buckets[level], self._order[level]
            while order and order[0] * width < self._opened_to:
                number = heapq.heappop(order)
                for request_id in buckets.pop(number):
                    deadline = self._deadline(request_id)
                    if deadline is not None and deadline // width == number:
                        self._file(request_id, deadline, level - 1)
        near = self._near
        while near and near[0][0] < before:
            deadline, request_id = heapq.heappop(near)
            entry = self.get(request_id)
            if entry is not None and entry.deadline == deadline:
                self.remove(request_id)
                yield request_id, entry

    def drain_dirty(self) -> list[tuple[str, PendingEntry | None]]:
        """What changed since the last call: ``(request_id, entry or None if removed)``."""
        return [(rid, entry) for rid, entry, _ in self._drain()]

    def stage(self) -> list[tuple[str, bytes | None]]:
        """What changed since the last call, packed (``encode_entry`` bytes, None if
        removed): the changelog records of the next checkpoint, encoded once."""
        return [(rid, value) for rid, _, value in self._drain()]

    def _drain(self) -> list[tuple[str, PendingEntry | None, bytes | None]]:
        changed, self._changed, self._filed = self._changed, {}, {}
        entries, pack = self._entries, self._pack
        out = []
        for request_id, entry in changed.items():
            value = None
            if entry is not None:
                value = entries[request_id] = pack(entry)
            out.append((request_id, entry, value))
        return out

    def load(self, request_id: str, entry: PendingEntry | None) -> None:
        """Apply one restored changelog record (not marked dirty)."""
        if request_id in self._changed:  # (not during a restore) the change stays dirty
            if entry is None:
                self.remove(request_id)
            else:
                self.put(request_id, entry)
            return
        entries = self._entries
        if entry is None:
            entries.pop(request_id, None)
            return
        old = entries.get(request_id)
        entries[request_id] = self._pack(entry)
        self._refile(request_id, entry.deadline,
                     None if old is None else _HEAD_DECODER.decode(old).deadline)

    def _deadline(self, request_id: str) -> float | None:
        """The current deadline of a pending request (None: not pending)."""
        entry = self._changed.get(request_id, _UNCHANGED)
        if entry is not _UNCHANGED:
            return None if entry is None else entry.deadline
        data = self._entries.get(request_id)
        return None if data is None else _HEAD_DECODER.decode(data).deadline

    def _refile(self, request_id: str, deadline: float, before: float | None) -> None:
        """File ``request_id`` for its new ``deadline``, unless its id waits already in a
        bucket holding that second (``before``: the deadline it was filed for, if any)."""
        second = deadline // 1.0
        if before is not None and second >= self._opened_to and before // 1.0 == second:
            return
        self._file(request_id, deadline, len(BUCKET_WIDTHS_S) - 1)

    def _file(self, request_id: str, deadline: float, level: int) -> None:
        """Put ``request_id`` into the index, at ``level`` or finer, or into the exact heap."""
        if deadline - deadline == 0.0:  # (not infinite, not NaN)
            opened_to = self._opened_to
            while level >= 0:
                width = BUCKET_WIDTHS_S[level]
                number = deadline // width
                if number * width >= opened_to:  # this bucket is not opened yet
                    buckets = self._buckets[level]
                    bucket = buckets.get(number)
                    if bucket is None:
                        buckets[number] = [request_id]
                        heapq.heappush(self._order[level], number)
                        return
                    if len(bucket) < BUCKET_IDS or level == 0:
                        bucket.append(request_id)
                        return
                level -= 1
        heapq.heappush(self._near, (deadline, request_id))

    def committed(self, changelog_offset: int) -> None:
        """A checkpoint reached the changelog; nothing to persist locally for memory."""

    def close(self) -> None:
        pass


class DiskStore:
    """Pending entries in RocksDB (``rocksdict``) behind a write-back cache.

    Keys: ``p/<request_id>`` → entry (msgpack); ``x/<deadline>/<request_id>`` → ``b""`` (an
    index of deadlines, ordered, so expiry reads only what expires); ``m/changelog`` → the
    changelog offset up to which the database is complete. Changed entries stay in the
    cache until ``committed`` writes them in one atomic batch after the checkpoint's
    transaction commits; the cache is bounded by one checkpoint interval of traffic.
    """

    def __init__(self, path: Path, *, block_cache_mb: int = 32, write_buffer_mb: int = 16) -> None:
        from rocksdict import Options, Rdict

        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(write_buffer_mb * 1024 * 1024)
        options.set_max_write_buffer_number(2)
        self._block_cache_mb = block_cache_mb
        self._db = Rdict(str(self.path), options)
        # request_id -> (entry or None when removed, deadline stored on disk or None)
        self._cache: dict[str, tuple[PendingEntry | None, float | None]] = {}
        self._dirty: set[str] = set()
        self._count = self._load_count()
        # staged for the checkpoint in flight: request_id -> (encoded entry or None when
        # removed, its deadline, the deadline on disk), and the count they make
        self._staged: dict[str, tuple[bytes | None, float | None, float | None]] = {}
        self._staged_count = self._count

    # keys -----------------------------------------------------------------------------
    @staticmethod
    def _pkey(request_id: str) -> bytes:
        return b"p/" + request_id.encode()

    @staticmethod
    def _xkey(deadline: float, request_id: str) -> bytes:
        return b"x/%020.6f/" % deadline + request_id.encode()

    def _load_count(self) -> int:
        raw = self._db.get(b"m/count")
        return int(raw) if raw is not None else 0

    def __len__(self) -> int:
        return self._count

    @property
    def changelog_offset(self) -> int | None:
        raw = self._db.get(b"m/changelog")
        return int(raw) if raw is not None else None

    # interface --------------------------------------------------------------------------
    def _on_disk(self, request_id: str) -> tuple[PendingEntry | None, float | None]:
        raw = self._db.get(self._pkey(request_id))
        if raw is None:
            return None, None
        entry = decode_entry(raw)
        return entry, entry.deadline

    def get(self, request_id: str) -> PendingEntry | None:
        cached = self._cache.get(request_id)
        if cached is not None:
            return cached[0]
        entry, _ = self._on_disk(request_id)
        return entry

    def put(self, request_id: str, entry: PendingEntry, *, deadline_changed: bool = True) -> None:
        cached = self._cache.get(request_id)
        if cached is None:
            old, disk_deadline = self._on_disk(request_id)
            if old is None:
                self._count += 1
        else:
            if cached[0] is None:
                self._count += 1
            disk_deadline = cached[1]
        self._cache[request_id] = (entry, disk_deadline)
        self._dirty.add(request_id)

    def remove(self, request_id: str) -> None:
        if self.get(request_id) is not None:
            self._remove(request_id)

    def _remove(self, request_id: str) -> None:
        cached = self._cache.get(request_id)
        disk_deadline = cached[1] if cached is not None else self._on_disk(request_id)[1]
        self._cache[request_id] = (None, disk_deadline)
        self._dirty.add(request_id)
        self._count -= 1

    def expire(self, before: float) -> Iterator[tuple[str, PendingEntry]]:
        expired: list[tuple[str, PendingEntry]] = []
        upper = self._xkey(before, "")
        for key in self._db.keys(from_key=b"x/"):
            if not key.startswith(b"x/") or key >= upper:
                break
            request_id = key[23:].decode()
            entry = self.get(request_id)
            if entry is not None and entry.deadline < before:
                expired.append((request_id, entry))
        for request_id, cached in list(self._cache.items()):  # new since the last checkpoint
            entry = cached[0]
            if entry is not None and cached[1] is None and entry.deadline < before:
                expired.append((request_id, entry))
        seen = set()
        for request_id, entry in expired:
            if request_id not in seen:
                seen.add(request_id)
                self._remove(request_id)
                yield request_id, entry

    def drain_dirty(self) -> list[tuple[str, PendingEntry | None]]:
        """The entries changed since the last call, encoded as they are now (see
        :meth:`stage`), decoded back for the caller."""
        return [(rid, None if value is None else decode_entry(value))
                for rid, value in self.stage()]

    def stage(self) -> list[tuple[str, bytes | None]]:
        """The entries changed since the last call, encoded: what the next checkpoint
        writes to the changelog, and what :meth:`committed` writes to RocksDB once that
        checkpoint is durable (entries that change meanwhile wait for the next one)."""
        staged: dict[str, tuple[bytes | None, float | None, float | None]] = {}
        for rid in self._dirty:
            entry, disk_deadline = self._cache[rid]
            staged[rid] = (None, None, disk_deadline) if entry is None else \
                (encode_entry(entry), entry.deadline, disk_deadline)
        self._dirty = set()
        self._staged.update(staged)
        self._staged_count = self._count
        return [(rid, value) for rid, (value, _, _) in staged.items()]

    def committed(self, changelog_offset: int) -> None:
        """Write what :meth:`stage` gave to RocksDB in one batch, with the changelog offset it
        reaches; the cache keeps only the entries changed since."""
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for request_id, (value, deadline, disk_deadline) in self._staged.items():
            if disk_deadline is not None and (value is None or deadline != disk_deadline):
                batch.delete(self._xkey(disk_deadline, request_id))
            if value is None:
                batch.delete(self._pkey(request_id))
            else:
                batch.put(self._pkey(request_id), value)
                if deadline != disk_deadline:
                    batch.put(self._xkey(deadline, request_id), b"")
            if request_id in self._dirty:  # changed again: stays, now with its disk deadline
                self._cache[request_id] = (self._cache[request_id][0], deadline)
            else:
                self._cache.pop(request_id, None)
        batch.put(b"m/changelog", str(changelog_offset).encode())
        batch.put(b"m/count", str(self._staged_count).encode())
        self._db.write(batch)
        self._staged = {}

    def load(self, request_id: str, entry: PendingEntry | None) -> None:
        """Apply one restored changelog record straight to the database."""
        old, disk_deadline = self._on_disk(request_id)
        if disk_deadline is not None and (entry is None or entry.deadline != disk_deadline):
            self._db.delete(self._xkey(disk_deadline, request_id))
        if entry is None:
            if old is not None:
                self._db.delete(self._pkey(request_id))
                self._count -= 1
        else:
            if old is None:
                self._count += 1
            self._db[self._pkey(request_id)] = encode_entry(entry)
            if entry.deadline != disk_deadline:
                self._db[self._xkey(entry.deadline, request_id)] = b""

    def reset(self) -> None:
        """Forget everything (the changelog will be read from its start)."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.__init__(self.path)  # type: ignore[misc]

    def close(self) -> None:
        self._db.close()
