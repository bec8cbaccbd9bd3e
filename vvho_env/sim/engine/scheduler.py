"""The host scheduler's core: what runs on each pCPU, by class (FIFO before fair), and the moves between
states (wake-up with placement, preemption, blocking, newidle pulls, throttling at a segment's end).

A waking fair entity preempts a running fair one exactly when the fair class decides so (fair.py:
EEVDF's check_preempt_wakeup_fair or CFS's wakeup granularity, by host profile). Simplification
(documented): entities migrate only at wake-up (select_idle_sibling-like) and by newidle pulls, not by
periodic load balancing.
"""

from __future__ import annotations

import numpy as np

from vvho_env.sim.engine.accounting import charge
from vvho_env.sim.engine.bandwidth import budget_left
from vvho_env.sim.engine.fair import (
    catch_up_deadline,
    cfs_slice_end,
    pick_fair,
    place_entity,
    renew_reached_deadline,
    renew_slice_alone,
    renormalise,
    save_lag,
    start_slice,
    update_min_vruntime,
    wakeup_preempt,
)
from vvho_env.sim.engine.idle import enter_idle, exit_idle
from vvho_env.sim.engine.jit import jit, jit_inline
from vvho_env.sim.engine.layout import (
    INF,
    ME,
    MP,
    OFF_ACC,
    X_LAG,
    Acc,
    Act,
    Cpu,
    Ent,
    Kind,
    Prof,
    St,
    ci,
    ei,
)
from vvho_env.sim.engine.rt import pick_rt, rt_exhausted
from vvho_env.sim.engine.runqueue import others_runnable, set_cpu, set_seg_end, set_state
from vvho_env.sim.engine.spinlock import vcpu_sched_in
from vvho_env.sim.engine.vmx import entry_ns


@jit
def stop_current(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, now: int,
                 new_state: int) -> int:
    """Take the running entity off p into new_state (charged up to now); returns it (-1: none ran)."""
    charge(S, X, cfg, p, now)
    e = S[ci(p, Cpu.CUR)]
    if e >= 0:
        if new_state != St.RUNNABLE and S[ei(e, Ent.FIFO)] == 0:
            save_lag(S, X, cfg, prof, p, e)
        set_state(S, e, new_state)
        if new_state == St.RUNNABLE:
            S[ei(e, Ent.RUNNABLE_T)] = now
        else:
            update_min_vruntime(S, X, prof, p)
        S[ci(p, Cpu.CUR)] = -1
    return e


@jit
def go_idle(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, now: int) -> None:
    """Nothing runnable on p: pull the longest-waiting task allowed here from a busy pCPU (newidle
    balancing), else enter an idle state."""
    best = -1
    best_t = INF
    for o in range(ME):
        if (S[ei(o, Ent.STATE)] == St.RUNNABLE and S[ei(o, Ent.CPU)] != p and (S[ei(o, Ent.MASK)] >> p) & 1
                and S[ei(o, Ent.RUNNABLE_T)] < best_t):
            best_t = S[ei(o, Ent.RUNNABLE_T)]
            best = o
    if best >= 0:
        # EEVDF: alone on p, the pulled entity is its own average (no lag to place); CFS renormalises
        src = S[ei(best, Ent.CPU)]
        renormalise(X, prof, best, src, p)
        set_cpu(S, best, p)
        update_min_vruntime(S, X, prof, src)
        S[ci(p, Cpu.CUR)] = -1
        S[ci(p, Cpu.EXIT_LAT)] = 0
        S[ci(p, Cpu.IDLE_T)] = now
        dispatch(S, X, cfg, prof, p, best, now)
        return
    enter_idle(S, X, cfg, prof, p, now)


@jit
def dispatch(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, e: int, now: int) -> None:
    """e starts running on p: idle exit, context switch, cache refill and VM entry come first."""
    # Cpu.CUR < 0 does not mean idle here: stop_current clears it right before pick() re-dispatches
    ovh_idle = exit_idle(S, X, p, now)
    ovh_busy = 0
    last = S[ci(p, Cpu.LAST)]
    if last != e:
        ovh_busy += int(prof[Prof.CTX_SWITCH_NS])
        X[OFF_ACC + Acc.CTX] += 1.0
        if S[ei(e, Ent.KIND)] == Kind.VCPU and last >= 0:
            ovh_busy += int(prof[Prof.CACHE_REFILL_NS])
    if S[ei(e, Ent.ENTRY)] != 0:
        ovh_busy += entry_ns(prof) + int(prof[Prof.VCPU_WAKE_NS])
        S[ei(e, Ent.ENTRY)] = 0
    S[ci(p, Cpu.CUR)] = e
    S[ci(p, Cpu.LAST)] = e
    S[ci(p, Cpu.SEG_START)] = now
    S[ci(p, Cpu.OVH_IDLE)] = ovh_idle
    S[ci(p, Cpu.OVH_BUSY)] = ovh_busy
    set_state(S, e, St.RUNNING)
    set_cpu(S, e, p)
    if S[ei(e, Ent.FIFO)] == 0:
        start_slice(S, X, cfg, prof, p, e, now, ovh_idle)
    vcpu_sched_in(S, X, cfg, prof, e, now)
    set_seg_end(S, X, cfg, prof, p, now)


