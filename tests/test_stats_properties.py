"""Properties every statistic of rollguard.stats must have.

1. Merging the partials of any split of a stream, in any order, equals the statistic of the
   whole stream: exactly for counts and sketches; floats (sums, River's moments) within a
   relative 1e-9 (absolute 1e-9 near zero), because sums added in another order differ only
   in their last bits.
2. ``from_dict(to_dict(s)) == s`` exactly, also through JSON text and through
   ``rollguard.stats.codec.from_dict``; ``to_dict()`` holds only JSON types.
3. ``a + b`` leaves ``a`` and ``b`` unchanged and equals ``a += b``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollguard import stats
from rollguard.stats import (
    Average,
    BinaryConfusion,
    BinnedROCAUC,
    Brier,
    Calibration,
    ClassificationStats,
    Correlation,
    DelayStats,
    Drift,
    FeatureDrift,
    Hourly,
    LogLoss,
    MeanVariance,
    NDCG,
    HitRate,
    MulticlassConfusion,
    PairStats,
    PrecisionAtK,
    Preference,
    Proportion,
    QuantileSketch,
    RankingStats,
    ReciprocalRank,
    RegressionStats,
    Reward,
    ServingStats,
    Statistic,
    codec,
)

#: floats merged in another order: relative tolerance (and absolute, for values near zero)
REL_TOL = 1e-9
ABS_TOL = 1e-9


def assert_close(a: Any, b: Any, path: str = "$") -> None:
    """Equal JSON-like values: ints, strings, bools and None exactly; floats within tolerance."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (
            f"{path}: keys {a.keys()} != {b.keys()}"
        )
        for key in a:
            assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{path}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL), f"{path}: {a!r} != {b!r}"
    else:
        assert type(a) is type(b) and a == b, f"{path}: {a!r} != {b!r}"


def assert_json_safe(value: Any) -> None:
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value), f"non-string key in {value!r}"
        for v in value.values():
            assert_json_safe(v)
    elif isinstance(value, list):
        for v in value:
            assert_json_safe(v)
    else:
        assert value is None or isinstance(value, (str, int, float, bool)), f"not JSON: {value!r}"
        if isinstance(value, float):
            assert math.isfinite(value), f"not JSON: {value!r}"


# -- event strategies ------------------------------------------------------------------------
milli = st.integers(-100_000, 100_000).map(lambda i: i / 1000)  # values with 3 decimals in ±100
unit_score = st.integers(0, 1000).map(lambda i: i / 1000)
wide = st.one_of(  # sketch inputs: zeros, negatives, magnitudes from 1e-6 to 1e6
    st.just(0.0),
    st.floats(min_value=1e-6, max_value=1e6),
    st.floats(min_value=-1e6, max_value=-1e-6),
)
labels = st.sampled_from(["a", "b", "c", 1, 2])
# a ranked list (distinct items, best first) and the engaged items (a list or item -> gain)
ranked_lists = st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=8, unique=True)
engaged_items = st.one_of(
    st.lists(st.sampled_from("abcdefghxyz"), max_size=4, unique=True),
    st.dictionaries(st.sampled_from("abcdefghxyz"), st.integers(1, 3).map(float), max_size=4))


# each feed helper applies one event and returns what the update method returned
def feed_each(stat: Statistic, event: Any) -> Any:
    return stat.update(event)


def feed_args(stat: Statistic, event: tuple) -> Any:
    return stat.update(*event)


def feed_pair(stat: PairStats, event: tuple) -> Any:
    if event[0] == "prediction":
        return stat.update(*event[1:])
    return stat.update_outcome(*event[1:])


def feed_delay(stat: DelayStats, event: tuple) -> Any:
    kind = event[0]
    if kind == "delay":
        return stat.update(event[1])
    return getattr(stat, f"record_{kind}")()


def feed_serving(stat: ServingStats, event: tuple) -> Any:
    latency, error, served = event
    return stat.update(latency_ms=latency, error=error, served=served)


@dataclass
class Case:
    name: str
    make: Callable[[], Statistic]
    events: st.SearchStrategy
    feed: Callable[[Any, Any], Any] = feed_each

    def __repr__(self) -> str:  # readable test ids
        return self.name


