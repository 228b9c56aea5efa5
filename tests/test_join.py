"""The join, pure: any arrival order gives the records an event-time-ordered read gives;
duplicates count once; late labels and unlabelled requests are counted, not applied."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollguard.schemas import Label, Prediction, Request
from rollguard.streams.join import Joiner
from rollguard.streams.pending import DiskStore, MemoryStore
from rollguard.streams.records import FIRST, OUTCOME, SCORED


def experiment(mode="shadow", ttl=100.0, lateness=2.0, arms=("m:1", "m:2"), state="memory"):
    return SimpleNamespace(name="e", mode=mode, arms=arms, label_ttl=ttl,
                           allowed_lateness=lateness, state=state)


def pred(rid, arm, ts, served, prediction=1, exp="e"):
    model, version = arm.split(":")
    return Prediction(request_id=rid, experiment=exp, ts=ts, model=model, version=version,
                      served=served, prediction=prediction)


def feed(joiner, kind, event):
    return {"requests": joiner.on_request, "predictions": joiner.on_prediction,
            "labels": joiner.on_label}[kind](event)


def traffic(rng: random.Random, n: int, mode: str):
    """Events of ``n`` requests: (kind, ts, event), each topic in event-time order."""
    events = []
    for i in range(n):
        rid, t = f"r{i}", i * 1.0 + rng.random()
        events.append(("requests", t, Request(request_id=rid, experiment="e", ts=t,
                                              segments={"tier": rng.choice("ab")})))
        served_arm = "m:1" if mode == "shadow" or rng.random() < 0.5 else "m:2"
        for arm in ("m:1", "m:2"):
            if mode != "shadow" and arm != served_arm and rng.random() < 0.5:
                continue  # ab: the other arm is scored only sometimes
            jitter = rng.random() * 0.5
            events.append(("predictions", t + jitter,
                           pred(rid, arm, t + jitter, arm == served_arm, rng.randint(0, 1))))
        if rng.random() < 0.8:
            lt = t + rng.choice([0.5, 5.0, 30.0, 300.0])  # 300 s is past the 100 s TTL
            events.append(("labels", lt, Label(request_id=rid, ts=lt, label=rng.randint(0, 1))))
    return events


def run_in_time_order(events, exp):
    joiner = Joiner({"e": exp})
    out = []
    for kind, _, event in sorted(events, key=lambda e: e[1]):
        assert feed(joiner, kind, event) is None
        out.extend(joiner.release())
    out.extend(joiner.release(flush=True))
    return joiner, out


def run_interleaved(events, exp, rng):
    """Topics read in any interleaving (each in its own order), released at random times
    with the backlog known, as the live worker does."""
    joiner = Joiner({"e": exp})
    queues = {k: [e for e in sorted(events, key=lambda e: e[1]) if e[0] == k]
              for k in ("requests", "predictions", "labels")}
    out = []
    while any(queues.values()):
        kind = rng.choice([k for k, q in queues.items() if q])
        for _ in range(rng.randint(1, 30)):  # a fetch batch
            if not queues[kind]:
                break
            _, _, event = queues[kind].pop(0)
            assert feed(joiner, kind, event) is None
        if rng.random() < 0.3:
            joiner.backlogged = frozenset(k for k, q in queues.items() if q)
            out.extend(joiner.release())
    joiner.backlogged = frozenset()
    out.extend(joiner.release(flush=True))
    return joiner, out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), mode=st.sampled_from(["shadow", "ab"]),
       n=st.integers(1, 60))
def test_any_interleaving_releases_what_event_time_order_releases(seed, mode, n):
    rng = random.Random(seed)
    exp = experiment(mode=mode)
    events = traffic(rng, n, mode)
    _, expected = run_in_time_order(events, exp)
    _, got = run_interleaved(events, exp, rng)
    assert sorted(got, key=lambda r: r.sort_key()) == sorted(expected, key=lambda r: r.sort_key())


def test_records_of_one_release_come_in_event_time_order_and_outcomes_follow_scoring():
    rng = random.Random(7)
    joiner, out = run_in_time_order(traffic(rng, 200, "shadow"), experiment())
    assert [r.sort_key() for r in out] == sorted(r.sort_key() for r in out)
    first = [r for r in out if r.kind == FIRST]
    assert len(first) == 1 and first[0].ts == min(r.ts for r in out), \
        "one FIRST record, at the experiment's first traffic"
    out = [r for r in out if r.kind != FIRST]
    scored = {r.request_id for r in out if r.kind == SCORED}
    outcomes = [r for r in out if r.kind == OUTCOME]
    assert scored == {f"r{i}" for i in range(200)}
    assert all(r.request_id in scored for r in outcomes)
    assert all(len(r.arms) == 2 and r.arms[0].arm == "m:1" for r in out), "champion first"
    assert all(r.segments is not None for r in out), "the request's segments joined"


@pytest.mark.parametrize("store", ["memory", "disk"])
def test_duplicates_count_once_and_a_label_may_come_first(store, tmp_path):
    exp = experiment(state=store)
    joiner = Joiner({"e": exp}, disk=DiskStore(tmp_path / "db") if store == "disk" else None)
    label = Label(request_id="r1", ts=3.0, label=1)
    assert joiner.on_label(label) is None                       # before any prediction
    for _ in range(2):                                          # sent twice by a retry
        joiner.on_prediction(pred("r1", "m:1", 1.0, True))
        joiner.on_prediction(pred("r1", "m:2", 1.0, False))
    joiner.on_label(label)                                      # and the label again
    out = joiner.release(flush=True)
    assert [r.kind for r in out] == [FIRST, SCORED, OUTCOME]
    assert out[2].label == 1 and out[2].ts == 3.0
    joiner.on_prediction(pred("r1", "m:2", 1.0, False))         # after it finished
    joiner.on_label(label)
    assert joiner.release(flush=True) == []
    counters = joiner.drain_counters()
    assert counters[("e", "duplicate_predictions")] == 3
    assert counters[("e", "duplicate_labels")] == 2


def test_a_label_past_the_ttl_is_counted_late_and_not_applied():
    joiner = Joiner({"e": experiment(ttl=10.0)})
    joiner.on_prediction(pred("r1", "m:1", 0.0, True))
    joiner.on_prediction(pred("r1", "m:2", 0.0, False))
    joiner.on_label(Label(request_id="r1", ts=10.5, label=1))
    out = joiner.release(flush=True)
    assert [r.kind for r in out] == [FIRST, SCORED]
    assert joiner.drain_counters()[("e", "late_labels")] == 1


def test_requests_never_labelled_expire_after_the_ttl_by_event_time():
    joiner = Joiner({"e": experiment(ttl=10.0, lateness=1.0)})
    joiner.on_prediction(pred("r1", "m:1", 0.0, True))
    joiner.on_prediction(pred("r1", "m:2", 0.0, False))
    joiner.on_request(Request(request_id="r2", experiment="e", ts=0.0))  # no model answers
    assert joiner.pending() == 2
    joiner.on_prediction(pred("r3", "m:1", 10.5, True))        # watermark 10.5: not yet
    joiner.release()
    joiner.expire()
    assert joiner.pending() == 3
    joiner.on_prediction(pred("r4", "m:1", 11.5, True))        # 11.5 - 1 s lateness > 10
    joiner.release()
    joiner.expire()
    counters = joiner.drain_counters()
    assert counters[("e", "unlabelled_expired")] == 1
    assert counters[("e", "incomplete_expired")] == 1
    assert joiner.pending() == 2


def test_requests_without_their_pair_are_counted_once_the_watermark_says_it_cannot_come():
    """A shadow request that only the champion scored (``route.shadow`` empty) and a request
    with no prediction are counted as soon as the watermark has passed their first part by
    the allowed lateness: not silently left to wait out ``label_ttl``."""
    joiner = Joiner({"e": experiment(ttl=1000.0, lateness=2.0)})
    joiner.on_request(Request(request_id="r0", experiment="e", ts=0.0))   # no prediction
    joiner.on_prediction(pred("r1", "m:1", 0.5, True))                     # champion only
    for arm in ("m:1", "m:2"):                                             # a whole pair
        joiner.on_prediction(pred("r2", arm, 0.7, arm == "m:1"))

    def settle(ts):
        for arm in ("m:1", "m:2"):  # a whole pair at ts: moves the watermark
            joiner.on_prediction(pred(f"tick-{ts}", arm, ts, arm == "m:1"))
        released = joiner.release()
        joiner.check_pairs()
        counted = {k[1]: n for k, n in joiner.drain_counters().items()
                   if "pair" in k[1] or "without" in k[1] or "late" in k[1]}
        return counted, {r.request_id: len(r.arms) for r in released if r.request_id[:1] == "r"}

    assert settle(3.9) == ({}, {"r2": 2})  # 3.9 - 2 s lateness: r0 due at 2, r1 at 2.5
    # r1 goes with the champion alone (nothing to pair it with), r0 is counted and waits
    assert settle(4.6) == ({"requests_without_predictions": 1, "predictions_without_pair": 1},
                           {"r1": 1})
    assert settle(9.0) == ({}, {})                  # counted once
    for arm in ("m:1", "m:2"):                      # r0's predictions after all: it joins
        joiner.on_prediction(pred("r0", arm, 0.1, arm == "m:1"))
    joiner.on_prediction(pred("r1", "m:2", 0.6, False))   # r1's record went without it
    # all three came after the join had released past their time: late input too
    assert settle(10.0) == ({"paired_late": 1, "late_predictions": 1,
                             "late_input:predictions": 3}, {"r0": 2})


def test_a_shadow_arm_that_stops_scoring_does_not_stall_the_others():
    """A dropped shadow candidate leaves the route: its predictions stop. The requests still
    join with the arms that scored them, within the allowed lateness."""
    joiner = Joiner({"e": experiment(ttl=1000.0, lateness=2.0, arms=("m:1", "m:2", "m:3"))})
    released = []
    for i in range(20):
        arms = ("m:1", "m:2", "m:3") if i < 10 else ("m:1", "m:3")   # m:2 dropped at 10
        for arm in arms:
            joiner.on_prediction(pred(f"q{i}", arm, float(i), arm == "m:1"))
        joiner.on_label(Label(request_id=f"q{i}", ts=float(i) + 0.1, label=1))
        released += joiner.release()
    outcomes = {r.request_id: tuple(v.arm for v in r.arms) for r in released
                if r.kind == OUTCOME}
    assert outcomes["q3"] == ("m:1", "m:2", "m:3") and outcomes["q12"] == ("m:1", "m:3")
    assert len(outcomes) >= 16  # all but the last lateness' worth, released in order


def test_unusable_events_say_why_in_one_sentence():
    joiner = Joiner({"e": experiment()})
    unknown = joiner.on_prediction(pred("r1", "m:1", 0.0, True, exp="other"))
    assert unknown.problem == "unknown_experiment" and unknown.reason.endswith(".")
    arm = joiner.on_prediction(pred("r1", "x:9", 0.0, True))
    assert arm.problem == "unknown_arm" and "'x:9'" in arm.reason
    joiner.on_prediction(pred("r1", "m:1", 0.0, True))
    second = joiner.on_prediction(pred("r1", "m:2", 0.0, True))
    assert second.problem == "second_served"
    assert joiner.drain_counters() == {}, "a rejected event changes no count"


def test_the_watermark_waits_for_a_backlogged_topic():
    joiner = Joiner({"e": experiment(lateness=0.0)})
    joiner.on_prediction(pred("r1", "m:1", 5.0, True))
    joiner.on_prediction(pred("r1", "m:2", 5.0, False))
    joiner.on_prediction(pred("r2", "m:2", 50.0, False))  # not yet scorable: moves the time
    joiner.backlogged = frozenset({"requests"})   # requests not read that far yet
    assert joiner.release() == [], "r1's request may still come"
    joiner.on_request(Request(request_id="r1", experiment="e", ts=4.0, segments={"t": "x"}))
    joiner.max_ts["requests"] = 60.0
    [first, record] = joiner.release()
    assert first.kind == FIRST and first.ts == 4.0
    assert record.segments == {"t": "x"}


def test_disk_store_restores_what_it_committed(tmp_path):
    exp = experiment(state="disk", ttl=90 * 86400.0)
    disk = DiskStore(tmp_path / "db")
    joiner = Joiner({"e": exp}, disk=disk)
    for i in range(500):
        joiner.on_prediction(pred(f"r{i}", "m:1", float(i), True))
        joiner.on_prediction(pred(f"r{i}", "m:2", float(i), False))
    joiner.release()
    changes = disk.drain_dirty()
    assert len(changes) == 500
    disk.committed(changelog_offset=499)
    disk.close()

    reopened = DiskStore(tmp_path / "db")
    assert len(reopened) == 500 and reopened.changelog_offset == 499
    joiner = Joiner({"e": exp}, disk=reopened)
    joiner.on_label(Label(request_id="r42", ts=600.0, label=1))
    [outcome] = [r for r in joiner.release(flush=True) if r.kind == OUTCOME]
    assert outcome.request_id == "r42" and outcome.arms[0].ts == 42.0
    assert isinstance(joiner.memory, MemoryStore) and len(joiner.memory) == 0


def test_disk_store_commits_what_was_staged_not_what_changed_meanwhile(tmp_path):
    """The worker stages a checkpoint, reads on while its transaction commits, then calls
    ``committed``: RocksDB must then hold the staged state only, with the changelog offset
    it reaches, and the changes made meanwhile must wait for the next checkpoint."""
    exp = experiment(state="disk", ttl=90 * 86400.0)
    disk = DiskStore(tmp_path / "db")
    joiner = Joiner({"e": exp}, disk=disk)
    for i in range(3):
        joiner.on_prediction(pred(f"r{i}", "m:1", float(i), True))
    staged = dict(disk.stage())
    assert sorted(staged) == ["r0", "r1", "r2"]
    joiner.on_prediction(pred("r1", "m:2", 1.0, False))   # while the commit is in flight
    joiner.on_prediction(pred("r3", "m:1", 3.0, True))
    disk.committed(changelog_offset=7)
    disk.close()

    reopened = DiskStore(tmp_path / "db")
    assert len(reopened) == 3 and reopened.changelog_offset == 7
    assert reopened.get("r3") is None and list(reopened.get("r1").preds) == ["m:1"]
    reopened.close()
    disk = DiskStore(tmp_path / "db")
    joiner = Joiner({"e": exp}, disk=disk)
    joiner.on_prediction(pred("r1", "m:2", 1.0, False))
    assert sorted(rid for rid, _ in disk.stage()) == ["r1"]


def test_a_disk_entry_changed_during_a_commit_stays_for_the_next_one(tmp_path):
    exp = experiment(state="disk", ttl=90 * 86400.0)
    disk = DiskStore(tmp_path / "db")
    joiner = Joiner({"e": exp}, disk=disk)
    joiner.on_prediction(pred("r1", "m:1", 1.0, True))
    disk.stage()
    joiner.on_prediction(pred("r1", "m:2", 1.0, False))
    disk.committed(changelog_offset=1)
    assert list(disk.get("r1").preds) == ["m:1", "m:2"]   # the cache keeps the newer one
    [(rid, value)] = disk.stage()
    disk.committed(changelog_offset=2)
    disk.close()
    reopened = DiskStore(tmp_path / "db")
    assert rid == "r1" and list(reopened.get("r1").preds) == ["m:1", "m:2"]
    assert reopened.changelog_offset == 2 and len(reopened) == 1


def test_input_later_than_the_lateness_is_counted_and_goes_where_the_release_is():
    joiner = Joiner({"e": experiment(lateness=2.0)})
    for rid, ts in (("r1", 1.0), ("r2", 10.0)):
        joiner.on_prediction(pred(rid, "m:1", ts, True))
        joiner.on_prediction(pred(rid, "m:2", ts, False))
    joiner.on_label(Label(request_id="r2", ts=20.0, label=1))
    released = joiner.release()   # watermark 20: r1 and r2 scored, nothing labelled yet
    assert [(r.kind, r.request_id) for r in released if r.kind != FIRST] == \
        [(SCORED, "r1"), (SCORED, "r2")]
    assert joiner.released_to == 18.0
    joiner.on_label(Label(request_id="r1", ts=3.0, label=0))   # 15 s behind what went
    [outcome] = [r for r in joiner.release() if r.request_id == "r1"]
    assert outcome.kind == OUTCOME and outcome.ts == 18.0 and outcome.label_ts == 3.0
    assert joiner.drain_counters()[("e", "late_input:labels")] == 1


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), mode=st.sampled_from(["shadow", "ab"]),
       n=st.integers(1, 60), swaps=st.integers(0, 20))
def test_released_event_times_never_go_back_whatever_order_the_input_comes_in(
        seed, mode, n, swaps):
    """A producer may reorder its writes (retries without idempotence) or be held up: the
    partition's output stays in event-time order and above every frontier it stated."""
    rng = random.Random(seed)
    events = sorted(traffic(rng, n, mode), key=lambda e: e[1])
    for _ in range(swaps):  # move an event far back in its topic
        i, j = sorted(rng.sample(range(len(events)), 2)) if len(events) > 1 else (0, 0)
        events.insert(j, events.pop(i))
    joiner = Joiner({"e": experiment(mode=mode)})
    stated, last = -float("inf"), -float("inf")
    for k, (kind, _, event) in enumerate(events):
        assert feed(joiner, kind, event) is None
        if rng.random() < 0.3 or k == len(events) - 1:
            for record in joiner.release(flush=k == len(events) - 1):
                assert record.ts >= last and record.ts >= stated
                last = record.ts
            stated = max(stated, joiner.frontier)


