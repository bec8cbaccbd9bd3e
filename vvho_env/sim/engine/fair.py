"""The fair class per pCPU, in the host profile's scheduler generation (``Prof.SCHED_CFS``).

EEVDF (Linux 6.6+, kernel/sched/fair.c, commit 147f3efaa241 "sched/fair: Implement an EEVDF-like
scheduling policy" and 5e963f2bd465 "sched/fair: Commit to EEVDF"): V is the weighted average vruntime of
the queued entities and the current one (avg_vruntime); an entity is eligible when its vruntime is not
after V (vruntime_eligible); pick_eevdf runs the eligible entity with the earliest virtual deadline,
deadline = vruntime + slice / weight (update_deadline, place_entity); a sleeper keeps its lag V - v,
clamped to max(2 slices, TICK_NSEC) of service (update_entity_lag), and is placed back at V minus its lag
inflated by (W + w) / W so that the lag survives its own effect on V (place_entity, PLACE_LAG). A woken
entity preempts when pick_eevdf, with it queued, returns it (check_preempt_wakeup_fair); RUN_TO_PARITY
keeps the current entity only while it is eligible and has not started a new slice since it was picked
(set_next_entity records the deadline, the "vlag == deadline" hack of 6.6-6.11; 6.12+'s protect_slice
gives the same bound when every task has the base slice, as here). update_curr's update_deadline starts a
new slice once the deadline is reached and reschedules when others wait.

CFS (before 6.6, kernel/sched/fair.c of 5.15): the least vruntime runs; a woken entity is placed at
max(its vruntime, min_vruntime - sched_latency / 2) (place_entity with GENTLE_FAIR_SLEEPERS), its vruntime
renormalised to the new cfs_rq's min_vruntime when it migrates (migrate_task_rq_fair / enqueue_entity);
it preempts when the current entity's vruntime is ahead of it by more than the wakeup granularity scaled
by its weight (check_preempt_wakeup / wakeup_preempt_entity); the current one is preempted once it has run
its ideal slice, sched_period * w / W (check_preempt_tick / sched_slice; the period is sched_latency, or
nr_running * min_granularity beyond sched_nr_latency = latency / min_granularity tasks).

Slice ends are noticed where the kernel notices them: at the host tick after the slice is served (HRTICK
is off by default, features.h), or earlier at a wake-up's update_curr on that pCPU; a current that ran
alone past its slice had its deadline renewed at each such tick (entity_tick -> update_curr).

Weights are cpu_shares. Simplifications (documented): CFS's second tick test (vruntime lead over the leftmost above the
ideal slice) and the buddies (NEXT_BUDDY off by default; LAST_BUDDY only beyond sched_nr_latency tasks)
are not modelled; no DELAY_DEQUEUE (6.12+).
"""

from __future__ import annotations

import math

import numpy as np

from vvho_env.sim.engine.jit import jit, jit_inline
from vvho_env.sim.engine.layout import (
    ME,
    X_DL,
    X_LAG,
    X_MINVR,
    X_VR,
    X_W,
    Cfg,
    Cpu,
    Ent,
    KnobWriter,
    Prof,
    St,
    ci,
    ei,
)

KNOB_WRITERS: dict[str, KnobWriter] = {
    "cpu_shares": (Cfg.SHARES, lambda v, _: float(v)),
    "sched_slice_us": (Cfg.SLICE, lambda v, _: float(v) * 1000.0),
}

# Below the kernel's own resolution (integer ns of vruntime): absorbs float rounding in the eligibility
# test, whose kernel form (vruntime_eligible) is exact integer arithmetic.
ELIGIBLE_TOL = 1e-3


@jit
def on_fair_rq(S: np.ndarray, o: int, p: int) -> bool:
    """Whether entity o is a fair entity queued or running on p (in the cfs_rq's sums)."""
    st = S[ei(o, Ent.STATE)]
    return S[ei(o, Ent.CPU)] == p and (st == St.RUNNABLE or st == St.RUNNING) and S[ei(o, Ent.FIFO)] == 0


