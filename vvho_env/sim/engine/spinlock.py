"""Guest spinlocks and pause-loop exiting (arch/x86/kvm/vmx/vmx.c ple_window).

A request takes a spinlock with probability lock_prob. When another vCPU holding it (working) is
preempted, the waiter spins until the holder runs again or, after the PLE window, exits and yields to
it; otherwise it spins an exponential time, and a spin longer than the window costs a PLE exit that
finds no one to yield to.
"""

from __future__ import annotations

import numpy as np

from vvho_env.sim.engine.accounting import charge
from vvho_env.sim.engine.jit import jit_inline
from vvho_env.sim.engine.layout import INF, MV, OFF_ACC, Acc, Act, Cfg, Cpu, Ent, Kind, KnobWriter, Prof, St, ci, ei
from vvho_env.sim.engine.rng import rand_exp, rand_u
from vvho_env.sim.engine.runqueue import set_seg_end
from vvho_env.sim.engine.vmx import exit_ns

KNOB_WRITERS: dict[str, KnobWriter] = {
    "ple_window": (Cfg.PLE, lambda v, profile: float(v) / profile.cpu_ghz),
}


@jit_inline
def take_lock_then(S: np.ndarray, X: np.ndarray, R: np.ndarray, cfg: np.ndarray, prof: np.ndarray,
                   e: int, work: int) -> None:
    """vCPU e is about to run work ns of a request; with probability lock_prob it takes the lock first."""
    lock_p = cfg[Cfg.LOCK_PROB]
    if lock_p > 0.0 and rand_u(R) < lock_p:
        holder = -1
        for o in range(int(cfg[Cfg.NVCPU])):
            if o != e and S[ei(o, Ent.STATE)] == St.RUNNABLE and S[ei(o, Ent.ACT)] == Act.WORK:
                holder = o
                break
        ple = int(cfg[Cfg.PLE])
        if holder >= 0:
            # the lock holder is preempted: spin until it runs (PLE off) or for the PLE window
            S[ei(e, Ent.SPIN_ON)] = holder
            S[ei(e, Ent.AFTER)] = work
            S[ei(e, Ent.ACT)] = Act.SPIN
            S[ei(e, Ent.REM)] = INF if ple == 0 else ple
            return
        spin = int(rand_exp(R, prof[Prof.LOCK_SPIN_NS]))
        if ple > 0 and spin > ple:
            work += exit_ns(prof) + int(prof[Prof.PLE_YIELD_NS])  # a PLE exit that finds no one
            X[OFF_ACC + Acc.EXITS] += 1.0
        work += spin
    S[ei(e, Ent.REM)] = work


@jit_inline
def release_waiters(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, e: int, now: int) -> None:
    """A lock holder e got the CPU: the vCPUs spinning or yielding on it get the lock (after its hold time)."""
    if S[ei(e, Ent.KIND)] != Kind.VCPU:
        return
    for o in range(MV):
        if S[ei(o, Ent.SPIN_ON)] == e:
            S[ei(o, Ent.SPIN_ON)] = -1
            hold = int(prof[Prof.LOCK_HOLD_NS])
            if S[ei(o, Ent.ACT)] == Act.SPIN:
                q = S[ei(o, Ent.CPU)]
                if S[ci(q, Cpu.CUR)] == o:
                    charge(S, X, cfg, q, now)
                S[ei(o, Ent.REM)] = hold
                if S[ci(q, Cpu.CUR)] == o:
                    set_seg_end(S, X, cfg, prof, q, now)


@jit_inline
def ple_exit(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, e: int, now: int) -> None:
    """vCPU e on p spun a whole PLE window with the holder still preempted: it exits (kvm_vcpu_on_spin)
    and spins on until the holder has run; the caller then yields to the holder (yield_to)."""
    X[OFF_ACC + Acc.EXITS] += 1.0
    S[ci(p, Cpu.OVH_BUSY)] += exit_ns(prof) + int(prof[Prof.PLE_YIELD_NS])
    S[ei(e, Ent.REM)] = INF
    set_seg_end(S, X, cfg, prof, p, now)


@jit_inline
def lock_acquired(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, e: int,
                  now: int) -> None:
    """vCPU e on p got the lock it spun on: the request's work begins."""
    S[ei(e, Ent.ACT)] = Act.WORK
    S[ei(e, Ent.REM)] = S[ei(e, Ent.AFTER)]
    S[ei(e, Ent.AFTER)] = 0
    set_seg_end(S, X, cfg, prof, p, now)
