"""The request-level discrete-event model of one latency VM on a shared host (numba-compiled).

Time is int64 nanoseconds; each environment's state lives in flat arrays (``layout``), so that N
environments are rows of 2-D arrays and env k gives identical results alone and batched. Physical
constants come from a host-profile array ``prof``, the knob settings and current scenario phase from
``cfg``; both are runtime arrays.

What a request pays, in order (each a mechanism driven by the knobs, no penalty terms):
  NIC (rx coalescing timer) -> backend (QEMU userspace thread / vhost-net thread / vhost-user PMD /
  SR-IOV DMA) -> interrupt to the guest (posted, or an exit; or found by a polling vCPU) -> vCPU
  wake-up (host halt-poll hit, or block/wake through the host scheduler + C-state exit) -> guest
  service (cache refill after others ran on the core, LLC interference from neighbours, spinlock
  waits with pause-loop exiting) -> FCFS on the VM's vCPUs -> transmit kick (exit) -> backend tx.

One module per mechanism: ``scheduler`` (the core: pick, dispatch, wake-up, block), ``fair`` (EEVDF),
``rt`` (FIFO, RT throttling), ``bandwidth`` (CFS quota), ``idle`` (C-states, governor), ``polling``
(busy poll, guest haltpoll, host halt-polling), ``spinlock`` (guest locks, PLE window), ``ple`` (pause-loop
exits, directed yield, paravirtual halt and kick), ``network`` (virtio
backends, coalescing), ``guest``, ``workload`` (arrivals, neighbours), ``topology`` (entities and
placement), ``accounting`` (telemetry accumulators, trace) and ``loop`` (the event loop). Each module
that a knob drives declares in ``KNOB_WRITERS`` how the knob is written into ``cfg``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType

import numpy as np

from vvho_env.knobs import KnobValue
from vvho_env.sim.engine import bandwidth, fair, idle, network, ple, polling, rt, topology
from vvho_env.sim.engine.layout import KnobWriter, new_state
from vvho_env.sim.engine.loop import run_batch
from vvho_env.sim.engine.rng import seed_rng
from vvho_env.sim.engine.topology import configure
from vvho_env.sim.engine.workload import write_phase
from vvho_env.sim.profiles import HostProfile

KNOB_MODULES: tuple[ModuleType, ...] = (bandwidth, fair, idle, network, ple, polling, rt, topology)


def _gather(modules: tuple[ModuleType, ...]) -> dict[str, KnobWriter]:
    writers: dict[str, KnobWriter] = {}
    for m in modules:
        for name, writer in m.KNOB_WRITERS.items():
            if name in writers:
                raise ValueError(f"knob {name!r} has two writers in the engine: {m.__name__} and another module")
            writers[name] = writer
    return writers


KNOB_WRITERS: dict[str, KnobWriter] = _gather(KNOB_MODULES)


def write_knobs(cfg: np.ndarray, settings: Mapping[str, KnobValue], profile: HostProfile) -> None:
    """Knob settings -> the engine's cfg vector (ns, indices), each knob by its mechanism's writer."""
    for name, (slot, convert) in KNOB_WRITERS.items():
        cfg[slot] = convert(settings[name], profile)


__all__ = ["KNOB_MODULES", "KNOB_WRITERS", "configure", "new_state", "run_batch", "seed_rng",
           "write_knobs", "write_phase"]
