"""What the host does for a spinning guest: pause-loop exits with KVM's directed yield, and the halt and
kick of paravirtual spinlocks; the lock's release, which hands it to the next waiter.

- PAUSE-loop exit (arch/x86/kvm/vmx/vmx.c handle_pause): the exit grows the vCPU's PLE window
  (grow_ple_window) and calls kvm_vcpu_on_spin (virt/kvm/kvm_main.c), which scans the VM's vCPUs round
  robin from the last one boosted for one that is preempted (vcpu->ready: descheduled while runnable) in
  guest kernel mode (yield_to_kernel_mode: a lock holder or waiter) and yield_to()s it: the target is
  the next buddy of its run queue (picked first while eligible, PICK_BUDDY in kernel/sched/features.h)
  and its pCPU reschedules; the spinner yields its own slice (yield_task_fair pushes its deadline) and
  schedule()s, so the pCPU goes to whoever else waits on it. Without a candidate the spinner just
  re-enters and spins on.
- Paravirtual spinlocks (kernel/locking/qspinlock_paravirt.h, arch/x86/kernel/kvm.c): after
  SPIN_THRESHOLD loops a waiter calls pv_wait -> kvm_wait -> HLT, an exit after which KVM halt-polls or
  blocks the vCPU; the unlocker of a lock whose next waiter halted calls pv_kick -> KVM_HC_KICK_CPU, a
  hypercall exit on its own vCPU that wakes the waiter.
"""

from __future__ import annotations

import numpy as np

from vvho_env.sim.engine.accounting import charge, trace
from vvho_env.sim.engine.jit import jit
from vvho_env.sim.engine.layout import (
    OFF_ACC,
    X_DL,
    X_W,
    Acc,
    Act,
    Cfg,
    Cpu,
    Ent,
    KnobWriter,
    Lock,
    Prof,
    Scalar,
    St,
    Tr,
    ci,
    ei,
)
from vvho_env.sim.engine.polling import halt_exit, update_host_window
from vvho_env.sim.engine.runqueue import others_runnable, set_seg_end
from vvho_env.sim.engine.scheduler import make_runnable, pick, stop_current, yield_to
from vvho_env.sim.engine.spinlock import (
    enter_critical_section,
    give_lock_to_running_waiter,
    grow_ple_window,
    lock_is_mine,
    next_waiter,
    pv_budget,
    pv_on,
    spinning_on_cpu,
    spun_so_far,
    start_spin,
)
from vvho_env.sim.engine.vmx import entry_ns, exit_ns

KNOB_WRITERS: dict[str, KnobWriter] = {
    "ple_window": (Cfg.PLE, lambda v, _: float(v)),  # TSC cycles, as the VMCS PLE_WINDOW field
}


@jit
def spin_segment_done(S: np.ndarray, X: np.ndarray, T: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int,
                      e: int, now: int) -> None:
    """vCPU e on p spun a whole segment without getting the lock: its paravirtual spin budget ran out
    (it halts) or its PLE window did (a PAUSE-loop exit)."""
    spun_so_far(S, e)
    if pv_on(cfg, prof) and S[ei(e, Ent.PV_LEFT)] <= 0:
        pv_halt(S, X, cfg, prof, p, e, now)
        return
    X[OFF_ACC + Acc.EXITS] += 1.0
    X[OFF_ACC + Acc.PLE_EXITS] += 1.0
    old = S[ei(e, Ent.PLE_WIN)]
    S[ei(e, Ent.PLE_WIN)] = int(grow_ple_window(float(old), cfg[Cfg.PLE], prof[Prof.PLE_GROW],
                                                prof[Prof.PLE_WINDOW_MAX]))
    trace(S, T, now, Tr.PLE_WINDOW, e, S[ei(e, Ent.PLE_WIN)])
    # the exit, handle_pause and kvm_vcpu_on_spin's scan run on the vCPU's thread before the yield
    S[ei(e, Ent.ACT)] = Act.PEXIT
    S[ei(e, Ent.REM)] = exit_ns(prof) + int(prof[Prof.PLE_YIELD_NS])
    set_seg_end(S, X, cfg, prof, p, now)


@jit
def directed_yield_target(S: np.ndarray, cfg: np.ndarray, e: int) -> int:
    """kvm_vcpu_on_spin's candidate: round robin after the last boosted vCPU, the first other vCPU that is
    preempted (runnable, not running, not throttled) inside the guest kernel (holding or waiting for the
    lock); -1 when there is none."""
    nv = int(cfg[Cfg.NVCPU])
    last = S[Scalar.LAST_BOOSTED]
    for i in range(nv):
        o = (last + i + 1) % nv
        if o == e or S[ei(o, Ent.STATE)] != St.RUNNABLE:
            continue
        act = S[ei(o, Ent.ACT)]
        if act == Act.LOCKED or act == Act.SPIN or act == Act.PEXIT:
            return o
    return -1


