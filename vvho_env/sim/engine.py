"""The request-level discrete-event model of one latency VM on a shared host (numba-compiled).

Time is int64 nanoseconds. Each environment's whole state lives in three flat arrays (int64 ``S``,
float64 ``X``, uint64 ``R`` for its own RNG stream), so that N environments are rows of 2-D arrays and
env k gives identical results alone and batched. Physical constants come from a host-profile array
``prof`` and the knob settings + current scenario phase from ``cfg``; both are runtime arrays.

What a request pays, in order (each a mechanism driven by the knobs, no penalty terms):
  NIC (rx coalescing timer) -> backend (QEMU userspace thread / vhost-net thread / vhost-user PMD /
  SR-IOV DMA) -> interrupt to the guest (posted, or an exit; or found by a polling vCPU) -> vCPU
  wake-up (host halt-poll hit, or block/wake through the host scheduler + C-state exit) -> guest
  service (cache refill after others ran on the core, LLC interference from neighbours, spinlock
  waits with pause-loop exiting) -> FCFS on the VM's vCPUs -> transmit kick (exit) -> backend tx.

Scheduled entities per env: the vCPU threads, one backend thread (QEMU I/O or vhost worker) and one
neighbour per pCPU. Each pCPU runs a small EEVDF (eligibility on weighted average vruntime, earliest
virtual deadline, RUN_TO_PARITY slice protection, zero-lag placement on wake-up) under a FIFO class
with RT throttling; CFS bandwidth buckets per vCPU, emulator and whole VM; a menu-like idle governor.
Simplifications (documented): entities migrate only at wake-up (select_idle_sibling-like), not by
periodic load balancing; a closed-loop workload has a single client.
"""

from __future__ import annotations

import math
from typing import Any

import numba as nb
import numpy as np

from vvho_env.histogram import N_BUCKETS, bucket_of
from vvho_env.sim.profiles import P

INF = 2**62  # 'never' for event times (int64, ~146 years of ns)

# The engine never allocates, so it runs without NRT reference counting: 2.5x faster (measured with
# /benchmarks/sim_speed.py), because every array passed between the functions was being increfed.
_jit: Any = nb.njit(cache=True, _nrt=False)  # type: ignore[call-overload]
_jit_inline: Any = nb.njit(cache=True, inline="always", _nrt=False)  # type: ignore[call-overload]

# indices into the host-profile array (compile-time constants for numba)
P_BLOCK_NS = P["block_ns"]
P_C1_EXIT_NS = P["c1_exit_ns"]
P_C1E_EXIT_NS = P["c1e_exit_ns"]
P_C1E_RESIDENCY_NS = P["c1e_residency_ns"]
P_C6_EXIT_NS = P["c6_exit_ns"]
P_C6_RESIDENCY_NS = P["c6_residency_ns"]
P_CACHE_REFILL_NS = P["cache_refill_ns"]
P_CPU_GHZ = P["cpu_ghz"]
P_CTX_SWITCH_NS = P["ctx_switch_ns"]
P_ENTRY_HW_CYCLES = P["entry_hw_cycles"]
P_EXIT_HANDLER_CYCLES = P["exit_handler_cycles"]
P_EXIT_HW_CYCLES = P["exit_hw_cycles"]
P_GUEST_POLL_DETECT_NS = P["guest_poll_detect_ns"]
P_GUEST_POLL_GROW = P["guest_poll_grow"]
P_GUEST_POLL_GROW_START = P["guest_poll_grow_start"]
P_GUEST_POLL_MAX_NS = P["guest_poll_max_ns"]
P_GUEST_POLL_SHRINK = P["guest_poll_shrink"]
P_GUEST_RX_NS = P["guest_rx_ns"]
P_GUEST_SLOWDOWN = P["guest_slowdown"]
P_GUEST_TX_NS = P["guest_tx_ns"]
P_HALT_POLL_ADAPTIVE = P["halt_poll_adaptive"]
P_HALT_POLL_DETECT_NS = P["halt_poll_detect_ns"]
P_HALT_POLL_GROW = P["halt_poll_grow"]
P_HALT_POLL_GROW_START = P["halt_poll_grow_start"]
P_HALT_POLL_SHRINK = P["halt_poll_shrink"]
P_HOUSEKEEPING_LOAD = P["housekeeping_load"]
P_HOUSEKEEPING_BURST_NS = P["housekeeping_burst_ns"]
P_KVM = P["kvm"]
P_LLC_INTERFERENCE = P["llc_interference"]
P_LOCK_HOLD_NS = P["lock_hold_ns"]
P_LOCK_SPIN_NS = P["lock_spin_ns"]
P_N_PCPU = P["n_pcpu"]
P_NEIGHBOUR_BURST_NS = P["neighbour_burst_ns"]
P_NIC_IRQ_NS = P["nic_irq_ns"]
P_PLE_YIELD_NS = P["ple_yield_ns"]
P_PMD_RX_NS = P["pmd_rx_ns"]
P_PMD_TX_NS = P["pmd_tx_ns"]
P_POSTED_INTERRUPTS = P["posted_interrupts"]
P_RT_PERIOD_NS = P["rt_period_ns"]
P_RT_RUNTIME_NS = P["rt_runtime_ns"]
P_SRIOV_NS = P["sriov_ns"]
P_TICK_HZ = P["tick_hz"]
P_TICK_NS = P["tick_ns"]
P_USERSPACE_RX_NS = P["userspace_rx_ns"]
P_USERSPACE_TX_NS = P["userspace_tx_ns"]
P_VHOST_RX_NS = P["vhost_rx_ns"]
P_VHOST_TX_NS = P["vhost_tx_ns"]
P_VCPU_WAKE_NS = P["vcpu_wake_ns"]

# ------------------------------------------------------------------ sizes
MV = 4  # max vCPUs
MP = 6  # max pCPUs: up to 5 shared + 1 housekeeping
ME = MV + 1 + MP  # vCPUs, backend thread, one neighbour per pCPU
E_BACKEND = MV
E_NEIGH0 = MV + 1
QN = 16384  # ring capacity (requests in flight) per env
TRACE_N = 4096

# ------------------------------------------------------------------ cfg layout (knobs + phase)
K_PIN, K_VQUOTA, K_PERIOD, K_EQUOTA, K_GQUOTA, K_SHARES, K_EMU_HK, K_NVCPU = range(8)
K_BACKEND, K_RXUS, K_BUSYPOLL, K_HPOLL, K_GHPOLL, K_FIFO, K_SLICE, K_PLE, K_CMAX = range(8, 17)
W_RATE, W_MMPP_MULT, W_MMPP_ON, W_MMPP_OFF, W_SVC_MEAN, W_SVC_CV = range(17, 23)
W_LONG_FRAC, W_LONG_MULT, W_LOCK_PROB, W_CLOSED, W_THINK, W_CLIENT_RTT, W_SLO = range(23, 30)
W_ND0 = 30  # neighbour demand of shared pCPU j at W_ND0 + j
NCFG = W_ND0 + MP

BACKEND_USERSPACE, BACKEND_VHOST, BACKEND_PMD, BACKEND_SRIOV = 0, 1, 2, 3

