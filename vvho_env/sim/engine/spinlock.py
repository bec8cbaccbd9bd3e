"""Guest spinlocks as state shared by the VM's vCPUs, and the PLE window of each vCPU.

One contended guest-kernel lock per VM. A request takes it with probability lock_prob (the scenario
phase's kernel-heavy share) for a critical section of lock_hold_ns at the start of its work. The guest's
lock (Scenario.guest_spinlock) is the one Linux picks on KVM (arch/x86/kernel/kvm.c kvm_spinlock_init):

- test_and_set: without KVM_FEATURE_PV_UNHALT, virt_spin_lock() (arch/x86/include/asm/qspinlock.h) turns
  the lock into an unfair test-and-set lock: at release it is free, and whichever waiter runs takes it;
- queued: native qspinlock (nopvspin, or the dedicated-pCPU hint): the lock passes in queue order (MCS),
  so it can pass to a waiter the host has descheduled, which holds everyone up until it runs
  (lock-waiter preemption; Ouyang & Lange, "Preemptable ticket spinlocks", VEE 2013);
- paravirt: pv qspinlock (kernel/locking/qspinlock_paravirt.h): unfair for running vCPUs
  (pv_hybrid_queued_unfair_trylock), and a waiter halts after SPIN_THRESHOLD loops; the unlocker kicks
  the queue head when it has halted (``ple``).

Lock-holder preemption emerges: the host deschedules a holder inside its critical section and every
waiter spins (VM CPU, taken from the neighbours) until the holder runs again. A waiter spins in a PAUSE
loop; with pause-loop exiting on (ple_window > 0), a spin of one PLE window (TSC cycles,
arch/x86/kvm/vmx/vmx.c) exits to KVM, which grows the window and yields to a preempted vCPU of the VM
(``ple``); the window shrinks when the vCPU is scheduled in (vmx_vcpu_load). With ple_window = 0 a
waiter spins until it gets the lock.

Simplifications (documented): one lock; the critical section is taken at the start of the request;
among running waiters of an unfair lock the one waiting longest wins; a halted paravirtual waiter is
not woken by the guest tick; the PLE window shrinks at every dispatch of the vCPU, including the rare
re-pick of a task that was not switched out.
"""

from __future__ import annotations

import numpy as np

from vvho_env.sim.engine.accounting import charge
from vvho_env.sim.engine.jit import jit
from vvho_env.sim.engine.layout import INF, MV, OFF_ACC, Acc, Act, Cfg, Cpu, Ent, Kind, Lock, Prof, Scalar, ci, ei
from vvho_env.sim.engine.rng import rand_u
from vvho_env.sim.engine.runqueue import set_seg_end


@jit
def grow_ple_window(val: float, base: float, modifier: float, cap: float) -> float:
    """__grow_ple_window (arch/x86/kvm/x86.h): x modifier (or + modifier when it is >= base) up to cap;
    a modifier below 1 resets to base."""
    if modifier < 1.0:
        return base
    ret = val * modifier if modifier < base else val + modifier
    return min(ret, cap)


@jit
def shrink_ple_window(val: float, base: float, modifier: float, floor: float) -> float:
    """__shrink_ple_window (arch/x86/kvm/x86.h): / modifier (or - modifier when it is >= base), not below
    floor; a modifier below 1 (the default 0) resets to base."""
    if modifier < 1.0:
        return base
    ret = val / modifier if modifier < base else val - modifier
    return max(ret, floor)


@jit
def ple_on(cfg: np.ndarray, prof: np.ndarray) -> bool:
    """Pause-loop exiting is enabled (it needs hardware virtualisation: none under TCG)."""
    return cfg[Cfg.PLE] > 0 and prof[Prof.KVM] > 0


@jit
def pv_on(cfg: np.ndarray, prof: np.ndarray) -> bool:
    """The guest uses paravirtual spinlocks (KVM_FEATURE_PV_UNHALT needs KVM)."""
    return int(cfg[Cfg.LOCK_KIND]) == Lock.PV and prof[Prof.KVM] > 0


@jit
def lock_is_mine(S: np.ndarray, cfg: np.ndarray, e: int) -> bool:
    """Waiter e may take the lock now: it was handed to e (queued lock), or it is free (unfair locks)."""
    owner = S[Scalar.LOCK_OWNER]
    if int(cfg[Cfg.LOCK_KIND]) == Lock.QUEUED:
        return owner == e
    return owner < 0


@jit
def pv_budget(prof: np.ndarray) -> int:
    """ns of SPIN_THRESHOLD PAUSE loops."""
    return int(prof[Prof.PV_SPIN_LOOPS] * prof[Prof.PAUSE_LOOP_CYCLES] / prof[Prof.CPU_GHZ])


