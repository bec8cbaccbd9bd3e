"""The comparison's statistics against distributions whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vvho import stats as S


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    assert float(S.iqm(np.arange(1.0, 9.0))) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    x = np.random.default_rng(0).normal(3.0, 1.0, 20_000)
    assert float(S.iqm(x)) == pytest.approx(3.0, abs=0.02)  # symmetric: the IQM is the mean
    assert float(S.iqm(np.array([1.0, 2.0, 3.0, 4.0, 1000.0]))) < 4  # robust to one outlying run


def test_the_95_percent_interval_of_a_mean_covers_it_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1)
    hits = 0
    trials = 200
    for i in range(trials):
        e = S.estimate(rng.normal(0.0, 1.0, 40), seed=i)
        hits += e.lo <= 0.0 <= e.hi
    assert 0.89 <= hits / trials <= 0.99, hits / trials  # percentile intervals run slightly narrow at n=40
    # and its width is the normal theory's 2 * 1.96 / sqrt(n)
    e = S.estimate(rng.normal(0.0, 1.0, 400))
    assert e.hi - e.lo == pytest.approx(2 * 1.96 / math.sqrt(400), rel=0.15)


def test_probability_of_improvement_of_two_normals() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(0.0, 1.0, 400), rng.normal(1.0, 1.0, 400)
    e = S.probability_of_improvement([(x, y)])
    truth = 0.5 * (1 + math.erf(1.0 / math.sqrt(2) / math.sqrt(2)))  # P(X < Y) = Phi(1 / sqrt(2)) = 0.760
    assert e.value == pytest.approx(truth, abs=0.03) and e.lo < truth < e.hi
    assert S.probability_of_improvement([(y, x)]).value == pytest.approx(1 - e.value)
    tie = S.probability_of_improvement([([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])])
    assert tie.value == 0.5 and tie.lo == tie.hi == 0.5
    # averaged over strata: one where X always wins, one where it always loses
    both = S.probability_of_improvement([([0.0, 0.1], [1.0, 1.1]), ([2.0, 2.1], [1.0, 1.1])])
    assert both.value == 0.5


def test_stratified_bootstrap_resamples_within_strata() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.0, 0.01, 10), rng.normal(10.0, 0.01, 10)
    e = S.stratified([a, b], S.mean)
    assert e.value == pytest.approx(5.0, abs=0.01)
    # each stratum keeps its 10 runs in every resample, so the pooled mean barely moves; an unstratified
    # bootstrap of the 20 runs would swing by about +-2.2 (the strata's difference over sqrt(20))
    assert e.hi - e.lo < 0.05
    loose = S.estimate(np.concatenate([a, b]), S.mean)
    assert loose.hi - loose.lo > 2.0


def test_paired_ratio_and_small_samples() -> None:
    assert S.ratio_of_means([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == S.Estimate(2.0, 2.0, 2.0)
    noisy = S.ratio_of_means([1.1, 2.2, 2.9, 4.1], [1.0, 2.0, 3.0, 4.0])
    assert noisy.lo <= noisy.value <= noisy.hi and noisy.value == pytest.approx(10.3 / 10)
    one = S.estimate([3.0])
    assert one.value == 3.0 and not one.has_interval
    with pytest.raises(ValueError, match="different sizes"):
        S.ratio_of_means([1.0], [1.0, 2.0])


def test_performance_profile_of_a_uniform_score() -> None:
    x = np.random.default_rng(4).uniform(0.0, 1.0, 2000)
    taus = [0.1, 0.5, 0.9]
    for tau, e in zip(taus, S.performance_profile([x], taus), strict=True):
        assert e.value == pytest.approx(1 - tau, abs=0.03) and e.lo <= 1 - tau + 0.03 and e.hi >= 1 - tau - 0.03
