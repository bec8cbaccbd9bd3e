"""The live backend: libvirt driving a real QEMU guest, measured by a real open-loop latency probe.

Entry points: open_backend (a LibvirtBackend on any domain, its probe port found), LibvirtBackend (the
Backend protocol), make_live_env (the env factory VVHO-Live-v0 points at), testbed_settable_knobs (what
this host can set, checked against the simulator's tcg-testbed profile), and the testbed module
(build/up/down/status of the project's test guest).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vvho_env.live.attach import open_backend
from vvho_env.live.backend import LibvirtBackend
from vvho_env.live.testbed import DEFAULT_DOMAIN, DEFAULT_URI

if TYPE_CHECKING:
    from vvho_env.env import VVHOEnv

__all__ = ["LibvirtBackend", "make_live_env", "open_backend", "testbed_settable_knobs"]


def make_live_env(
    scenario: str = "steady-low-v0",
    uri: str = DEFAULT_URI,
    domain: str = DEFAULT_DOMAIN,
    port: int | None = None,
    backend_kwargs: dict[str, Any] | None = None,
    **env_kwargs: Any,
) -> VVHOEnv:
    """Build a LibvirtBackend on (uri, domain, port) and wrap it in the generic VVHOEnv."""
    from vvho_env.env import VVHOEnv
    from vvho_env.scenarios import load_scenario

    backend = open_backend(uri, domain, port, **(backend_kwargs or {}))
    try:
        return VVHOEnv(backend=backend, scenario=load_scenario(scenario), **env_kwargs)
    except Exception:
        backend.close()
        raise


def testbed_settable_knobs(uri: str = DEFAULT_URI, domain: str = DEFAULT_DOMAIN, port: int | None = None) \
        -> frozenset[str]:
    """The knobs the live backend can set on a domain of this host (default: the testbed).

    Needs the domain running: capabilities are found by asking libvirt, the host and the guest, not assumed.
    """
    backend = open_backend(uri, domain, port)
    try:
        return backend.capabilities().settable
    finally:
        backend.close()
