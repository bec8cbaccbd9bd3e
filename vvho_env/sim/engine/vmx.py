"""The cost of a VM exit and entry, from the host profile's cycle counts."""

from __future__ import annotations

import numpy as np

from vvho_env.sim.engine.jit import jit
from vvho_env.sim.engine.layout import Prof


@jit
def exit_ns(prof: np.ndarray) -> int:
    """A full exit + handler + re-entry."""
    cyc = prof[Prof.EXIT_HW_CYCLES] + prof[Prof.EXIT_HANDLER_CYCLES] + prof[Prof.ENTRY_HW_CYCLES]
    return int(cyc / prof[Prof.CPU_GHZ])


@jit
def entry_ns(prof: np.ndarray) -> int:
    """A VM entry alone (a blocked vCPU resuming)."""
    return int(prof[Prof.ENTRY_HW_CYCLES] / prof[Prof.CPU_GHZ])