REFERENCE = [-3.0, -0.5, 0.0, 0.25, 1.0, 2.0, 2.0, 7.5, 40.0]

CASES = [
    Case("Proportion", Proportion, st.booleans()),
    Case("Average", Average, milli),
    Case("MeanVariance", MeanVariance, milli),
    Case("Correlation", Correlation, st.tuples(milli, milli), feed_args),
    Case("QuantileSketch", QuantileSketch, wide),
    # few buckets: the collapsing of the lowest buckets must stay exact under merge
    Case(
        "QuantileSketch-collapsing",
        lambda: QuantileSketch(relative_accuracy=0.05, max_buckets=6),
        wide,
    ),
    Case(
        "BinnedROCAUC",
        lambda: BinnedROCAUC(bins=20),
        st.tuples(st.booleans(), unit_score),
        feed_args,
    ),
    Case(
        "Calibration", lambda: Calibration(bins=5), st.tuples(st.booleans(), unit_score), feed_args
    ),
    Case("LogLoss", LogLoss, st.tuples(st.booleans(), unit_score), feed_args),
    Case("Brier", Brier, st.tuples(st.booleans(), unit_score), feed_args),
    Case("BinaryConfusion", BinaryConfusion, st.tuples(st.booleans(), st.booleans()), feed_args),
    Case("MulticlassConfusion", MulticlassConfusion, st.tuples(labels, labels), feed_args),
    Case(
        "ClassificationStats-binary",
        lambda: ClassificationStats("binary", auc_bins=50),
        st.tuples(st.booleans(), st.booleans(), st.none() | unit_score),
        feed_args,
    ),
    Case(
        "ClassificationStats-multiclass",
        lambda: ClassificationStats("multiclass", max_classes=5),
        st.tuples(labels, labels),
        feed_args,
    ),
    Case("RegressionStats", RegressionStats, st.tuples(milli, milli), feed_args),
    Case(
        "ServingStats",
        ServingStats,
        st.tuples(st.none() | st.floats(0.0, 1e5), st.booleans(), st.booleans()),
        feed_serving,
    ),
    Case(
        "PairStats",
        PairStats,
        st.one_of(
            st.tuples(
                st.just("prediction"),
                labels,
                labels,
                st.none() | unit_score,
                st.none() | unit_score,
            ),
            st.tuples(st.just("outcome"), milli, milli),
        ),
        feed_pair,
    ),
    Case(
        "DelayStats",
        DelayStats,
        st.one_of(
            st.tuples(st.just("delay"), st.floats(-60.0, 1e7)),
            st.tuples(st.sampled_from(["late", "expired", "duplicate"])),
        ),
        feed_delay,
    ),
    Case("Drift-explicit-reference", lambda: Drift(reference=REFERENCE, psi_bins=4), wide),
    # reference_size=0: everything is "current"; the first-N reference has its own test below
    Case("Drift-no-reference", lambda: Drift(reference_size=0), wide),
    Case(
        "FeatureDrift-explicit",
        lambda: FeatureDrift(references={"age": REFERENCE, "income": [1.0, 10.0]}),
        st.dictionaries(
            st.sampled_from(["age", "income", "tier", "other"]),
            wide | st.just("vip") | st.booleans(),
        ),
    ),
    Case(
        "FeatureDrift-learning",
        lambda: FeatureDrift(reference_size=0),
        st.dictionaries(st.sampled_from(["age", "income", "tier"]), wide | st.just("vip")),
    ),
    Case(
        "Hourly-ClassificationStats",
        lambda: Hourly(lambda: ClassificationStats("binary", auc_bins=10), width=10.0, keep=100),
        st.tuples(st.floats(0.0, 200.0), st.booleans(), st.booleans(), st.none() | unit_score),
        feed_args,
    ),
    *[Case(cls.__name__, lambda cls=cls: cls(k=3), st.tuples(ranked_lists, engaged_items),
           feed_args) for cls in (HitRate, ReciprocalRank, NDCG, PrecisionAtK)],
    Case("Reward", Reward, milli),
    Case("Preference", Preference, st.tuples(st.integers(0, 3), st.integers(0, 3)), feed_args),
    Case(
        "RankingStats",
        lambda: RankingStats(k=4),
        st.tuples(ranked_lists, engaged_items, st.none() | milli),
        feed_args,
    ),
    Case(
        "Hourly-PairStats",
        lambda: Hourly(PairStats, width=60.0, keep=10),
        st.tuples(
            st.floats(0.0, 599.0), labels, labels, st.none() | unit_score, st.none() | unit_score
        ),
        feed_args,
    ),
]


