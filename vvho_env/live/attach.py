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
from vvho_env.live.connection import libvirt_module
from vvho_env.types import BackendUnavailable

HOSTFWD = re.compile(r"hostfwd=tcp:(?P<addr>[0-9.]*):(?P<port>\d+)-")


def port_from_xml(xml: str) -> int | None:
    """The host port of the first TCP hostfwd in a domain's XML, if it has one."""
    m = HOSTFWD.search(xml)
    return int(m.group("port")) if m else None


def find_port(uri: str, domain: str) -> int | None:
    state = tb.TestbedState.load(domain)
    if state is not None and state.uri == uri:
        return state.port
    lv = libvirt_module()
    try:
        conn = lv.open(uri)
    except lv.libvirtError:
        return None  # the backend will say why it cannot connect
    try:
        return port_from_xml(conn.lookupByName(domain).XMLDesc(0))
    except lv.libvirtError:
        return None
    finally:
        conn.close()


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
