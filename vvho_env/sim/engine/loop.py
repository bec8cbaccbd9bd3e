"""The event loop: the earliest of all event times is processed next, until the window's end.

Event sources: arrivals, the NIC's coalescing timer, the guest tick, the CFS bandwidth and RT periods,
the end of a restart outage, the delay line of the PMD / SR-IOV paths, MMPP switches, one per pCPU
(its running segment ends) and one per entity (a neighbour's burst, a deferred wake-up).
"""

from __future__ import annotations

import numpy as np

from vvho_env.sim.engine.accounting import charge, complete
from vvho_env.sim.engine.guest import guest_enqueue, notify_vcpu, vcpu_done
from vvho_env.sim.engine.jit import jit, jit_inline
from vvho_env.sim.engine.layout import (
    EV_CPU0,
    EV_ENT0,
    INF,
    MAX_EVENTS_PER_RUN,
    ME,
    MP,
    NB,
    NEV,
    OFF_ACC,
    OFF_BUCKET,
    OFF_DLI,
    OFF_DLT,
    OFF_EV,
    QN,
    Acc,
    Cfg,
    Cpu,
    Ent,
    Ev,
    Kind,
    Prof,
    Scalar,
    St,
    ci,
    ei,
)
from vvho_env.sim.engine.network import backend_next_item, nic_deliver
from vvho_env.sim.engine.rt import fifo_waiting
from vvho_env.sim.engine.runqueue import set_seg_end, set_state
from vvho_env.sim.engine.scheduler import make_runnable, pick, segment_end, stop_current, unthrottle
from vvho_env.sim.engine.workload import arrive, mmpp_switch, neighbour_done, neighbour_event


@jit
def on_cpu_event(S: np.ndarray, X: np.ndarray, H: np.ndarray, T: np.ndarray, R: np.ndarray,
                 cfg: np.ndarray, prof: np.ndarray, p: int, now: int) -> None:
    """p's running segment ended: the scheduler's reasons first, then the end of the entity's activity."""
    e = S[ci(p, Cpu.CUR)]
    charge(S, X, cfg, p, now)
    if segment_end(S, X, cfg, prof, p, now):
        return
    kind = S[ei(e, Ent.KIND)]
    if kind == Kind.NEIGH:
        neighbour_done(S, X, R, cfg, prof, p, e, now)
        return
    if kind == Kind.BACKEND:
        item = S[ei(e, Ent.REQ)]
        if item >= 0:
            guest_enqueue(S, X, T, R, cfg, prof, item, now)
        else:
            complete(S, X, H, T, cfg, -item - 1, now)
        if backend_next_item(S, cfg, prof):
            set_seg_end(S, X, cfg, prof, p, now)
        else:
            stop_current(S, X, cfg, prof, p, now, St.SLEEP)
            pick(S, X, cfg, prof, p, now)
        return
    vcpu_done(S, X, T, R, cfg, prof, e, p, now)


@jit_inline
def bandwidth_period(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, now: int) -> None:
    """A CFS bandwidth period ends: buckets refill, throttled entities wake, segments are re-timed."""
    S[OFF_EV + Ev.PERIOD] = now + int(cfg[Cfg.PERIOD])
    for b in range(NB):
        S[OFF_BUCKET + b] = 0
    for e in range(ME):
        if S[ei(e, Ent.STATE)] == St.THROTTLED:
            X[OFF_ACC + Acc.THROTTLED] += (now - S[ei(e, Ent.RUNNABLE_T)]) if S[ei(e, Ent.KIND)] == Kind.VCPU else 0
            set_state(S, e, St.SLEEP)
            unthrottle(S, X, cfg, prof, e, now)
    for p in range(MP):
        if S[ci(p, Cpu.CUR)] >= 0:
            charge(S, X, cfg, p, now)
            set_seg_end(S, X, cfg, prof, p, now)


