"""Log-bucketed histogram: <= 1% relative error from 100 ns to 10 s, percentiles like numpy's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vvho_env import histogram as h


def test_bucket_error_bound_is_below_one_percent() -> None:
    assert h.MAX_REL_ERROR < 0.01
    assert h.bucket_value_ns(h.N_BUCKETS - 1) >= h.MAX_NS * (1 - 0.01)


@settings(max_examples=300, deadline=None)
@given(log_v=st.floats(min_value=math.log(h.MIN_NS), max_value=math.log(h.MAX_NS)))
def test_relative_error_at_most_one_percent_from_100ns_to_10s(log_v: float) -> None:
    v = math.exp(log_v)
    rep = float(h.bucket_value_ns(h.bucket_of(v)))
    assert abs(rep - v) / v <= 0.01
    # the vectorised recorder of the live probe puts the value in the same bucket
    lh = h.LogHistogram()
    lh.record_many_ns(np.array([v]))
    assert int(np.argmax(lh.counts)) == h.bucket_of(v)


def test_buckets_are_monotone_and_out_of_range_values_are_kept() -> None:
    vs = np.geomspace(1.0, 1e11, 2000)
    b = np.array([h.bucket_of(float(v)) for v in vs])
    assert (np.diff(b) >= 0).all()
    assert h.bucket_of(1.0) == 0 and h.bucket_of(0.0) == 0
    assert h.bucket_of(1e12) == h.N_BUCKETS - 1
    lh = h.LogHistogram()
    lh.record_ns(5.0)
    lh.record_ns(1e12)
    assert lh.total == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percentiles_of_known_samples_match_numpy_within_one_percent(seed: int) -> None:
    rng = np.random.default_rng(seed)
    samples = rng.lognormal(mean=math.log(50_000.0), sigma=1.5, size=20_000)  # ~50 us median, heavy tail
    samples = samples.clip(h.MIN_NS, h.MAX_NS)
    lh = h.LogHistogram()
    lh.record_many_ns(samples)
    assert lh.total == samples.size
    qs = (1.0, 50.0, 90.0, 99.0, 99.9)
    got = h.percentiles_ns(lh.counts, qs)
    want = np.percentile(samples, qs, method="inverted_cdf")
    np.testing.assert_allclose(got, want, rtol=0.01)
    assert lh.percentile_us(99.0) == pytest.approx(got[3] / 1000.0)


def test_record_one_by_one_equals_record_many() -> None:
    samples = np.random.default_rng(7).uniform(50.0, 2e10, size=500)
    a, b = h.LogHistogram(), h.LogHistogram()
    for v in samples:
        a.record_ns(float(v))
    b.record_many_ns(samples)
    np.testing.assert_array_equal(a.counts, b.counts)


def test_empty_histogram_gives_nan() -> None:
    lh = h.LogHistogram()
    assert math.isnan(lh.percentile_us(99.0))
    assert np.isnan(h.percentiles_ns(np.zeros(h.N_BUCKETS, dtype=np.int64), (50.0, 99.0))).all()
    lh.record_ns(1000.0)
    lh.reset()
    assert lh.total == 0 and math.isnan(lh.percentile_us(50.0))


def test_single_value_gives_that_value_at_every_percentile() -> None:
    lh = h.LogHistogram()
    lh.record_ns(30_000.0)
    for q in (0.0, 50.0, 100.0):
        assert lh.percentile_us(q) == pytest.approx(30.0, rel=0.01)


def test_batch_percentiles_one_row_per_histogram() -> None:
    rng = np.random.default_rng(3)
    rows = [rng.exponential(20_000.0, 5000) + 200.0, rng.exponential(2e6, 3000) + 200.0, None]
    counts = np.zeros((3, h.N_BUCKETS), dtype=np.int64)
    for i, r in enumerate(rows):
        if r is not None:
            lh = h.LogHistogram()
            lh.record_many_ns(r)
            counts[i] = lh.counts
    qs = (50.0, 99.0)
    out = h.percentiles_ns(counts, qs)
    assert out.shape == (3, 2)
    for i in range(2):
        np.testing.assert_array_equal(out[i], h.percentiles_ns(counts[i], qs))
        np.testing.assert_allclose(out[i], np.percentile(rows[i], qs, method="inverted_cdf"), rtol=0.01)
    assert np.isnan(out[2]).all(), "an empty row is NaN without disturbing the others"
    assert out[1, 0] > out[0, 0] * 50


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.0, 1.0, 50.0, 99.0, 99.9, 100.0]), st.integers(0, 3))
def test_one_histogram_percentile_is_the_batch_rule_bit_for_bit(seed: int, q: float, shape: int) -> None:
    rng = np.random.default_rng(seed)
    counts = np.zeros(h.N_BUCKETS, dtype=np.int64)
    if shape == 1:  # a few sparse buckets
        counts[rng.integers(0, h.N_BUCKETS, 5)] = rng.integers(1, 4, 5)
    elif shape == 2:  # one bucket
        counts[rng.integers(0, h.N_BUCKETS)] = rng.integers(1, 10**6)
    elif shape == 3:  # dense
        counts[:] = rng.integers(0, 1000, h.N_BUCKETS)
    want = h.percentiles_ns(counts, (q,))[0]
    got = h.percentile_ns(counts, q)
    assert (math.isnan(want) and math.isnan(got)) or got == want


def test_the_bucket_value_table_is_bucket_value_ns_bit_for_bit() -> None:
    """percentile_ns reads each bucket's value from a table computed once; every entry is what
    bucket_value_ns gives for that bucket alone, and every bucket is a percentile's answer somewhere."""
    for b in range(h.N_BUCKETS):
        assert h._BUCKET_NS[b] == float(h.bucket_value_ns(np.array([b]))[0])
        counts = np.zeros(h.N_BUCKETS, dtype=np.int64)
        counts[b] = 3
        assert h.percentile_ns(counts, 99.0) == h.percentiles_ns(counts, (99.0,))[0]