# ------------------------------------------------------------------ S (int64) layout
# scalars
I_NEXT_ID, I_INFLIGHT, I_NIC_HEAD, I_GQ_HEAD, I_GQ_TAIL, I_BQ_HEAD, I_BQ_TAIL = range(7)
I_DL_HEAD, I_DL_TAIL, I_PMD_FREE, I_MMPP_HIGH, I_OUTAGE_END, I_TRACE_N, I_TRACE_ON = range(7, 14)
I_NOW, I_RR, I_HK, I_LIVELOCK = range(14, 18)
MAX_EVENTS_PER_RUN = 50_000_000  # ~1,000x a busy window: beyond it the loop is not advancing time
NI = 24
# events: next time of each source
EV_ARR, EV_NIC, EV_TICK, EV_PERIOD, EV_RT, EV_OUTAGE, EV_DELAY, EV_MMPP = range(8)
EV_CPU0 = 8
EV_ENT0 = EV_CPU0 + MP
NEV = EV_ENT0 + ME
OFF_EV = NI
# entity fields
F_KIND, F_STATE, F_CPU, F_MASK, F_FIFO, F_ACT, F_REM, F_REQ, F_HALT_T, F_HPWIN = range(10)
F_GPWIN, F_IDLE_T, F_SPIN_ON, F_AFTER, F_ENTRY, F_TICKS, F_RUNNABLE_T, F_AFTER_REQ = range(10, 18)
NEF = 18
OFF_ENT = OFF_EV + NEV
# pCPU fields
C_CUR, C_SEG_START, C_OVH_IDLE, C_OVH_BUSY, C_SLICE_END, C_IDLE_T, C_EXIT_LAT = range(7)
C_LAST, C_RT_USED, C_RT_THR, C_IN_IDLE, C_NR = range(7, 12)  # C_NR: runnable (waiting) entities
NCF = 12
OFF_CPU = OFF_ENT + ME * NEF
# bandwidth buckets: one per vCPU, emulator, global (used ns in this period)
B_EMU = MV
B_GLOBAL = MV + 1
NB = MV + 2
OFF_BUCKET = OFF_CPU + MP * NCF
# rings
OFF_GQ = OFF_BUCKET + NB  # guest queue of request ids
OFF_BQ = OFF_GQ + QN  # backend queue: id, or -(id + 1) for a transmit item
OFF_DLT = OFF_BQ + QN  # delay line (monotone times) for PMD / SR-IOV paths
OFF_DLI = OFF_DLT + QN  # delay-line item: id (rx to guest) or -(id + 1) (tx done)
OFF_RT0 = OFF_DLI + QN  # request arrival time at the host, by id % QN
OFF_RSVC = OFF_RT0 + QN  # request service work (ns)
NS = OFF_RSVC + QN

# entity kinds / states / activities
KIND_NONE, KIND_VCPU, KIND_BACKEND, KIND_NEIGH = 0, 1, 2, 3
ST_SLEEP, ST_RUNNABLE, ST_RUNNING, ST_THROTTLED = 0, 1, 2, 3
ACT_NONE, ACT_WORK, ACT_TICK, ACT_KICK, ACT_BPOLL, ACT_GPOLL, ACT_HPOLL, ACT_SPIN, ACT_RESUME = range(9)

# ------------------------------------------------------------------ X (float64) layout
X_VR = 0  # vruntime per entity
X_DL = ME  # virtual deadline per entity
X_W = 2 * ME  # weight per entity
X_IDLE_AVG = 3 * ME  # per pCPU: running average of idle durations (idle governor)
X_LAG = 3 * ME + MP  # per entity: EEVDF lag saved at dequeue, restored at wake-up (PLACE_LAG)
OFF_ACC = 4 * ME + MP
# accumulators for the current window
(A_ARRIVALS, A_DONE, A_LAT_SUM, A_VIOL, A_VM_BUSY, A_VM_POLL, A_NEIGH_RUN, A_NEIGH_ON,
 A_THROTTLED, A_EXITS, A_CTX, A_ERRORS, A_VCPU_BUSY, A_NEIGH_WORK, A_IDLE, A_WAKE_LAT) = range(16)
NACC = 16
NX = OFF_ACC + NACC

# trace events (calibration tests read these)
TR_EXIT_BEGIN, TR_EXIT_END, TR_HPOLL_WINDOW, TR_HALT, TR_WAKE, TR_DONE = range(6)


