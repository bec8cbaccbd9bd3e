"""The live backend: libvirt driving a real QEMU guest, measured by a real open-loop latency probe.

Entry points: LibvirtBackend (the Backend protocol), make_live_env (the env factory VVHO-Live-v0 points
at), testbed_settable_knobs (what this host can set, checked against the simulator's tcg-testbed profile),
and the testbed module (build/up/down/status of the test guest).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vvho_env.live.backend import LibvirtBackend
from vvho_env.live.testbed import DEFAULT_DOMAIN, DEFAULT_URI

if TYPE_CHECKING:
    from vvho_env.env import VVHOEnv

__all__ = ["LibvirtBackend", "make_live_env", "testbed_settable_knobs"]


def make_live_env(
    scenario: str = "steady-low-v0",
    uri: str = DEFAULT_URI,
    domain: str = DEFAULT_DOMAIN,
    backend_kwargs: dict[str, Any] | None = None,
    **env_kwargs: Any,
) -> VVHOEnv:
    """Build a LibvirtBackend on (uri, domain) and wrap it in the generic VVHOEnv."""
    from vvho_env.env import VVHOEnv
    from vvho_env.scenarios import load_scenario

    backend = LibvirtBackend(uri, domain, **(backend_kwargs or {}))
    try:
        return VVHOEnv(backend=backend, scenario=load_scenario(scenario), **env_kwargs)
    except Exception:
        backend.close()
        raise


def testbed_settable_knobs(conn_or_none: Any = None, domain: str = DEFAULT_DOMAIN) -> frozenset[str]:
    """The knobs the live backend can set on the testbed domain of this host.

    Pass an open libvirt connection to use its URI, or None for the default URI. Needs the testbed up
    (`vvho testbed up`): capabilities are found by asking libvirt, the host and the guest, not assumed.
    """
    uri = conn_or_none.getURI() if conn_or_none is not None else DEFAULT_URI
    backend = LibvirtBackend(uri, domain)
    try:
        return backend.capabilities().settable
    finally:
        backend.close()
