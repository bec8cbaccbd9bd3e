"""CPU bandwidth and weight through libvirt's scheduler parameters (virDomainSetSchedulerParametersFlags):
per-vCPU, emulator and whole-VM CFS quotas, their period, and cpu_shares. libvirt writes them to the
cpu cgroups of the domain (cpu.cfs_quota_us / cpu.cfs_period_us / cpu.shares on cgroup v1, cpu.max /
cpu.weight on v2).

cgroup v1 rejects (EINVAL) a limited quota/period ratio above its parent's (kernel/sched/core.c,
tg_cfs_schedulable_down), and whether an intermediate state passes depends on the order. So every change
of a quota or period goes the one way that always passes for a valid target: lift every limited quota,
set the periods, then impose the limited quotas children before the parent.
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
        self.write_many(ctx, {knob: value})

    def write_many(self, ctx: HostContext, settings: Mapping[str, KnobValue]) -> None:
        now = self._params(ctx)
        target = dict(now)
        for knob, value in settings.items():
            target.update({k: int(value) for k in SCHED_KEYS[knob]})
        self._converge(ctx, target, now, "setting")

    def save(self, ctx: HostContext) -> Raw:
        return {"params": {k: v for k, v in self._params(ctx).items() if not k.startswith("iothread")}}

    def restore(self, ctx: HostContext, raw: Raw) -> None:
        self._converge(ctx, {k: int(v) for k, v in raw["params"].items()}, self._params(ctx), "restoring")

    def _converge(self, ctx: HostContext, target: dict[str, int], now: dict[str, int], verb: str) -> None:
        def same(k: str) -> bool:
            a, b = now.get(k), target[k]
            return a == b or (k.endswith("_quota") and a is not None and unlimited(a) and unlimited(b))

        bandwidth = [k for k in (*QUOTA_CHILDREN_FIRST, *PERIODS) if k in target]
        if not all(same(k) for k in bandwidth):
            for q in QUOTA_CHILDREN_FIRST:
                if q in now and not unlimited(now[q]):
                    self._set(ctx, {q: -1}, f"lifting {q} before the periods change")
            periods = {p: target[p] for p in PERIODS if p in target and target[p] != now.get(p)}
            if periods:
                self._set(ctx, periods, f"{verb} the CFS periods")
            for q in QUOTA_CHILDREN_FIRST:
                if q in target and not unlimited(target[q]):
                    self._set(ctx, {q: target[q]}, f"{verb} {q}")
        if "cpu_shares" in target and not same("cpu_shares"):
            self._set(ctx, {"cpu_shares": target["cpu_shares"]}, f"{verb} cpu_shares")