# ================================================================== RNG: xoroshiro128+ per env
@_jit_inline
def _rotl(x: np.uint64, k: int) -> np.uint64:
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@_jit
def rand_u(R: np.ndarray) -> float:
    s0 = R[0]
    s1 = R[1]
    result = s0 + s1
    s1 ^= s0
    R[0] = _rotl(s0, 24) ^ s1 ^ (s1 << np.uint64(16))
    R[1] = _rotl(s1, 37)
    return (result >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@_jit
def rand_exp(R: np.ndarray, mean: float) -> float:
    return -mean * math.log(1.0 - rand_u(R))


@_jit
def rand_normal(R: np.ndarray) -> float:
    u1 = 1.0 - rand_u(R)
    u2 = rand_u(R)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def seed_rng(seed: int) -> np.ndarray:
    """Two non-zero 64-bit words from a seed via numpy's SeedSequence (independent streams)."""
    words = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
    words[words == 0] = 1
    return words


# ================================================================== small accessors
@_jit_inline
def ei(e: int, f: int) -> int:
    return OFF_ENT + e * NEF + f


@_jit_inline
def ci(p: int, f: int) -> int:
    return OFF_CPU + p * NCF + f


@_jit
def trace(S: np.ndarray, T: np.ndarray, t: int, code: int, e: int, v: int) -> None:
    if S[I_TRACE_ON] != 0:
        n = S[I_TRACE_N]
        if n < T.shape[0]:
            T[n, 0] = t
            T[n, 1] = code
            T[n, 2] = e
            T[n, 3] = v
            S[I_TRACE_N] = n + 1


@_jit
def exit_ns(prof: np.ndarray) -> int:
    cyc = prof[P_EXIT_HW_CYCLES] + prof[P_EXIT_HANDLER_CYCLES] + prof[P_ENTRY_HW_CYCLES]
    return int(cyc / prof[P_CPU_GHZ])


@_jit
def entry_ns(prof: np.ndarray) -> int:
    return int(prof[P_ENTRY_HW_CYCLES] / prof[P_CPU_GHZ])


@_jit
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


# ================================================================== bandwidth
@_jit
def quota_of(cfg: np.ndarray, b: int) -> int:
    if b < MV:
        q = cfg[K_VQUOTA]
    elif b == B_EMU:
        q = cfg[K_EQUOTA]
    else:
        q = cfg[K_GQUOTA]
    return -1 if q < 0 else int(q)


@_jit
def own_bucket(S: np.ndarray, e: int) -> int:
    k = S[ei(e, F_KIND)]
    if k == KIND_VCPU:
        return e
    if k == KIND_BACKEND:
        return B_EMU
    return -1


@_jit
def budget_left(S: np.ndarray, cfg: np.ndarray, e: int) -> int:
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


# ================================================================== scheduling core
@_jit
def set_state(S: np.ndarray, e: int, st: int) -> None:
    """Every state change goes through here so that each pCPU's count of waiting tasks stays exact."""
    c = S[ei(e, F_CPU)]
    if c >= 0:
        if S[ei(e, F_STATE)] == ST_RUNNABLE:
            S[ci(c, C_NR)] -= 1
        if st == ST_RUNNABLE:
            S[ci(c, C_NR)] += 1
    S[ei(e, F_STATE)] = st


@_jit
def set_cpu(S: np.ndarray, e: int, q: int) -> None:
    c = S[ei(e, F_CPU)]
    if S[ei(e, F_STATE)] == ST_RUNNABLE:
        if c >= 0:
            S[ci(c, C_NR)] -= 1
        if q >= 0:
            S[ci(q, C_NR)] += 1
    S[ei(e, F_CPU)] = q


@_jit
def others_runnable(S: np.ndarray, p: int, e: int) -> bool:
    n = S[ci(p, C_NR)]
    if S[ei(e, F_STATE)] == ST_RUNNABLE and S[ei(e, F_CPU)] == p:
        n -= 1
    return n > 0


@_jit
def avg_vruntime(S: np.ndarray, X: np.ndarray, p: int) -> float:
    """Weighted average vruntime of the fair entities queued or running on p (EEVDF's V)."""
    num = 0.0
    den = 0.0
    for o in range(ME):
        st = S[ei(o, F_STATE)]
        if S[ei(o, F_CPU)] == p and (st == ST_RUNNABLE or st == ST_RUNNING) and S[ei(o, F_FIFO)] == 0:
            num += X[X_W + o] * X[X_VR + o]
            den += X[X_W + o]
    return num / den if den > 0 else -1.0


@_jit
def charge(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, p: int, now: int) -> None:
    """Account the time the current entity of p ran since its segment started."""
    e = S[ci(p, C_CUR)]
    if e < 0:
        return
    elapsed = now - S[ci(p, C_SEG_START)]
    if elapsed <= 0:
        return
    oi = S[ci(p, C_OVH_IDLE)]
    ob = S[ci(p, C_OVH_BUSY)]
    idle_part = min(elapsed, oi)
    cpu_t = elapsed - idle_part
    busy_ovh = min(cpu_t, ob)
    progress = cpu_t - busy_ovh
    S[ci(p, C_OVH_IDLE)] = oi - idle_part
    S[ci(p, C_OVH_BUSY)] = ob - busy_ovh
    S[ci(p, C_SEG_START)] = now
    kind = S[ei(e, F_KIND)]
    act = S[ei(e, F_ACT)]
    if S[ei(e, F_REM)] < INF:
        S[ei(e, F_REM)] = S[ei(e, F_REM)] - progress
    if S[ei(e, F_FIFO)] == 0:
        X[X_VR + e] += cpu_t * 1024.0 / X[X_W + e]
    else:
        S[ci(p, C_RT_USED)] += cpu_t
    if kind == KIND_NEIGH:
        if e - E_NEIGH0 < S[I_HK]:  # neighbour VMs only, not the host's housekeeping work
            X[OFF_ACC + A_NEIGH_RUN] += cpu_t
    else:
        b = own_bucket(S, e)
        S[OFF_BUCKET + b] += cpu_t
        S[OFF_BUCKET + B_GLOBAL] += cpu_t
        X[OFF_ACC + A_VM_BUSY] += cpu_t
        if kind == KIND_VCPU:
            X[OFF_ACC + A_VCPU_BUSY] += cpu_t
        if act == ACT_BPOLL or act == ACT_GPOLL or act == ACT_HPOLL:
            X[OFF_ACC + A_VM_POLL] += progress


@_jit
def set_seg_end(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, now: int) -> None:
    e = S[ci(p, C_CUR)]
    if e < 0:
        S[OFF_EV + EV_CPU0 + p] = INF
        return
    start = S[ci(p, C_SEG_START)]
    prog_start = start + S[ci(p, C_OVH_IDLE)] + S[ci(p, C_OVH_BUSY)]
    rem = S[ei(e, F_REM)]
    end = INF if rem >= INF else prog_start + max(rem, 0)
    if S[ei(e, F_FIFO)] == 0:
        if others_runnable(S, p, e):
            end = min(end, max(S[ci(p, C_SLICE_END)], now))
    else:
        rt_left = int(prof[P_RT_RUNTIME_NS]) - S[ci(p, C_RT_USED)]
        end = min(end, start + S[ci(p, C_OVH_IDLE)] + max(rt_left, 0))
    b = budget_left(S, cfg, e)
    if b < INF:
        end = min(end, start + S[ci(p, C_OVH_IDLE)] + max(b, 0))
    S[OFF_EV + EV_CPU0 + p] = max(end, now)


@_jit
def go_idle(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, now: int) -> None:
    """Nothing runnable on p: pull a waiting task from a busy pCPU (newidle balancing), else the idle
    governor picks a C-state for the predicted idle time."""
    best = -1
    best_t = INF
    for o in range(ME):
        if (S[ei(o, F_STATE)] == ST_RUNNABLE and S[ei(o, F_CPU)] != p and (S[ei(o, F_MASK)] >> p) & 1
                and S[ei(o, F_RUNNABLE_T)] < best_t):
            best_t = S[ei(o, F_RUNNABLE_T)]
            best = o
    if best >= 0:
        set_cpu(S, best, p)
        if S[ei(best, F_FIFO)] == 0:
            v = avg_vruntime(S, X, p)
            if v >= 0:
                X[X_VR + best] = v
        S[ci(p, C_CUR)] = -1
        S[ci(p, C_EXIT_LAT)] = 0
        S[ci(p, C_IDLE_T)] = now
        dispatch(S, X, cfg, prof, p, best, now)
        return
    S[ci(p, C_CUR)] = -1
    S[OFF_EV + EV_CPU0 + p] = INF
    S[ci(p, C_IN_IDLE)] = 1
    S[ci(p, C_IDLE_T)] = now
    predicted = X[X_IDLE_AVG + p]
    next_tick = S[OFF_EV + EV_TICK] - now
    if next_tick > 0 and next_tick < predicted:
        predicted = next_tick
    cmax = int(cfg[K_CMAX])
    lat = prof[P_C1_EXIT_NS]
    if cmax >= 1 and predicted >= prof[P_C1E_RESIDENCY_NS]:
        lat = prof[P_C1E_EXIT_NS]
    if cmax >= 2 and predicted >= prof[P_C6_RESIDENCY_NS]:
        lat = prof[P_C6_EXIT_NS]
    S[ci(p, C_EXIT_LAT)] = int(lat)


@_jit
def dispatch(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, e: int, now: int) -> None:
    # C_CUR < 0 does not mean idle here: stop_current clears it right before pick() re-dispatches
    was_idle = S[ci(p, C_IN_IDLE)] != 0
    S[ci(p, C_IN_IDLE)] = 0
    ovh_idle = 0
    if was_idle:
        idle_for = now - S[ci(p, C_IDLE_T)]
        X[OFF_ACC + A_IDLE] += idle_for
        X[OFF_ACC + A_WAKE_LAT] += S[ci(p, C_EXIT_LAT)]
        X[X_IDLE_AVG + p] = 0.75 * X[X_IDLE_AVG + p] + 0.25 * idle_for
        ovh_idle = S[ci(p, C_EXIT_LAT)]
    ovh_busy = 0
    last = S[ci(p, C_LAST)]
    if last != e:
        ovh_busy += int(prof[P_CTX_SWITCH_NS])
        X[OFF_ACC + A_CTX] += 1.0
        if S[ei(e, F_KIND)] == KIND_VCPU and last >= 0:
            ovh_busy += int(prof[P_CACHE_REFILL_NS])
    if S[ei(e, F_ENTRY)] != 0:
        ovh_busy += entry_ns(prof) + int(prof[P_VCPU_WAKE_NS])
        S[ei(e, F_ENTRY)] = 0
    S[ci(p, C_CUR)] = e
    S[ci(p, C_LAST)] = e
    S[ci(p, C_SEG_START)] = now
    S[ci(p, C_OVH_IDLE)] = ovh_idle
    S[ci(p, C_OVH_BUSY)] = ovh_busy
    set_state(S, e, ST_RUNNING)
    set_cpu(S, e, p)
    if S[ei(e, F_FIFO)] == 0:
        w = X[X_W + e]
        slice_ns = cfg[K_SLICE]
        # less than 1 ns of service left counts as reached: after a weight drop (cpu_shares change) an
        # old deadline can sit a fraction of a ns ahead, and a 0-ns slice would re-pick forever
        if (X[X_DL + e] - X[X_VR + e]) * w / 1024.0 < 1.0:
            X[X_DL + e] = X[X_VR + e] + slice_ns * 1024.0 / w
        S[ci(p, C_SLICE_END)] = now + ovh_idle + int((X[X_DL + e] - X[X_VR + e]) * w / 1024.0)
    # a lock holder getting the CPU releases the vCPUs spinning or yielding on it
    if S[ei(e, F_KIND)] == KIND_VCPU:
        for o in range(MV):
            if S[ei(o, F_SPIN_ON)] == e:
                S[ei(o, F_SPIN_ON)] = -1
                hold = int(prof[P_LOCK_HOLD_NS])
                if S[ei(o, F_ACT)] == ACT_SPIN:
                    q = S[ei(o, F_CPU)]
                    if S[ci(q, C_CUR)] == o:
                        charge(S, X, cfg, q, now)
                    S[ei(o, F_REM)] = hold
                    if S[ci(q, C_CUR)] == o:
                        set_seg_end(S, X, cfg, prof, q, now)
    set_seg_end(S, X, cfg, prof, p, now)


@_jit
def pick(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, now: int) -> None:
    """Choose what runs next on p: FIFO first (unless RT-throttled), then EEVDF."""
    if S[ci(p, C_NR)] == 0:
        go_idle(S, X, cfg, prof, p, now)
        return
    best = -1
    if S[ci(p, C_RT_THR)] == 0:
        best_t = INF
        for o in range(ME):
            if (S[ei(o, F_STATE)] == ST_RUNNABLE and S[ei(o, F_CPU)] == p and S[ei(o, F_FIFO)] == 1
                    and S[ei(o, F_RUNNABLE_T)] < best_t):
                best_t = S[ei(o, F_RUNNABLE_T)]
                best = o
    if best < 0:
        v = avg_vruntime(S, X, p)
        best_dl = 1e300
        fallback = -1
        fallback_vr = 1e300
        for o in range(ME):
            if S[ei(o, F_STATE)] == ST_RUNNABLE and S[ei(o, F_CPU)] == p and S[ei(o, F_FIFO)] == 0:
                if X[X_VR + o] <= v + 1e-6 and X[X_DL + o] < best_dl:
                    best_dl = X[X_DL + o]
                    best = o
                if X[X_VR + o] < fallback_vr:
                    fallback_vr = X[X_VR + o]
                    fallback = o
        if best < 0:
            best = fallback
    if best < 0:
        go_idle(S, X, cfg, prof, p, now)
    else:
        dispatch(S, X, cfg, prof, p, best, now)


@_jit
def stop_current(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, p: int, now: int, new_state: int) -> int:
    charge(S, X, cfg, p, now)
    e = S[ci(p, C_CUR)]
    if e >= 0:
        if new_state != ST_RUNNABLE and S[ei(e, F_FIFO)] == 0:
            # keep the lag across the sleep, clamped as the kernel does (2 slices of service)
            limit = 2.0 * cfg[K_SLICE] * 1024.0 / X[X_W + e]
            lag = avg_vruntime(S, X, p) - X[X_VR + e]
            X[X_LAG + e] = min(limit, max(-limit, lag))
        set_state(S, e, new_state)
        if new_state == ST_RUNNABLE:
            S[ei(e, F_RUNNABLE_T)] = now
        S[ci(p, C_CUR)] = -1
    return e


@_jit
def place_cpu(S: np.ndarray, e: int) -> int:
    """Wake-up placement: previous pCPU if idle, else an idle allowed pCPU, else the previous one."""
    mask = S[ei(e, F_MASK)]
    prev = S[ei(e, F_CPU)]
    if prev >= 0 and (mask >> prev) & 1 and S[ci(prev, C_CUR)] < 0:
        return prev
    first = -1
    for q in range(MP):
        if (mask >> q) & 1:
            if first < 0:
                first = q
            if S[ci(q, C_CUR)] < 0:
                return q
    if prev >= 0 and (mask >> prev) & 1:
        return prev
    return first


@_jit
def make_runnable(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, e: int, now: int) -> None:
    p = place_cpu(S, e)
    set_cpu(S, e, p)
    if S[ei(e, F_FIFO)] == 0:
        v = avg_vruntime(S, X, p)
        if v >= 0:
            X[X_VR + e] = v - X[X_LAG + e]  # place_entity with PLACE_LAG
        X[X_LAG + e] = 0.0
        X[X_DL + e] = X[X_VR + e] + cfg[K_SLICE] * 1024.0 / X[X_W + e]
    set_state(S, e, ST_RUNNABLE)
    S[ei(e, F_RUNNABLE_T)] = now
    cur = S[ci(p, C_CUR)]
    if cur < 0:
        dispatch(S, X, cfg, prof, p, e, now)
        return
    if S[ei(cur, F_ACT)] == ACT_HPOLL:
        # KVM stops halt-polling as soon as another task is runnable on this pCPU.
        vcpu_block(S, X, cfg, prof, p, now)
        return
    if S[ei(e, F_FIFO)] == 1 and S[ei(cur, F_FIFO)] == 0 and S[ci(p, C_RT_THR)] == 0:
        stop_current(S, X, cfg, p, now, ST_RUNNABLE)
        dispatch(S, X, cfg, prof, p, e, now)
        return
    if S[ei(cur, F_FIFO)] == 0:
        charge(S, X, cfg, p, now)
        set_seg_end(S, X, cfg, prof, p, now)  # RUN_TO_PARITY: current keeps its slice


@_jit
def vcpu_block(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, now: int) -> None:
    """The running vCPU on p blocks in kvm_vcpu_halt (schedule() out) and p picks what runs next."""
    e = stop_current(S, X, cfg, p, now, ST_SLEEP)
    S[ei(e, F_ACT)] = ACT_NONE
    X[OFF_ACC + A_VM_BUSY] += prof[P_BLOCK_NS]
    X[OFF_ACC + A_VCPU_BUSY] += prof[P_BLOCK_NS]
    pick(S, X, cfg, prof, p, now)


# ================================================================== guest / request path
@_jit
def sample_service(S: np.ndarray, R: np.ndarray, cfg: np.ndarray) -> int:
    mean = cfg[W_SVC_MEAN]
    cv = cfg[W_SVC_CV]
    if cv <= 0.0:
        s = mean
    else:
        sig2 = math.log(1.0 + cv * cv)
        s = math.exp(math.log(mean) - 0.5 * sig2 + math.sqrt(sig2) * rand_normal(R))
    if cfg[W_LONG_FRAC] > 0.0 and rand_u(R) < cfg[W_LONG_FRAC]:
        s *= cfg[W_LONG_MULT]
    return int(s)


@_jit
def neighbours_busy_frac(S: np.ndarray) -> float:
    n = 0
    busy = 0
    for o in range(E_NEIGH0, ME):
        if S[ei(o, F_KIND)] == KIND_NEIGH and S[ei(o, F_MASK)] != 0:
            n += 1
            if S[ei(o, F_STATE)] == ST_RUNNING:
                busy += 1
    return busy / n if n > 0 else 0.0


@_jit
def start_request(S: np.ndarray, X: np.ndarray, R: np.ndarray, cfg: np.ndarray, prof: np.ndarray,
                  e: int, r: int) -> None:
    """vCPU e starts request r: guest rx stack + service (with interference) + tx stack."""
    slow = prof[P_GUEST_SLOWDOWN]
    svc = S[OFF_RSVC + r % QN] * (1.0 + prof[P_LLC_INTERFERENCE] * neighbours_busy_frac(S))
    work = int((prof[P_GUEST_RX_NS] + prof[P_GUEST_TX_NS]) * slow + svc)
    S[ei(e, F_REQ)] = r
    S[ei(e, F_ACT)] = ACT_WORK
    S[ei(e, F_AFTER_REQ)] = 1
    lock_p = cfg[W_LOCK_PROB]
    if lock_p > 0.0 and rand_u(R) < lock_p:
        holder = -1
        for o in range(int(cfg[K_NVCPU])):
            if o != e and S[ei(o, F_STATE)] == ST_RUNNABLE and S[ei(o, F_ACT)] == ACT_WORK:
                holder = o
                break
        ple = int(cfg[K_PLE])
        if holder >= 0:
            # the lock holder is preempted: spin until it runs (PLE off) or for the PLE window
            S[ei(e, F_SPIN_ON)] = holder
            S[ei(e, F_AFTER)] = work
            S[ei(e, F_ACT)] = ACT_SPIN
            S[ei(e, F_REM)] = INF if ple == 0 else ple
            return
        spin = int(rand_exp(R, prof[P_LOCK_SPIN_NS]))
        if ple > 0 and spin > ple:
            work += exit_ns(prof) + int(prof[P_PLE_YIELD_NS])  # a PLE exit that finds no one
            X[OFF_ACC + A_EXITS] += 1.0
        work += spin
    S[ei(e, F_REM)] = work


@_jit
def vcpu_next(S: np.ndarray, X: np.ndarray, T: np.ndarray, R: np.ndarray, cfg: np.ndarray,
              prof: np.ndarray, e: int, p: int, now: int) -> None:
    """vCPU e (running on p) finished its activity: pick its next one, or go idle."""
    if S[ei(e, F_TICKS)] > 0:
        S[ei(e, F_TICKS)] -= 1
        S[ei(e, F_ACT)] = ACT_TICK
        S[ei(e, F_REM)] = int(prof[P_TICK_NS])
        set_seg_end(S, X, cfg, prof, p, now)
        return
    if S[I_GQ_HEAD] < S[I_GQ_TAIL]:
        r = S[OFF_GQ + S[I_GQ_HEAD] % QN]
        S[I_GQ_HEAD] += 1
        start_request(S, X, R, cfg, prof, e, r)
        set_seg_end(S, X, cfg, prof, p, now)
        return
    after_req = S[ei(e, F_AFTER_REQ)]
    S[ei(e, F_AFTER_REQ)] = 0
    if after_req == 1 and cfg[K_BUSYPOLL] > 0:
        S[ei(e, F_ACT)] = ACT_BPOLL
        S[ei(e, F_REM)] = int(cfg[K_BUSYPOLL])
        set_seg_end(S, X, cfg, prof, p, now)
        return
    if S[ei(e, F_ACT)] != ACT_GPOLL:
        S[ei(e, F_IDLE_T)] = now
    if cfg[K_GHPOLL] > 0 and S[ei(e, F_ACT)] != ACT_GPOLL and S[ei(e, F_GPWIN)] > 0:
        S[ei(e, F_ACT)] = ACT_GPOLL
        S[ei(e, F_REM)] = S[ei(e, F_GPWIN)]
        set_seg_end(S, X, cfg, prof, p, now)
        return
    # HLT: exit to the host
    X[OFF_ACC + A_EXITS] += 1.0
    X[OFF_ACC + A_VM_BUSY] += exit_ns(prof)
    X[OFF_ACC + A_VCPU_BUSY] += exit_ns(prof)
    S[ei(e, F_HALT_T)] = now
    trace(S, T, now, TR_HALT, e, S[ei(e, F_HPWIN)])
    host_poll = prof[P_KVM] > 0 and cfg[K_HPOLL] > 0 and cfg[K_GHPOLL] == 0
    if host_poll and S[ei(e, F_HPWIN)] > 0 and not others_runnable(S, p, e):
        S[ei(e, F_ACT)] = ACT_HPOLL
        S[ei(e, F_REM)] = S[ei(e, F_HPWIN)]
        set_seg_end(S, X, cfg, prof, p, now)
        return
    vcpu_block(S, X, cfg, prof, p, now)


@_jit
def hpoll_cap(cfg: np.ndarray, prof: np.ndarray) -> int:
    return int(cfg[K_HPOLL]) if prof[P_KVM] > 0 and cfg[K_GHPOLL] == 0 else 0


@_jit
def update_host_window(S: np.ndarray, T: np.ndarray, cfg: np.ndarray, prof: np.ndarray, e: int, now: int) -> None:
    cap = hpoll_cap(cfg, prof)
    if cap <= 0:
        S[ei(e, F_HPWIN)] = 0
        return
    if prof[P_HALT_POLL_ADAPTIVE] == 0:
        S[ei(e, F_HPWIN)] = cap
        return
    block = now - S[ei(e, F_HALT_T)]
    w = adapt_window(S[ei(e, F_HPWIN)], block, cap, prof[P_HALT_POLL_GROW],
                     prof[P_HALT_POLL_GROW_START], prof[P_HALT_POLL_SHRINK])
    S[ei(e, F_HPWIN)] = w
    trace(S, T, now, TR_HPOLL_WINDOW, e, w)


@_jit
def update_guest_window(S: np.ndarray, cfg: np.ndarray, prof: np.ndarray, e: int, now: int) -> None:
    if cfg[K_GHPOLL] == 0:
        return
    block = now - S[ei(e, F_IDLE_T)]
    S[ei(e, F_GPWIN)] = adapt_window(S[ei(e, F_GPWIN)], block, int(prof[P_GUEST_POLL_MAX_NS]),
                                     prof[P_GUEST_POLL_GROW], prof[P_GUEST_POLL_GROW_START],
                                     prof[P_GUEST_POLL_SHRINK])


@_jit
def notify_vcpu(S: np.ndarray, X: np.ndarray, T: np.ndarray, R: np.ndarray, cfg: np.ndarray,
                prof: np.ndarray, now: int, tick: bool, target: int) -> None:
    """An interrupt (packet or timer tick) for the guest. For a packet target < 0 picks a vCPU."""
    nv = int(cfg[K_NVCPU])
    if not tick:
        # 1. a vCPU polling on its pCPU finds the packet at once
        for e in range(nv):
            if S[ei(e, F_STATE)] == ST_RUNNING and S[ei(e, F_ACT)] in (ACT_BPOLL, ACT_GPOLL, ACT_HPOLL):
                target = e
                break
        # 2. else wake a halted vCPU (round robin), so that idle vCPUs serve in parallel
        if target < 0:
            S[I_RR] = (S[I_RR] + 1) % nv
            for k in range(nv):
                e = (S[I_RR] + k) % nv
                if S[ei(e, F_STATE)] == ST_SLEEP and S[ei(e, F_SPIN_ON)] < 0 and S[ei(e, F_ACT)] == ACT_NONE:
                    target = e
                    break
        # 3. else every vCPU is busy or waiting for a pCPU: the request waits in the guest queue
        if target < 0:
            for e in range(nv):
                st = S[ei(e, F_STATE)]
                act = S[ei(e, F_ACT)]
                if st != ST_RUNNING and act in (ACT_BPOLL, ACT_GPOLL):
                    if act == ACT_GPOLL:
                        update_guest_window(S, cfg, prof, e, now)
                    S[ei(e, F_ACT)] = ACT_RESUME  # sees the queue as soon as it runs again
                    S[ei(e, F_REM)] = 0
            if prof[P_POSTED_INTERRUPTS] == 0:
                for e in range(nv):
                    if S[ei(e, F_STATE)] == ST_RUNNING:
                        # IPI -> exit -> inject on a busy vCPU
                        p = S[ei(e, F_CPU)]
                        charge(S, X, cfg, p, now)
                        S[ci(p, C_OVH_BUSY)] += exit_ns(prof)
                        X[OFF_ACC + A_EXITS] += 1.0
                        set_seg_end(S, X, cfg, prof, p, now)
                        break
            return
    e = target
    st = S[ei(e, F_STATE)]
    act = S[ei(e, F_ACT)]
    if tick:
        S[ei(e, F_TICKS)] += 1
    if st == ST_RUNNING and act in (ACT_BPOLL, ACT_GPOLL, ACT_HPOLL):
        p = S[ei(e, F_CPU)]
        charge(S, X, cfg, p, now)
        if act == ACT_HPOLL:
            update_host_window(S, T, cfg, prof, e, now)
            S[ci(p, C_OVH_BUSY)] += int(prof[P_HALT_POLL_DETECT_NS]) + entry_ns(prof)
        else:
            if act == ACT_GPOLL:
                update_guest_window(S, cfg, prof, e, now)
            S[ci(p, C_OVH_BUSY)] += int(prof[P_GUEST_POLL_DETECT_NS])
        S[ei(e, F_ACT)] = ACT_RESUME
        vcpu_next(S, X, T, R, cfg, prof, e, p, now)  # the poll noticed the interrupt: go on at once
        return
    if st == ST_SLEEP and S[ei(e, F_SPIN_ON)] < 0:
        trace(S, T, now, TR_WAKE, e, 0)
        update_host_window(S, T, cfg, prof, e, now)
        update_guest_window(S, cfg, prof, e, now)
        S[ei(e, F_ACT)] = ACT_RESUME
        S[ei(e, F_REM)] = 0
        S[ei(e, F_ENTRY)] = 1
        make_runnable(S, X, cfg, prof, e, now)
    elif tick and st == ST_RUNNING and act == ACT_WORK:
        p = S[ei(e, F_CPU)]
        S[ei(e, F_TICKS)] -= 1
        charge(S, X, cfg, p, now)
        S[ei(e, F_REM)] += int(prof[P_TICK_NS])
        set_seg_end(S, X, cfg, prof, p, now)


@_jit
def guest_enqueue(S: np.ndarray, X: np.ndarray, T: np.ndarray, R: np.ndarray, cfg: np.ndarray,
                  prof: np.ndarray, r: int, now: int) -> None:
    S[OFF_GQ + S[I_GQ_TAIL] % QN] = r
    S[I_GQ_TAIL] += 1
    notify_vcpu(S, X, T, R, cfg, prof, now, False, -1)


@_jit
def complete(S: np.ndarray, X: np.ndarray, H: np.ndarray, T: np.ndarray, cfg: np.ndarray, r: int, now: int) -> None:
    lat = now - S[OFF_RT0 + r % QN] + int(cfg[W_CLIENT_RTT])
    H[bucket_of(float(lat))] += 1
    X[OFF_ACC + A_DONE] += 1.0
    X[OFF_ACC + A_LAT_SUM] += lat
    if lat > cfg[W_SLO]:
        X[OFF_ACC + A_VIOL] += 1.0
    S[I_INFLIGHT] -= 1
    trace(S, T, now, TR_DONE, r, lat)
    if cfg[W_CLOSED] > 0:
        S[OFF_EV + EV_ARR] = now + int(cfg[W_CLIENT_RTT] + cfg[W_THINK])


@_jit
def delay_push(S: np.ndarray, t: int, item: int) -> None:
    S[OFF_DLT + S[I_DL_TAIL] % QN] = t
    S[OFF_DLI + S[I_DL_TAIL] % QN] = item
    S[I_DL_TAIL] += 1
    if S[I_DL_TAIL] - S[I_DL_HEAD] == 1:
        S[OFF_EV + EV_DELAY] = t


@_jit
def backend_push(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, item: int, now: int) -> None:
    """Hand a packet to the host data path of the configured virtio backend."""
    mode = int(cfg[K_BACKEND])
    if mode == BACKEND_PMD:
        cost = prof[P_PMD_RX_NS] if item >= 0 else prof[P_PMD_TX_NS]
        t = max(S[I_PMD_FREE], now + int(prof[P_GUEST_POLL_DETECT_NS])) + int(cost)
        S[I_PMD_FREE] = t
        delay_push(S, t, item)
        return
    if mode == BACKEND_SRIOV:
        delay_push(S, now + int(prof[P_SRIOV_NS]), item)
        return
    S[OFF_BQ + S[I_BQ_TAIL] % QN] = item
    S[I_BQ_TAIL] += 1
    if S[ei(E_BACKEND, F_STATE)] == ST_SLEEP:
        backend_next_item(S, cfg, prof)
        make_runnable(S, X, cfg, prof, E_BACKEND, now)


@_jit
def backend_next_item(S: np.ndarray, cfg: np.ndarray, prof: np.ndarray) -> bool:
    """The backend thread takes the next packet of its queue; False when the queue is empty."""
    e = E_BACKEND
    if S[I_BQ_HEAD] >= S[I_BQ_TAIL]:
        S[ei(e, F_ACT)] = ACT_NONE
        return False
    item = S[OFF_BQ + S[I_BQ_HEAD] % QN]
    S[I_BQ_HEAD] += 1
    S[ei(e, F_REQ)] = item
    S[ei(e, F_ACT)] = ACT_WORK
    S[ei(e, F_REM)] = backend_item_cost(cfg, prof, item)
    return True


@_jit
def backend_item_cost(cfg: np.ndarray, prof: np.ndarray, item: int) -> int:
    irq = prof[P_NIC_IRQ_NS] if item >= 0 else 0.0  # the host NIC irq + softirq that woke us
    if int(cfg[K_BACKEND]) == BACKEND_USERSPACE:
        return int(irq + (prof[P_USERSPACE_RX_NS] if item >= 0 else prof[P_USERSPACE_TX_NS]))
    return int(irq + (prof[P_VHOST_RX_NS] if item >= 0 else prof[P_VHOST_TX_NS]))


@_jit
def nic_deliver(S: np.ndarray, X: np.ndarray, T: np.ndarray, R: np.ndarray, cfg: np.ndarray,
                prof: np.ndarray, now: int) -> None:
    """The NIC raises its (possibly coalesced) interrupt for all pending packets."""
    head = S[I_NIC_HEAD]
    tail = S[I_NEXT_ID]
    if head >= tail:
        return
    mode = int(cfg[K_BACKEND])
    if mode == BACKEND_USERSPACE or mode == BACKEND_VHOST:
        X[OFF_ACC + A_VM_BUSY] += prof[P_NIC_IRQ_NS]  # host irq + softirq on behalf of the VM
    for r in range(head, tail):
        backend_push(S, X, cfg, prof, r, now)
    S[I_NIC_HEAD] = tail


# ================================================================== activity completion
@_jit
def on_cpu_event(S: np.ndarray, X: np.ndarray, H: np.ndarray, T: np.ndarray, R: np.ndarray,
                 cfg: np.ndarray, prof: np.ndarray, p: int, now: int) -> None:
    e = S[ci(p, C_CUR)]
    charge(S, X, cfg, p, now)
    # CFS bandwidth: out of quota -> throttled until the next period
    if budget_left(S, cfg, e) <= 0:
        stop_current(S, X, cfg, p, now, ST_THROTTLED)
        S[ei(e, F_RUNNABLE_T)] = now
        pick(S, X, cfg, prof, p, now)
        return
    if S[ei(e, F_FIFO)] == 1 and S[ci(p, C_RT_USED)] >= int(prof[P_RT_RUNTIME_NS]):
        S[ci(p, C_RT_THR)] = 1
        stop_current(S, X, cfg, p, now, ST_RUNNABLE)
        pick(S, X, cfg, prof, p, now)
        return
    rem = S[ei(e, F_REM)]
    busy_left = S[ci(p, C_OVH_IDLE)] + S[ci(p, C_OVH_BUSY)]
    if rem > 0 or busy_left > 0:
        # slice expired: re-pick (EEVDF), current goes back to the queue
        if S[ei(e, F_FIFO)] == 0 and others_runnable(S, p, e):
            if (X[X_DL + e] - X[X_VR + e]) * X[X_W + e] / 1024.0 < 1.0:  # see dispatch
                X[X_DL + e] = X[X_VR + e] + cfg[K_SLICE] * 1024.0 / X[X_W + e]
            stop_current(S, X, cfg, p, now, ST_RUNNABLE)
            pick(S, X, cfg, prof, p, now)
            if S[ei(e, F_STATE)] == ST_RUNNABLE:
                q = place_cpu(S, e)
                if q != p and S[ci(q, C_CUR)] < 0:
                    # an idle pCPU pulls the preempted task (idle/nohz balancing)
                    set_state(S, e, ST_SLEEP)
                    X[X_LAG + e] = 0.0
                    make_runnable(S, X, cfg, prof, e, now)
        else:
            if S[ei(e, F_FIFO)] == 0:
                X[X_DL + e] = X[X_VR + e] + cfg[K_SLICE] * 1024.0 / X[X_W + e]
                S[ci(p, C_SLICE_END)] = now + int(cfg[K_SLICE])
            set_seg_end(S, X, cfg, prof, p, now)
        return
    kind = S[ei(e, F_KIND)]
    if kind == KIND_NEIGH:
        if e - E_NEIGH0 < S[I_HK]:
            X[OFF_ACC + A_NEIGH_ON] += now - S[ei(e, F_HALT_T)]
            X[OFF_ACC + A_NEIGH_WORK] += S[ei(e, F_AFTER)]
        stop_current(S, X, cfg, p, now, ST_SLEEP)
        schedule_neighbour(S, R, cfg, prof, e, now)
        pick(S, X, cfg, prof, p, now)
        return
    if kind == KIND_BACKEND:
        item = S[ei(e, F_REQ)]
        if item >= 0:
            guest_enqueue(S, X, T, R, cfg, prof, item, now)
        else:
            complete(S, X, H, T, cfg, -item - 1, now)
        if backend_next_item(S, cfg, prof):
            set_seg_end(S, X, cfg, prof, p, now)
        else:
            stop_current(S, X, cfg, p, now, ST_SLEEP)
            pick(S, X, cfg, prof, p, now)
        return
    # vCPU
    act = S[ei(e, F_ACT)]
    if act == ACT_WORK:
        r = S[ei(e, F_REQ)]
        mode = int(cfg[K_BACKEND])
        if mode == BACKEND_USERSPACE or mode == BACKEND_VHOST:
            # transmit kick: an ioeventfd exit
            S[ei(e, F_ACT)] = ACT_KICK
            S[ei(e, F_REM)] = exit_ns(prof)
            X[OFF_ACC + A_EXITS] += 1.0
            trace(S, T, now, TR_EXIT_BEGIN, e, r)
            set_seg_end(S, X, cfg, prof, p, now)
            return
        backend_push(S, X, cfg, prof, -r - 1, now)
        vcpu_next(S, X, T, R, cfg, prof, e, p, now)
        return
    if act == ACT_KICK:
        trace(S, T, now, TR_EXIT_END, e, S[ei(e, F_REQ)])
        backend_push(S, X, cfg, prof, -S[ei(e, F_REQ)] - 1, now)
        vcpu_next(S, X, T, R, cfg, prof, e, p, now)
        return
    if act == ACT_SPIN:
        holder = S[ei(e, F_SPIN_ON)]
        if holder >= 0:
            # PLE window expired with the holder still preempted: exit, and kvm_vcpu_on_spin yields
            # to the holder (yield_to), which runs next on its pCPU; we spin on until it has run.
            X[OFF_ACC + A_EXITS] += 1.0
            S[ci(p, C_OVH_BUSY)] += exit_ns(prof) + int(prof[P_PLE_YIELD_NS])
            S[ei(e, F_REM)] = INF
            set_seg_end(S, X, cfg, prof, p, now)
            q = S[ei(holder, F_CPU)]
            if S[ei(holder, F_STATE)] == ST_RUNNABLE and q >= 0:
                cur = S[ci(q, C_CUR)]
                if cur < 0:
                    dispatch(S, X, cfg, prof, q, holder, now)
                elif S[ei(cur, F_FIFO)] == 0:
                    stop_current(S, X, cfg, q, now, ST_RUNNABLE)
                    dispatch(S, X, cfg, prof, q, holder, now)
            return
        S[ei(e, F_ACT)] = ACT_WORK
        S[ei(e, F_REM)] = S[ei(e, F_AFTER)]
        S[ei(e, F_AFTER)] = 0
        set_seg_end(S, X, cfg, prof, p, now)
        return
    if act == ACT_HPOLL:
        # window ran out without a wake-up: block
        vcpu_block(S, X, cfg, prof, p, now)
        return
    # TICK, RESUME, BPOLL or GPOLL ended
    vcpu_next(S, X, T, R, cfg, prof, e, p, now)


@_jit
def schedule_neighbour(S: np.ndarray, R: np.ndarray, cfg: np.ndarray, prof: np.ndarray, e: int, now: int) -> None:
    """A neighbour's next runnable period: CPU bursts with think times giving its demand."""
    j = e - E_NEIGH0
    if S[ei(e, F_MASK)] == 0:
        S[OFF_EV + EV_ENT0 + e] = INF
        return
    d = cfg[W_ND0 + j] if j < S[I_HK] else prof[P_HOUSEKEEPING_LOAD]
    if d <= 0.0:
        S[OFF_EV + EV_ENT0 + e] = now + int(prof[P_NEIGHBOUR_BURST_NS])  # re-check later
        S[ei(e, F_REM)] = -1
        return
    burst = prof[P_NEIGHBOUR_BURST_NS] if j < S[I_HK] else prof[P_HOUSEKEEPING_BURST_NS]
    off = 0.0 if d >= 1.0 else rand_exp(R, burst * (1.0 - d) / d)
    S[OFF_EV + EV_ENT0 + e] = now + int(off)
    S[ei(e, F_REM)] = int(rand_exp(R, burst)) + 1
    S[ei(e, F_AFTER)] = S[ei(e, F_REM)]  # the burst's CPU work, for the slowdown measure


# ================================================================== main loop
@_jit
def next_arrival_gap(S: np.ndarray, R: np.ndarray, cfg: np.ndarray) -> int:
    rate = cfg[W_RATE]
    if S[I_MMPP_HIGH] == 1:
        rate *= cfg[W_MMPP_MULT]
    if rate <= 0:
        return INF
    return int(rand_exp(R, 1e9 / rate)) + 1


@_jit
def run_until(S: np.ndarray, X: np.ndarray, H: np.ndarray, T: np.ndarray, R: np.ndarray,
              cfg: np.ndarray, prof: np.ndarray, t_end: int) -> int:
    """Advance one env to t_end. Returns the number of events processed."""
    n_events = 0
    ev = S[OFF_EV:OFF_EV + NEV]
    while True:
        k = 0
        t = ev[0]
        for i in range(1, NEV):
            if ev[i] < t:
                t = ev[i]
                k = i
        if t >= t_end:
            break
        if n_events >= MAX_EVENTS_PER_RUN:
            S[I_LIVELOCK] = t  # reported by the caller as an error, never a silent hang
            break
        now = t
        S[I_NOW] = now
        n_events += 1
        if k == EV_ARR:
            if cfg[W_CLOSED] > 0:
                ev[EV_ARR] = INF
            else:
                ev[EV_ARR] = now + next_arrival_gap(S, R, cfg)
            X[OFF_ACC + A_ARRIVALS] += 1.0
            if S[I_INFLIGHT] >= QN - 8:
                X[OFF_ACC + A_ERRORS] += 1.0  # overload: the request is dropped and counted
                X[OFF_ACC + A_VIOL] += 1.0
                continue
            r = S[I_NEXT_ID]
            S[OFF_RT0 + r % QN] = now
            S[OFF_RSVC + r % QN] = sample_service(S, R, cfg)
            S[I_NEXT_ID] = r + 1
            S[I_INFLIGHT] += 1
            if S[I_OUTAGE_END] > now:
                continue  # held at the NIC until the guest is back
            mode = int(cfg[K_BACKEND])
            rx = int(cfg[K_RXUS])
            if mode == BACKEND_PMD:
                nic_deliver(S, X, T, R, cfg, prof, now)  # the PMD polls the NIC ring
            elif rx <= 0:
                nic_deliver(S, X, T, R, cfg, prof, now)
            elif ev[EV_NIC] >= INF:
                ev[EV_NIC] = now + rx
        elif k == EV_NIC:
            ev[EV_NIC] = INF
            nic_deliver(S, X, T, R, cfg, prof, now)
        elif k == EV_DELAY:
            h = S[I_DL_HEAD]
            item = S[OFF_DLI + h % QN]
            S[I_DL_HEAD] = h + 1
            ev[EV_DELAY] = S[OFF_DLT + (h + 1) % QN] if h + 1 < S[I_DL_TAIL] else INF
            if item >= 0:
                guest_enqueue(S, X, T, R, cfg, prof, item, now)
            else:
                complete(S, X, H, T, cfg, -item - 1, now)
        elif k == EV_TICK:
            ev[EV_TICK] = now + int(1e9 / prof[P_TICK_HZ])
            for e in range(int(cfg[K_NVCPU])):
                notify_vcpu(S, X, T, R, cfg, prof, now, True, e)
        elif k == EV_PERIOD:
            ev[EV_PERIOD] = now + int(cfg[K_PERIOD])
            for b in range(NB):
                S[OFF_BUCKET + b] = 0
            for e in range(ME):
                if S[ei(e, F_STATE)] == ST_THROTTLED:
                    X[OFF_ACC + A_THROTTLED] += (now - S[ei(e, F_RUNNABLE_T)]) if S[ei(e, F_KIND)] == KIND_VCPU else 0
                    set_state(S, e, ST_SLEEP)
                    make_runnable(S, X, cfg, prof, e, now)
            for p in range(MP):
                if S[ci(p, C_CUR)] >= 0:
                    charge(S, X, cfg, p, now)
                    set_seg_end(S, X, cfg, prof, p, now)
        elif k == EV_RT:
            ev[EV_RT] = now + int(prof[P_RT_PERIOD_NS])
            for p in range(MP):
                S[ci(p, C_RT_USED)] = 0
                if S[ci(p, C_RT_THR)] == 1:
                    S[ci(p, C_RT_THR)] = 0
                    cur = S[ci(p, C_CUR)]
                    for o in range(ME):
                        if S[ei(o, F_STATE)] == ST_RUNNABLE and S[ei(o, F_CPU)] == p and S[ei(o, F_FIFO)] == 1:
                            if cur >= 0:
                                stop_current(S, X, cfg, p, now, ST_RUNNABLE)
                            pick(S, X, cfg, prof, p, now)
                            break
                    if S[ci(p, C_CUR)] < 0:
                        pick(S, X, cfg, prof, p, now)
                elif S[ci(p, C_CUR)] >= 0:
                    charge(S, X, cfg, p, now)
                    set_seg_end(S, X, cfg, prof, p, now)
        elif k == EV_OUTAGE:
            ev[EV_OUTAGE] = INF
            nic_deliver(S, X, T, R, cfg, prof, now)
        elif k == EV_MMPP:
            S[I_MMPP_HIGH] = 1 - S[I_MMPP_HIGH]
            mean = cfg[W_MMPP_ON] if S[I_MMPP_HIGH] == 1 else cfg[W_MMPP_OFF]
            ev[EV_MMPP] = now + int(rand_exp(R, mean)) + 1 if cfg[W_MMPP_MULT] != 1.0 else INF
            if cfg[W_CLOSED] == 0:
                ev[EV_ARR] = now + next_arrival_gap(S, R, cfg)
        elif k < EV_ENT0:
            on_cpu_event(S, X, H, T, R, cfg, prof, k - EV_CPU0, now)
        else:
            e = k - EV_ENT0
            ev[k] = INF
            if S[ei(e, F_KIND)] == KIND_NEIGH:
                if S[ei(e, F_REM)] < 0:
                    schedule_neighbour(S, R, cfg, prof, e, now)
                else:
                    if S[ei(e, F_STATE)] == ST_SLEEP:
                        S[ei(e, F_HALT_T)] = now  # burst start, for the slowdown measure
                    make_runnable(S, X, cfg, prof, e, now)
            elif S[ei(e, F_STATE)] == ST_SLEEP:
                if S[ei(e, F_KIND)] == KIND_VCPU:
                    S[ei(e, F_ENTRY)] = 1
                make_runnable(S, X, cfg, prof, e, now)
    S[I_NOW] = t_end
    return n_events


@_jit
def run_batch(S: np.ndarray, X: np.ndarray, H: np.ndarray, T: np.ndarray, R: np.ndarray,
              cfg: np.ndarray, prof: np.ndarray, t_end: np.ndarray) -> int:
    n = 0
    for i in range(S.shape[0]):
        n += run_until(S[i], X[i], H[i], T[i], R[i], cfg[i], prof[i], t_end[i])
    return n


# ================================================================== layout (knob changes)
@_jit
def layout(S: np.ndarray, X: np.ndarray, R: np.ndarray, cfg: np.ndarray, prof: np.ndarray, now: int,
           fresh: bool) -> None:
    """(Re)build entities, placement and weights from the knobs; called at reset and on apply."""
    npc = int(prof[P_N_PCPU])
    hk = npc  # housekeeping pCPU index
    nv = int(cfg[K_NVCPU])
    if fresh:
        S[:] = 0
        X[:] = 0.0
        for i in range(NEV):
            S[OFF_EV + i] = INF
        for p in range(MP):
            S[ci(p, C_CUR)] = -1
            S[ci(p, C_LAST)] = -1
            S[ci(p, C_IDLE_T)] = now
            S[ci(p, C_IN_IDLE)] = 1
            X[X_IDLE_AVG + p] = 1e6
        for e in range(ME):
            set_cpu(S, e, -1)
            S[ei(e, F_SPIN_ON)] = -1
        S[OFF_EV + EV_TICK] = now + int(rand_u(R) * 1e9 / prof[P_TICK_HZ])
        S[OFF_EV + EV_PERIOD] = now + int(rand_u(R) * cfg[K_PERIOD])
        S[OFF_EV + EV_RT] = now + int(rand_u(R) * prof[P_RT_PERIOD_NS])
        if cfg[W_CLOSED] > 0:
            S[OFF_EV + EV_ARR] = now + 1
        else:
            S[OFF_EV + EV_ARR] = now + next_arrival_gap(S, R, cfg)
        if cfg[W_MMPP_MULT] != 1.0:
            S[OFF_EV + EV_MMPP] = now + int(rand_exp(R, cfg[W_MMPP_OFF]))
    S[I_HK] = hk
    shared_mask = (1 << npc) - 1
    dedicated = cfg[K_PIN] > 0
    vcpu_mask = 0
    for e in range(MV):
        kind = KIND_VCPU if e < nv else KIND_NONE
        S[ei(e, F_KIND)] = kind
        if kind == KIND_NONE:
            S[ei(e, F_MASK)] = 0
            continue
        S[ei(e, F_MASK)] = (1 << (e % npc)) if dedicated else shared_mask
        vcpu_mask |= S[ei(e, F_MASK)]
        S[ei(e, F_FIFO)] = 1 if cfg[K_FIFO] > 0 else 0
        X[X_W + e] = cfg[K_SHARES]
        if fresh:
            S[ei(e, F_HPWIN)] = 0
            S[ei(e, F_GPWIN)] = int(prof[P_GUEST_POLL_GROW_START])
    if dedicated:
        neigh_mask = shared_mask & ~vcpu_mask
        if neigh_mask == 0:
            neigh_mask = 1 << hk
    else:
        neigh_mask = shared_mask
    mode = int(cfg[K_BACKEND])
    S[ei(E_BACKEND, F_KIND)] = KIND_BACKEND
    S[ei(E_BACKEND, F_MASK)] = (1 << hk) if cfg[K_EMU_HK] > 0 else vcpu_mask
    if mode == BACKEND_PMD or mode == BACKEND_SRIOV:
        S[ei(E_BACKEND, F_MASK)] = 0  # no host thread on the data path
    X[X_W + E_BACKEND] = cfg[K_SHARES]
    for j in range(MP):
        e = E_NEIGH0 + j
        if j < npc:
            S[ei(e, F_KIND)] = KIND_NEIGH
            own = 1 << j
            S[ei(e, F_MASK)] = own if (own & neigh_mask) else neigh_mask
        elif j == hk:
            S[ei(e, F_KIND)] = KIND_NEIGH
            S[ei(e, F_MASK)] = 1 << hk
        else:
            S[ei(e, F_KIND)] = KIND_NONE
            S[ei(e, F_MASK)] = 0
        X[X_W + e] = 1024.0
        if fresh and S[ei(e, F_KIND)] == KIND_NEIGH:
            set_cpu(S, e, j if j < npc and ((1 << j) & S[ei(e, F_MASK)]) else -1)
            schedule_neighbour(S, R, cfg, prof, e, now)
            S[OFF_EV + EV_ENT0 + e] = now + (S[OFF_EV + EV_ENT0 + e] - now) % int(prof[P_NEIGHBOUR_BURST_NS])
    # entities now outside their allowed set migrate at their next wake-up; running ones are moved now
    for p in range(MP):
        cur = S[ci(p, C_CUR)]
        if cur >= 0 and not (S[ei(cur, F_MASK)] >> p) & 1:
            stop_current(S, X, cfg, p, now, ST_SLEEP)
            pick(S, X, cfg, prof, p, now)
            S[OFF_EV + EV_ENT0 + cur] = now
            if S[ei(cur, F_KIND)] == KIND_VCPU:
                S[ei(cur, F_ENTRY)] = 1
    for e in range(ME):
        if S[ei(e, F_STATE)] == ST_RUNNABLE and not (S[ei(e, F_MASK)] >> S[ei(e, F_CPU)]) & 1:
            set_state(S, e, ST_SLEEP)
            S[OFF_EV + EV_ENT0 + e] = now
    if fresh:
        for e in range(nv):
            # vCPUs start halted, waiting for work
            set_state(S, e, ST_SLEEP)
            S[ei(e, F_HALT_T)] = now
            S[ei(e, F_IDLE_T)] = now
            set_cpu(S, e, e % npc)
        set_state(S, E_BACKEND, ST_SLEEP)


def new_state(n_envs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Preallocated state for n_envs environments: S, X, H (histograms), T (traces), R (RNG)."""
    return (
        np.zeros((n_envs, NS), dtype=np.int64),
        np.zeros((n_envs, NX), dtype=np.float64),
        np.zeros((n_envs, N_BUCKETS), dtype=np.int64),
        np.zeros((n_envs, TRACE_N, 4), dtype=np.int64),
        np.zeros((n_envs, 2), dtype=np.uint64),
    )