@jit
def fair_queued(S: np.ndarray, o: int, p: int) -> bool:
    """Whether entity o is a fair entity waiting (queued, not running) on p: a candidate of a pick."""
    return S[ei(o, Ent.STATE)] == St.RUNNABLE and S[ei(o, Ent.CPU)] == p and S[ei(o, Ent.FIFO)] == 0


@jit
def rq_sums(S: np.ndarray, X: np.ndarray, p: int) -> tuple[float, float]:
    """Sum of weight x vruntime and sum of weights of the fair entities queued or running on p."""
    num = 0.0
    den = 0.0
    for o in range(ME):
        if on_fair_rq(S, o, p):
            num += X[X_W + o] * X[X_VR + o]
            den += X[X_W + o]
    return num, den


@jit
def avg_vruntime(S: np.ndarray, X: np.ndarray, p: int) -> float:
    """Weighted average vruntime of the fair entities queued or running on p (EEVDF's V); -1 when none."""
    num, den = rq_sums(S, X, p)
    return num / den if den > 0 else -1.0


@jit
def tick_after(prof: np.ndarray, t: float) -> int:
    """The first host tick at or after t (ticks on a grid of 1 / CONFIG_HZ from time 0)."""
    tick = 1e9 / prof[Prof.HOST_TICK_HZ]
    return int(math.ceil(t / tick) * tick)


@jit_inline
def new_deadline(X: np.ndarray, cfg: np.ndarray, e: int) -> None:
    """A new request of one slice: deadline = vruntime + slice / weight."""
    X[X_DL + e] = X[X_VR + e] + cfg[Cfg.SLICE] * 1024.0 / X[X_W + e]


@jit
def deadline_reached(X: np.ndarray, e: int) -> bool:
    """Whether e has served its request. Less than 1 ns of service left counts as reached: after a weight
    drop (cpu_shares change) an old deadline can sit a fraction of a ns ahead, and a 0-ns slice would
    re-pick forever."""
    return (X[X_DL + e] - X[X_VR + e]) * X[X_W + e] / 1024.0 < 1.0


@jit_inline
def renew_reached_deadline(X: np.ndarray, cfg: np.ndarray, e: int) -> bool:
    """update_deadline: a new slice once the current one is served; returns whether it was renewed."""
    if deadline_reached(X, e):
        new_deadline(X, cfg, e)
        return True
    return False


@jit
def cfs_ideal_runtime(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, e: int) -> float:
    """CFS sched_slice of e on p (ns of CPU): sched_period(nr_running) x w / W."""
    nr = 0
    w_sum = 0.0
    for o in range(ME):
        if on_fair_rq(S, o, p):
            nr += 1
            w_sum += X[X_W + o]
    latency = prof[Prof.CFS_LATENCY_NS]
    min_gran = cfg[Cfg.SLICE]
    nr_latency = math.ceil(latency / min_gran)  # sched_nr_latency, recomputed when a tunable is written
    period = latency if nr <= nr_latency else nr * min_gran
    return period * X[X_W + e] / w_sum if w_sum > 0 else period


@jit
def cfs_slice_end(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, e: int) -> None:
    """When the current CFS entity e of p has run its ideal slice since it was picked (check_preempt_tick)."""
    S[ci(p, Cpu.SLICE_END)] = tick_after(prof, S[ci(p, Cpu.PICK_T)] + cfs_ideal_runtime(S, X, cfg, prof, p, e))


@jit_inline
def start_slice(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, e: int, now: int,
                delay: int) -> None:
    """Fair entity e is picked on p (set_next_entity) and runs after delay ns of idle exit. EEVDF: its
    slice ends where its virtual deadline is reached, and the deadline at pick is recorded for
    RUN_TO_PARITY; CFS: it ends after the ideal slice."""
    S[ci(p, Cpu.PICK_T)] = now + delay
    if prof[Prof.SCHED_CFS] > 0:
        cfs_slice_end(S, X, cfg, prof, p, e)
        return
    renew_reached_deadline(X, cfg, e)
    X[X_LAG + e] = X[X_DL + e]  # the kernel's se->vlag = se->deadline at pick (lag is unused while queued)
    S[ci(p, Cpu.SLICE_END)] = tick_after(prof, now + delay + (X[X_DL + e] - X[X_VR + e]) * X[X_W + e] / 1024.0)