def test_a_ranking_sent_to_another_task_and_the_reverse_are_refused_and_change_nothing():
    binary = SimpleNamespace(**{**vars(experiment()), "name": "b", "task": "binary"})
    ranking = SimpleNamespace(**{**vars(experiment()), "name": "r", "task": "ranking"})
    joiner = Joiner({"b": binary, "r": ranking})

    ids = iter(range(100))

    def prediction(exp: str, **output) -> Prediction:  # each of another request
        return Prediction(request_id=f"r{next(ids)}", experiment=exp, ts=1.0, model="m", version="1",
                          served=True, **output)

    items = joiner.on_prediction(prediction("b", items=["a", "b"]))
    assert items.problem == "unexpected_items" and "'b' is not a ranking task" in items.reason
    scalar = joiner.on_prediction(prediction("r", prediction=1))
    assert scalar.problem == "not_a_ranking" and scalar.reason.endswith(".")
    assert joiner.pending() == 0 and joiner.max_ts["predictions"] == float("-inf"), \
        "neither was kept nor moved the watermark"
    assert joiner.on_prediction(prediction("b", error="timeout")) is None, "a failure has neither"
    assert joiner.on_prediction(prediction("b", prediction=1)) is None
    assert joiner.on_prediction(prediction("r", items=["x"])) is None
