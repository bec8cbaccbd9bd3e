"""The latency VM's guest: interrupts to its vCPUs (packets and timer ticks), its FCFS request queue,
request service with neighbour interference, the transmit kick, and what a vCPU does next."""

from __future__ import annotations

import numpy as np

from vvho_env.sim.engine.accounting import charge, trace
from vvho_env.sim.engine.jit import jit, jit_inline
from vvho_env.sim.engine.layout import (
    E_NEIGH0,
    ME,
    OFF_ACC,
    OFF_GQ,
    OFF_RSVC,
    QN,
    Acc,
    Act,
    Backend,
    Cfg,
    Cpu,
    Ent,
    Kind,
    Prof,
    Scalar,
    St,
    Tr,
    ci,
    ei,
)
from vvho_env.sim.engine.network import backend_push
from vvho_env.sim.engine.ple import pause_exit_done, release_lock, spin_segment_done
from vvho_env.sim.engine.polling import update_guest_window, update_host_window, vcpu_idle
from vvho_env.sim.engine.runqueue import set_seg_end
from vvho_env.sim.engine.scheduler import make_runnable, vcpu_block
from vvho_env.sim.engine.spinlock import take_lock_then
from vvho_env.sim.engine.vmx import entry_ns, exit_ns


@jit
def neighbours_busy_frac(S: np.ndarray) -> float:
    """Share of the neighbours running now (the LLC interference on a request's service)."""
    n = 0
    busy = 0
    for o in range(E_NEIGH0, ME):
        if S[ei(o, Ent.KIND)] == Kind.NEIGH and S[ei(o, Ent.MASK)] != 0:
            n += 1
            if S[ei(o, Ent.STATE)] == St.RUNNING:
                busy += 1
    return busy / n if n > 0 else 0.0


@jit
def start_request(S: np.ndarray, X: np.ndarray, R: np.ndarray, cfg: np.ndarray, prof: np.ndarray,
                  e: int, r: int) -> None:
    """vCPU e starts request r: guest rx stack + service (with interference) + tx stack."""
    slow = prof[Prof.GUEST_SLOWDOWN]
    svc = S[OFF_RSVC + r % QN] * (1.0 + prof[Prof.LLC_INTERFERENCE] * neighbours_busy_frac(S))
    work = int((prof[Prof.GUEST_RX_NS] + prof[Prof.GUEST_TX_NS]) * slow + svc)
    S[ei(e, Ent.REQ)] = r
    S[ei(e, Ent.ACT)] = Act.WORK
    S[ei(e, Ent.AFTER_REQ)] = 1
    take_lock_then(S, X, R, cfg, prof, e, work)


@jit
def vcpu_next(S: np.ndarray, X: np.ndarray, T: np.ndarray, R: np.ndarray, cfg: np.ndarray,
              prof: np.ndarray, e: int, p: int, now: int) -> None:
    """vCPU e (running on p) finished its activity: a pending tick, the next queued request, or idle."""
    if S[ei(e, Ent.TICKS)] > 0:
        S[ei(e, Ent.TICKS)] -= 1
        S[ei(e, Ent.ACT)] = Act.TICK
        S[ei(e, Ent.REM)] = int(prof[Prof.TICK_NS])
        set_seg_end(S, X, cfg, prof, p, now)
        return
    if S[Scalar.GQ_HEAD] < S[Scalar.GQ_TAIL]:
        r = S[OFF_GQ + S[Scalar.GQ_HEAD] % QN]
        S[Scalar.GQ_HEAD] += 1
        start_request(S, X, R, cfg, prof, e, r)
        set_seg_end(S, X, cfg, prof, p, now)
        return
    vcpu_idle(S, X, T, cfg, prof, e, p, now)