@jit
def start_spin(S: np.ndarray, cfg: np.ndarray, prof: np.ndarray, e: int) -> None:
    """vCPU e (re)starts its PAUSE loop: the segment lasts one PLE window, or what is left of the
    paravirtual spin budget, whichever is shorter; without either it spins until the lock is its own."""
    seg = INF
    if ple_on(cfg, prof):
        seg = int(S[ei(e, Ent.PLE_WIN)] / prof[Prof.CPU_GHZ])
    if pv_on(cfg, prof):
        seg = min(seg, max(S[ei(e, Ent.PV_LEFT)], 0))
    S[ei(e, Ent.ACT)] = Act.SPIN
    S[ei(e, Ent.SPIN_SEG)] = seg
    S[ei(e, Ent.REM)] = seg


@jit
def spun_so_far(S: np.ndarray, e: int) -> None:
    """Charge the part of e's current spin segment already spun to its paravirtual spin budget."""
    seg = S[ei(e, Ent.SPIN_SEG)]
    if seg < INF:
        S[ei(e, Ent.PV_LEFT)] -= seg - max(S[ei(e, Ent.REM)], 0)
        S[ei(e, Ent.SPIN_SEG)] = max(S[ei(e, Ent.REM)], 0)


@jit
def enter_critical_section(S: np.ndarray, prof: np.ndarray, e: int) -> None:
    """vCPU e takes the lock and runs its critical section; the rest of its request's work follows."""
    S[Scalar.LOCK_OWNER] = e
    S[ei(e, Ent.ACT)] = Act.LOCKED
    S[ei(e, Ent.REM)] = int(prof[Prof.LOCK_HOLD_NS])
    S[ei(e, Ent.LOCK_Q)] = -1


@jit
def take_lock_then(S: np.ndarray, X: np.ndarray, R: np.ndarray, cfg: np.ndarray, prof: np.ndarray,
                   e: int, work: int) -> None:
    """vCPU e is about to run work ns of a request; with probability lock_prob the request takes the
    lock first: at once when it is free, else e queues for it and spins."""
    lock_p = cfg[Cfg.LOCK_PROB]
    if lock_p > 0.0 and rand_u(R) < lock_p:
        X[OFF_ACC + Acc.LOCK_ACQ] += 1.0
        S[ei(e, Ent.AFTER)] = max(work - int(prof[Prof.LOCK_HOLD_NS]), 0)
        if S[Scalar.LOCK_OWNER] < 0:
            # free: a queued lock is free only with nobody queued (it passes to the next waiter at release)
            enter_critical_section(S, prof, e)
            return
        X[OFF_ACC + Acc.LOCK_CONTENDED] += 1.0
        S[ei(e, Ent.LOCK_Q)] = S[Scalar.LOCK_TICKET]
        S[Scalar.LOCK_TICKET] += 1
        S[ei(e, Ent.PV_LEFT)] = pv_budget(prof)
        start_spin(S, cfg, prof, e)
        return
    S[ei(e, Ent.REM)] = work


@jit
def spinning_on_cpu(S: np.ndarray, w: int) -> bool:
    """w runs its PAUSE loop on a pCPU now."""
    q = S[ei(w, Ent.CPU)]
    return q >= 0 and S[ci(q, Cpu.CUR)] == w and S[ei(w, Ent.ACT)] == Act.SPIN


@jit
def next_waiter(S: np.ndarray, running_only: bool) -> int:
    """The waiter queued longest (among those spinning on a pCPU now when running_only); -1: none."""
    best = -1
    best_q = INF
    for o in range(MV):
        q = S[ei(o, Ent.LOCK_Q)]
        if q >= 0 and q < best_q and (not running_only or spinning_on_cpu(S, o)):
            best_q = q
            best = o
    return best


@jit
def vcpu_sched_in(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, e: int, now: int) -> None:
    """vCPU e is scheduled in (kvm_sched_in -> vmx_vcpu_load): its PLE window shrinks; a waiter that can
    take the lock (handed to it while descheduled, or free) enters its critical section, one still
    waiting starts a new PAUSE loop (the loop's timing restarts after a VM entry)."""
    if S[ei(e, Ent.KIND)] != Kind.VCPU:
        return
    if ple_on(cfg, prof):
        base = cfg[Cfg.PLE]
        S[ei(e, Ent.PLE_WIN)] = int(shrink_ple_window(float(S[ei(e, Ent.PLE_WIN)]), base, prof[Prof.PLE_SHRINK],
                                                      base))
    if S[ei(e, Ent.ACT)] == Act.SPIN:
        spun_so_far(S, e)
        if lock_is_mine(S, cfg, e):
            enter_critical_section(S, prof, e)
        else:
            start_spin(S, cfg, prof, e)


@jit
def give_lock_to_running_waiter(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, w: int,
                                now: int) -> None:
    """w, spinning on its pCPU, sees the lock free (or passed to it) and takes it."""
    q = S[ei(w, Ent.CPU)]
    charge(S, X, cfg, q, now)
    enter_critical_section(S, prof, w)
    set_seg_end(S, X, cfg, prof, q, now)
