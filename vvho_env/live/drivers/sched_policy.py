"""The scheduling class of the vCPU threads (sched_setscheduler on the thread ids of QEMU's vCPUs).

SCHED_FIFO is granted only while the kernel's RT limit is in force (sched_rt_runtime_us >= 0), with RT
runtime granted down the domain's cgroups where RT group scheduling needs it, and only under a lease
held by a watchdog process (vvho_env.live.lease): if this process dies or stops renewing, the watchdog
puts SCHED_OTHER and the RT runtime back. libvirt's own equivalent is the domain XML's
cputune/vcpusched, which needs a restart; this is the live path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from vvho_env.live import hostctl
from vvho_env.live.drivers.base import HostContext, KnobDriver, Raw
from vvho_env.live.lease import Lease
from vvho_env.types import ApplyRejected, KnobValue, Settings

FIFO_PRIORITY = 1


def _set_policy(tid: int, policy: int) -> None:
    os.sched_setscheduler(tid, policy, os.sched_param(FIFO_PRIORITY if policy == os.SCHED_FIFO else 0))


class FifoDriver(KnobDriver):
    name = "sched_setscheduler"
    how: ClassVar[Mapping[str, str]] = {
        "vcpu_sched_policy": "sched_setscheduler(2) on the vCPU thread ids, SCHED_FIFO under an RT limit and a "
                             "watchdog lease"}
    needs = "a local domain, root, and the kernel's RT limit in force (sched_rt_runtime_us >= 0)"

    def __init__(self) -> None:
        self.lease: Lease | None = None
        self.budget: hostctl.RtBudget | None = None

    def unavailable(self, ctx: HostContext) -> str | None:
        if not ctx.local:
            return "needs the domain on this host (a local URI)"
        if os.geteuid() != 0:
            return "needs root to change the scheduling class of QEMU's threads"
        if ctx.instance is None or not ctx.instance.vcpu_tids:
            return "the vCPU thread ids of the domain's QEMU process were not found"
        if not hostctl.rt_limit_in_force():
            return ("sched_rt_runtime_us = -1 (no RT limit): a spinning FIFO vCPU could hang the host; "
                    "set /proc/sys/kernel/sched_rt_runtime_us to 950000")
        return None

    def read(self, ctx: HostContext) -> Settings:
        pols = {os.sched_getscheduler(t) for t in ctx.require_instance().vcpu_tids}
        return {"vcpu_sched_policy": "fifo" if pols == {os.SCHED_FIFO} else "other"}

    def write(self, ctx: HostContext, knob: str, value: KnobValue) -> None:
        inst = ctx.require_instance()
        if value != "fifo":
            for t in inst.vcpu_tids:
                _set_policy(t, os.SCHED_OTHER)
            self._end()
            return
        reason = self.unavailable(ctx)
        if reason:
            raise ApplyRejected(f"knob 'vcpu_sched_policy': refusing SCHED_FIFO: {reason}")
        groups = inst.vcpu_cgroups()
        if self.budget is None and groups and (groups[0] / "cpu.rt_runtime_us").is_file():
            self.budget = hostctl.RtBudget.grant(groups, ctx.fifo_rt_share)
        if self.lease is None:
            try:  # the lease first: from here on a crash cannot leave FIFO behind
                self.lease = Lease(list(inst.vcpu_tids), self.budget.before if self.budget else {},
                                   ctx.fifo_lease_s)
            except OSError:
                self._end()
                raise
        for t in inst.vcpu_tids:
            _set_policy(t, os.SCHED_FIFO)

    def _end(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None
        if self.budget is not None:
            self.budget.restore()
            self.budget = None

    def save(self, ctx: HostContext) -> Raw:
        inst = ctx.require_instance()
        return {"policies": [os.sched_getscheduler(t) for t in inst.vcpu_tids],
                "rt_runtime": hostctl.read_rt_runtime(hostctl.rt_chain(inst.vcpu_cgroups()))}

    def restore(self, ctx: HostContext, raw: Raw) -> None:
        inst = ctx.require_instance()
        for t, pol in zip(inst.vcpu_tids, raw["policies"], strict=False):
            _set_policy(t, int(pol))
        if self.lease is not None:
            self.lease.release()
            self.lease = None
        self.budget = None
        for path, value in sorted(raw["rt_runtime"].items(), key=lambda kv: -len(Path(kv[0]).parts)):
            target = Path(path) / "cpu.rt_runtime_us"
            if target.is_file():  # the cgroups of an instance that has since restarted are gone
                target.write_text(str(value))

    def renew(self, ctx: HostContext) -> None:
        if self.lease is None:
            return
        if self.lease.active():
            self.lease.renew()
            return
        ctx.notes.append(f"RT lease watchdog reverted vcpu_sched_policy to 'other': {self.lease.fired}")
        self.lease = None
        self.budget = None  # the watchdog put the RT runtime back

    def forget_instance(self) -> None:
        self._end()
