"""The fair class: a small EEVDF per pCPU (kernel/sched/fair.c, 6.6+).

Eligibility on the weighted average vruntime, earliest virtual deadline first, zero-lag placement with
the lag kept across a sleep (PLACE_LAG), the slice as the request size. Weights are cpu_shares.
"""

from __future__ import annotations

import numpy as np

from vvho_env.sim.engine.jit import jit, jit_inline
from vvho_env.sim.engine.layout import ME, X_DL, X_LAG, X_VR, X_W, Cfg, Cpu, Ent, KnobWriter, St, ci, ei

KNOB_WRITERS: dict[str, KnobWriter] = {
    "cpu_shares": (Cfg.SHARES, lambda v, _: float(v)),
    "sched_slice_us": (Cfg.SLICE, lambda v, _: float(v) * 1000.0),
}


@jit
def avg_vruntime(S: np.ndarray, X: np.ndarray, p: int) -> float:
    """Weighted average vruntime of the fair entities queued or running on p (EEVDF's V)."""
    num = 0.0
    den = 0.0
    for o in range(ME):
        st = S[ei(o, Ent.STATE)]
        if S[ei(o, Ent.CPU)] == p and (st == St.RUNNABLE or st == St.RUNNING) and S[ei(o, Ent.FIFO)] == 0:
            num += X[X_W + o] * X[X_VR + o]
            den += X[X_W + o]
    return num / den if den > 0 else -1.0


@jit_inline
def new_deadline(X: np.ndarray, cfg: np.ndarray, e: int) -> None:
    """A new request of one slice: deadline = vruntime + slice / weight."""
    X[X_DL + e] = X[X_VR + e] + cfg[Cfg.SLICE] * 1024.0 / X[X_W + e]


@jit_inline
def renew_reached_deadline(X: np.ndarray, cfg: np.ndarray, e: int) -> None:
    """A new slice once the current one is served. Less than 1 ns of service left counts as reached:
    after a weight drop (cpu_shares change) an old deadline can sit a fraction of a ns ahead, and a
    0-ns slice would re-pick forever."""
    if (X[X_DL + e] - X[X_VR + e]) * X[X_W + e] / 1024.0 < 1.0:
        new_deadline(X, cfg, e)


@jit_inline
def start_slice(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, p: int, e: int, now: int, delay: int) -> None:
    """Fair entity e starts running on p (after delay ns of idle exit): its slice ends where its
    virtual deadline is reached."""
    renew_reached_deadline(X, cfg, e)
    S[ci(p, Cpu.SLICE_END)] = now + delay + int((X[X_DL + e] - X[X_VR + e]) * X[X_W + e] / 1024.0)


@jit_inline
def pick_fair(S: np.ndarray, X: np.ndarray, p: int) -> int:
    """The eligible fair entity waiting on p with the earliest deadline (the least vruntime when none is
    eligible); -1 when none waits."""
    v = avg_vruntime(S, X, p)
    best = -1
    best_dl = 1e300
    fallback = -1
    fallback_vr = 1e300
    for o in range(ME):
        if S[ei(o, Ent.STATE)] == St.RUNNABLE and S[ei(o, Ent.CPU)] == p and S[ei(o, Ent.FIFO)] == 0:
            if X[X_VR + o] <= v + 1e-6 and X[X_DL + o] < best_dl:
                best_dl = X[X_DL + o]
                best = o
            if X[X_VR + o] < fallback_vr:
                fallback_vr = X[X_VR + o]
                fallback = o
    return best if best >= 0 else fallback


@jit_inline
def save_lag(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, p: int, e: int) -> None:
    """e leaves p's queue: keep its lag across the sleep, clamped as the kernel does (2 slices of service)."""
    limit = 2.0 * cfg[Cfg.SLICE] * 1024.0 / X[X_W + e]
    lag = avg_vruntime(S, X, p) - X[X_VR + e]
    X[X_LAG + e] = min(limit, max(-limit, lag))


@jit_inline
def place_entity(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, p: int, e: int) -> None:
    """e wakes on p: vruntime at the average minus its saved lag (place_entity with PLACE_LAG), a new slice."""
    v = avg_vruntime(S, X, p)
    if v >= 0:
        X[X_VR + e] = v - X[X_LAG + e]
    X[X_LAG + e] = 0.0
    new_deadline(X, cfg, e)
