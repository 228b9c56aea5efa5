"""QuantileSketch (DDSketch): quantiles within the stated relative error of numpy's exact lower
quantile, rank/cdf bounds, bounded buckets, and refusal of what it cannot hold."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollguard.stats import QuantileSketch

QUANTILES = [0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]


def exact_lower_quantile(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, q, method="lower"))


def assert_within_relative(estimate: float, exact: float, accuracy: float) -> None:
    # the guarantee: |estimate - exact| <= accuracy * |exact|; 1e-12 relative slack for the
    # float arithmetic of gamma**k
    assert abs(estimate - exact) <= accuracy * abs(exact) * (1 + 1e-12), (estimate, exact)


@pytest.mark.parametrize("accuracy", [0.01, 0.05])
@pytest.mark.parametrize(
    "distribution",
    ["lognormal latency", "normal with negatives", "with zeros", "heavy tail"],
)
def test_quantiles_are_within_the_relative_accuracy_of_the_exact_lower_quantile(
    distribution, accuracy
):
    rng = np.random.default_rng(11)
    values = {
        "lognormal latency": rng.lognormal(3.0, 0.7, 20_000),
        "normal with negatives": rng.normal(0.0, 5.0, 20_000),
        "with zeros": np.where(rng.random(20_000) < 0.2, 0.0, rng.exponential(2.0, 20_000)),
        "heavy tail": rng.pareto(1.2, 20_000) * 1e-3,
    }[distribution]
    sketch = QuantileSketch(relative_accuracy=accuracy)
    for x in values:
        sketch.update(float(x))
    for q in QUANTILES:
        assert_within_relative(sketch.quantile(q), exact_lower_quantile(values, q), accuracy)
    assert sketch.count == len(values)
    assert sketch.get()["min"] == values.min() and sketch.get()["max"] == values.max()


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.just(0.0), st.floats(1e-9, 1e9), st.floats(-1e9, -1e-9)),
        min_size=1,
        max_size=200,
    ),
    q=st.floats(0.0, 1.0),
)
def test_any_quantile_of_any_sample_is_within_the_relative_accuracy(values, q):
    sketch = QuantileSketch(relative_accuracy=0.02)
    for x in values:
        sketch.update(x)
    assert_within_relative(sketch.quantile(q), exact_lower_quantile(np.array(values), q), 0.02)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.just(0.0), st.floats(1e-6, 1e6), st.floats(-1e6, -1e-6)), max_size=100
    ),
    x=st.one_of(st.just(0.0), st.floats(1e-6, 1e6), st.floats(-1e6, -1e-6)),
)
def test_rank_lies_between_the_exact_rank_of_x_and_of_the_upper_edge_of_its_bucket(values, x):
    sketch = QuantileSketch(relative_accuracy=0.01)
    for v in values:
        sketch.update(v)
    data = np.array(values, dtype=float)
    reach = abs(x) * (sketch.gamma - 1) * (1 + 1e-9)  # the bucket of x ends within this of x
    exact_at_x = int((data <= x).sum())
    exact_at_edge = int((data <= x + reach).sum())
    assert exact_at_x <= sketch.rank(x) <= exact_at_edge
    if values:
        assert sketch.cdf(x) == sketch.rank(x) / len(values)


def test_buckets_hold_their_values_and_count_everything():
    values = [-5.0, -5.0, -0.01, 0.0, 0.3, 2.0, 2.01, 1000.0]
    sketch = QuantileSketch(relative_accuracy=0.01)
    for v in values:
        sketch.update(v)
    buckets = sketch.buckets()
    assert sum(c for _, _, c in buckets) == len(values)
    assert [low for low, _, _ in buckets] == sorted(low for low, _, _ in buckets)
    for v in values:
        holding = [
            b
            for b in buckets
            if (b[0] == b[1] == v) or (v > 0 and b[0] < v <= b[1]) or (v < 0 and b[0] <= v < b[1])
        ]
        assert len(holding) == 1, (v, buckets)
        # a bucket is (gamma - 1) * its lower edge wide: less than (gamma - 1) * |v|
        assert holding[0][1] - holding[0][0] <= (sketch.gamma - 1) * abs(v) * (1 + 1e-12)


def test_collapsing_bounds_the_buckets_and_keeps_the_high_quantiles():
    rng = np.random.default_rng(5)
    values = 10.0 ** rng.uniform(-8, 8, 5_000)  # 16 decades: ~1850 buckets at 1%
    sketch = QuantileSketch(relative_accuracy=0.01, max_buckets=200)
    for x in values:
        sketch.update(float(x))
    assert len(sketch.positive) == 200
    assert sketch.count == 5_000
    # the kept 200 buckets span ~1.7 decades at the top: p99 (16 decades * 1% = top 0.16
    # decade) is still within the guarantee; p01 sits in the collapsed range and is not
    assert_within_relative(sketch.quantile(0.99), exact_lower_quantile(values, 0.99), 0.01)
    assert sketch.quantile(0.01) > 10 * exact_lower_quantile(values, 0.01)


def test_an_empty_sketch_reads_none():
    sketch = QuantileSketch()
    assert sketch.quantile(0.5) is None and sketch.cdf(1.0) is None
    assert sketch.get() == {
        "count": 0,
        "min": None,
        "max": None,
        "p50": None,
        "p90": None,
        "p95": None,
        "p99": None,
    }
    assert sketch.rank(1.0) == 0


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused_and_change_nothing(bad):
    sketch = QuantileSketch().update(1.0)
    before = sketch.to_dict()
    with pytest.raises(ValueError):
        sketch.update(bad)
    assert sketch.to_dict() == before


def test_sketches_with_other_settings_do_not_merge():
    with pytest.raises(ValueError, match="relative_accuracy"):
        QuantileSketch(relative_accuracy=0.01).merge(QuantileSketch(relative_accuracy=0.02))
    with pytest.raises(ValueError, match="max_buckets"):
        QuantileSketch(max_buckets=10).merge(QuantileSketch(max_buckets=20))
    with pytest.raises(TypeError):
        QuantileSketch().merge(object())


@pytest.mark.parametrize(
    "kwargs", [{"relative_accuracy": 0.0}, {"relative_accuracy": 1.0}, {"max_buckets": 0}]
)
def test_invalid_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        QuantileSketch(**kwargs)


def test_quantile_outside_0_1_is_refused():
    with pytest.raises(ValueError):
        QuantileSketch().update(1.0).quantile(1.5)