@jit
def notify_vcpu(S: np.ndarray, X: np.ndarray, T: np.ndarray, R: np.ndarray, cfg: np.ndarray,
                prof: np.ndarray, now: int, tick: bool, target: int) -> None:
    """An interrupt (packet or timer tick) for the guest. For a packet target < 0 picks a vCPU."""
    nv = int(cfg[Cfg.NVCPU])
    if not tick:
        # 1. a vCPU polling on its pCPU finds the packet at once
        for e in range(nv):
            if (S[ei(e, Ent.STATE)] == St.RUNNING and S[ei(e, Ent.ACT)] in (Act.BPOLL, Act.GPOLL, Act.HPOLL)
                    and S[ei(e, Ent.LOCK_Q)] < 0):
                target = e
                break
        # 2. else wake a halted vCPU (round robin), so that idle vCPUs serve in parallel
        if target < 0:
            S[Scalar.RR] = (S[Scalar.RR] + 1) % nv
            for k in range(nv):
                e = (S[Scalar.RR] + k) % nv
                if (S[ei(e, Ent.STATE)] == St.SLEEP and S[ei(e, Ent.LOCK_Q)] < 0
                        and S[ei(e, Ent.ACT)] == Act.NONE):
                    target = e
                    break
        # 3. else every vCPU is busy or waiting for a pCPU: the request waits in the guest queue
        if target < 0:
            for e in range(nv):
                st = S[ei(e, Ent.STATE)]
                act = S[ei(e, Ent.ACT)]
                if st != St.RUNNING and act in (Act.BPOLL, Act.GPOLL):
                    if act == Act.GPOLL:
                        update_guest_window(S, cfg, prof, e, now)
                    S[ei(e, Ent.ACT)] = Act.RESUME  # sees the queue as soon as it runs again
                    S[ei(e, Ent.REM)] = 0
            if prof[Prof.POSTED_INTERRUPTS] == 0:
                for e in range(nv):
                    if S[ei(e, Ent.STATE)] == St.RUNNING:
                        # IPI -> exit -> inject on a busy vCPU
                        p = S[ei(e, Ent.CPU)]
                        charge(S, X, cfg, p, now)
                        S[ci(p, Cpu.OVH_BUSY)] += exit_ns(prof)
                        X[OFF_ACC + Acc.EXITS] += 1.0
                        set_seg_end(S, X, cfg, prof, p, now)
                        break
            return
    e = target
    st = S[ei(e, Ent.STATE)]
    act = S[ei(e, Ent.ACT)]
    if tick:
        S[ei(e, Ent.TICKS)] += 1
    if st == St.RUNNING and act in (Act.BPOLL, Act.GPOLL, Act.HPOLL) and S[ei(e, Ent.LOCK_Q)] < 0:
        p = S[ei(e, Ent.CPU)]
        charge(S, X, cfg, p, now)
        if act == Act.HPOLL:
            update_host_window(S, T, cfg, prof, e, now)
            S[ci(p, Cpu.OVH_BUSY)] += int(prof[Prof.HALT_POLL_DETECT_NS]) + entry_ns(prof)
        else:
            if act == Act.GPOLL:
                update_guest_window(S, cfg, prof, e, now)
            S[ci(p, Cpu.OVH_BUSY)] += int(prof[Prof.GUEST_POLL_DETECT_NS])
        S[ei(e, Ent.ACT)] = Act.RESUME
        vcpu_next(S, X, T, R, cfg, prof, e, p, now)  # the poll noticed the interrupt: go on at once
        return
    if st == St.SLEEP and S[ei(e, Ent.LOCK_Q)] < 0:
        trace(S, T, now, Tr.WAKE, e, 0)
        update_host_window(S, T, cfg, prof, e, now)
        update_guest_window(S, cfg, prof, e, now)
        S[ei(e, Ent.ACT)] = Act.RESUME
        S[ei(e, Ent.REM)] = 0
        S[ei(e, Ent.ENTRY)] = 1
        make_runnable(S, X, cfg, prof, e, now)
    elif tick and st == St.RUNNING and act == Act.WORK:
        p = S[ei(e, Ent.CPU)]
        S[ei(e, Ent.TICKS)] -= 1
        charge(S, X, cfg, p, now)
        S[ei(e, Ent.REM)] += int(prof[Prof.TICK_NS])
        set_seg_end(S, X, cfg, prof, p, now)


@jit
def guest_enqueue(S: np.ndarray, X: np.ndarray, T: np.ndarray, R: np.ndarray, cfg: np.ndarray,
                  prof: np.ndarray, r: int, now: int) -> None:
    """Request r reaches the guest: into its queue, and an interrupt for a vCPU."""
    S[OFF_GQ + S[Scalar.GQ_TAIL] % QN] = r
    S[Scalar.GQ_TAIL] += 1
    notify_vcpu(S, X, T, R, cfg, prof, now, False, -1)


@jit_inline
def vcpu_done(S: np.ndarray, X: np.ndarray, T: np.ndarray, R: np.ndarray, cfg: np.ndarray, prof: np.ndarray,
              e: int, p: int, now: int) -> None:
    """vCPU e's activity on p is done: a served request is kicked to the backend, a critical section
    releases the lock, a spin segment ends (PLE exit or paravirtual halt), a halt-poll window without a
    wake-up blocks."""
    act = S[ei(e, Ent.ACT)]
    if act == Act.WORK:
        r = S[ei(e, Ent.REQ)]
        mode = int(cfg[Cfg.BACKEND])
        if mode == Backend.USERSPACE or mode == Backend.VHOST:
            # transmit kick: an ioeventfd exit
            S[ei(e, Ent.ACT)] = Act.KICK
            S[ei(e, Ent.REM)] = exit_ns(prof)
            X[OFF_ACC + Acc.EXITS] += 1.0
            trace(S, T, now, Tr.EXIT_BEGIN, e, r)
            set_seg_end(S, X, cfg, prof, p, now)
            return
        backend_push(S, X, cfg, prof, -r - 1, now)
        vcpu_next(S, X, T, R, cfg, prof, e, p, now)
        return
    if act == Act.KICK:
        trace(S, T, now, Tr.EXIT_END, e, S[ei(e, Ent.REQ)])
        backend_push(S, X, cfg, prof, -S[ei(e, Ent.REQ)] - 1, now)
        vcpu_next(S, X, T, R, cfg, prof, e, p, now)
        return
    if act == Act.LOCKED:
        release_lock(S, X, T, cfg, prof, p, e, now)
        return
    if act == Act.SPIN:
        spin_segment_done(S, X, T, cfg, prof, p, e, now)
        return
    if act == Act.PEXIT:
        pause_exit_done(S, X, cfg, prof, p, e, now)
        return
    if act == Act.HPOLL:
        # window ran out without a wake-up: block
        vcpu_block(S, X, cfg, prof, p, now)
        return
    # TICK, RESUME, BPOLL or GPOLL ended
    vcpu_next(S, X, T, R, cfg, prof, e, p, now)