@jit
def renew_slice_alone(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, e: int,
                      now: int) -> None:
    """e's slice is over with nobody waiting: EEVDF gives it a new request (update_deadline, no resched);
    CFS keeps measuring from its pick (check_preempt_tick is not called with one task)."""
    if prof[Prof.SCHED_CFS] == 0:
        new_deadline(X, cfg, e)
        S[ci(p, Cpu.SLICE_END)] = tick_after(prof, now + cfg[Cfg.SLICE])


@jit
def catch_up_deadline(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, e: int,
                      now: int) -> bool:
    """EEVDF: e ran on p up to now (charged) and may have served its request: the host tick after each
    served slice gave it a new one (update_deadline from entity_tick), and this update_curr renews it if
    no tick came since. Returns whether its deadline was renewed (RUN_TO_PARITY's protection ends)."""
    if not deadline_reached(X, e):
        return False
    tick = 1e9 / prof[Prof.HOST_TICK_HZ]
    vslice = cfg[Cfg.SLICE] * 1024.0 / X[X_W + e]
    v_now = X[X_VR + e]
    while deadline_reached(X, e):
        reached = now - (v_now - X[X_DL + e]) * X[X_W + e] / 1024.0
        t_tick = math.ceil(reached / tick) * tick
        if t_tick >= now:
            X[X_DL + e] = v_now + vslice
        else:
            X[X_DL + e] = v_now - (now - t_tick) * 1024.0 / X[X_W + e] + vslice
    S[ci(p, Cpu.SLICE_END)] = tick_after(prof, now + (X[X_DL + e] - v_now) * X[X_W + e] / 1024.0)
    return True


@jit
def pick_eevdf(S: np.ndarray, X: np.ndarray, p: int, cur: int) -> int:
    """pick_eevdf on p with cur (-1: none) as the cfs_rq's current entity: cur while it is eligible and
    protected by RUN_TO_PARITY, else the eligible entity with the earliest deadline (cur wins only with a
    strictly earlier one); -1 when nothing is queued."""
    num = 0.0
    den = 0.0
    nr = 0
    only = -1
    for o in range(ME):
        if on_fair_rq(S, o, p):
            num += X[X_W + o] * X[X_VR + o]
            den += X[X_W + o]
            nr += 1
            only = o
    if nr == 0:
        return -1
    if nr == 1:
        return only
    curr = cur
    # vruntime_eligible: \Sum w_j (v_j - v) >= 0 over the queue and the current entity
    if curr >= 0 and num - X[X_VR + curr] * den < -ELIGIBLE_TOL * den:
        curr = -1
    if curr >= 0 and X[X_LAG + curr] == X[X_DL + curr]:
        return curr  # RUN_TO_PARITY
    best = -1
    best_dl = 0.0
    fallback = -1
    fallback_vr = 0.0
    for o in range(ME):
        if fair_queued(S, o, p):
            if num - X[X_VR + o] * den >= -ELIGIBLE_TOL * den and (best < 0 or X[X_DL + o] < best_dl):
                best_dl = X[X_DL + o]
                best = o
            if fallback < 0 or X[X_VR + o] < fallback_vr:
                fallback_vr = X[X_VR + o]
                fallback = o
    if curr >= 0 and (best < 0 or X[X_DL + curr] < best_dl):
        return curr
    if best >= 0:
        return best
    return cur if cur >= 0 else fallback  # unreachable in exact arithmetic: some entity is at or before V


