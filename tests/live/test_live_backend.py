"""Integration tests of the live backend against a real libvirt + QEMU guest (no mocks).

They boot the test guest once per module (`vvho testbed up`), then check knob read-back through virsh and
cgroups, transactional rollback, measurable effects of the knobs, an episode of VVHO-Live-v0, and what
happens when libvirtd or the domain disappears. In CI (CI=true) an unavailable testbed FAILS the tests;
locally without root/libvirt they skip with the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import DOMAIN, URI  # the shared live testbed fixture (testbed) lives there too

from vvho_env.types import ApplyRejected, BackendUnavailable, Status

pytestmark = pytest.mark.live

LOAD_RPS = 200.0
SERVICE_US = 500.0  # ~20% of a vCPU at LOAD_RPS: enough guest work for a 20% quota to bite
WINDOW_S = 4.0


def _virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, check=True).stdout


def _schedinfo() -> dict[str, str]:
    out = {}
    for line in _virsh("schedinfo", DOMAIN).splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def _bandwidth(si: dict[str, str]) -> tuple[str, ...]:
    """The CPU bandwidth fields of `virsh schedinfo`, in a fixed order."""
    return tuple(si[k] for k in ("vcpu_quota", "vcpu_period", "emulator_quota", "global_quota", "cpu_shares"))


def _vcpu_affinity() -> str:
    return _virsh("vcpupin", DOMAIN).strip().splitlines()[-1].split()[-1]


def _emulator_affinity() -> str:
    return _virsh("emulatorpin", DOMAIN).strip().splitlines()[-1].split()[-1]


@pytest.fixture
def backend(testbed: dict[str, object]) -> Iterator[object]:
    from vvho_env.live import LibvirtBackend

    b = LibvirtBackend(URI, DOMAIN)
    yield b
    b.close()


def _p99(backend: object, seconds: float = WINDOW_S, service_us: float = SERVICE_US,
         rate_rps: float = LOAD_RPS) -> tuple[float, float]:
    from vvho_env.live.probe import run_probe

    res = run_probe(
        "127.0.0.1",
        backend.port,
        rate_rps,
        seconds,
        service_us=service_us,  # type: ignore[attr-defined]
        probe_cpus=backend.housekeeping_cpus,
    )  # type: ignore[attr-defined]
    assert res.guest.completed > 0.9 * rate_rps * seconds, res.guest
    return res.guest.percentile_us(50), res.guest.percentile_us(99)


# ----------------------------------------------------------------------------- knobs
def test_capabilities_match_the_tcg_testbed_profile(backend: object) -> None:
    from vvho_env.live import testbed_settable_knobs
    from vvho_env.sim.profiles import PROFILES

    live = backend.capabilities().settable  # type: ignore[attr-defined]
    assert live == testbed_settable_knobs(None, DOMAIN)
    assert live == PROFILES["tcg-testbed"].settable, (
        f"simulator profile says {sorted(PROFILES['tcg-testbed'].settable)}, this host can set {sorted(live)}"
    )


def test_every_knob_reads_back_through_virsh_and_cgroups(backend) -> None:  # type: ignore[no-untyped-def]
    from vvho_env.live import hostctl

    wanted = {
        "vcpu_pinning": "dedicated",
        "emulator_placement": "housekeeping",
        "vcpu_quota": 30000,
        "vcpu_period": 50000,
        "emulator_quota": 40000,
        "global_quota": 90000,
        "cpu_shares": 512,
        "vcpu_sched_policy": "fifo",
        "busy_poll_us": 50,
    }
    wanted = {k: v for k, v in wanted.items() if k in backend.capabilities().settable}
    assert backend.apply(wanted) == wanted
    si = _schedinfo()
    assert _bandwidth(si) == ("30000", "50000", "40000", "90000", "512")
    assert _vcpu_affinity() == str(backend.dedicated_cpus[0])
    assert _emulator_affinity() == ",".join(map(str, backend.housekeeping_cpus))
    vcpu_cg = hostctl.cpu_cgroup_dir(backend.vcpu_tids[0])
    assert vcpu_cg is not None
    if (vcpu_cg / "cpu.cfs_quota_us").is_file():  # cgroup v1
        assert (vcpu_cg / "cpu.cfs_quota_us").read_text().strip() == "30000"
        assert (vcpu_cg / "cpu.cfs_period_us").read_text().strip() == "50000"
        assert (vcpu_cg.parent / "cpu.shares").read_text().strip() == "512"
    else:
        assert (vcpu_cg / "cpu.max").read_text().split() == ["30000", "50000"]
    if "vcpu_sched_policy" in wanted:
        assert all(os.sched_getscheduler(t) == os.SCHED_FIFO for t in backend.vcpu_tids)
    if "busy_poll_us" in wanted:
        assert backend.guest.get("busy_poll") == 50
    backend.close()
    backend.close()  # idempotent
    si = _schedinfo()
    assert _bandwidth(si) == ("-1", "100000", "-1", "-1", "1024")
    assert _vcpu_affinity() == _emulator_affinity() == f"0-{backend.n_pcpu - 1}"
    assert all(os.sched_getscheduler(t) == os.SCHED_OTHER for t in backend.vcpu_tids)
    from vvho_env.live.backend import GuestControl

    assert GuestControl("127.0.0.1", backend.port).get("busy_poll") == 0


def test_injected_failure_rolls_back_every_knob(backend, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    snapshot = backend.read()
    sched_before = _schedinfo()
    real_set = backend._set

    def failing_set(knob, value, pending):  # type: ignore[no-untyped-def]
        if knob == "vcpu_quota":  # applied last: every other knob below is already changed
            raise OSError("injected failure")
        real_set(knob, value, pending)

    monkeypatch.setattr(backend, "_set", failing_set)
    wanted = {
        "vcpu_pinning": "dedicated",
        "emulator_placement": "housekeeping",
        "cpu_shares": 300,
        "emulator_quota": 50000,
        "global_quota": 70000,
        "vcpu_period": 20000,
        "busy_poll_us": 20,
        "vcpu_quota": 10000,
    }
    with pytest.raises(ApplyRejected, match=r"vcpu_quota.*injected failure.*rolled back"):
        backend.apply(wanted)
    assert backend.read() == snapshot
    assert _schedinfo() == sched_before
    assert _vcpu_affinity() == _emulator_affinity() == f"0-{backend.n_pcpu - 1}"


def test_bad_inputs_give_actionable_errors(testbed) -> None:  # type: ignore[no-untyped-def]
    import libvirt

    from vvho_env.live import LibvirtBackend
    from vvho_env.live import testbed as tb

    with pytest.raises(BackendUnavailable, match=r"cannot connect to libvirt.*scripts/start-libvirt.sh"):
        LibvirtBackend("qemu+unix:///system?socket=/nonexistent", DOMAIN)
    with pytest.raises(BackendUnavailable, match=r"domain 'no-such-vm' not found.*vvho-testbed"):
        LibvirtBackend(URI, "no-such-vm")
    with pytest.raises(BackendUnavailable, match=r"does not answer on 127.0.0.1:1 .*hostfwd"):
        LibvirtBackend(URI, DOMAIN, port=1)
    conn = libvirt.open(URI)
    name = "vvho-test-inactive"
    xml = tb.domain_xml(name, Path("/nonexistent/vmlinuz"), Path("/nonexistent/initrd"), 1)
    conn.defineXML(xml)
    try:
        with pytest.raises(BackendUnavailable, match=r"defined but not running.*virsh .*start"):
            LibvirtBackend(URI, name, port=1)
    finally:
        conn.lookupByName(name).undefine()
        conn.close()
    b = LibvirtBackend(URI, DOMAIN)
    try:
        with pytest.raises(ApplyRejected, match=r"'halt_poll_ns' cannot be set on this host.*settable here"):
            b.apply({"halt_poll_ns": 100000})
        with pytest.raises(ApplyRejected, match=r"'vcpu_quota'.*out of range"):
            b.apply({"vcpu_quota": 5})
    finally:
        b.close()


def test_fifo_watchdog_reverts_when_lease_expires(testbed) -> None:  # type: ignore[no-untyped-def]
    from vvho_env.live import LibvirtBackend

    b = LibvirtBackend(URI, DOMAIN, fifo_lease_s=1.0)
    try:
        if "vcpu_sched_policy" not in b.capabilities().settable:
            pytest.skip("this host cannot set SCHED_FIFO (no RT limit in force or not root)")
        assert b.apply({"vcpu_sched_policy": "fifo"}) == {"vcpu_sched_policy": "fifo"}
        time.sleep(2.0)  # nobody renews the lease
        assert b.read()["vcpu_sched_policy"] == "other"
    finally:
        b.close()


# ----------------------------------------------------------------------------- effects
def test_tight_vcpu_quota_raises_p99(backend) -> None:  # type: ignore[no-untyped-def]
    _, p99_free = _p99(backend)
    backend.apply({"vcpu_quota": 20000, "vcpu_period": 100000})
    _, p99_tight = _p99(backend)
    print(f"p99 unthrottled {p99_free:.0f} us, vcpu_quota 20000/100000 {p99_tight:.0f} us")
    assert p99_tight > 3 * p99_free and p99_tight > 10_000


def test_neighbour_on_the_vcpu_pcpu_raises_p99(backend) -> None:  # type: ignore[no-untyped-def]
    """A CPU-bound neighbour on the VM's dedicated pCPU raises p99 against the same pCPU without it.

    On this 2-pCPU host the only other pCPU runs the probe, so a neighbour "pinned away" would slow
    the probe instead and blur the comparison (measured: 1.04-1.06x); the reference is therefore the
    neighbour stopped. The guest does real work (400 req/s x 1 ms spin = 40% of its vCPU): a lightly
    loaded vCPU wakes up and preempts a CPU hog at once under the host's CFS, so light load shows
    little (measured 1.05x at 200 req/s x 50 us). Windows alternate (with, without, ...) so a drift
    of the host (itself a VM) cannot masquerade as the effect; measured here 2.6x (16.1 vs 6.1 ms).
    """
    from vvho_env.live.neighbours import Neighbours

    vcpu_cpu = backend.dedicated_cpus[0]
    backend.apply({"vcpu_pinning": "dedicated", "emulator_placement": "with_vcpus"})
    shared, alone, slowdowns = [], [], []
    for _ in range(3):
        hog = Neighbours([vcpu_cpu])  # started and stopped per window: nothing of it runs "without"
        try:
            hog.set_demand([1.0])
            s0 = hog.sample()
            shared.append(_p99(backend, 3.0, service_us=1000.0, rate_rps=400.0)[1])
            slowdowns.append((hog.sample() - s0).slowdown)
        finally:
            hog.close()
        alone.append(_p99(backend, 3.0, service_us=1000.0, rate_rps=400.0)[1])
    p99_shared, p99_alone = float(np.median(shared)), float(np.median(alone))
    print(
        f"p99 with a CPU-bound neighbour on the vCPU's pCPU {p99_shared:.0f} us {shared}, without it "
        f"{p99_alone:.0f} us {alone}; neighbour slowdown when sharing {np.median(slowdowns):.3f}"
    )
    assert p99_shared > 1.1 * p99_alone
    assert sum(a > b for a, b in zip(shared, alone, strict=True)) >= 2  # the effect holds pair by pair
    assert all(0.0 <= s <= 1.0 for s in slowdowns)


def test_measure_returns_full_telemetry(backend) -> None:  # type: ignore[no-untyped-def]
    from vvho_env.scenarios import load_scenario

    sc = load_scenario("testbed-echo-v0")
    backend.reset(1, sc)
    tel = backend.measure(1.0)
    assert tel.requests > 100 and tel.served_rps > 100
    assert tel.p50_us <= tel.p99_us <= tel.p999_us
    assert 0.0 < tel.vm_cpu < backend.n_pcpu
    assert tel.slo_us == sc.slo_us
    assert tel.status in (Status.OK, Status.DEGRADED)
    if tel.status is Status.DEGRADED:
        assert tel.notes, "a degraded window must say why"


# ----------------------------------------------------------------------------- env + faults
def _make_env(**kw):  # type: ignore[no-untyped-def]
    import gymnasium as gym

    import vvho_env  # noqa: F401  (registers the ids)

    return gym.make(
        "VVHO-Live-v0",
        scenario="testbed-echo-v0",
        domain=DOMAIN,
        backoff_s=0.1,
        retries=1,
        backend_kwargs={"fifo_lease_s": 30.0},
        **kw,
    )


def test_live_env_short_episode_with_random_actions(testbed) -> None:  # type: ignore[no-untyped-def]
    env = _make_env(max_steps=3)
    try:
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        env.action_space.seed(0)
        truncated = False
        steps = 0
        while not truncated:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            steps += 1
            assert np.isfinite(reward) and not terminated
            assert "truncated_reason" not in info, info
        assert steps == 3
    finally:
        env.close()
        env.close()
    assert _schedinfo()["vcpu_quota"] == "-1"


def _libvirtd_pid() -> int:
    return int(
        subprocess.run(
            ["pgrep", "-x", "libvirtd"], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )


def test_env_truncates_when_libvirtd_dies(testbed) -> None:  # type: ignore[no-untyped-def]
    from vvho_env.live import testbed as tb

    env = _make_env(max_steps=10)
    try:
        env.reset(seed=1)
        os.kill(_libvirtd_pid(), signal.SIGTERM)
        for _ in range(50):
            if not tb.libvirt_socket_alive():
                break
            time.sleep(0.1)
        _, _, _, truncated, info = env.step(env.action_space.sample())
        assert truncated and "BackendUnavailable" in info["truncated_reason"], info
    finally:
        env.close()  # must not raise although libvirtd is gone
        tb.ensure_libvirtd()


def test_env_truncates_when_domain_destroyed_and_close_restores(testbed) -> None:  # type: ignore[no-untyped-def]
    from vvho_env.live import testbed as tb

    env = _make_env(max_steps=10)
    try:
        env.reset(seed=2)
        _virsh("destroy", DOMAIN)
        _, _, _, truncated, info = env.step(env.action_space.sample())
        assert truncated and "lost domain" in info["truncated_reason"], info
    finally:
        env.close()
        tb.up(URI, DOMAIN)  # leave the testbed as we found it
