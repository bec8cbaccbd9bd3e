"""The live testbed fixture shared by the live tests: a real libvirt + QEMU guest, started if needed.

In CI (CI=true) an unavailable testbed FAILS the tests (a skip would hide it); locally without root or
libvirt they skip with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

URI = "qemu:///system"
DOMAIN = os.environ.get("VVHO_TEST_DOMAIN", "vvho-testbed")


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"live testbed unavailable in CI: {reason}")
    pytest.skip(f"live testbed unavailable: {reason}")


@pytest.fixture(scope="module")
def testbed() -> Iterator[dict[str, object]]:
    if os.geteuid() != 0:
        unavailable("needs root to start libvirtd and set host scheduling (run as root or in CI)")
    try:
        import libvirt  # noqa: F401
    except ImportError:
        unavailable("libvirt-python missing: scripts/install-testbed-deps.sh .venv")
    from vvho_env.live import testbed as tb

    try:
        st = tb.status(URI, DOMAIN) if tb.libvirt_socket_alive() else {}
        if not (st.get("active") and st.get("service_answers")):
            tb.up(URI, DOMAIN)
    except Exception as exc:
        unavailable(f"could not start the testbed: {exc}")
    yield tb.status(URI, DOMAIN)