@jit
def pick_cfs(S: np.ndarray, X: np.ndarray, p: int) -> int:
    """CFS pick_next_entity without buddies: the queued entity with the least vruntime; -1 when none."""
    best = -1
    best_vr = 0.0
    for o in range(ME):
        if fair_queued(S, o, p) and (best < 0 or X[X_VR + o] < best_vr):
            best_vr = X[X_VR + o]
            best = o
    return best


@jit_inline
def pick_fair(S: np.ndarray, X: np.ndarray, prof: np.ndarray, p: int) -> int:
    """The fair entity waiting on p that runs next (nothing runs on p); -1 when none waits."""
    if prof[Prof.SCHED_CFS] > 0:
        return pick_cfs(S, X, p)
    return pick_eevdf(S, X, p, -1)


@jit
def wakeup_preempt(S: np.ndarray, X: np.ndarray, prof: np.ndarray, p: int, cur: int, e: int) -> bool:
    """Whether fair entity e, just queued on p, preempts fair entity cur running there (cur's runtime is
    charged up to now): EEVDF check_preempt_wakeup_fair, pick_eevdf(cfs_rq) == e; CFS
    wakeup_preempt_entity(cur, e) == 1, cur's vruntime ahead by more than the wakeup granularity / w_e."""
    if prof[Prof.SCHED_CFS] > 0:
        gran = prof[Prof.CFS_WAKEUP_GRANULARITY_NS] * 1024.0 / X[X_W + e]
        return X[X_VR + cur] - X[X_VR + e] > gran
    return pick_eevdf(S, X, p, cur) == e


@jit
def update_min_vruntime(S: np.ndarray, X: np.ndarray, prof: np.ndarray, p: int) -> None:
    """CFS: p's min_vruntime follows the least vruntime queued or running there, never backwards."""
    if prof[Prof.SCHED_CFS] == 0:
        return
    m = 0.0
    found = False
    for o in range(ME):
        if on_fair_rq(S, o, p) and (not found or X[X_VR + o] < m):
            m = X[X_VR + o]
            found = True
    if found and m > X[X_MINVR + p]:
        X[X_MINVR + p] = m


@jit_inline
def save_lag(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, e: int) -> None:
    """e leaves p's queue (still counted in V): EEVDF keeps its lag across the sleep, clamped as
    update_entity_lag does to max(2 slices, TICK_NSEC) of service."""
    if prof[Prof.SCHED_CFS] > 0:
        return
    limit = max(2.0 * cfg[Cfg.SLICE], 1e9 / prof[Prof.HOST_TICK_HZ]) * 1024.0 / X[X_W + e]
    lag = avg_vruntime(S, X, p) - X[X_VR + e]
    X[X_LAG + e] = min(limit, max(-limit, lag))


@jit
def renormalise(X: np.ndarray, prof: np.ndarray, e: int, src: int, dst: int) -> None:
    """CFS: e moves from src's cfs_rq to dst's; its vruntime keeps its distance to min_vruntime."""
    if prof[Prof.SCHED_CFS] > 0 and src >= 0 and src != dst:
        X[X_VR + e] += X[X_MINVR + dst] - X[X_MINVR + src]


@jit_inline
def place_entity(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, e: int, prev: int) -> None:
    """e wakes on p (not yet counted there), last queued on prev. EEVDF: at V minus its saved lag
    inflated by (W + w) / W (PLACE_LAG), with a new slice; CFS: at max(vruntime renormalised from prev,
    min_vruntime - sched_latency / 2)."""
    if prof[Prof.SCHED_CFS] > 0:
        renormalise(X, prof, e, prev, p)
        floor = X[X_MINVR + p] - 0.5 * prof[Prof.CFS_LATENCY_NS]
        if X[X_VR + e] < floor:
            X[X_VR + e] = floor
        return
    num, load = rq_sums(S, X, p)
    if load > 0:
        lag = X[X_LAG + e] * (load + X[X_W + e]) / load
        X[X_VR + e] = num / load - lag
    X[X_LAG + e] = 0.0
    new_deadline(X, cfg, e)
