"""The apply transaction over the knob drivers: read, set, read back, and on any failure roll every knob
back to its value before the apply.

Knobs are written driver by driver, in the order of `drivers` (placement first: the emulator's
housekeeping pCPUs follow the vCPUs' pinning); each driver orders its own knobs (the CFS bandwidth
driver must, see drivers/bandwidth.py).

Faults of the host (libvirtd lost, domain gone, guest silent) propagate as BackendUnavailable after
the rollback was tried; anything else a driver raises becomes ApplyRejected naming the knob, the
reason and whether the rollback held.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from vvho_env.live.drivers.base import HostContext, KnobDriver
from vvho_env.live.instance import InstanceGone
from vvho_env.types import ApplyRejected, BackendUnavailable, KnobValue, Settings


def error_text(exc: BaseException) -> str:
    getter: Any = getattr(exc, "get_error_message", None)
    return str(getter()) if callable(getter) else str(exc) or type(exc).__name__


class Transaction:
    """Applies settings through `drivers` (knob -> driver; the mapping's order is the write order of
    the drivers); `before_change` runs once before the first write of each apply (the backend persists
    the original settings there)."""

    def __init__(self, ctx: HostContext, drivers: Mapping[str, KnobDriver],
                 before_change: Callable[[], None]) -> None:
        self.ctx = ctx
        self.drivers = drivers
        self.before_change = before_change

    def _by_driver(self, knobs: set[str]) -> list[tuple[KnobDriver, list[str]]]:
        groups: dict[int, tuple[KnobDriver, list[str]]] = {}
        for k, d in self.drivers.items():
            if k in knobs:
                groups.setdefault(id(d), (d, []))[1].append(k)
        return list(groups.values())

    def read(self, names: set[str] | None = None) -> Settings:
        """Current values of `names` (default: every settable knob), one read per driver involved."""
        wanted = set(self.drivers) if names is None else names
        out: Settings = {}
        for d, _ in self._by_driver(wanted):
            out.update({k: v for k, v in d.read(self.ctx).items() if k in wanted})
        return out

    def _write(self, target: Mapping[str, KnobValue], current: Mapping[str, KnobValue],
               on_error: Callable[[list[str], Exception], None] | None = None) -> None:
        changes = {k for k in target if current.get(k) != target[k]}
        for d, names in self._by_driver(changes):
            try:
                d.write_many(self.ctx, {k: target[k] for k in names})
            except Exception as exc:
                if on_error is None:
                    raise _Failed(names, exc) from exc
                on_error(names, exc)

    def apply(self, wanted: Mapping[str, KnobValue]) -> Settings:
        before = self.read(set(wanted))
        if any(before.get(k) != v for k, v in wanted.items()):
            self.before_change()
        try:
            self._write(wanted, before)
            after = self.read(set(wanted))
            wrong = [k for k in wanted if after[k] != wanted[k]]
            if wrong:
                raise _Failed(wrong, ApplyRejected(", ".join(f"{k} read back {after[k]!r}" for k in wrong)))
        except Exception as exc:
            self._roll_back(wanted, before, exc if isinstance(exc, _Failed) else _Failed(list(wanted), exc))
        return {k: after[k] for k in wanted}

    def _roll_back(self, wanted: Mapping[str, KnobValue], before: Settings, failure: _Failed) -> NoReturn:
        failed = self.restore(before)
        extra = f"; rollback also failed for: {', '.join(failed)}" if failed else ""
        cause = failure.cause
        what = ", ".join(f"{k}={wanted[k]!r}" for k in failure.knobs)
        if isinstance(cause, (BackendUnavailable, InstanceGone, ProcessLookupError)):  # the host, not the knob
            raise BackendUnavailable(
                f"{error_text(cause)} (applying {what}){extra or '; every knob was rolled back'}") from None
        raise ApplyRejected(
            f"knob(s) {what} failed: {error_text(cause)}; "
            + (f"rollback incomplete{extra}" if failed else "every knob was rolled back to its value before this apply")
        ) from cause

    def restore(self, target: Mapping[str, KnobValue]) -> list[str]:
        """Best effort: set every knob back to `target`; returns the knobs that could not be restored."""
        failed: list[str] = []
        try:
            current = self.read(set(target))
        except Exception:
            current = {}
        self._write(target, current, lambda names, exc: failed.append(f"{', '.join(names)} ({error_text(exc)})"))
        return failed


class _Failed(Exception):
    def __init__(self, knobs: list[str], cause: Exception) -> None:
        super().__init__(str(cause))
        self.knobs, self.cause = knobs, cause
