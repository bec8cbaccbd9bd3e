"""Guest-side sysctls (net.core.busy_poll) through the project's guest service's control lines.

Only when the probe target is the project's service (vvho_service.c): a plain echo service has no
control channel, so these knobs are not settable there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar, TypeVar

from vvho_env.live.drivers.base import HostContext, KnobDriver, Raw
from vvho_env.live.guest import GuestControl
from vvho_env.types import BackendUnavailable, KnobValue, Settings

T = TypeVar("T")

GUEST_SYSCTLS = {"busy_poll_us": "busy_poll"}


class GuestSysctlDriver(KnobDriver):
    name = "guest-control"
    how: ClassVar[Mapping[str, str]] = {
        "busy_poll_us": "the guest service's control line '!set busy_poll N' (/proc/sys/net/core/busy_poll)"}
    needs = "the project's guest service as the probe target (its control lines)"

    def _ask(self, ctx: HostContext, fn: Callable[[GuestControl], T]) -> T:
        """A control exchange; a guest that does not answer is a fault of the host (BackendUnavailable),
        an 'err' reply a refusal (ValueError, the transaction's ApplyRejected)."""
        if ctx.guest is None:
            raise ValueError("the probe target is a plain echo service: no guest control channel")
        try:
            return fn(ctx.guest)
        except OSError as exc:
            host, port = ctx.guest.addr
            raise BackendUnavailable(f"the guest service at {host}:{port} does not answer control lines: "
                                     f"{exc}") from None

    def unavailable(self, ctx: HostContext) -> str | None:
        return None if ctx.guest is not None else "the probe target is a plain echo service (no control lines)"

    def _get(self, ctx: HostContext, name: str) -> int:
        return self._ask(ctx, lambda g: g.get(name))

    def _set(self, ctx: HostContext, name: str, value: int) -> None:
        self._ask(ctx, lambda g: g.set(name, value))

    def read(self, ctx: HostContext) -> Settings:
        return {k: self._get(ctx, name) for k, name in GUEST_SYSCTLS.items()}

    def write(self, ctx: HostContext, knob: str, value: KnobValue) -> None:
        self._set(ctx, GUEST_SYSCTLS[knob], int(value))

    def save(self, ctx: HostContext) -> Raw:
        return {name: self._get(ctx, name) for name in GUEST_SYSCTLS.values()}

    def restore(self, ctx: HostContext, raw: Raw) -> None:
        for name, value in raw.items():
            self._set(ctx, name, int(value))
