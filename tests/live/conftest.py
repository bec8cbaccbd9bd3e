"""The live testbed fixture shared by the live tests (a real libvirt + QEMU guest, started if needed) and
the read-back helpers they check knobs with, independent of the backend under test: virsh for what
libvirt sets, /proc for thread policies, the guest service's control line for guest sysctls.

In CI (CI=true) an unavailable testbed FAILS the tests (a skip would hide it); locally without root or
libvirt they skip with the reason.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

URI = "qemu:///system"
DOMAIN = os.environ.get("VVHO_TEST_DOMAIN", "vvho-testbed")
BANDWIDTH_FIELDS = ("vcpu_quota", "vcpu_period", "emulator_quota", "global_quota", "cpu_shares")


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


def virsh(*args: str, uri: str = URI) -> str:
    return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, check=True).stdout


def schedinfo(domain: str = DOMAIN) -> dict[str, str]:
    out = {}
    for line in virsh("schedinfo", domain).splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def bandwidth(si: dict[str, str]) -> tuple[str, ...]:
    """The CPU bandwidth fields of `virsh schedinfo`, in a fixed order."""
    return tuple(si[k] for k in BANDWIDTH_FIELDS)


def vcpu_affinity(domain: str = DOMAIN) -> str:
    return virsh("vcpupin", domain).strip().splitlines()[-1].split()[-1]


def emulator_affinity(domain: str = DOMAIN) -> str:
    return virsh("emulatorpin", domain).strip().splitlines()[-1].split()[-1]


def read_back(domain: str = DOMAIN, port: int | None = None) -> dict[str, Any]:
    """What the host says now, from virsh, /proc and the guest's control line (when `port` is given)."""
    from vvho_env.live import hostctl
    from vvho_env.live.guest import GuestControl

    out: dict[str, Any] = dict(zip(BANDWIDTH_FIELDS, bandwidth(schedinfo(domain)), strict=True))
    out["vcpupin"] = vcpu_affinity(domain)
    out["emulatorpin"] = emulator_affinity(domain)
    pid = hostctl.qemu_pid(domain)
    tids = hostctl.vcpu_thread_ids(pid) if pid else []
    out["vcpu_policies"] = tuple(os.sched_getscheduler(t) for t in tids)
    if port is not None:
        out["busy_poll"] = GuestControl("127.0.0.1", port).get("busy_poll")
    return out


def wait_for_echo(port: int, timeout_s: float = 120.0) -> float:
    """Seconds until a TCP echo answers on 127.0.0.1:port (a guest that is booting)."""
    from vvho_env.live import testbed as tb

    return tb.wait_for_service(port, timeout_s)


def make_env(domain: str = DOMAIN, port: int | None = None, backend_kwargs: dict[str, Any] | None = None,
             **kw: Any) -> Any:
    import gymnasium as gym

    import vvho_env  # noqa: F401  (registers the ids)

    kw.setdefault("backoff_s", 0.1)
    kw.setdefault("retries", 1)
    return gym.make("VVHO-Live-v0", scenario="testbed-echo-v0", domain=domain, port=port,
                    backend_kwargs={"fifo_lease_s": 30.0, **(backend_kwargs or {})}, **kw)


def fault_row(fault: str, returned: str, recover_s: float | None, restored: str) -> None:
    """One row of the fault table the closing note reports (printed; run pytest -s to see it)."""
    rec = "-" if recover_s is None else f"{recover_s:.1f} s"
    print(f"\nFAULT-TABLE | {fault} | {returned} | {rec} | {restored}")


def wait_until(cond: Any, timeout_s: float, step_s: float = 0.1) -> float | None:
    """Seconds until cond() is true, or None after timeout_s."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cond():
            return time.monotonic() - t0
        time.sleep(step_s)
    return None
