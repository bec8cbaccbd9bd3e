"""The host network path of the virtio backends: the NIC's (possibly coalesced) interrupt, then a
scheduled backend thread (QEMU userspace or vhost-net), the vhost-user PMD core, or SR-IOV DMA.

Items are request ids (receive, towards the guest) or -(id + 1) (transmit, back to the client). The
PMD and SR-IOV paths have no host thread: their items pass through a delay line of monotone times.
"""

from __future__ import annotations

import numpy as np

from vvho_env.sim.engine.jit import jit, jit_inline
from vvho_env.sim.engine.layout import (
    E_BACKEND,
    INF,
    OFF_ACC,
    OFF_BQ,
    OFF_DLI,
    OFF_DLT,
    OFF_EV,
    QN,
    Acc,
    Act,
    Backend,
    Cfg,
    Ent,
    Ev,
    KnobWriter,
    Prof,
    Scalar,
    St,
    ei,
)
from vvho_env.sim.engine.scheduler import make_runnable

_BACKEND_INDEX = {"userspace": Backend.USERSPACE, "vhost": Backend.VHOST,
                  "vhost_user_poll": Backend.PMD, "sriov": Backend.SRIOV}

KNOB_WRITERS: dict[str, KnobWriter] = {
    "virtio_backend": (Cfg.BACKEND, lambda v, _: float(_BACKEND_INDEX[str(v)])),
    "rx_usecs": (Cfg.RXUS, lambda v, _: float(v) * 1000.0),
}


@jit
def delay_push(S: np.ndarray, t: int, item: int) -> None:
    """item leaves the delay line at time t (not before the items already in it)."""
    S[OFF_DLT + S[Scalar.DL_TAIL] % QN] = t
    S[OFF_DLI + S[Scalar.DL_TAIL] % QN] = item
    S[Scalar.DL_TAIL] += 1
    if S[Scalar.DL_TAIL] - S[Scalar.DL_HEAD] == 1:
        S[OFF_EV + Ev.DELAY] = t


@jit
def backend_item_cost(cfg: np.ndarray, prof: np.ndarray, item: int) -> int:
    """CPU ns the backend thread spends on one item."""
    irq = prof[Prof.NIC_IRQ_NS] if item >= 0 else 0.0  # the host NIC irq + softirq that woke us
    if int(cfg[Cfg.BACKEND]) == Backend.USERSPACE:
        return int(irq + (prof[Prof.USERSPACE_RX_NS] if item >= 0 else prof[Prof.USERSPACE_TX_NS]))
    return int(irq + (prof[Prof.VHOST_RX_NS] if item >= 0 else prof[Prof.VHOST_TX_NS]))


@jit
def backend_next_item(S: np.ndarray, cfg: np.ndarray, prof: np.ndarray) -> bool:
    """The backend thread takes the next packet of its queue; False when the queue is empty."""
    e = E_BACKEND
    if S[Scalar.BQ_HEAD] >= S[Scalar.BQ_TAIL]:
        S[ei(e, Ent.ACT)] = Act.NONE
        return False
    item = S[OFF_BQ + S[Scalar.BQ_HEAD] % QN]
    S[Scalar.BQ_HEAD] += 1
    S[ei(e, Ent.REQ)] = item
    S[ei(e, Ent.ACT)] = Act.WORK
    S[ei(e, Ent.REM)] = backend_item_cost(cfg, prof, item)
    return True


@jit
def backend_push(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, item: int, now: int) -> None:
    """Hand a packet to the host data path of the configured virtio backend."""
    mode = int(cfg[Cfg.BACKEND])
    if mode == Backend.PMD:
        cost = prof[Prof.PMD_RX_NS] if item >= 0 else prof[Prof.PMD_TX_NS]
        t = max(S[Scalar.PMD_FREE], now + int(prof[Prof.GUEST_POLL_DETECT_NS])) + int(cost)
        S[Scalar.PMD_FREE] = t
        delay_push(S, t, item)
        return
    if mode == Backend.SRIOV:
        delay_push(S, now + int(prof[Prof.SRIOV_NS]), item)
        return
    S[OFF_BQ + S[Scalar.BQ_TAIL] % QN] = item
    S[Scalar.BQ_TAIL] += 1
    if S[ei(E_BACKEND, Ent.STATE)] == St.SLEEP:
        backend_next_item(S, cfg, prof)
        make_runnable(S, X, cfg, prof, E_BACKEND, now)


@jit
def nic_deliver(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, now: int) -> None:
    """The NIC raises its (possibly coalesced) interrupt for all pending packets."""
    head = S[Scalar.NIC_HEAD]
    tail = S[Scalar.NEXT_ID]
    if head >= tail:
        return
    mode = int(cfg[Cfg.BACKEND])
    if mode == Backend.USERSPACE or mode == Backend.VHOST:
        X[OFF_ACC + Acc.VM_BUSY] += prof[Prof.NIC_IRQ_NS]  # host irq + softirq on behalf of the VM
    for r in range(head, tail):
        backend_push(S, X, cfg, prof, r, now)
    S[Scalar.NIC_HEAD] = tail


@jit_inline
def nic_receive(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, now: int) -> None:
    """A packet arrived at the NIC: delivered now (no coalescing, or the PMD polling the ring), or when the
    rx-usecs timer already running or started now fires."""
    mode = int(cfg[Cfg.BACKEND])
    rx = int(cfg[Cfg.RXUS])
    if mode == Backend.PMD:
        nic_deliver(S, X, cfg, prof, now)  # the PMD polls the NIC ring
    elif rx <= 0:
        nic_deliver(S, X, cfg, prof, now)
    elif S[OFF_EV + Ev.NIC] >= INF:
        S[OFF_EV + Ev.NIC] = now + rx
