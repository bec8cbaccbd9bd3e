"""CPU bandwidth and weight through libvirt's scheduler parameters (virDomainSetSchedulerParametersFlags):
per-vCPU, emulator and whole-VM CFS quotas, their period, and cpu_shares. libvirt writes them to the
cpu cgroups of the domain (cpu.cfs_quota_us / cpu.cfs_period_us / cpu.shares on cgroup v1, cpu.max /
cpu.weight on v2).

cgroup v1 rejects (EINVAL) a limited quota/period ratio above its parent's, so a raw restore lifts
every quota first, then sets the periods, then imposes limited quotas children before the parent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from vvho_env.live.drivers.base import HostContext, KnobDriver, Raw
from vvho_env.types import KnobValue, Settings

SCHED_KEYS = {
    "vcpu_quota": ("vcpu_quota",),
    "emulator_quota": ("emulator_quota",),
    "global_quota": ("global_quota",),
    "cpu_shares": ("cpu_shares",),
    "vcpu_period": ("vcpu_period", "emulator_period", "global_period"),
}
QUOTA_CHILDREN_FIRST = ("vcpu_quota", "emulator_quota", "global_quota")  # global_* is the parent cgroup
PERIODS = ("vcpu_period", "emulator_period", "global_period")
LIBVIRT_MAX_QUOTA = 17592186044415  # what libvirt shows for an unlimited quota after a cgroup round trip


def unlimited(value: int) -> bool:
    return value <= 0 or value >= LIBVIRT_MAX_QUOTA  # libvirt reports either


class BandwidthDriver(KnobDriver):
    name = "schedinfo"
    how: ClassVar[Mapping[str, str]] = {
        "vcpu_quota": "virDomainSetSchedulerParametersFlags vcpu_quota (cgroup cpu.cfs_quota_us / cpu.max "
                      "of each vCPU)",
        "vcpu_period": "virDomainSetSchedulerParametersFlags vcpu_period, emulator_period, global_period",
        "emulator_quota": "virDomainSetSchedulerParametersFlags emulator_quota (the emulator cgroup)",
        "global_quota": "virDomainSetSchedulerParametersFlags global_quota (the VM's cgroup)",
        "cpu_shares": "virDomainSetSchedulerParametersFlags cpu_shares (cgroup cpu.shares / cpu.weight)",
    }
    needs = "libvirt scheduler parameters backed by the cgroup cpu controller"

    def _params(self, ctx: HostContext) -> dict[str, int]:
        return {k: int(v) for k, v in ctx.link.call("reading schedinfo", lambda d: d.schedulerParameters()).items()}

    def settable(self, ctx: HostContext) -> set[str]:
        params = self._params(ctx)
        return {k for k, keys in SCHED_KEYS.items() if all(p in params for p in keys)}

    def unavailable(self, ctx: HostContext) -> str | None:
        return None if self.settable(ctx) else "libvirt reports no CFS bandwidth parameters for this domain"

    def read(self, ctx: HostContext) -> Settings:
        params = self._params(ctx)
        out: Settings = {}
        for knob, keys in SCHED_KEYS.items():
            if all(p in params for p in keys):
                value = params[keys[0]]
                out[knob] = -1 if knob.endswith("_quota") and unlimited(value) else value
        return out

    def _set(self, ctx: HostContext, params: dict[str, int], what: str) -> None:
        ctx.link.call(what, lambda d: d.setSchedulerParametersFlags(params, ctx.live_flag))

    def write(self, ctx: HostContext, knob: str, value: KnobValue) -> None:
        raw = int(value)
        self._set(ctx, {k: raw for k in SCHED_KEYS[knob]}, f"setting {knob}")

    def save(self, ctx: HostContext) -> Raw:
        return {"params": {k: v for k, v in self._params(ctx).items() if not k.startswith("iothread")}}

    def restore(self, ctx: HostContext, raw: Raw) -> None:
        target: dict[str, int] = {k: int(v) for k, v in raw["params"].items()}
        now = self._params(ctx)
        for q in QUOTA_CHILDREN_FIRST:
            if q in now and not unlimited(now[q]):
                self._set(ctx, {q: -1}, f"lifting {q} before restoring the periods")
        periods = {p: target[p] for p in PERIODS if p in target and target[p] != now.get(p)}
        if periods:
            self._set(ctx, periods, "restoring the CFS periods")
        for q in QUOTA_CHILDREN_FIRST:
            if q in target and not unlimited(target[q]):
                self._set(ctx, {q: target[q]}, f"restoring {q}")
        if "cpu_shares" in target and target["cpu_shares"] != now.get("cpu_shares"):
            self._set(ctx, {"cpu_shares": target["cpu_shares"]}, "restoring cpu_shares")
