"""CFS bandwidth control: quota per period at libvirt's scopes (per vCPU thread, emulator, whole VM).

A bucket counts the ns its threads ran in the current period; a thread whose bucket (or the VM's) is
spent is throttled until the next period boundary (the event loop refills at Ev.PERIOD).
"""

from __future__ import annotations

import numpy as np

from vvho_env.knobs import KnobValue
from vvho_env.sim.engine.jit import jit
from vvho_env.sim.engine.layout import B_EMU, B_GLOBAL, INF, MV, OFF_BUCKET, Cfg, Ent, Kind, KnobWriter, ei
from vvho_env.sim.profiles import HostProfile


def _quota_ns(v: KnobValue, _: HostProfile) -> float:
    return -1.0 if int(v) < 0 else float(v) * 1000.0


KNOB_WRITERS: dict[str, KnobWriter] = {
    "vcpu_quota": (Cfg.VQUOTA, _quota_ns),
    "vcpu_period": (Cfg.PERIOD, lambda v, _: float(v) * 1000.0),
    "emulator_quota": (Cfg.EQUOTA, _quota_ns),
    "global_quota": (Cfg.GQUOTA, _quota_ns),
}


@jit
def quota_of(cfg: np.ndarray, b: int) -> int:
    """Quota of bucket b in ns per period, -1 when unlimited."""
    if b < MV:
        q = cfg[Cfg.VQUOTA]
    elif b == B_EMU:
        q = cfg[Cfg.EQUOTA]
    else:
        q = cfg[Cfg.GQUOTA]
    return -1 if q < 0 else int(q)


@jit
def own_bucket(S: np.ndarray, e: int) -> int:
    """The bucket entity e is charged to besides the VM's; -1 for a neighbour."""
    k = S[ei(e, Ent.KIND)]
    if k == Kind.VCPU:
        return e
    if k == Kind.BACKEND:
        return B_EMU
    return -1


@jit
def budget_left(S: np.ndarray, cfg: np.ndarray, e: int) -> int:
    """ns entity e may still run in this period (INF when no quota applies)."""
    b = own_bucket(S, e)
    if b < 0:
        return INF
    left = INF
    q = quota_of(cfg, b)
    if q >= 0:
        left = q - S[OFF_BUCKET + b]
    qg = quota_of(cfg, B_GLOBAL)
    if qg >= 0:
        left = min(left, qg - S[OFF_BUCKET + B_GLOBAL])
    return left
