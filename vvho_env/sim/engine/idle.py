"""Idle states: a menu-like governor picks the deepest allowed C-state whose target residency fits the
predicted idle time; the wake-up pays that state's exit latency (drivers/idle/intel_idle.c tables)."""

from __future__ import annotations

import numpy as np

from vvho_env.sim.engine.jit import jit_inline
from vvho_env.sim.engine.layout import (
    EV_CPU0,
    INF,
    OFF_ACC,
    OFF_EV,
    X_IDLE_AVG,
    Acc,
    Cfg,
    Cpu,
    Ev,
    KnobWriter,
    Prof,
    ci,
)

_CSTATE_INDEX = {"C1": 0, "C1E": 1, "C6": 2}

KNOB_WRITERS: dict[str, KnobWriter] = {
    "idle_state": (Cfg.CMAX, lambda v, _: float(_CSTATE_INDEX[str(v)])),
}


@jit_inline
def enter_idle(S: np.ndarray, X: np.ndarray, cfg: np.ndarray, prof: np.ndarray, p: int, now: int) -> None:
    """Nothing runs on p: the governor picks a C-state for the predicted idle time (the running average
    of past idle periods, cut at the next guest tick)."""
    S[ci(p, Cpu.CUR)] = -1
    S[OFF_EV + EV_CPU0 + p] = INF
    S[ci(p, Cpu.IN_IDLE)] = 1
    S[ci(p, Cpu.IDLE_T)] = now
    predicted = X[X_IDLE_AVG + p]
    next_tick = S[OFF_EV + Ev.TICK] - now
    if next_tick > 0 and next_tick < predicted:
        predicted = next_tick
    cmax = int(cfg[Cfg.CMAX])
    lat = prof[Prof.C1_EXIT_NS]
    if cmax >= 1 and predicted >= prof[Prof.C1E_RESIDENCY_NS]:
        lat = prof[Prof.C1E_EXIT_NS]
    if cmax >= 2 and predicted >= prof[Prof.C6_RESIDENCY_NS]:
        lat = prof[Prof.C6_EXIT_NS]
    S[ci(p, Cpu.EXIT_LAT)] = int(lat)


@jit_inline
def exit_idle(S: np.ndarray, X: np.ndarray, p: int, now: int) -> int:
    """p leaves idle (if it was): account the idle period, update the prediction; returns the exit
    latency the next segment starts with (0 when p was not idle)."""
    was_idle = S[ci(p, Cpu.IN_IDLE)] != 0
    S[ci(p, Cpu.IN_IDLE)] = 0
    ovh_idle = 0
    if was_idle:
        idle_for = now - S[ci(p, Cpu.IDLE_T)]
        X[OFF_ACC + Acc.IDLE] += idle_for
        X[OFF_ACC + Acc.WAKE_LAT] += S[ci(p, Cpu.EXIT_LAT)]
        X[X_IDLE_AVG + p] = 0.75 * X[X_IDLE_AVG + p] + 0.25 * idle_for
        ovh_idle = S[ci(p, Cpu.EXIT_LAT)]
    return ovh_idle
