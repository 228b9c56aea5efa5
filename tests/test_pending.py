"""The memory store keeps entries packed and its deadlines in buckets: it must behave as the
dict + heap it replaced (same entries, same expiry order, same dirty sets), and the
changelog bytes older versions wrote must still restore."""

from __future__ import annotations

import heapq
import math
import random

import pytest

from rollguard.streams import pending
from rollguard.streams.pending import (BUCKET_IDS, BUCKET_WIDTHS_S, LabelPart, MemoryStore, PendingEntry,
                                       decode_entry, encode_entry)
from rollguard.streams.records import ArmView


class ReferenceStore:
    """The MemoryStore before entries were packed: objects in a dict, a heap of deadlines."""

    def __init__(self) -> None:
        self._entries: dict[str, PendingEntry] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._dirty: set[str] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, request_id):
        return self._entries.get(request_id)

    def put(self, request_id, entry, *, deadline_changed=True):
        self._entries[request_id] = entry
        self._dirty.add(request_id)
        if deadline_changed:
            heapq.heappush(self._deadlines, (entry.deadline, request_id))

    def remove(self, request_id):
        if self._entries.pop(request_id, None) is not None:
            self._dirty.add(request_id)

    def expire(self, before):
        heap, entries = self._deadlines, self._entries
        while heap and heap[0][0] < before:
            deadline, request_id = heapq.heappop(heap)
            entry = entries.get(request_id)
            if entry is not None and entry.deadline == deadline:
                del entries[request_id]
                self._dirty.add(request_id)
                yield request_id, entry

    def drain_dirty(self):
        changed = [(rid, self._entries.get(rid)) for rid in self._dirty]
        self._dirty = set()
        return changed

    def load(self, request_id, entry):
        if entry is None:
            self._entries.pop(request_id, None)
        else:
            self._entries[request_id] = entry
            heapq.heappush(self._deadlines, (entry.deadline, request_id))


def copy(entry: PendingEntry) -> PendingEntry:
    return decode_entry(encode_entry(entry))


