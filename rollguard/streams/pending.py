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


class MemoryStore:
    """Pending entries in a dict, a heap of deadlines (lazily pruned), and a dirty set."""

    def __init__(self) -> None:
        self._entries: dict[str, PendingEntry] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._dirty: set[str] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, request_id: str) -> PendingEntry | None:
        return self._entries.get(request_id)

    def put(self, request_id: str, entry: PendingEntry, *, deadline_changed: bool = True) -> None:
        """Store ``entry`` (new or changed); pass ``deadline_changed=False`` for cheap updates."""
        self._entries[request_id] = entry
        self._dirty.add(request_id)
        if deadline_changed:
            heapq.heappush(self._deadlines, (entry.deadline, request_id))

    def remove(self, request_id: str) -> None:
        if self._entries.pop(request_id, None) is not None:
            self._dirty.add(request_id)

    def expire(self, before: float) -> Iterator[tuple[str, PendingEntry]]:
        """Remove and yield every entry whose deadline is earlier than ``before``."""
        heap, entries = self._deadlines, self._entries
        while heap and heap[0][0] < before:
            deadline, request_id = heapq.heappop(heap)
            entry = entries.get(request_id)
            if entry is not None and entry.deadline == deadline:
                del entries[request_id]
                self._dirty.add(request_id)
                yield request_id, entry

    def drain_dirty(self) -> list[tuple[str, PendingEntry | None]]:
        """What changed since the last call: ``(request_id, entry or None if removed)``."""
        entries = self._entries
        changed = [(rid, entries.get(rid)) for rid in self._dirty]
        self._dirty = set()
        return changed

    def load(self, request_id: str, entry: PendingEntry | None) -> None:
        """Apply one restored changelog record (not marked dirty)."""
        if entry is None:
            self._entries.pop(request_id, None)
        else:
            self._entries[request_id] = entry
            heapq.heappush(self._deadlines, (entry.deadline, request_id))

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