@jit_inline
def rt_period(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, now: int) -> None:
    """An RT period ends: RT runtime refills, RT-throttled pCPUs run their FIFO tasks again."""
    S[OFF_EV + Ev.RT] = now + int(prof[Prof.RT_PERIOD_NS])
    for p in range(MP):
        S[ci(p, Cpu.RT_USED)] = 0
        if S[ci(p, Cpu.RT_THR)] == 1:
            S[ci(p, Cpu.RT_THR)] = 0
            if fifo_waiting(S, p):
                if S[ci(p, Cpu.CUR)] >= 0:
                    stop_current(S, X, cfg, prof, p, now, St.RUNNABLE)
                pick(S, X, cfg, prof, p, now)
            if S[ci(p, Cpu.CUR)] < 0:
                pick(S, X, cfg, prof, p, now)
        elif S[ci(p, Cpu.CUR)] >= 0:
            charge(S, X, cfg, p, now)
            set_seg_end(S, X, cfg, prof, p, now)


@jit_inline
def delay_line_out(S: np.ndarray, X: np.ndarray, H: np.ndarray, T: np.ndarray, R: np.ndarray, cfg: np.ndarray,
                   prof: np.ndarray, now: int) -> None:
    """The head of the PMD / SR-IOV delay line comes out: to the guest, or back to the client."""
    h = S[Scalar.DL_HEAD]
    item = S[OFF_DLI + h % QN]
    S[Scalar.DL_HEAD] = h + 1
    S[OFF_EV + Ev.DELAY] = S[OFF_DLT + (h + 1) % QN] if h + 1 < S[Scalar.DL_TAIL] else INF
    if item >= 0:
        guest_enqueue(S, X, T, R, cfg, prof, item, now)
    else:
        complete(S, X, H, T, cfg, -item - 1, now)


@jit
def run_until(S: np.ndarray, X: np.ndarray, H: np.ndarray, T: np.ndarray, R: np.ndarray,
              cfg: np.ndarray, prof: np.ndarray, t_end: int) -> int:
    """Advance one env to t_end. Returns the number of events processed."""
    n_events = 0
    ev = S[OFF_EV:OFF_EV + NEV]
    while True:
        k = 0
        t = ev[0]
        for i in range(1, NEV):
            if ev[i] < t:
                t = ev[i]
                k = i
        if t >= t_end:
            break
        if n_events >= MAX_EVENTS_PER_RUN:
            S[Scalar.LIVELOCK] = t  # reported by the caller as an error, never a silent hang
            break
        now = t
        S[Scalar.NOW] = now
        n_events += 1
        if k == Ev.ARR:
            arrive(S, X, R, cfg, prof, now)
        elif k == Ev.NIC:
            ev[Ev.NIC] = INF
            nic_deliver(S, X, cfg, prof, now)
        elif k == Ev.DELAY:
            delay_line_out(S, X, H, T, R, cfg, prof, now)
        elif k == Ev.TICK:
            ev[Ev.TICK] = now + int(1e9 / prof[Prof.TICK_HZ])
            for e in range(int(cfg[Cfg.NVCPU])):
                notify_vcpu(S, X, T, R, cfg, prof, now, True, e)
        elif k == Ev.PERIOD:
            bandwidth_period(S, X, cfg, prof, now)
        elif k == Ev.RT:
            rt_period(S, X, cfg, prof, now)
        elif k == Ev.OUTAGE:
            ev[Ev.OUTAGE] = INF
            nic_deliver(S, X, cfg, prof, now)
        elif k == Ev.MMPP:
            mmpp_switch(S, R, cfg, now)
        elif k < EV_ENT0:
            on_cpu_event(S, X, H, T, R, cfg, prof, k - EV_CPU0, now)
        else:
            e = k - EV_ENT0
            ev[k] = INF
            if S[ei(e, Ent.KIND)] == Kind.NEIGH:
                neighbour_event(S, X, R, cfg, prof, e, now)
            elif S[ei(e, Ent.STATE)] == St.SLEEP:
                if S[ei(e, Ent.KIND)] == Kind.VCPU:
                    S[ei(e, Ent.ENTRY)] = 1
                make_runnable(S, X, cfg, prof, e, now)
    S[Scalar.NOW] = t_end
    return n_events


@jit
def run_batch(S: np.ndarray, X: np.ndarray, H: np.ndarray, T: np.ndarray, R: np.ndarray,
              cfg: np.ndarray, prof: np.ndarray, t_end: np.ndarray) -> int:
    """Advance every env (a row of each array) to its t_end; returns the events processed."""
    n = 0
    for i in range(S.shape[0]):
        n += run_until(S[i], X[i], H[i], T[i], R[i], cfg[i], prof[i], t_end[i])
    return n
