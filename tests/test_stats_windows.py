"""Hourly event-time buckets: keyed by floor(ts / width), bounded, mergeable, restorable; and
the codec that rebuilds any statistic from its state."""

from __future__ import annotations

import random

import pytest

from rollguard.stats import (
    ClassificationStats,
    DelayStats,
    Hourly,
    Proportion,
    QuantileSketch,
    codec,
)


def test_buckets_follow_event_time_not_arrival_order():
    hourly = Hourly(Proportion)
    for ts, hit in [(7300.0, True), (10.0, False), (3599.9, True), (3600.0, False)]:
        hourly.update(ts, hit)
    assert hourly.get() == [
        {"start": 0.0, "value": 0.5},
        {"start": 3600.0, "value": 0.0},
        {"start": 7200.0, "value": 1.0},
    ]


def test_dict_figures_are_spread_into_each_bucket():
    hourly = Hourly(lambda: ClassificationStats("binary"), width=60.0)
    hourly.update(30.0, True, True, 0.9).update(90.0, True, False, 0.2)
    rows = hourly.get()
    assert [(r["start"], r["count"], r["accuracy"]) for r in rows] == [
        (0.0, 1, 1.0),
        (60.0, 1, 0.0),
    ]


def test_only_the_newest_keep_buckets_are_kept_and_older_events_are_dropped():
    hourly = Hourly(Proportion, width=10.0, keep=3)
    for ts in [0.0, 10.0, 20.0, 30.0, 45.0]:
        hourly.update(ts, True)
    assert [r["start"] for r in hourly.get()] == [20.0, 30.0, 40.0]
    hourly.update(5.0, True)  # older than every kept bucket of a full window
    assert hourly.dropped == 1 and hourly.bucket(5.0) is None
    hourly.update(25.0, False)  # inside the window: counted
    assert hourly.bucket(25.0).n == 2


def test_merge_aligns_buckets_and_keeps_the_newest():
    a = Hourly(Proportion, width=10.0, keep=3).update(0.0, True).update(15.0, True)
    b = (
        Hourly(Proportion, width=10.0, keep=3)
        .update(15.0, False)
        .update(25.0, True)
        .update(35.0, True)
    )
    a += b
    assert [(r["start"], r["value"]) for r in a.get()] == [(10.0, 0.5), (20.0, 1.0), (30.0, 1.0)]


def test_merged_partials_keep_the_same_buckets_as_the_whole_stream_even_when_evicting():
    # events roughly in time order, spread over 3 partitions; the whole stream evicts as it
    # goes. The kept buckets are the same (the per-partial `dropped` counts may differ).
    rng = random.Random(3)
    events = sorted((rng.uniform(0, 500), rng.random() < 0.5) for _ in range(400))
    whole = Hourly(Proportion, width=10.0, keep=12)
    partials = [Hourly(Proportion, width=10.0, keep=12) for _ in range(3)]
    for ts, hit in events:
        whole.update(ts, hit)
        partials[rng.randrange(3)].update(ts, hit)
    merged = partials[2] + partials[0] + partials[1]
    assert merged.get() == whole.get()
    assert len(merged.buckets) == 12


def test_a_restored_hourly_makes_new_buckets_of_the_same_kind():
    hourly = Hourly(lambda: ClassificationStats("binary", auc_bins=100), width=60.0)
    hourly.update(0.0, True, True, 0.8)
    restored = codec.from_dict(hourly.to_dict())
    assert restored == hourly
    restored.update(120.0, False, True, 0.6)
    hourly.update(120.0, False, True, 0.6)
    assert restored == hourly
    assert restored.bucket(120.0).roc_auc.bins == 100


def test_buckets_with_other_statistics_or_settings_do_not_merge():
    with pytest.raises(ValueError, match="prototype"):
        Hourly(Proportion).merge(Hourly(DelayStats))
    with pytest.raises(ValueError, match="prototype"):
        Hourly(ClassificationStats).merge(Hourly(lambda: ClassificationStats(auc_bins=10)))
    with pytest.raises(ValueError, match="width"):
        Hourly(Proportion, width=60.0).merge(Hourly(Proportion, width=3600.0))


def test_statistics_in_other_buckets_use_other_methods_through_bucket():
    delays = Hourly(DelayStats)
    delays.bucket(100.0).record_expired()
    delays.update(200.0, 42.0)
    assert delays.get()[0]["expired"] == 1 and delays.get()[0]["labels"] == 1


def test_codec_refuses_unknown_or_malformed_states():
    with pytest.raises(ValueError, match="unknown statistic type"):
        codec.from_dict({"type": "builtins.eval"})
    with pytest.raises(ValueError, match="unknown statistic type"):
        codec.from_dict({"no": "type"})
    with pytest.raises(ValueError, match="unknown statistic type"):
        codec.from_dict(["sketch"])
    with pytest.raises(ValueError, match="expected a 'sketch' state"):
        QuantileSketch.from_dict(Proportion().to_dict())


def test_every_registered_type_tag_names_its_class():
    for tag, cls in codec.TYPES.items():
        assert cls.TYPE == tag
    assert len(set(codec.TYPES.values())) == len(codec.TYPES)
