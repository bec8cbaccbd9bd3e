"""Statistics of a comparison: point estimates with 95% bootstrap confidence intervals (scipy.stats.bootstrap).

Conventions follow Agarwal et al., "Deep RL at the Edge of the Statistical Precipice" (NeurIPS 2021,
the rliable library), with scipy's maintained bootstrap doing the resampling:

- A *stratified* bootstrap resamples the runs within each stratum (scenario) independently and
  recomputes the statistic over all strata: each stratum is passed to ``scipy.stats.bootstrap`` as
  a sample of its own, which it resamples on its own. Intervals are percentile intervals.
- IQM is the interquartile mean (the mean of the middle 50%, ``scipy.stats.trim_mean(x, 0.25)``):
  robust to an outlying run, more efficient than the median.
- Probability of improvement P(X < Y) + P(X = Y)/2 (lower is better here: X improves on Y when its
  objective is lower) is the Mann-Whitney U statistic over n*m, averaged over scenarios.
- Ratios of two methods measured on the same seeds (paired) resample the seeds jointly.
- Performance profiles: the share of runs whose normalised score exceeds tau, for each tau.

A statistic over fewer than two runs per stratum has no interval (NaN bounds); a degenerate sample
(all values equal) has the point interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its confidence interval."""

    value: float
    lo: float
    hi: float

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "lo": self.lo, "hi": self.hi}


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean along `axis`."""
    return np.asarray(sps.trim_mean(x, 0.25, axis=axis))


def mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def _interval(samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], paired: bool,
              seed: int) -> Estimate:
    arrays = [np.asarray(s, dtype=np.float64) for s in samples]
    value = float(statistic(*arrays, axis=-1))
    if any(a.size < 2 for a in arrays):
        return Estimate(value, math.nan, math.nan)
    if all(np.all(a == a[0]) for a in arrays):
        return Estimate(value, value, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's degenerate-sample warnings: handled above
        res = sps.bootstrap(tuple(arrays), statistic, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                            method="percentile", paired=paired, vectorized=True, batch=200,
                            rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Estimate(value, min(lo, value), max(hi, value))


def estimate(x: Sequence[float], statistic: Callable[..., np.ndarray] = mean, seed: int = 0) -> Estimate:
    """A statistic of one sample of runs with its bootstrap interval."""
    return _interval([np.asarray(x, dtype=np.float64)], statistic, paired=False, seed=seed)


def stratified(strata: Sequence[Sequence[float]], statistic: Callable[..., np.ndarray] = iqm,
               seed: int = 0) -> Estimate:
    """A statistic of the runs of all strata together, with a stratified bootstrap interval."""
    def pooled(*xs: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(np.concatenate(xs, axis=axis), axis=axis)

    return _interval([np.asarray(s, dtype=np.float64) for s in strata], pooled, paired=False, seed=seed)


def ratio_of_means(x: Sequence[float], y: Sequence[float], seed: int = 0) -> Estimate:
    """mean(x) / mean(y) for runs paired by seed (x[i] and y[i] share an episode), seeds resampled jointly."""
    def ratio(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.mean(a, axis=axis) / np.mean(b, axis=axis)

    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape:
        raise ValueError(f"paired samples of different sizes {xa.size} and {ya.size}")
    return _interval([xa, ya], ratio, paired=True, seed=seed)


def _poi(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """P(X < Y) + P(X = Y)/2 along the last axis (broadcast over leading resample axes)."""
    xe = np.expand_dims(x, -1)
    ye = np.expand_dims(y, -2)
    return np.mean((xe < ye) + 0.5 * (xe == ye), axis=(-2, -1))


def probability_of_improvement(pairs: Sequence[tuple[Sequence[float], Sequence[float]]], seed: int = 0) -> Estimate:
    """P(method X's objective is lower than method Y's), averaged over strata (scenarios); each pair
    is (X's runs, Y's runs) of one stratum. Stratified bootstrap over every stratum and method."""
    arrays: list[np.ndarray] = []
    for x, y in pairs:
        arrays += [np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)]

    def average(*xs: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean([_poi(xs[i], xs[i + 1]) for i in range(0, len(xs), 2)], axis=0)

    return _interval(arrays, average, paired=False, seed=seed)


def performance_profile(strata: Sequence[Sequence[float]], taus: Sequence[float],
                        seed: int = 0) -> list[Estimate]:
    """For each tau, the share of runs (all strata) whose score exceeds tau, stratified intervals."""
    out = []
    for tau in taus:
        def share(x: np.ndarray, axis: int = -1, t: float = float(tau)) -> np.ndarray:
            return np.mean(x > t, axis=axis)

        out.append(stratified(strata, share, seed=seed))
    return out