@jit
def pick(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, now: int) -> None:
    """Choose what runs next on p: FIFO first (unless RT-throttled), then EEVDF."""
    if S[ci(p, Cpu.NR)] == 0:
        go_idle(S, X, cfg, prof, p, now)
        return
    best = pick_rt(S, p)
    if best < 0:
        best = pick_fair(S, X, prof, p)
    if best < 0:
        go_idle(S, X, cfg, prof, p, now)
    else:
        dispatch(S, X, cfg, prof, p, best, now)


@jit
def place_cpu(S: np.ndarray, e: int) -> int:
    """Wake-up placement: previous pCPU if idle, else an idle allowed pCPU, else the previous one."""
    mask = S[ei(e, Ent.MASK)]
    prev = S[ei(e, Ent.CPU)]
    if prev >= 0 and (mask >> prev) & 1 and S[ci(prev, Cpu.CUR)] < 0:
        return prev
    first = -1
    for q in range(MP):
        if (mask >> q) & 1:
            if first < 0:
                first = q
            if S[ci(q, Cpu.CUR)] < 0:
                return q
    if prev >= 0 and (mask >> prev) & 1:
        return prev
    return first


@jit
def make_runnable(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, e: int, now: int) -> None:
    """e wakes up: placed on a pCPU, it runs at once when that pCPU is idle (or halt-polling, or running a
    fair task and e is FIFO, or running a fair task that the fair class says e preempts), else it waits."""
    enqueue_runnable(S, X, cfg, prof, e, now, True)


@jit
def unthrottle(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, e: int, now: int) -> None:
    """e's CFS bandwidth is refilled: it is enqueued again (placed with its saved lag) without a wake-up
    preemption check. kernel/sched/fair.c unthrottle_cfs_rq enqueues the group entity and reschedules
    only an idle CPU ("if (rq->curr == rq->idle && rq->cfs.nr_running) resched_curr(rq)"); only
    try_to_wake_up's wakeup_preempt (check_preempt_wakeup_fair) can preempt a running fair task at once,
    so an unthrottled entity waits for the current's slice end (or its update_curr resched)."""
    enqueue_runnable(S, X, cfg, prof, e, now, False)


@jit
def enqueue_runnable(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, e: int, now: int,
                     wakeup: bool) -> None:
    """e becomes runnable on a pCPU; wakeup: it comes from try_to_wake_up, so the fair class may preempt."""
    p = place_cpu(S, e)
    prev = S[ei(e, Ent.CPU)]
    cur = S[ci(p, Cpu.CUR)]
    fair_cur = cur >= 0 and S[ei(cur, Ent.FIFO)] == 0
    resched = False
    if fair_cur:
        # enqueue_entity's update_curr: the current entity's vruntime up to now before e is placed; a
        # served request gets its new slice (update_deadline), which ends RUN_TO_PARITY's protection
        charge(S, X, cfg, p, now)
        update_min_vruntime(S, X, prof, p)
        if (prof[Prof.SCHED_CFS] == 0 and catch_up_deadline(S, X, cfg, prof, p, cur, now)
                and others_runnable(S, p, cur) and S[ei(cur, Ent.ACT)] != Act.HPOLL):
            # update_deadline with others queued: resched, and the pick below sees e queued too
            stop_current(S, X, cfg, prof, p, now, St.RUNNABLE)
            cur = -1
            fair_cur = False
            resched = True
    set_cpu(S, e, p)
    if S[ei(e, Ent.FIFO)] == 0:
        place_entity(S, X, cfg, prof, p, e, prev)
    set_state(S, e, St.RUNNABLE)
    S[ei(e, Ent.RUNNABLE_T)] = now
    if cur < 0:
        if resched:
            pick(S, X, cfg, prof, p, now)  # the resched above: e competes with those already waiting
        else:
            dispatch(S, X, cfg, prof, p, e, now)
        return
    if S[ei(cur, Ent.ACT)] == Act.HPOLL:
        # KVM stops halt-polling as soon as another task is runnable on this pCPU.
        vcpu_block(S, X, cfg, prof, p, now)
        return
    if S[ei(e, Ent.FIFO)] == 1 and fair_cur and S[ci(p, Cpu.RT_THR)] == 0:
        stop_current(S, X, cfg, prof, p, now, St.RUNNABLE)
        dispatch(S, X, cfg, prof, p, e, now)
        return
    if fair_cur:
        if wakeup and S[ei(e, Ent.FIFO)] == 0 and wakeup_preempt(S, X, prof, p, cur, e):
            stop_current(S, X, cfg, prof, p, now, St.RUNNABLE)
            pick(S, X, cfg, prof, p, now)
            return
        if prof[Prof.SCHED_CFS] > 0:
            cfs_slice_end(S, X, cfg, prof, p, cur)  # the ideal slice shrinks with the queue
        set_seg_end(S, X, cfg, prof, p, now)


