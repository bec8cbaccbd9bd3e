"""Build a LibvirtBackend for any domain: find its probe port and the local echo, then open it.

The backend itself knows nothing of the testbed. Here the probe port comes from, in order: the caller
(--port), the testbed's record of a domain it started, a hostfwd to the guest in the domain's own XML
(qemu:commandline `-netdev user,...,hostfwd=tcp:ADDR:PORT-:GUESTPORT`); otherwise the error asks for
--port. The host-local echo that checks the probe's noise is the project's service binary, compiled
on first use.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vvho_env.live import testbed as tb
from vvho_env.live.backend import LibvirtBackend
from vvho_env.live.connection import LibvirtLink
from vvho_env.types import BackendUnavailable

HOSTFWD = re.compile(r"hostfwd=tcp:(?P<addr>[0-9.]*):(?P<port>\d+)-")


def port_from_xml(xml: str) -> int | None:
    """The host port of the first TCP hostfwd in a domain's XML, if it has one."""
    m = HOSTFWD.search(xml)
    return int(m.group("port")) if m else None


def find_port(uri: str, domain: str) -> int | None:
    """The testbed's recorded port, else a hostfwd in the domain's XML. Raises BackendUnavailable (with
    what to do) when libvirt or the domain cannot be reached."""
    state = tb.TestbedState.load(domain)
    if state is not None and state.uri == uri:
        return state.port
    link = LibvirtLink(uri, domain)
    try:
        return port_from_xml(link.call("reading the domain XML", lambda d: d.XMLDesc(0)))
    finally:
        link.close()


def echo_binary() -> Path | None:
    try:
        return tb.service_binary()
    except tb.TestbedError:
        return None  # no compiler: the backend runs without a noise check and says so


def open_backend(uri: str = tb.DEFAULT_URI, domain: str = tb.DEFAULT_DOMAIN, port: int | None = None,
                 require_port: bool = True, **kwargs: Any) -> LibvirtBackend:
    """A LibvirtBackend on (uri, domain) with the probe on `port` (found if None, see the module).
    require_port=False opens a backend that can restore but not measure when no port is found."""
    if port is None and kwargs.get("latency") is None:
        port = find_port(uri, domain)
        if port is None and require_port:
            raise BackendUnavailable(
                f"no probe port known for domain {domain!r} at {uri!r}: pass --port P, the host port that reaches "
                "a TCP echo service in the guest (no testbed record and no hostfwd in its XML)")
    kwargs.setdefault("echo_binary", echo_binary())
    return LibvirtBackend(uri, domain, port=port, **kwargs)
