"""Where everything lives in the engine's flat arrays: auto-numbered fields, offsets derived from sizes.

Each environment's state is three flat arrays: int64 ``S``, float64 ``X`` and uint64 ``R`` (its RNG
stream), plus its histogram ``H`` and trace ``T``; N environments are rows of 2-D arrays. ``cfg`` holds
the knob settings and the current scenario phase, ``prof`` the host profile; both are runtime arrays.
Field sets are IntEnums numbered 0, 1, ... in the order listed (numba folds their members to int
constants); code reads ``S[ei(e, Ent.STATE)]``, ``cfg[Cfg.SLICE]``, ``prof[Prof.TICK_HZ]``.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Any

import numpy as np

from vvho_env.histogram import N_BUCKETS
from vvho_env.knobs import KnobValue
from vvho_env.sim.engine.jit import jit_inline
from vvho_env.sim.profiles import PROFILE_FIELDS, HostProfile

INF = 2**62  # 'never' for event times (int64, ~146 years of ns)
MAX_EVENTS_PER_RUN = 50_000_000  # ~1,000x a busy window: beyond it the loop is not advancing time

# ------------------------------------------------------------------ sizes
MV = 4  # max vCPUs
MP = 6  # max pCPUs: up to 5 shared + 1 housekeeping
ME = MV + 1 + MP  # vCPUs, backend thread, one neighbour per pCPU
E_BACKEND = MV
E_NEIGH0 = MV + 1
QN = 16384  # ring capacity (requests in flight) per env
TRACE_N = 4096

# ------------------------------------------------------------------ prof: host-profile constants
def _computed_fields(name: str, names: list[str]) -> Any:
    """An IntEnum numbered 0, 1, ... from names known only at import (typed Any: mypy cannot list them)."""
    return IntEnum(name, names, start=0)


Prof = _computed_fields("Prof", [f.upper() for f in PROFILE_FIELDS])

# ------------------------------------------------------------------ cfg: knobs, then the scenario phase
Cfg = IntEnum(
    "Cfg",
    "PIN VQUOTA PERIOD EQUOTA GQUOTA SHARES EMU_HK NVCPU BACKEND RXUS BUSYPOLL HPOLL GHPOLL FIFO SLICE PLE CMAX "
    "RATE MMPP_MULT MMPP_ON MMPP_OFF SVC_MEAN SVC_CV LONG_FRAC LONG_MULT LOCK_PROB CLOSED THINK CLIENT_RTT SLO "
    "LOCK_KIND",
    start=0,
)
# how a knob lands in cfg: its slot and the conversion of its value (each mechanism module has a table)
KnobWriter = tuple[Cfg, Callable[[KnobValue, HostProfile], float]]
CFG_ND0 = len(Cfg)  # neighbour demand of shared pCPU j at CFG_ND0 + j
NCFG = CFG_ND0 + MP

Backend = IntEnum("Backend", "USERSPACE VHOST PMD SRIOV", start=0)
# the guest's spinlock (Scenario.guest_spinlock, in this order)
LOCK_KINDS = ("test_and_set", "queued", "paravirt")
Lock = IntEnum("Lock", "TAS QUEUED PV", start=0)

# ------------------------------------------------------------------ S (int64)
Scalar = IntEnum(
    "Scalar",
    "NEXT_ID INFLIGHT NIC_HEAD GQ_HEAD GQ_TAIL BQ_HEAD BQ_TAIL DL_HEAD DL_TAIL PMD_FREE MMPP_HIGH OUTAGE_END "
    "TRACE_N TRACE_ON NOW RR HK LIVELOCK LOCK_OWNER LOCK_TICKET LAST_BOOSTED",
    start=0,
)
SCALAR_SLOTS = 24  # 21 used + 3 spare
assert len(Scalar) <= SCALAR_SLOTS, "Scalar outgrew its slots: raise SCALAR_SLOTS (and re-record the golden test)"
# events: the next time of each source; then one per pCPU (its running segment ends), one per entity
Ev = IntEnum("Ev", "ARR NIC TICK PERIOD RT OUTAGE DELAY MMPP", start=0)
EV_CPU0 = len(Ev)
EV_ENT0 = EV_CPU0 + MP
NEV = EV_ENT0 + ME
# per-entity fields (a vCPU, the backend thread or a neighbour)
Ent = IntEnum(
    "Ent",
    "KIND STATE CPU MASK FIFO ACT REM REQ HALT_T HPWIN GPWIN IDLE_T LOCK_Q AFTER ENTRY TICKS RUNNABLE_T AFTER_REQ "
    "PLE_WIN SPIN_SEG PV_LEFT",
    start=0,
)
# per-pCPU fields; NR counts the runnable (waiting) entities; PICK_T is when the current fair entity was
# picked (CFS measures its slice, delta_exec, from there)
Cpu = IntEnum("Cpu", "CUR SEG_START OVH_IDLE OVH_BUSY SLICE_END IDLE_T EXIT_LAT LAST RT_USED RT_THR IN_IDLE NR "
              "PICK_T", start=0)
NEF = len(Ent)
NCF = len(Cpu)
# CFS bandwidth buckets (ns used in this period): one per vCPU, then the emulator, then the whole VM
B_EMU = MV
B_GLOBAL = MV + 1
NB = MV + 2

OFF_EV = SCALAR_SLOTS
OFF_ENT = OFF_EV + NEV
OFF_CPU = OFF_ENT + ME * NEF
OFF_BUCKET = OFF_CPU + MP * NCF
OFF_GQ = OFF_BUCKET + NB  # guest queue of request ids
OFF_BQ = OFF_GQ + QN  # backend queue: id, or -(id + 1) for a transmit item
OFF_DLT = OFF_BQ + QN  # delay line (monotone times) for PMD / SR-IOV paths
OFF_DLI = OFF_DLT + QN  # delay-line item: id (rx to guest) or -(id + 1) (tx done)
OFF_RT0 = OFF_DLI + QN  # request arrival time at the host, by id % QN
OFF_RSVC = OFF_RT0 + QN  # request service work (ns)
NS = OFF_RSVC + QN

Kind = IntEnum("Kind", "NONE VCPU BACKEND NEIGH", start=0)
St = IntEnum("St", "SLEEP RUNNABLE RUNNING THROTTLED", start=0)
# LOCKED: in the guest spinlock's critical section; SPIN: waiting for the lock (PAUSE loop); PEXIT: in the
# host handling a PAUSE-loop exit (kvm_vcpu_on_spin)
Act = IntEnum("Act", "NONE WORK TICK KICK BPOLL GPOLL HPOLL SPIN RESUME LOCKED PEXIT", start=0)

# ------------------------------------------------------------------ X (float64)
X_VR = 0  # vruntime per entity
X_DL = X_VR + ME  # virtual deadline per entity
X_W = X_DL + ME  # weight per entity
X_IDLE_AVG = X_W + ME  # per pCPU: running average of idle durations (idle governor)
X_LAG = X_IDLE_AVG + MP  # per entity: EEVDF lag saved at dequeue, restored at wake-up (PLACE_LAG)
X_MINVR = X_LAG + ME  # per pCPU: the cfs_rq's monotonic min_vruntime (CFS placement and migration)
OFF_ACC = X_MINVR + MP
# accumulators of the current window (telemetry)
Acc = IntEnum(
    "Acc",
    "ARRIVALS DONE LAT_SUM VIOL VM_BUSY VM_POLL NEIGH_RUN NEIGH_ON THROTTLED EXITS CTX ERRORS VCPU_BUSY "
    "NEIGH_WORK IDLE WAKE_LAT LOCK_SPIN PLE_EXITS PV_HALTS PV_KICKS LOCK_ACQ LOCK_CONTENDED",
    start=0,
)
NX = OFF_ACC + len(Acc)

# trace events (calibration tests read these)
Tr = IntEnum("Tr", "EXIT_BEGIN EXIT_END HPOLL_WINDOW HALT WAKE DONE PLE_WINDOW", start=0)


@jit_inline
def ei(e: int, f: int) -> int:
    """Index of field f of entity e in S."""
    return OFF_ENT + e * NEF + f


@jit_inline
def ci(p: int, f: int) -> int:
    """Index of field f of pCPU p in S."""
    return OFF_CPU + p * NCF + f


def new_state(n_envs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Preallocated state for n_envs environments: S, X, H (histograms), T (traces), R (RNG)."""
    return (
        np.zeros((n_envs, NS), dtype=np.int64),
        np.zeros((n_envs, NX), dtype=np.float64),
        np.zeros((n_envs, N_BUCKETS), dtype=np.int64),
        np.zeros((n_envs, TRACE_N, 4), dtype=np.int64),
        np.zeros((n_envs, 2), dtype=np.uint64),
    )