@jit
def pause_exit_done(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, e: int,
                    now: int) -> None:
    """KVM handled e's PAUSE-loop exit: e goes back to its loop (or into the critical section when the lock
    passed to it meanwhile), after a directed yield to a preempted vCPU of the VM when there is one."""
    if lock_is_mine(S, cfg, e):
        enter_critical_section(S, prof, e)
        set_seg_end(S, X, cfg, prof, p, now)
        return
    start_spin(S, cfg, prof, e)
    set_seg_end(S, X, cfg, prof, p, now)
    target = directed_yield_target(S, cfg, e)
    if target < 0:
        return
    S[Scalar.LAST_BOOSTED] = target
    yield_to(S, X, cfg, prof, target, now)
    if S[ci(p, Cpu.CUR)] == e and S[ei(e, Ent.FIFO)] == 0 and others_runnable(S, p, e):
        # yield_task_fair: the spinner's deadline moves one slice on, and schedule() picks again
        X[X_DL + e] += cfg[Cfg.SLICE] * 1024.0 / X[X_W + e]
        stop_current(S, X, cfg, prof, p, now, St.RUNNABLE)
        pick(S, X, cfg, prof, p, now)


@jit
def pv_halt(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, e: int, now: int) -> None:
    """vCPU e on p spun SPIN_THRESHOLD loops: kvm_wait halts it (an HLT exit); KVM halt-polls when
    nothing else waits for p (kvm_vcpu_halt), else the vCPU blocks until the unlocker's kick."""
    X[OFF_ACC + Acc.PV_HALTS] += 1.0
    halt_exit(S, X, cfg, prof, p, e, now)


@jit
def kick(S: np.ndarray, X: np.ndarray, T: np.ndarray, cfg: np.ndarray, prof: np.ndarray, w: int, now: int) -> None:
    """The halted waiter w gets the unlocker's kick: a halt-polling pCPU sees it at once, a blocked vCPU
    thread is woken (kvm_vcpu_kick); w then takes the lock if it can, else spins SPIN_THRESHOLD loops again."""
    update_host_window(S, T, cfg, prof, w, now)
    S[ei(w, Ent.PV_LEFT)] = pv_budget(prof)
    S[ei(w, Ent.ACT)] = Act.SPIN
    S[ei(w, Ent.SPIN_SEG)] = 0
    S[ei(w, Ent.REM)] = 0
    if S[ei(w, Ent.STATE)] == St.RUNNING:
        q = S[ei(w, Ent.CPU)]
        charge(S, X, cfg, q, now)
        S[ci(q, Cpu.OVH_BUSY)] += int(prof[Prof.HALT_POLL_DETECT_NS]) + entry_ns(prof)
        if lock_is_mine(S, cfg, w):
            enter_critical_section(S, prof, w)
        else:
            start_spin(S, cfg, prof, w)
        set_seg_end(S, X, cfg, prof, q, now)
        return
    S[ei(w, Ent.ENTRY)] = 1
    make_runnable(S, X, cfg, prof, w, now)  # at its dispatch, vcpu_sched_in takes the lock or spins


@jit
def release_lock(S: np.ndarray, X: np.ndarray, T: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, e: int,
                 now: int) -> None:
    """vCPU e on p leaves its critical section. A queued lock passes to the oldest waiter; an unfair one
    is free and goes to the longest-spinning waiter that runs now, if any; a paravirtual unlocker kicks
    the queue head when it has halted (__pv_queued_spin_unlock_slowpath). e goes on with its request."""
    S[Scalar.LOCK_OWNER] = -1
    queued = int(cfg[Cfg.LOCK_KIND]) == Lock.QUEUED
    w = next_waiter(S, not queued)
    head = next_waiter(S, False)
    halted = head >= 0 and (S[ei(head, Ent.STATE)] == St.SLEEP or (
        S[ei(head, Ent.STATE)] == St.RUNNING and S[ei(head, Ent.ACT)] == Act.HPOLL))
    kick_head = pv_on(cfg, prof) and halted
    if queued and w >= 0:
        S[Scalar.LOCK_OWNER] = w  # handed over, even to a waiter that is descheduled or halted
        S[ei(w, Ent.LOCK_Q)] = -1
    # the unlocker first: the rest of its request, after the kick hypercall when one is needed
    S[ei(e, Ent.ACT)] = Act.WORK
    S[ei(e, Ent.REM)] = S[ei(e, Ent.AFTER)]
    S[ei(e, Ent.AFTER)] = 0
    if kick_head:
        S[ci(p, Cpu.OVH_BUSY)] += exit_ns(prof)
        X[OFF_ACC + Acc.EXITS] += 1.0
        X[OFF_ACC + Acc.PV_KICKS] += 1.0
    set_seg_end(S, X, cfg, prof, p, now)
    if w >= 0 and spinning_on_cpu(S, w):
        give_lock_to_running_waiter(S, X, cfg, prof, w, now)
    if kick_head and head != w:
        kick(S, X, T, cfg, prof, head, now)
    # else a queued lock's next owner is descheduled (lock-waiter preemption) or in a PAUSE exit: it takes
    # the lock when it runs (vcpu_sched_in, pause_exit_done)