@jit
def vcpu_block(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, now: int) -> None:
    """The running vCPU on p blocks in kvm_vcpu_halt (schedule() out) and p picks what runs next."""
    e = stop_current(S, X, cfg, prof, p, now, St.SLEEP)
    S[ei(e, Ent.ACT)] = Act.NONE
    X[OFF_ACC + Acc.VM_BUSY] += prof[Prof.BLOCK_NS]
    X[OFF_ACC + Acc.VCPU_BUSY] += prof[Prof.BLOCK_NS]
    pick(S, X, cfg, prof, p, now)


@jit_inline
def yield_to(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, e: int, now: int) -> None:
    """kvm_vcpu_on_spin's yield_to: a waiting e runs next on its pCPU unless a FIFO task runs there."""
    q = S[ei(e, Ent.CPU)]
    if S[ei(e, Ent.STATE)] == St.RUNNABLE and q >= 0:
        cur = S[ci(q, Cpu.CUR)]
        if cur < 0:
            dispatch(S, X, cfg, prof, q, e, now)
        elif S[ei(cur, Ent.FIFO)] == 0:
            stop_current(S, X, cfg, prof, q, now, St.RUNNABLE)
            dispatch(S, X, cfg, prof, q, e, now)


@jit_inline
def segment_end(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, now: int) -> bool:
    """p's running segment ended (charged up to now). Handles the scheduler's reasons: bandwidth spent
    (throttled until the next period), RT runtime spent (RT-throttled), slice expired with work left
    (EEVDF re-pick). Returns False when the entity's activity itself is done, for its owner to handle."""
    e = S[ci(p, Cpu.CUR)]
    if budget_left(S, cfg, e) <= 0:
        stop_current(S, X, cfg, prof, p, now, St.THROTTLED)
        S[ei(e, Ent.RUNNABLE_T)] = now
        pick(S, X, cfg, prof, p, now)
        return True
    if rt_exhausted(S, prof, p, e):
        S[ci(p, Cpu.RT_THR)] = 1
        stop_current(S, X, cfg, prof, p, now, St.RUNNABLE)
        pick(S, X, cfg, prof, p, now)
        return True
    rem = S[ei(e, Ent.REM)]
    busy_left = S[ci(p, Cpu.OVH_IDLE)] + S[ci(p, Cpu.OVH_BUSY)]
    if rem <= 0 and busy_left <= 0:
        return False
    if S[ei(e, Ent.FIFO)] == 0 and others_runnable(S, p, e):
        if prof[Prof.SCHED_CFS] == 0:
            renew_reached_deadline(X, cfg, e)
        stop_current(S, X, cfg, prof, p, now, St.RUNNABLE)
        pick(S, X, cfg, prof, p, now)
        if S[ei(e, Ent.STATE)] == St.RUNNABLE:
            q = place_cpu(S, e)
            if q != p and S[ci(q, Cpu.CUR)] < 0:
                # an idle pCPU pulls the preempted task (idle/nohz balancing)
                set_state(S, e, St.SLEEP)
                X[X_LAG + e] = 0.0
                make_runnable(S, X, cfg, prof, e, now)
    else:
        if S[ei(e, Ent.FIFO)] == 0:
            renew_slice_alone(S, X, cfg, prof, p, e, now)
        set_seg_end(S, X, cfg, prof, p, now)
    return True
