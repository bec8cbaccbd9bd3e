"""The apply transaction over the knob drivers: read, set in an order the kernel accepts, read back,
and on any failure roll every knob back to its value before the apply.

Faults of the host (libvirtd lost, domain gone, guest silent) propagate as BackendUnavailable after
the rollback was tried; anything else a driver raises becomes ApplyRejected naming the knob, the
reason and whether the rollback held.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from vvho_env.live.drivers.bandwidth import QUOTA_CHILDREN_FIRST
from vvho_env.live.drivers.base import HostContext, KnobDriver
from vvho_env.live.instance import InstanceGone
from vvho_env.types import ApplyRejected, BackendUnavailable, KnobValue, Settings


def apply_order(settings: Mapping[str, KnobValue]) -> list[str]:
    """The order to set knobs in: placement first, then quotas being lifted to unlimited, then the period,
    then limited quotas children before the parent, then the rest. cgroup v1 rejects (EINVAL) a period
    or quota that would give a child a larger quota/period ratio than its parent's, so a constraint is
    lifted before the period changes and a new one is imposed after it, bottom-up."""
    def key(k: str) -> tuple[int, int, str]:
        if k == "vcpu_pinning":
            return (0, 0, k)
        if k in QUOTA_CHILDREN_FIRST:
            return (1, 0, k) if settings[k] == -1 else (3, QUOTA_CHILDREN_FIRST.index(k), k)
        return (2, 0, k) if k == "vcpu_period" else (4, 0, k)

    return sorted(settings, key=key)


def error_text(exc: BaseException) -> str:
    getter: Any = getattr(exc, "get_error_message", None)
    return str(getter()) if callable(getter) else str(exc) or type(exc).__name__


class Transaction:
    """Applies settings through `drivers` (knob -> driver); `before_change` runs once before the first
    write of each apply (the backend persists the original settings there)."""

    def __init__(self, ctx: HostContext, drivers: Mapping[str, KnobDriver],
                 before_change: Callable[[], None]) -> None:
        self.ctx = ctx
        self.drivers = drivers
        self.before_change = before_change

    def read(self, names: set[str] | None = None) -> Settings:
        """Current values of `names` (default: every settable knob), one read per driver involved."""
        wanted = set(self.drivers) if names is None else names
        out: Settings = {}
        for d in {id(self.drivers[n]): self.drivers[n] for n in wanted}.values():
            out.update({k: v for k, v in d.read(self.ctx).items() if k in wanted})
        return out

    def _changes(self, target: Mapping[str, KnobValue], current: Mapping[str, KnobValue]) -> list[str]:
        """The knobs to write, in order; runs `before_change` first if there is any."""
        order = [k for k in apply_order(target) if current.get(k) != target[k]]
        if order:
            self.before_change()
        return order

    def apply(self, wanted: Mapping[str, KnobValue]) -> Settings:
        before = self.read(set(wanted))
        knob = "?"
        try:
            for knob in self._changes(wanted, before):
                self.drivers[knob].write(self.ctx, knob, wanted[knob])
            after = self.read(set(wanted))
            for knob in apply_order(wanted):
                if after[knob] != wanted[knob]:
                    raise ApplyRejected(f"read back {after[knob]!r} after setting {wanted[knob]!r}")
        except Exception as exc:
            failed = self.restore(before)
            extra = f"; rollback also failed for: {', '.join(failed)}" if failed else ""
            if isinstance(exc, (BackendUnavailable, InstanceGone, ProcessLookupError)):  # the host, not the knob
                raise BackendUnavailable(f"{exc} (applying {knob!r}){extra or '; every knob was rolled back'}") \
                    from None
            raise ApplyRejected(
                f"knob {knob!r} = {wanted[knob]!r} failed: {error_text(exc)}; "
                + (f"rollback incomplete{extra}" if failed else
                   "every knob was rolled back to its value before this apply")
            ) from exc
        return {k: after[k] for k in wanted}

    def restore(self, target: Mapping[str, KnobValue]) -> list[str]:
        """Best effort: set every knob back to `target`; returns the knobs that could not be restored."""
        failed = []
        try:
            current = self.read(set(target))
        except Exception:
            current = {}
        for knob in apply_order(target):
            if current.get(knob) == target[knob]:
                continue
            try:
                self.drivers[knob].write(self.ctx, knob, target[knob])
            except Exception as exc:
                failed.append(f"{knob} ({error_text(exc)})")
        return failed
