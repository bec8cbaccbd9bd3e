"""Polling instead of sleeping: guest socket busy polling after a request, guest cpuidle-haltpoll before
HLT, and KVM's host halt-polling after it, each with KVM's adaptive window (virt/kvm/kvm_main.c).

The host stops polling as soon as another task is runnable on the pCPU (scheduler.make_runnable); guest
haltpoll disables host polling for the vCPU; all polling is vCPU time.
"""

from __future__ import annotations

import numpy as np

from vvho_env.sim.engine.accounting import trace
from vvho_env.sim.engine.jit import jit, jit_inline
from vvho_env.sim.engine.layout import OFF_ACC, Acc, Act, Cfg, Ent, KnobWriter, Prof, Tr, ei
from vvho_env.sim.engine.runqueue import others_runnable, set_seg_end
from vvho_env.sim.engine.scheduler import vcpu_block
from vvho_env.sim.engine.vmx import exit_ns

KNOB_WRITERS: dict[str, KnobWriter] = {
    "busy_poll_us": (Cfg.BUSYPOLL, lambda v, _: float(v) * 1000.0),
    "halt_poll_ns": (Cfg.HPOLL, lambda v, _: float(v)),
    "guest_haltpoll": (Cfg.GHPOLL, lambda v, _: 1.0 if v else 0.0),
}


@jit
def adapt_window(win: int, block_ns: int, cap: int, grow: float, start: float, shrink: float) -> int:
    """KVM's grow/shrink of a halt-poll window (virt/kvm/kvm_main.c, kvm_vcpu_halt)."""
    if win > cap:
        return cap
    if block_ns <= win:
        return win
    if win > 0 and block_ns > cap:
        if shrink == 0.0:
            return 0
        val = int(win / shrink)
        return 0 if val < start else val
    if win < cap and block_ns < cap:
        if grow == 0.0:
            return win
        val = int(win * grow)
        if val < start:
            val = int(start)
        return min(val, cap)
    return win


@jit
def hpoll_cap(cfg: np.ndarray, prof: np.ndarray) -> int:
    """The host halt-poll cap in force: 0 without KVM or with guest haltpoll."""
    return int(cfg[Cfg.HPOLL]) if prof[Prof.KVM] > 0 and cfg[Cfg.GHPOLL] == 0 else 0


@jit
def update_host_window(S: np.ndarray, T: np.ndarray, cfg: np.ndarray, prof: np.ndarray, e: int, now: int) -> None:
    """vCPU e's halt ended at now: adapt its host halt-poll window to how long it was halted."""
    cap = hpoll_cap(cfg, prof)
    if cap <= 0:
        S[ei(e, Ent.HPWIN)] = 0
        return
    if prof[Prof.HALT_POLL_ADAPTIVE] == 0:
        S[ei(e, Ent.HPWIN)] = cap
        return
    block = now - S[ei(e, Ent.HALT_T)]
    w = adapt_window(S[ei(e, Ent.HPWIN)], block, cap, prof[Prof.HALT_POLL_GROW],
                     prof[Prof.HALT_POLL_GROW_START], prof[Prof.HALT_POLL_SHRINK])
    S[ei(e, Ent.HPWIN)] = w
    trace(S, T, now, Tr.HPOLL_WINDOW, e, w)


@jit
def update_guest_window(S: np.ndarray, cfg: np.ndarray, prof: np.ndarray, e: int, now: int) -> None:
    """vCPU e's idle period ended at now: adapt its guest haltpoll window."""
    if cfg[Cfg.GHPOLL] == 0:
        return
    block = now - S[ei(e, Ent.IDLE_T)]
    S[ei(e, Ent.GPWIN)] = adapt_window(S[ei(e, Ent.GPWIN)], block, int(prof[Prof.GUEST_POLL_MAX_NS]),
                                       prof[Prof.GUEST_POLL_GROW], prof[Prof.GUEST_POLL_GROW_START],
                                       prof[Prof.GUEST_POLL_SHRINK])


@jit_inline
def vcpu_idle(S: np.ndarray, X: np.ndarray, T: np.ndarray, cfg: np.ndarray, prof: np.ndarray, e: int, p: int,
              now: int) -> None:
    """vCPU e on p has no work: busy poll (right after a request), guest haltpoll, else HLT, which exits
    to the host, where KVM halt-polls (when nothing else waits for p) or blocks."""
    after_req = S[ei(e, Ent.AFTER_REQ)]
    S[ei(e, Ent.AFTER_REQ)] = 0
    if after_req == 1 and cfg[Cfg.BUSYPOLL] > 0:
        S[ei(e, Ent.ACT)] = Act.BPOLL
        S[ei(e, Ent.REM)] = int(cfg[Cfg.BUSYPOLL])
        set_seg_end(S, X, cfg, prof, p, now)
        return
    if S[ei(e, Ent.ACT)] != Act.GPOLL:
        S[ei(e, Ent.IDLE_T)] = now
    if cfg[Cfg.GHPOLL] > 0 and S[ei(e, Ent.ACT)] != Act.GPOLL and S[ei(e, Ent.GPWIN)] > 0:
        S[ei(e, Ent.ACT)] = Act.GPOLL
        S[ei(e, Ent.REM)] = S[ei(e, Ent.GPWIN)]
        set_seg_end(S, X, cfg, prof, p, now)
        return
    trace(S, T, now, Tr.HALT, e, S[ei(e, Ent.HPWIN)])
    halt_exit(S, X, cfg, prof, p, e, now)


@jit_inline
def halt_exit(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, e: int, now: int) -> None:
    """vCPU e on p executes HLT: it exits to the host, where KVM halt-polls (when nothing else waits for
    p: kvm_vcpu_halt) or blocks it until a wake-up."""
    X[OFF_ACC + Acc.EXITS] += 1.0
    X[OFF_ACC + Acc.VM_BUSY] += exit_ns(prof)
    X[OFF_ACC + Acc.VCPU_BUSY] += exit_ns(prof)
    S[ei(e, Ent.HALT_T)] = now
    host_poll = prof[Prof.KVM] > 0 and cfg[Cfg.HPOLL] > 0 and cfg[Cfg.GHPOLL] == 0
    if host_poll and S[ei(e, Ent.HPWIN)] > 0 and not others_runnable(S, p, e):
        S[ei(e, Ent.ACT)] = Act.HPOLL
        S[ei(e, Ent.REM)] = S[ei(e, Ent.HPWIN)]
        set_seg_end(S, X, cfg, prof, p, now)
        return
    vcpu_block(S, X, cfg, prof, p, now)
