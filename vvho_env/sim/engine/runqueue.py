"""Per-pCPU run-queue bookkeeping: entity state and pCPU changes with exact waiting counts, and when the
running segment of a pCPU ends (its work, its slice, its RT runtime or its bandwidth, whichever first)."""

from __future__ import annotations

import numpy as np

from vvho_env.sim.engine.bandwidth import budget_left
from vvho_env.sim.engine.jit import jit
from vvho_env.sim.engine.layout import EV_CPU0, INF, OFF_EV, Cpu, Ent, Prof, St, ci, ei


@jit
def set_state(S: np.ndarray, e: int, st: int) -> None:
    """Every state change goes through here so that each pCPU's count of waiting tasks stays exact."""
    c = S[ei(e, Ent.CPU)]
    if c >= 0:
        if S[ei(e, Ent.STATE)] == St.RUNNABLE:
            S[ci(c, Cpu.NR)] -= 1
        if st == St.RUNNABLE:
            S[ci(c, Cpu.NR)] += 1
    S[ei(e, Ent.STATE)] = st


@jit
def set_cpu(S: np.ndarray, e: int, q: int) -> None:
    """Move entity e to pCPU q (-1: none), keeping the waiting counts exact."""
    c = S[ei(e, Ent.CPU)]
    if S[ei(e, Ent.STATE)] == St.RUNNABLE:
        if c >= 0:
            S[ci(c, Cpu.NR)] -= 1
        if q >= 0:
            S[ci(q, Cpu.NR)] += 1
    S[ei(e, Ent.CPU)] = q


@jit
def others_runnable(S: np.ndarray, p: int, e: int) -> bool:
    """Whether an entity other than e waits for pCPU p."""
    n = S[ci(p, Cpu.NR)]
    if S[ei(e, Ent.STATE)] == St.RUNNABLE and S[ei(e, Ent.CPU)] == p:
        n -= 1
    return n > 0


@jit
def set_seg_end(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, now: int) -> None:
    """Schedule p's next CPU event: the current entity's work done, its fair slice over (when others wait),
    its RT runtime or its CFS bandwidth spent."""
    e = S[ci(p, Cpu.CUR)]
    if e < 0:
        S[OFF_EV + EV_CPU0 + p] = INF
        return
    start = S[ci(p, Cpu.SEG_START)]
    prog_start = start + S[ci(p, Cpu.OVH_IDLE)] + S[ci(p, Cpu.OVH_BUSY)]
    rem = S[ei(e, Ent.REM)]
    end = INF if rem >= INF else prog_start + max(rem, 0)
    if S[ei(e, Ent.FIFO)] == 0:
        if others_runnable(S, p, e):
            end = min(end, max(S[ci(p, Cpu.SLICE_END)], now))
    else:
        rt_left = int(prof[Prof.RT_RUNTIME_NS]) - S[ci(p, Cpu.RT_USED)]
        end = min(end, start + S[ci(p, Cpu.OVH_IDLE)] + max(rt_left, 0))
    b = budget_left(S, cfg, e)
    if b < INF:
        end = min(end, start + S[ci(p, Cpu.OVH_IDLE)] + max(b, 0))
    S[OFF_EV + EV_CPU0 + p] = max(end, now)
