"""What the engine records: CPU time charged per running segment, completed requests, the trace.

The window's accumulators (``X[OFF_ACC + Acc.*]``) become the telemetry in vvho_env/sim/backend.py.
"""

from __future__ import annotations

import numpy as np

from vvho_env.histogram import bucket_of
from vvho_env.sim.engine.bandwidth import own_bucket
from vvho_env.sim.engine.jit import jit
from vvho_env.sim.engine.layout import (
    B_GLOBAL,
    E_NEIGH0,
    INF,
    OFF_ACC,
    OFF_BUCKET,
    OFF_EV,
    OFF_RT0,
    QN,
    X_VR,
    X_W,
    Acc,
    Act,
    Cfg,
    Cpu,
    Ent,
    Ev,
    Kind,
    Scalar,
    Tr,
    ci,
    ei,
)


@jit
def trace(S: np.ndarray, T: np.ndarray, t: int, code: int, e: int, v: int) -> None:
    """Append (t, code, e, v) to the trace when tracing is on."""
    if S[Scalar.TRACE_ON] != 0:
        n = S[Scalar.TRACE_N]
        if n < T.shape[0]:
            T[n, 0] = t
            T[n, 1] = code
            T[n, 2] = e
            T[n, 3] = v
            S[Scalar.TRACE_N] = n + 1


@jit
def charge(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, p: int, now: int) -> None:
    """Account the time the current entity of p ran since its segment started: its remaining work,
    vruntime or RT runtime, bandwidth buckets and the window's CPU accumulators."""
    e = S[ci(p, Cpu.CUR)]
    if e < 0:
        return
    elapsed = now - S[ci(p, Cpu.SEG_START)]
    if elapsed <= 0:
        return
    oi = S[ci(p, Cpu.OVH_IDLE)]
    ob = S[ci(p, Cpu.OVH_BUSY)]
    idle_part = min(elapsed, oi)
    cpu_t = elapsed - idle_part
    busy_ovh = min(cpu_t, ob)
    progress = cpu_t - busy_ovh
    S[ci(p, Cpu.OVH_IDLE)] = oi - idle_part
    S[ci(p, Cpu.OVH_BUSY)] = ob - busy_ovh
    S[ci(p, Cpu.SEG_START)] = now
    kind = S[ei(e, Ent.KIND)]
    act = S[ei(e, Ent.ACT)]
    if S[ei(e, Ent.REM)] < INF:
        S[ei(e, Ent.REM)] = S[ei(e, Ent.REM)] - progress
    if S[ei(e, Ent.FIFO)] == 0:
        X[X_VR + e] += cpu_t * 1024.0 / X[X_W + e]
    else:
        S[ci(p, Cpu.RT_USED)] += cpu_t
    if kind == Kind.NEIGH:
        if e - E_NEIGH0 < S[Scalar.HK]:  # neighbour VMs only, not the host's housekeeping work
            X[OFF_ACC + Acc.NEIGH_RUN] += cpu_t
    else:
        b = own_bucket(S, e)
        S[OFF_BUCKET + b] += cpu_t
        S[OFF_BUCKET + B_GLOBAL] += cpu_t
        X[OFF_ACC + Acc.VM_BUSY] += cpu_t
        if kind == Kind.VCPU:
            X[OFF_ACC + Acc.VCPU_BUSY] += cpu_t
        if act == Act.BPOLL or act == Act.GPOLL or act == Act.HPOLL:
            X[OFF_ACC + Acc.VM_POLL] += progress


@jit
def complete(S: np.ndarray, X: np.ndarray, H: np.ndarray, T: np.ndarray, cfg: np.ndarray, r: int, now: int) -> None:
    """Request r is back at the client: its latency goes into the histogram and the accumulators."""
    lat = now - S[OFF_RT0 + r % QN] + int(cfg[Cfg.CLIENT_RTT])
    H[bucket_of(float(lat))] += 1
    X[OFF_ACC + Acc.DONE] += 1.0
    X[OFF_ACC + Acc.LAT_SUM] += lat
    if lat > cfg[Cfg.SLO]:
        X[OFF_ACC + Acc.VIOL] += 1.0
    S[Scalar.INFLIGHT] -= 1
    trace(S, T, now, Tr.DONE, r, lat)
    if cfg[Cfg.CLOSED] > 0:
        S[OFF_EV + Ev.ARR] = now + int(cfg[Cfg.CLIENT_RTT] + cfg[Cfg.THINK])
