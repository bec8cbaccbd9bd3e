"""KVM's halt-polling cap, host-wide, through /sys/module/kvm/parameters/halt_poll_ns.

Only where KVM runs the domain (domain type 'kvm'): under TCG there is no halt-polling to tune.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import ClassVar

from vvho_env.live import hostctl
from vvho_env.live.drivers.base import HostContext, KnobDriver, Raw
from vvho_env.types import KnobValue, Settings


class HaltPollDriver(KnobDriver):
    name = "halt_poll_ns"
    how: ClassVar[Mapping[str, str]] = {
        "halt_poll_ns": "sysfs /sys/module/kvm/parameters/halt_poll_ns (host-wide, KVM domains only)"}
    needs = "a local KVM domain and a writable /sys/module/kvm/parameters/halt_poll_ns"

    def unavailable(self, ctx: HostContext) -> str | None:
        if not ctx.local:
            return "needs the domain on this host (a local URI)"
        if ctx.domain_type != "kvm":
            return f"the domain runs under {ctx.domain_type!r}, not KVM: no halt-polling"
        if not os.access(hostctl.HALT_POLL, os.W_OK):
            return f"{hostctl.HALT_POLL} is not writable (KVM not loaded, or not root)"
        return None

    def read(self, ctx: HostContext) -> Settings:
        return {"halt_poll_ns": int(hostctl.HALT_POLL.read_text())}

    def write(self, ctx: HostContext, knob: str, value: KnobValue) -> None:
        hostctl.HALT_POLL.write_text(str(int(value)))

    def save(self, ctx: HostContext) -> Raw:
        return {"halt_poll_ns": int(hostctl.HALT_POLL.read_text())}

    def restore(self, ctx: HostContext, raw: Raw) -> None:
        hostctl.HALT_POLL.write_text(str(int(raw["halt_poll_ns"])))
