"""CPU placement through libvirt: vCPU pinning (virDomainPinVcpuFlags) and emulator-thread pinning
(virDomainPinEmulator). Both change the affinity of QEMU's threads and the cpuset cgroup libvirt keeps
for them; both are live-only changes (VIR_DOMAIN_AFFECT_LIVE), so the persistent definition stays as
the operator wrote it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from vvho_env.live.drivers.base import HostContext, KnobDriver, Raw, Topology, cpuset
from vvho_env.types import KnobValue, Settings


def _needs_spare_pcpu(topo: Topology) -> str | None:
    if topo.n_pcpu > topo.n_vcpu:
        return None
    return (f"'dedicated' needs one pCPU per vCPU plus one for the rest; the host has {topo.n_pcpu} pCPUs "
            f"for {topo.n_vcpu} vCPUs")


def vcpu_sets(ctx: HostContext) -> list[tuple[int, ...]]:
    return [cpuset(m) for m in ctx.link.call("reading vcpupin", lambda d: d.vcpuPinInfo())]


def housekeeping_for(topo: Topology, vsets: list[tuple[int, ...]]) -> tuple[int, ...]:
    """pCPUs no vCPU may run on (where the emulator and the probe go), else the housekeeping set."""
    used = set().union(*map(set, vsets))
    return tuple(c for c in topo.all_cpus if c not in used) or topo.housekeeping_cpus


class VcpuPinDriver(KnobDriver):
    name = "vcpupin"
    how: ClassVar[Mapping[str, str]] = {
        "vcpu_pinning": "virDomainPinVcpuFlags (virsh vcpupin): vCPU v on its own pCPU, or all pCPUs"}
    needs = "a domain with fewer vCPUs than the host has pCPUs"

    def unavailable(self, ctx: HostContext) -> str | None:
        return _needs_spare_pcpu(ctx.topology)

    def read(self, ctx: HostContext) -> Settings:
        sets = vcpu_sets(ctx)
        ded = all(s == (c,) for s, c in zip(sets, ctx.topology.dedicated_cpus, strict=True))
        return {"vcpu_pinning": "dedicated" if ded else "shared"}

    @staticmethod
    def _pin(ctx: HostContext, vcpu: int, mask: tuple[bool, ...], what: str) -> None:
        ctx.link.call(what, lambda d: d.pinVcpuFlags(vcpu, mask, ctx.live_flag))

    def write(self, ctx: HostContext, knob: str, value: KnobValue) -> None:
        topo = ctx.topology
        for v in range(topo.n_vcpu):
            cpus = (topo.dedicated_cpus[v],) if value == "dedicated" else topo.all_cpus
            self._pin(ctx, v, topo.mask(cpus), "setting vcpupin")

    def save(self, ctx: HostContext) -> Raw:
        return {"cpumaps": [list(m) for m in ctx.link.call("reading vcpupin", lambda d: d.vcpuPinInfo())]}

    def restore(self, ctx: HostContext, raw: Raw) -> None:
        for v, m in enumerate(raw["cpumaps"]):
            self._pin(ctx, v, tuple(bool(x) for x in m), "restoring vcpupin")


class EmulatorPinDriver(KnobDriver):
    name = "emulatorpin"
    how: ClassVar[Mapping[str, str]] = {
        "emulator_placement": "virDomainPinEmulator (virsh emulatorpin): the pCPUs no vCPU uses, or the vCPUs' pCPUs"}
    needs = "a domain with fewer vCPUs than the host has pCPUs"

    def unavailable(self, ctx: HostContext) -> str | None:
        return _needs_spare_pcpu(ctx.topology)

    def read(self, ctx: HostContext) -> Settings:
        vsets = vcpu_sets(ctx)
        emu = cpuset(ctx.link.call("reading emulatorpin", lambda d: d.emulatorPinInfo()))
        apart = emu == housekeeping_for(ctx.topology, vsets) and set(emu) != set().union(*map(set, vsets))
        return {"emulator_placement": "housekeeping" if apart else "with_vcpus"}

    def write(self, ctx: HostContext, knob: str, value: KnobValue) -> None:
        vsets = vcpu_sets(ctx)
        cpus = (housekeeping_for(ctx.topology, vsets) if value == "housekeeping"
                else tuple(sorted(set().union(*map(set, vsets)))))
        mask = ctx.topology.mask(cpus)
        ctx.link.call("setting emulatorpin", lambda d: d.pinEmulator(mask, ctx.live_flag))

    def save(self, ctx: HostContext) -> Raw:
        return {"cpumap": list(ctx.link.call("reading emulatorpin", lambda d: d.emulatorPinInfo()))}

    def restore(self, ctx: HostContext, raw: Raw) -> None:
        mask = tuple(bool(x) for x in raw["cpumap"])
        ctx.link.call("restoring emulatorpin", lambda d: d.pinEmulator(mask, ctx.live_flag))
