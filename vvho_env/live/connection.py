"""The libvirt connection of a live backend: errors as typed backend errors, reconnection with backoff.

libvirtd can be restarted under a running backend (an upgrade, a crash, an operator). QEMU keeps
running and libvirtd reattaches to it, so the backend only needs a new connection and a new domain
handle. Reconnection never blocks: a call on a lost connection tries to reconnect at once, then at most
once per backoff interval (doubling up to BACKOFF_MAX_S), and raises BackendUnavailable in between, so
the caller's own retry loop (the env's, the host agent's) decides how long to wait.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

from vvho_env.types import BackendUnavailable

T = TypeVar("T")
BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 5.0


def libvirt_module() -> Any:
    try:
        import libvirt
    except ImportError as exc:
        raise BackendUnavailable(
            "libvirt-python is not installed; run scripts/install-testbed-deps.sh .venv"
        ) from exc
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors arrive as exceptions instead
    return libvirt


class DomainGone(BackendUnavailable):
    """The domain is not running (destroyed, shut down) or no longer defined."""


class LibvirtLink:
    """One libvirt connection and the handle of one domain, re-established after libvirtd restarts.

    The domain is pinned by the UUID it had when first found: a different domain defined later under
    the same name is refused, never adopted.
    """

    def __init__(self, uri: str, domain: str) -> None:
        self.uri, self.domain_name = uri, domain
        self.lv = libvirt_module()
        self.conn: Any = None
        self._dom: Any = None
        self.uuid: str | None = None
        self.lost_at: float | None = None  # monotonic time the connection was found lost
        self.reconnects = 0
        self.events: list[str] = []  # what happened to the connection, for the next window's notes
        self._next_try = 0.0
        self._backoff = BACKOFF_START_S
        self._open(first=True)

    # ------------------------------------------------------------------ connecting
    def _open(self, first: bool = False) -> None:
        lv = self.lv
        try:
            conn = lv.open(self.uri)
        except lv.libvirtError as exc:
            raise BackendUnavailable(
                f"cannot connect to libvirt at {self.uri!r}: {exc.get_error_message()}. Check the URI "
                "(e.g. qemu:///system) and that libvirtd runs: scripts/start-libvirt.sh"
            ) from None
        try:
            dom = conn.lookupByName(self.domain_name)
        except lv.libvirtError:
            known = ", ".join(sorted(d.name() for d in conn.listAllDomains())) or "none"
            conn.close()
            raise DomainGone(
                f"domain {self.domain_name!r} not found at {self.uri!r} (domains there: {known}); pass "
                "--domain with one of them"
            ) from None
        uuid = dom.UUIDString()
        if self.uuid is not None and uuid != self.uuid:
            conn.close()
            raise BackendUnavailable(
                f"domain {self.domain_name!r} at {self.uri!r} now has UUID {uuid}, not {self.uuid}: it was "
                "undefined and defined again, so it is another domain; open a new backend for it"
            )
        if first and not dom.isActive():
            conn.close()
            raise DomainGone(
                f"domain {self.domain_name!r} at {self.uri!r} is defined but not running; start it with "
                f"`virsh -c {self.uri} start {self.domain_name}`"
            )
        self.conn, self._dom, self.uuid = conn, dom, uuid
        if not first:
            self.reconnects += 1
            self.events.append(f"reconnected to libvirtd at {self.uri!r} after "
                               f"{time.monotonic() - (self.lost_at or time.monotonic()):.1f} s")
        self.lost_at = None
        self._backoff = BACKOFF_START_S

    def _lost(self) -> None:
        if self.lost_at is None:
            self.lost_at = time.monotonic()
            self._next_try = 0.0
        self.conn = self._dom = None

    def alive(self) -> bool:
        try:
            return self.conn is not None and bool(self.conn.isAlive())
        except self.lv.libvirtError:
            return False

    def ensure(self) -> Any:
        """The domain handle, reconnecting first if the connection was lost (raises BackendUnavailable)."""
        if self.conn is not None and self.alive():
            return self._dom
        self._lost()
        now = time.monotonic()
        since = now - (self.lost_at or now)
        if now < self._next_try:
            raise BackendUnavailable(
                f"libvirtd at {self.uri!r} unreachable for {since:.1f} s; next reconnect attempt in "
                f"{self._next_try - now:.1f} s (is libvirtd running? scripts/start-libvirt.sh)"
            )
        try:
            self._open()
        except BackendUnavailable as exc:
            self._next_try = now + self._backoff
            self._backoff = min(BACKOFF_MAX_S, 2 * self._backoff)
            raise BackendUnavailable(f"{exc} (libvirtd unreachable for {since:.1f} s)") from None
        return self._dom

    # ------------------------------------------------------------------ calls
    def call(self, what: str, fn: Callable[[Any], T]) -> T:
        """fn(domain) with libvirt faults as typed errors: a lost daemon or a domain that stopped
        running become BackendUnavailable/DomainGone; other libvirt errors propagate as libvirtError
        for the caller to name the knob."""
        dom = self.ensure()
        try:
            return fn(dom)
        except self.lv.libvirtError as exc:
            if not self.alive():
                self._lost()
                raise BackendUnavailable(
                    f"lost libvirtd at {self.uri!r} while {what}: {exc.get_error_message()}"
                ) from None
            if not self.domain_running():
                raise DomainGone(
                    f"domain {self.domain_name!r} at {self.uri!r} is not running (destroyed or shut down) "
                    f"while {what}"
                ) from None
            raise

    def domain_running(self) -> bool:
        try:
            return self._dom is not None and bool(self._dom.isActive())
        except self.lv.libvirtError:
            return False

    def domain_id(self) -> int:
        """libvirt's id of the running domain: a new one each time it starts (-1 when not running)."""
        return int(self.call("reading the domain id", lambda d: d.ID()))

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(self.lv.libvirtError):
                self.conn.close()
            self.conn = self._dom = None
