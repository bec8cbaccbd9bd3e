"""The FIFO class for vCPU threads under RT throttling (sched(7), sched-rt-group.rst).

FIFO tasks run before any fair task on their pCPU, first come first served; once a pCPU's FIFO tasks
used sched_rt_runtime_us in the current RT period they are throttled until the period ends
(the event loop refills at Ev.RT), and fair tasks run in the meantime.
"""

from __future__ import annotations

import numpy as np

from vvho_env.sim.engine.jit import jit_inline
from vvho_env.sim.engine.layout import INF, ME, Cfg, Cpu, Ent, KnobWriter, Prof, St, ci, ei

KNOB_WRITERS: dict[str, KnobWriter] = {
    "vcpu_sched_policy": (Cfg.FIFO, lambda v, _: 1.0 if v == "fifo" else 0.0),
}


@jit_inline
def pick_rt(S: np.ndarray, p: int) -> int:
    """The FIFO entity waiting longest on p, -1 when none waits or p is RT-throttled."""
    best = -1
    if S[ci(p, Cpu.RT_THR)] == 0:
        best_t = INF
        for o in range(ME):
            if (S[ei(o, Ent.STATE)] == St.RUNNABLE and S[ei(o, Ent.CPU)] == p and S[ei(o, Ent.FIFO)] == 1
                    and S[ei(o, Ent.RUNNABLE_T)] < best_t):
                best_t = S[ei(o, Ent.RUNNABLE_T)]
                best = o
    return best


@jit_inline
def rt_exhausted(S: np.ndarray, prof: np.ndarray, p: int, e: int) -> bool:
    """Whether FIFO entity e running on p has used up p's RT runtime of this period."""
    return S[ei(e, Ent.FIFO)] == 1 and S[ci(p, Cpu.RT_USED)] >= int(prof[Prof.RT_RUNTIME_NS])


@jit_inline
def fifo_waiting(S: np.ndarray, p: int) -> bool:
    """Whether a FIFO entity waits on p."""
    for o in range(ME):
        if S[ei(o, Ent.STATE)] == St.RUNNABLE and S[ei(o, Ent.CPU)] == p and S[ei(o, Ent.FIFO)] == 1:
            return True
    return False
