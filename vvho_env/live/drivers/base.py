"""What every knob driver of the live backend implements, and the host context it works in.

A driver owns one mechanism (a libvirt call family, a sysfs file, a guest control line) and the knobs
it sets through it. It reads their current values, writes one knob, says whether this host allows it
(and if not, why), and saves / restores the exact raw state it may change, as JSON, so that a
persisted snapshot can put a host back after a crash. Ordering across drivers and rollback live in
the transaction (vvho_env.live.transaction), not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vvho_env.live.connection import LibvirtLink
from vvho_env.live.guest import GuestControl
from vvho_env.live.instance import InstanceGone, QemuInstance
from vvho_env.types import KnobValue, Settings

Raw = dict[str, Any]  # a driver's saved state: JSON-serialisable


@dataclass(frozen=True)
class Topology:
    """pCPUs of the host and how the backend uses them: vCPU v's dedicated pCPU, the housekeeping rest."""

    n_pcpu: int
    n_vcpu: int

    @property
    def all_cpus(self) -> tuple[int, ...]:
        return tuple(range(self.n_pcpu))

    @property
    def dedicated_cpus(self) -> tuple[int, ...]:
        return tuple(self.n_pcpu - 1 - i for i in range(self.n_vcpu))

    @property
    def housekeeping_cpus(self) -> tuple[int, ...]:
        return tuple(c for c in self.all_cpus if c not in self.dedicated_cpus) or (0,)

    def mask(self, cpus: tuple[int, ...] | set[int]) -> tuple[bool, ...]:
        return tuple(i in cpus for i in range(self.n_pcpu))


def cpuset(mask: tuple[bool, ...] | list[bool]) -> tuple[int, ...]:
    return tuple(i for i, on in enumerate(mask) if on)


@dataclass
class HostContext:
    """The handles a driver acts through. `instance` is None for a remote URI; it is replaced when the
    domain restarts. Drivers add what the operator should know to `notes`."""

    link: LibvirtLink
    topology: Topology
    local: bool
    domain_type: str  # "qemu" (TCG) or "kvm"
    guest: GuestControl | None  # None: the probe target is a plain echo (no guest-side knobs)
    instance: QemuInstance | None = None
    fifo_rt_share: float = 0.5
    fifo_lease_s: float = 30.0
    notes: list[str] = field(default_factory=list)

    @property
    def live_flag(self) -> int:
        return int(self.link.lv.VIR_DOMAIN_AFFECT_LIVE)

    def require_instance(self) -> QemuInstance:
        if self.instance is None:
            raise InstanceGone("no local QEMU instance known for this domain")
        return self.instance


class KnobDriver:
    """Base of the drivers: subclasses set the class attributes and implement read/write/save/restore."""

    name: str  # the mechanism, e.g. "vcpupin"
    how: ClassVar[Mapping[str, str]]  # knob -> how this driver sets it (the setter text `vvho knobs` shows)
    needs: str  # what the host must provide

    @property
    def knobs(self) -> tuple[str, ...]:
        return tuple(self.how)

    def unavailable(self, ctx: HostContext) -> str | None:
        """None if this host allows the driver's knobs, else why not."""
        return None

    def settable(self, ctx: HostContext) -> set[str]:
        """The driver's knobs this host lets it set."""
        return set(self.knobs) if self.unavailable(ctx) is None else set()

    def read(self, ctx: HostContext) -> Settings:
        raise NotImplementedError

    def write(self, ctx: HostContext, knob: str, value: KnobValue) -> None:
        raise NotImplementedError

    def write_many(self, ctx: HostContext, settings: Mapping[str, KnobValue]) -> None:
        """Set several of this driver's knobs; drivers whose knobs constrain each other order them here."""
        for knob, value in settings.items():
            self.write(ctx, knob, value)

    def save(self, ctx: HostContext) -> Raw:
        raise NotImplementedError

    def restore(self, ctx: HostContext, raw: Raw) -> None:
        """Put back a state save() returned (possibly by another process, before a crash)."""
        raise NotImplementedError

    def renew(self, ctx: HostContext) -> None:
        """Called around every measurement window (leases); most drivers hold nothing to renew."""

    def forget_instance(self) -> None:
        """The domain restarted: drop what belonged to the old QEMU process."""
