"""The knob drivers of the live backend, one per mechanism, and what they tell the knob registry.

`setters()` is the libvirt backend's entry of each knob's "how it is set" text: `vvho knobs` shows it,
taken from the drivers themselves so that it cannot drift from the code that sets the knob.
"""

from __future__ import annotations

from vvho_env.live.drivers.bandwidth import BandwidthDriver
from vvho_env.live.drivers.base import HostContext, KnobDriver, Topology
from vvho_env.live.drivers.guest_sysctl import GuestSysctlDriver
from vvho_env.live.drivers.halt_poll import HaltPollDriver
from vvho_env.live.drivers.pinning import EmulatorPinDriver, VcpuPinDriver
from vvho_env.live.drivers.sched_policy import FifoDriver

BACKEND = "libvirt"

__all__ = ["BACKEND", "HostContext", "KnobDriver", "Topology", "all_drivers", "setters"]


def all_drivers() -> list[KnobDriver]:
    """A fresh set of drivers (some hold per-backend state, e.g. the FIFO lease)."""
    return [VcpuPinDriver(), EmulatorPinDriver(), BandwidthDriver(), FifoDriver(), HaltPollDriver(),
            GuestSysctlDriver()]


def setters() -> dict[str, str]:
    """knob -> how the libvirt backend sets it, from the drivers."""
    return {knob: how for d in all_drivers() for knob, how in d.how.items()}