def build(case: Case, events: list) -> Statistic:
    stat = case.make()
    for event in events:
        case.feed(stat, event)
    return stat


def check_round_trip(stat: Statistic) -> None:
    state = stat.to_dict()
    assert_json_safe(state)
    assert type(stat).from_dict(state) == stat
    assert codec.from_dict(state) == stat
    through_json = json.loads(json.dumps(state, allow_nan=False))
    assert through_json == state  # no tuples, no int keys, nothing JSON changes
    rebuilt = codec.from_dict(through_json)
    assert rebuilt == stat
    assert rebuilt.to_dict() == state
    assert_json_safe(stat.get())


@pytest.mark.parametrize("case", CASES, ids=repr)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_merging_the_partials_of_any_split_equals_the_whole(
    case: Case, data: st.DataObject
) -> None:
    events = data.draw(st.lists(case.events, max_size=40), label="events")
    k = data.draw(st.integers(1, 5), label="partials")
    cuts = sorted(
        data.draw(
            st.lists(st.integers(0, len(events)), min_size=k - 1, max_size=k - 1), label="cuts"
        )
    )
    bounds = [0, *cuts, len(events)]
    partials = [build(case, events[lo:hi]) for lo, hi in zip(bounds, bounds[1:])]
    order = data.draw(st.permutations(range(k)), label="merge order")

    whole = build(case, events)
    merged = partials[order[0]].copy()
    for i in order[1:]:
        merged += partials[i]

    assert_close(merged.to_dict(), whole.to_dict())
    assert_close(merged.get(), whole.get())
    check_round_trip(whole)
    check_round_trip(merged)


@pytest.mark.parametrize("case", CASES, ids=repr)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_plus_leaves_its_operands_unchanged_and_equals_plus_equals(
    case: Case, data: st.DataObject
) -> None:
    a = build(case, data.draw(st.lists(case.events, max_size=20)))
    b = build(case, data.draw(st.lists(case.events, max_size=20)))
    a_state, b_state = a.to_dict(), b.to_dict()
    total = a + b
    assert a.to_dict() == a_state and b.to_dict() == b_state
    a += b
    assert a == total
    assert b.to_dict() == b_state
    # the merged result shares no mutable state with the partial merged into it
    more = data.draw(case.events)
    case.feed(a, more)
    assert b.to_dict() == b_state


@pytest.mark.parametrize("case", CASES, ids=repr)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_update_returns_the_statistic_itself(case: Case, data: st.DataObject) -> None:
    stat = case.make()
    assert case.feed(stat, data.draw(case.events)) is stat


def test_every_exported_statistic_is_tested_here_and_registered_in_the_codec() -> None:
    exported = {
        obj
        for name in stats.__all__
        if isinstance(obj := getattr(stats, name), type)
        and issubclass(obj, Statistic)
        and obj is not Statistic
    }
    tested = {type(case.make()) for case in CASES}
    assert tested == exported
    assert tested <= set(codec.TYPES.values())


@settings(max_examples=60, deadline=None)
@given(
    parts=st.lists(st.lists(milli, max_size=12), min_size=1, max_size=4),
    order=st.randoms(use_true_random=False),
)
def test_first_n_reference_of_merged_drift_is_the_first_n_of_each_partial(parts, order) -> None:
    n = 5
    partials = [Drift(reference_size=n).copy() for _ in parts]
    for drift, values in zip(partials, parts):
        for x in values:
            drift.update(x)
    indices = list(range(len(parts)))
    order.shuffle(indices)
    merged = partials[indices[0]]
    for i in indices[1:]:
        merged += partials[i]

    expected_reference, expected_current = QuantileSketch(), QuantileSketch()
    for values in parts:
        for x in values[:n]:
            expected_reference.update(x)
        for x in values[n:]:
            expected_current.update(x)
    assert merged.reference == expected_reference
    assert merged.current == expected_current
