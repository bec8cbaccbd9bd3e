"""The scheduled entities and where they may run: vCPU threads (shared or dedicated pCPUs), the backend
thread (with the vCPUs or on the housekeeping pCPU), one neighbour per pCPU; built at reset and rebuilt
on every knob change."""

from __future__ import annotations

import numpy as np

from vvho_env.sim.engine.jit import jit
from vvho_env.sim.engine.layout import (
    E_BACKEND,
    E_NEIGH0,
    EV_ENT0,
    INF,
    ME,
    MP,
    MV,
    NEV,
    OFF_EV,
    X_IDLE_AVG,
    X_W,
    Backend,
    Cfg,
    Cpu,
    Ent,
    Ev,
    Kind,
    KnobWriter,
    Prof,
    Scalar,
    St,
    ci,
    ei,
)
from vvho_env.sim.engine.rng import rand_exp, rand_u
from vvho_env.sim.engine.runqueue import set_cpu, set_state
from vvho_env.sim.engine.scheduler import pick, stop_current
from vvho_env.sim.engine.workload import next_arrival_gap, schedule_neighbour

KNOB_WRITERS: dict[str, KnobWriter] = {
    "vcpu_pinning": (Cfg.PIN, lambda v, _: 1.0 if v == "dedicated" else 0.0),
    "emulator_placement": (Cfg.EMU_HK, lambda v, _: 1.0 if v == "housekeeping" else 0.0),
    "vcpu_count": (Cfg.NVCPU, lambda v, _: float(min(int(v), MV))),
}


@jit
def configure(S: np.ndarray, X: np.ndarray, R: np.ndarray, cfg: np.ndarray, prof: np.ndarray, now: int,
              fresh: bool) -> None:
    """(Re)build entities, placement and weights from the knobs; fresh: a new episode (or a restart)."""
    npc = int(prof[Prof.N_PCPU])
    hk = npc  # housekeeping pCPU index
    nv = int(cfg[Cfg.NVCPU])
    if fresh:
        S[:] = 0
        X[:] = 0.0
        for i in range(NEV):
            S[OFF_EV + i] = INF
        for p in range(MP):
            S[ci(p, Cpu.CUR)] = -1
            S[ci(p, Cpu.LAST)] = -1
            S[ci(p, Cpu.IDLE_T)] = now
            S[ci(p, Cpu.IN_IDLE)] = 1
            X[X_IDLE_AVG + p] = 1e6
        for e in range(ME):
            set_cpu(S, e, -1)
            S[ei(e, Ent.LOCK_Q)] = -1
        S[Scalar.LOCK_OWNER] = -1
        S[OFF_EV + Ev.TICK] = now + int(rand_u(R) * 1e9 / prof[Prof.TICK_HZ])
        S[OFF_EV + Ev.PERIOD] = now + int(rand_u(R) * cfg[Cfg.PERIOD])
        S[OFF_EV + Ev.RT] = now + int(rand_u(R) * prof[Prof.RT_PERIOD_NS])
        if cfg[Cfg.CLOSED] > 0:
            S[OFF_EV + Ev.ARR] = now + 1
        else:
            S[OFF_EV + Ev.ARR] = now + next_arrival_gap(S, R, cfg)
        if cfg[Cfg.MMPP_MULT] != 1.0:
            S[OFF_EV + Ev.MMPP] = now + int(rand_exp(R, cfg[Cfg.MMPP_OFF]))
    S[Scalar.HK] = hk
    shared_mask = (1 << npc) - 1
    dedicated = cfg[Cfg.PIN] > 0
    vcpu_mask = 0
    for e in range(MV):
        kind = Kind.VCPU if e < nv else Kind.NONE
        S[ei(e, Ent.KIND)] = kind
        if kind == Kind.NONE:
            S[ei(e, Ent.MASK)] = 0
            continue
        S[ei(e, Ent.MASK)] = (1 << (e % npc)) if dedicated else shared_mask
        vcpu_mask |= S[ei(e, Ent.MASK)]
        S[ei(e, Ent.FIFO)] = 1 if cfg[Cfg.FIFO] > 0 else 0
        X[X_W + e] = cfg[Cfg.SHARES]
        S[ei(e, Ent.PLE_WIN)] = int(cfg[Cfg.PLE])  # vmx->ple_window starts at the module's ple_window
        if fresh:
            S[ei(e, Ent.HPWIN)] = 0
            S[ei(e, Ent.GPWIN)] = int(prof[Prof.GUEST_POLL_GROW_START])
    if dedicated:
        neigh_mask = shared_mask & ~vcpu_mask
        if neigh_mask == 0:
            neigh_mask = 1 << hk
    else:
        neigh_mask = shared_mask
    mode = int(cfg[Cfg.BACKEND])
    S[ei(E_BACKEND, Ent.KIND)] = Kind.BACKEND
    S[ei(E_BACKEND, Ent.MASK)] = (1 << hk) if cfg[Cfg.EMU_HK] > 0 else vcpu_mask
    if mode == Backend.PMD or mode == Backend.SRIOV:
        S[ei(E_BACKEND, Ent.MASK)] = 0  # no host thread on the data path
    X[X_W + E_BACKEND] = cfg[Cfg.SHARES]
    for j in range(MP):
        e = E_NEIGH0 + j
        if j < npc:
            S[ei(e, Ent.KIND)] = Kind.NEIGH
            own = 1 << j
            S[ei(e, Ent.MASK)] = own if (own & neigh_mask) else neigh_mask
        elif j == hk:
            S[ei(e, Ent.KIND)] = Kind.NEIGH
            S[ei(e, Ent.MASK)] = 1 << hk
        else:
            S[ei(e, Ent.KIND)] = Kind.NONE
            S[ei(e, Ent.MASK)] = 0
        X[X_W + e] = 1024.0
        if fresh and S[ei(e, Ent.KIND)] == Kind.NEIGH:
            set_cpu(S, e, j if j < npc and ((1 << j) & S[ei(e, Ent.MASK)]) else -1)
            schedule_neighbour(S, R, cfg, prof, e, now)
            S[OFF_EV + EV_ENT0 + e] = now + (S[OFF_EV + EV_ENT0 + e] - now) % int(prof[Prof.NEIGHBOUR_BURST_NS])
    # entities now outside their allowed set migrate at their next wake-up; running ones are moved now
    for p in range(MP):
        cur = S[ci(p, Cpu.CUR)]
        if cur >= 0 and not (S[ei(cur, Ent.MASK)] >> p) & 1:
            stop_current(S, X, cfg, prof, p, now, St.SLEEP)
            pick(S, X, cfg, prof, p, now)
            S[OFF_EV + EV_ENT0 + cur] = now
            if S[ei(cur, Ent.KIND)] == Kind.VCPU:
                S[ei(cur, Ent.ENTRY)] = 1
    for e in range(ME):
        if S[ei(e, Ent.STATE)] == St.RUNNABLE and not (S[ei(e, Ent.MASK)] >> S[ei(e, Ent.CPU)]) & 1:
            set_state(S, e, St.SLEEP)
            S[OFF_EV + EV_ENT0 + e] = now
    if fresh:
        for e in range(nv):
            # vCPUs start halted, waiting for work
            set_state(S, e, St.SLEEP)
            S[ei(e, Ent.HALT_T)] = now
            S[ei(e, Ent.IDLE_T)] = now
            set_cpu(S, e, e % npc)
        set_state(S, E_BACKEND, St.SLEEP)
