"""What the host is asked to do: the latency VM's requests (open-loop Poisson with MMPP bursts, or a
closed-loop client; lognormal service with a long tail) and the neighbours' CPU bursts."""

from __future__ import annotations

import math

import numpy as np

from vvho_env.scenarios import Phase, Scenario
from vvho_env.sim.engine.jit import jit, jit_inline
from vvho_env.sim.engine.layout import (
    CFG_ND0,
    E_NEIGH0,
    EV_ENT0,
    INF,
    LOCK_KINDS,
    MP,
    OFF_ACC,
    OFF_EV,
    OFF_RSVC,
    OFF_RT0,
    QN,
    Acc,
    Cfg,
    Ent,
    Ev,
    Prof,
    Scalar,
    St,
    ei,
)
from vvho_env.sim.engine.network import nic_receive
from vvho_env.sim.engine.rng import rand_exp, rand_normal, rand_u
from vvho_env.sim.engine.scheduler import make_runnable, pick, stop_current


def write_phase(cfg: np.ndarray, sc: Scenario, ph: Phase, frac: float) -> None:
    """The scenario and its current phase (frac of the way through it) -> cfg's workload slots."""
    cfg[Cfg.RATE] = ph.rate_at(frac)
    cfg[Cfg.MMPP_MULT] = ph.mmpp_mult
    cfg[Cfg.MMPP_ON] = ph.mmpp_on_ms * 1e6
    cfg[Cfg.MMPP_OFF] = ph.mmpp_off_ms * 1e6
    cfg[Cfg.SVC_MEAN] = ph.service_mean_us * 1000.0
    cfg[Cfg.SVC_CV] = ph.service_cv
    cfg[Cfg.LONG_FRAC] = ph.long_frac
    cfg[Cfg.LONG_MULT] = ph.long_mult
    cfg[Cfg.LOCK_PROB] = ph.lock_prob
    cfg[Cfg.CLOSED] = 1.0 if sc.closed_loop else 0.0
    cfg[Cfg.THINK] = sc.think_us * 1000.0
    cfg[Cfg.CLIENT_RTT] = sc.client_rtt_us * 1000.0
    cfg[Cfg.SLO] = sc.slo_us * 1000.0
    cfg[Cfg.LOCK_KIND] = float(LOCK_KINDS.index(sc.guest_spinlock))
    nd = ph.neighbour_demand
    for j in range(MP):
        cfg[CFG_ND0 + j] = nd[j % len(nd)]


@jit
def next_arrival_gap(S: np.ndarray, R: np.ndarray, cfg: np.ndarray) -> int:
    """ns to the next open-loop arrival at the current (MMPP-modulated) rate; INF at rate 0."""
    rate = cfg[Cfg.RATE]
    if S[Scalar.MMPP_HIGH] == 1:
        rate *= cfg[Cfg.MMPP_MULT]
    if rate <= 0:
        return INF
    return int(rand_exp(R, 1e9 / rate)) + 1


@jit
def sample_service(S: np.ndarray, R: np.ndarray, cfg: np.ndarray) -> int:
    """A request's service work in ns: lognormal with the phase's mean and CV, times the long-request
    multiplier for a long_frac share."""
    mean = cfg[Cfg.SVC_MEAN]
    cv = cfg[Cfg.SVC_CV]
    if cv <= 0.0:
        s = mean
    else:
        sig2 = math.log(1.0 + cv * cv)
        s = math.exp(math.log(mean) - 0.5 * sig2 + math.sqrt(sig2) * rand_normal(R))
    if cfg[Cfg.LONG_FRAC] > 0.0 and rand_u(R) < cfg[Cfg.LONG_FRAC]:
        s *= cfg[Cfg.LONG_MULT]
    return int(s)


