"""The promotion gate (`vvho deploy promote`): does an active canary period beat the settings it replaced?

A policy's benefit cannot be measured in shadow (nothing changes there), so the gate compares measured
windows: the baseline is every window measured under the settings found at start (a shadow run, or
an active run's windows before its first change), the canary every window of an active run after its
first change, except the first window after each change (it straddles the change). The rule:

- the statistic is the difference of mean objective per window, baseline minus canary (positive: the
  canary is better), with a 95% confidence interval from a moving-block bootstrap (blocks of
  BLOCK windows, since consecutive windows are correlated; 2000 resamples, fixed seed);
- PROMOTE when both sides have at least MIN_WINDOWS windows, the interval's lower bound is above 0,
  the canary's pooled p99 is at most P99_TOLERANCE (10%) above the baseline's, no rollback fired in
  the canary, and at most MAX_DEGRADED (20%) of either side's windows were DEGRADED;
- REJECT when the interval's upper bound is below 0 or a rollback fired;
- HOLD otherwise (not enough evidence yet: keep the canary running, or go back to shadow).

Baseline and canary are measured at different times, so a change of load between them can pose as an
effect; run them back to back, under comparable load, and long enough for the bootstrap to see it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vvho_env.histogram import N_BUCKETS, percentile_ns

MIN_WINDOWS = 10
BLOCK = 5
RESAMPLES = 2000
P99_TOLERANCE = 0.10
MAX_DEGRADED = 0.20


@dataclass(frozen=True)
class GateResult:
    verdict: str  # PROMOTE | HOLD | REJECT
    reasons: tuple[str, ...]
    baseline: int
    canary: int
    improvement: float  # mean objective, baseline - canary
    ci_low: float
    ci_high: float
    p99_baseline_us: float
    p99_canary_us: float
    rollbacks: int


def split(records: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(baseline windows, canary windows, rollbacks in the canary) from audit records."""
    base: list[dict[str, Any]] = []
    canary: list[dict[str, Any]] = []
    rollbacks = 0
    changed = settle = False  # a decision's window is measured before its change is applied
    for r in records:
        if r.get("event") != "decision":
            continue
        measured = r.get("window") is not None and r.get("objective") is not None
        if r.get("mode") == "shadow":
            base += [r] if measured else []
            continue
        if measured:
            if not changed:
                base.append(r)
            elif settle:
                settle = False  # the first window under new settings: left out
            else:
                canary.append(r)
        if r.get("applied"):
            changed = settle = True
            rollbacks += bool(r.get("rollback"))
    return base, canary, rollbacks


def _block_means(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(x)
    b = min(BLOCK, n)
    starts = rng.integers(0, n - b + 1, size=(RESAMPLES, math.ceil(n / b)))
    idx = (starts[:, :, None] + np.arange(b)).reshape(RESAMPLES, -1)[:, :n]
    return x[idx].mean(axis=1)


def pooled_p99_us(windows: Sequence[dict[str, Any]]) -> float:
    """The p99 of every request of the windows (their histograms, as the audit log keeps them, summed)."""
    hist = np.zeros(N_BUCKETS, dtype=np.int64)
    for w in windows:
        for b, n in (w["window"].get("histogram") or {}).items():
            hist[int(b)] += int(n)
    return percentile_ns(hist, 99.0) / 1000.0  # NaN when no window has a request


def gate(records: Iterable[dict[str, Any]]) -> GateResult:
    base, canary, rollbacks = split(records)
    reasons: list[str] = []
    jb = np.array([w["objective"] for w in base], dtype=float)
    jc = np.array([w["objective"] for w in canary], dtype=float)
    p99b, p99c = pooled_p99_us(base), pooled_p99_us(canary)
    if len(jb) < MIN_WINDOWS or len(jc) < MIN_WINDOWS:
        reasons.append(f"{len(jb)} baseline and {len(jc)} canary windows; at least {MIN_WINDOWS} of each needed")
        return GateResult("HOLD", tuple(reasons), len(jb), len(jc), math.nan, math.nan, math.nan, p99b, p99c,
                          rollbacks)
    rng = np.random.default_rng(0)
    diff = _block_means(jb, rng) - _block_means(jc, rng)
    lo, hi = (float(v) for v in np.percentile(diff, [2.5, 97.5]))
    imp = float(jb.mean() - jc.mean())
    degraded = [sum(w["window"]["status"] == "degraded" for w in ws) / len(ws) for ws in (base, canary)]
    if rollbacks:
        reasons.append(f"{rollbacks} rollback(s) in the canary")
    if hi < 0:
        reasons.append(f"the canary is worse: objective {jc.mean():.3f} vs {jb.mean():.3f}, 95% CI of the "
                       f"improvement [{lo:.3f}, {hi:.3f}]")
    if rollbacks or hi < 0:
        return GateResult("REJECT", tuple(reasons), len(jb), len(jc), imp, lo, hi, p99b, p99c, rollbacks)
    if lo <= 0:
        reasons.append(f"improvement {imp:.3f}, 95% CI [{lo:.3f}, {hi:.3f}] includes 0")
    if math.isfinite(p99b) and math.isfinite(p99c) and p99c > p99b * (1 + P99_TOLERANCE):
        reasons.append(f"canary p99 {p99c / 1000:.1f} ms is more than {P99_TOLERANCE:.0%} above "
                       f"{p99b / 1000:.1f} ms")
    if max(degraded) > MAX_DEGRADED:
        reasons.append(f"{max(degraded):.0%} of one side's windows were DEGRADED (at most {MAX_DEGRADED:.0%})")
    if reasons:
        return GateResult("HOLD", tuple(reasons), len(jb), len(jc), imp, lo, hi, p99b, p99c, rollbacks)
    return GateResult("PROMOTE", (f"improvement {imp:.3f}, 95% CI [{lo:.3f}, {hi:.3f}] above 0",), len(jb), len(jc),
                      imp, lo, hi, p99b, p99c, rollbacks)