def near_boundaries(rng: random.Random, now: float) -> float:
    """A deadline after ``now``, often right at a bucket's edge, now and then not finite."""
    roll = rng.random()
    if roll < 0.02:
        return math.inf
    if roll < 0.4:
        width = rng.choice(BUCKET_WIDTHS_S)
        edge = (now // width + rng.randint(0, 3)) * width
        return edge + rng.choice((-1.0, -0.5, -1e-6, 0.0, 1e-6, 0.5, 1.0))
    if roll < 0.6:
        return now + rng.choice((0.0, 0.25, 0.5, 1.0, 1.5)) + rng.randint(0, 3)
    return now + rng.uniform(-10.0, rng.choice(BUCKET_WIDTHS_S) * 3)


@pytest.mark.parametrize("seed", range(80))
def test_behaves_as_the_dict_and_heap_it_replaced(seed, monkeypatch):
    rng = random.Random(seed)
    if seed % 2:  # buckets fill up, later ids go to finer levels
        monkeypatch.setattr(pending, "BUCKET_IDS", rng.choice((1, 2, 5)))
    store, ref = MemoryStore(), ReferenceStore()
    rids = [f"r{i}" for i in range(rng.choice((5, 40, 200)))]
    now, serial = rng.uniform(0, 5 * BUCKET_WIDTHS_S[-1]), 0
    for _ in range(1500):
        op, rid = rng.random(), rng.choice(rids)
        serial += 1
        if op < 0.35:  # a new entry or a new deadline (as the Joiner does: get, change, put)
            entry = store.get(rid)
            assert entry == ref.get(rid)
            if entry is None:
                entry = PendingEntry(experiment=rng.choice(("e", None, "x" * 40)), deadline=0.0)
            entry.deadline = near_boundaries(rng, now)
            entry.unit = str(serial)
            store.put(rid, entry)
            ref.put(rid, copy(entry))
        elif op < 0.55:  # a change that keeps the deadline
            entry = store.get(rid)
            if entry is not None:
                entry.unit, entry.scored = str(serial), True
                entry.label = LabelPart(now, 1, None)
                store.put(rid, entry, deadline_changed=False)
                ref.put(rid, copy(entry), deadline_changed=False)
        elif op < 0.62:
            store.remove(rid)
            ref.remove(rid)
        elif op < 0.7:  # a restored changelog record
            entry = None if rng.random() < 0.3 else PendingEntry(
                experiment="e", deadline=near_boundaries(rng, now), unit=str(serial))
            store.load(rid, entry)
            ref.load(rid, None if entry is None else copy(entry))
        elif op < 0.9:  # the watermark moves (mostly forward; sometimes back)
            now += rng.choice((0.0, 0.3, 1.0, 7.0, 300.0) + BUCKET_WIDTHS_S) * (
                -0.5 if rng.random() < 0.05 else 1.0)
            assert list(store.expire(now)) == list(ref.expire(now))
        else:
            assert sorted(store.drain_dirty()) == sorted(ref.drain_dirty())
        assert len(store) == len(ref)
    assert sorted(store.drain_dirty()) == sorted(ref.drain_dirty())
    assert {rid: store.get(rid) for rid in rids} == {rid: ref.get(rid) for rid in rids}
    assert list(store.expire(math.inf)) == list(ref.expire(math.inf))


def test_entries_are_packed_at_each_drain_and_a_change_is_kept_by_put():
    store = MemoryStore()
    store.put("r", PendingEntry(experiment="e", deadline=5.0))
    assert store.drain_dirty() == [("r", PendingEntry(experiment="e", deadline=5.0))]
    assert store._entries["r"] == encode_entry(PendingEntry(experiment="e", deadline=5.0))
    assert store._changed == {} and store._filed == {}  # only one checkpoint's changes
    entry = store.get("r")
    entry.scored = True
    assert store.get("r").scored is False  # a copy
    store.put("r", entry, deadline_changed=False)
    assert store.get("r").scored is True
    assert store.drain_dirty() == [("r", entry)] and store.get("r") == entry
    assert decode_entry(store._entries["r"]) == entry


def test_a_request_pending_again_after_its_bucket_was_opened_is_filed_again():
    store, deadline = MemoryStore(), BUCKET_WIDTHS_S[-1] + 4464.5
    store.put("r", PendingEntry(experiment="e", deadline=deadline))
    store.remove("r")
    assert list(store.expire(deadline - 0.5)) == []  # opens the bucket that held "r"
    store.put("r", PendingEntry(experiment="e", deadline=deadline))  # same second again
    assert [rid for rid, _ in store.expire(deadline + 1.0)] == ["r"]
    store.drain_dirty()
    assert store._changed == {} and store._filed == {}


def test_the_index_holds_one_reference_per_request_and_expiry_moves_few_at_once():
    store = MemoryStore()
    base, n = 100 * BUCKET_WIDTHS_S[-1], 3 * BUCKET_IDS
    for i in range(n):
        rid = f"r{i}"
        store.put(rid, PendingEntry(experiment="e", deadline=base + i * 0.01))
        entry = store.get(rid)
        entry.deadline += 0.004  # the second arm of a shadow request moves it a little
        store.put(rid, entry)
    filed = [sum(len(ids) for ids in level.values()) for level in store._buckets]
    assert sum(filed) == n and filed[-1] == BUCKET_IDS  # the coarsest bucket is full
    assert [rid for rid, _ in store.expire(base + 5.0)] == [f"r{i}" for i in range(500)]
    assert len(store) == n - 500 and len(store._near) <= 100  # the rest waits in buckets
    assert max(len(ids) for level in store._buckets for ids in level.values()) <= BUCKET_IDS


# Changelog records as the MemoryStore before packing (and the DiskStore) wrote them:
# msgpack arrays of PendingEntry's fields, in order. The first is from before ``unpaired``
# was added (11 fields). They must still restore.
OLD_RECORDS = [
    bytes.fromhex("9ba5616c706861cb41d972a600000000c0c0c0c0c0"
                  "82a36d3a3197a36d3a31c301cb3fe8000000000000cb4029000000000000c0cb41d954fc40000000"
                  "a36d3a3297a36d3a32c200cb3fd0000000000000c0a46f6f7073cb41d954fc40001062"
                  "c0c2c2"),
    bytes.fromhex("9cc0cb4000000000000000c0c0c0c0c0c093cb3ff000000000000001c0c2c2c2"),
]


def test_changelog_records_of_older_versions_restore():
    shadow, orphan = (decode_entry(data) for data in OLD_RECORDS)
    assert shadow.experiment == "alpha" and shadow.deadline == 1700000000.0 + 90 * 86400
    assert shadow.preds == {
        "m:1": ArmView("m:1", True, 1, 0.75, 12.5, None, 1700000000.0),
        "m:2": ArmView("m:2", False, 0, 0.25, None, "oops", 1700000000.001)}
    assert not shadow.unpaired
    assert orphan == PendingEntry(deadline=2.0, label=LabelPart(1.0, 1, None))
    store = MemoryStore()
    for rid, data in zip(("r1", "r2"), OLD_RECORDS):
        store.load(rid, decode_entry(data))
    assert store.drain_dirty() == []  # restored, not changed
    assert store.get("r1") == shadow and store.get("r2") == orphan
    assert [rid for rid, _ in store.expire(math.inf)] == ["r2", "r1"]
    assert sorted(store.drain_dirty()) == [("r1", None), ("r2", None)]