@jit_inline
def arrive(S: np.ndarray, X: np.ndarray, R: np.ndarray, cfg: np.ndarray, prof: np.ndarray, now: int) -> None:
    """A request arrives at the host NIC (dropped and counted when the in-flight ring is full; held at the
    NIC during a guest outage)."""
    if cfg[Cfg.CLOSED] > 0:
        S[OFF_EV + Ev.ARR] = INF
    else:
        S[OFF_EV + Ev.ARR] = now + next_arrival_gap(S, R, cfg)
    X[OFF_ACC + Acc.ARRIVALS] += 1.0
    if S[Scalar.INFLIGHT] >= QN - 8:
        X[OFF_ACC + Acc.ERRORS] += 1.0  # overload: the request is dropped and counted
        X[OFF_ACC + Acc.VIOL] += 1.0
        return
    r = S[Scalar.NEXT_ID]
    S[OFF_RT0 + r % QN] = now
    S[OFF_RSVC + r % QN] = sample_service(S, R, cfg)
    S[Scalar.NEXT_ID] = r + 1
    S[Scalar.INFLIGHT] += 1
    if S[Scalar.OUTAGE_END] > now:
        return  # held at the NIC until the guest is back
    nic_receive(S, X, cfg, prof, now)


@jit_inline
def mmpp_switch(S: np.ndarray, R: np.ndarray, cfg: np.ndarray, now: int) -> None:
    """The MMPP flips between its low and high state; the next arrival is redrawn at the new rate."""
    S[Scalar.MMPP_HIGH] = 1 - S[Scalar.MMPP_HIGH]
    mean = cfg[Cfg.MMPP_ON] if S[Scalar.MMPP_HIGH] == 1 else cfg[Cfg.MMPP_OFF]
    S[OFF_EV + Ev.MMPP] = now + int(rand_exp(R, mean)) + 1 if cfg[Cfg.MMPP_MULT] != 1.0 else INF
    if cfg[Cfg.CLOSED] == 0:
        S[OFF_EV + Ev.ARR] = now + next_arrival_gap(S, R, cfg)


@jit
def schedule_neighbour(S: np.ndarray, R: np.ndarray, cfg: np.ndarray, prof: np.ndarray, e: int, now: int) -> None:
    """A neighbour's next runnable period: CPU bursts with think times giving its demand."""
    j = e - E_NEIGH0
    if S[ei(e, Ent.MASK)] == 0:
        S[OFF_EV + EV_ENT0 + e] = INF
        return
    d = cfg[CFG_ND0 + j] if j < S[Scalar.HK] else prof[Prof.HOUSEKEEPING_LOAD]
    if d <= 0.0:
        S[OFF_EV + EV_ENT0 + e] = now + int(prof[Prof.NEIGHBOUR_BURST_NS])  # re-check later
        S[ei(e, Ent.REM)] = -1
        return
    burst = prof[Prof.NEIGHBOUR_BURST_NS] if j < S[Scalar.HK] else prof[Prof.HOUSEKEEPING_BURST_NS]
    off = 0.0 if d >= 1.0 else rand_exp(R, burst * (1.0 - d) / d)
    S[OFF_EV + EV_ENT0 + e] = now + int(off)
    S[ei(e, Ent.REM)] = int(rand_exp(R, burst)) + 1
    S[ei(e, Ent.AFTER)] = S[ei(e, Ent.REM)]  # the burst's CPU work, for the slowdown measure


@jit_inline
def neighbour_event(S: np.ndarray, X: np.ndarray, R: np.ndarray, cfg: np.ndarray, prof: np.ndarray, e: int,
                    now: int) -> None:
    """Neighbour e's think time ended: its burst becomes runnable (or its demand is checked again)."""
    if S[ei(e, Ent.REM)] < 0:
        schedule_neighbour(S, R, cfg, prof, e, now)
    else:
        if S[ei(e, Ent.STATE)] == St.SLEEP:
            S[ei(e, Ent.HALT_T)] = now  # burst start, for the slowdown measure
        make_runnable(S, X, cfg, prof, e, now)


@jit_inline
def neighbour_done(S: np.ndarray, X: np.ndarray, R: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, e: int,
                   now: int) -> None:
    """Neighbour e finished its burst on p: its slowdown is measured, it thinks, p picks what runs next."""
    if e - E_NEIGH0 < S[Scalar.HK]:
        X[OFF_ACC + Acc.NEIGH_ON] += now - S[ei(e, Ent.HALT_T)]
        X[OFF_ACC + Acc.NEIGH_WORK] += S[ei(e, Ent.AFTER)]
    stop_current(S, X, cfg, prof, p, now, St.SLEEP)
    schedule_neighbour(S, R, cfg, prof, e, now)
    pick(S, X, cfg, prof, p, now)
