"""Log-bucketed latency histogram (HDR-style), shared by the simulator and the live probe.

Buckets grow geometrically by GROWTH from MIN_NS to MAX_NS. A value is reported as the geometric
middle of its bucket, so the relative error is at most sqrt(GROWTH) - 1 = 0.995% (< 1%).
Values below MIN_NS land in bucket 0, values above MAX_NS in the last bucket (overflow is counted).
`bucket_of` is compiled by numba for the simulator's event loop when it is first imported from here;
the live side (probe, host agent) uses the numpy paths and never loads numba.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MIN_NS = 100.0  # 100 ns
MAX_NS = 10.0e9  # 10 s
GROWTH = 1.02
LOG_GROWTH = math.log(GROWTH)
N_BUCKETS = math.ceil(math.log(MAX_NS / MIN_NS) / LOG_GROWTH) + 1
MAX_REL_ERROR = math.sqrt(GROWTH) - 1.0


def _bucket_of(value_ns: float) -> int:
    if value_ns <= MIN_NS:
        return 0
    b = int(math.log(value_ns / MIN_NS) / LOG_GROWTH)
    return b if b < N_BUCKETS else N_BUCKETS - 1


def __getattr__(name: str) -> Any:
    """`bucket_of`: _bucket_of compiled by numba on first use (PEP 562), so importing this module is cheap."""
    if name == "bucket_of":
        import numba as nb

        compiled = nb.njit(cache=True, inline="always")(_bucket_of)
        globals()["bucket_of"] = compiled
        return compiled
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def bucket_value_ns(bucket: np.ndarray | int) -> np.ndarray:
    """Representative value (geometric middle) of a bucket, in ns."""
    b = np.asarray(bucket, dtype=np.float64)
    return MIN_NS * np.exp((b + 0.5) * LOG_GROWTH)


# every bucket's value, computed once by bucket_value_ns itself (the same ufuncs elementwise, so the same
# floats; tests/test_histogram.py checks each): percentile_ns looks its bucket up instead of three numpy calls
# on a one-element array (~8 us of the ~23 us it took per call, on the host agent's regression judgements)
_BUCKET_NS: list[float] = bucket_value_ns(np.arange(N_BUCKETS)).tolist()


def percentiles_ns(counts: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """Percentiles (q in [0, 100]) from bucket counts; NaN when the histogram is empty.

    Counts may be 2-D (one histogram per row); the result then has one row per histogram.
    """
    c = np.atleast_2d(np.asarray(counts, dtype=np.int64))
    total = c.sum(axis=1)
    cum = np.cumsum(c, axis=1)
    out = np.full((c.shape[0], len(qs)), np.nan)
    for j, q in enumerate(qs):
        rank = np.ceil(q / 100.0 * total).clip(min=1)
        idx = (cum < rank[:, None]).sum(axis=1)
        vals = bucket_value_ns(np.minimum(idx, N_BUCKETS - 1))
        out[:, j] = np.where(total > 0, vals, np.nan)
    return out if np.ndim(counts) == 2 else out[0]


def percentile_ns(counts: np.ndarray, q: float) -> float:
    """percentiles_ns(counts, (q,))[0] for one histogram, bit for bit, in a few numpy calls instead of
    its 2-D machinery (the host agent's regression guard pools a few windows per judgement)."""
    cum = np.cumsum(counts, dtype=np.int64)
    total = int(cum[-1])
    if total <= 0:
        return math.nan
    rank = max(math.ceil(q / 100.0 * total), 1)
    idx = int(np.searchsorted(cum, rank, side="left"))  # counts >= 0: cum is sorted, so = (cum < rank).sum()
    return _BUCKET_NS[min(idx, N_BUCKETS - 1)]


class LogHistogram:
    """A growing histogram for one measurement window (used by the live probe)."""

    def __init__(self) -> None:
        self.counts = np.zeros(N_BUCKETS, dtype=np.int64)

    def record_ns(self, value_ns: float) -> None:
        self.counts[_bucket_of(float(value_ns))] += 1

    def record_many_ns(self, values_ns: np.ndarray) -> None:
        v = np.asarray(values_ns, dtype=np.float64)
        idx = np.zeros(v.shape, dtype=np.int64)
        above = v > MIN_NS
        idx[above] = (np.log(v[above] / MIN_NS) / LOG_GROWTH).astype(np.int64)
        np.add.at(self.counts, np.minimum(idx, N_BUCKETS - 1), 1)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def percentile_us(self, q: float) -> float:
        return percentile_ns(self.counts, q) / 1000.0

    def reset(self) -> None:
        self.counts[:] = 0
