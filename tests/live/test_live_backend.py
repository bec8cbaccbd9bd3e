"""Integration tests of the live backend against a real libvirt + QEMU guest (no mocks).

They boot the test guest once per module (`vvho testbed up`), then check knob read-back through virsh and
cgroups, transactional rollback, the FIFO lease, measurable effects of the knobs and an episode of
VVHO-Live-v0. Faults injected for real are in test_live_faults.py. In CI (CI=true) an unavailable
testbed FAILS the tests; locally without root/libvirt they skip with the reason.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import (  # the shared live testbed fixture (testbed) lives there too
    DOMAIN,
    URI,
    bandwidth,
    emulator_affinity,
    make_env,
    schedinfo,
    vcpu_affinity,
)

from vvho_env.types import ApplyRejected, BackendUnavailable, Status

pytestmark = pytest.mark.live

LOAD_RPS = 200.0
SERVICE_US = 500.0  # ~20% of a vCPU at LOAD_RPS: enough guest work for a 20% quota to bite
WINDOW_S = 4.0
NEIGHBOUR_TEST_RPS = 250.0  # x 1 ms of guest work: 25% of the vCPU, short of saturating it on a loaded host


@pytest.fixture
def backend(testbed: dict[str, object]) -> Iterator[object]:
    from vvho_env.live import open_backend

    b = open_backend(URI, DOMAIN)
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
        probe_cpus=backend.probe_cpus(),  # type: ignore[attr-defined]
    )
    g = res.guest
    # every request is accounted for: answered or timed out (those count at their latency so far)
    assert g.errors == 0 and g.completed + g.timeouts == g.offered == int(rate_rps * seconds), g
    return g.percentile_us(50), g.percentile_us(99)


# ----------------------------------------------------------------------------- knobs
def test_capabilities_match_the_tcg_testbed_profile(backend: object) -> None:
    from vvho_env.live import testbed_settable_knobs
    from vvho_env.sim.profiles import PROFILES

    live = backend.capabilities().settable  # type: ignore[attr-defined]
    assert backend.capabilities().service_time  # type: ignore[attr-defined]
    assert live == testbed_settable_knobs(URI, DOMAIN)
    assert live == PROFILES["tcg-testbed"].settable, (
        f"simulator profile says {sorted(PROFILES['tcg-testbed'].settable)}, this host can set {sorted(live)}"
    )


def test_every_knob_reads_back_through_virsh_and_cgroups(backend) -> None:  # type: ignore[no-untyped-def]
    from vvho_env.live import hostctl
    from vvho_env.live.guest import GuestControl

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
    si = schedinfo()
    assert bandwidth(si) == ("30000", "50000", "40000", "90000", "512")
    assert vcpu_affinity() == str(backend.topology.dedicated_cpus[0])
    assert emulator_affinity() == ",".join(map(str, backend.topology.housekeeping_cpus))
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
        assert GuestControl("127.0.0.1", backend.port).get("busy_poll") == 50
    backend.close()
    backend.close()  # idempotent
    si = schedinfo()
    assert bandwidth(si) == ("-1", "100000", "-1", "-1", "1024")
    assert vcpu_affinity() == emulator_affinity() == f"0-{backend.topology.n_pcpu - 1}"
    assert all(os.sched_getscheduler(t) == os.SCHED_OTHER for t in backend.vcpu_tids)
    assert GuestControl("127.0.0.1", backend.port).get("busy_poll") == 0
    assert not backend.snapshot_path.exists(), "a clean close removes the persisted snapshot"


def test_injected_failure_rolls_back_every_knob(backend, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    snapshot = backend.read()
    sched_before = schedinfo()
    driver = backend.tx.drivers["vcpu_quota"]
    real_set = driver._set

    def failing_set(ctx, params, what):  # type: ignore[no-untyped-def]
        if params.get("vcpu_quota", -1) != -1:  # imposed last but global's: pinning, periods already changed
            raise OSError("injected failure")
        real_set(ctx, params, what)

    monkeypatch.setattr(driver, "_set", failing_set)
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
    assert schedinfo() == sched_before
    assert vcpu_affinity() == emulator_affinity() == f"0-{backend.topology.n_pcpu - 1}"


def test_bad_inputs_give_actionable_errors(testbed) -> None:  # type: ignore[no-untyped-def]
    import libvirt

    from vvho_env.live import LibvirtBackend, open_backend
    from vvho_env.live import testbed as tb

    with pytest.raises(BackendUnavailable, match=r"cannot connect to libvirt.*scripts/start-libvirt.sh"):
        LibvirtBackend("qemu+unix:///system?socket=/nonexistent", DOMAIN, port=1)
    with pytest.raises(BackendUnavailable, match=r"domain 'no-such-vm' not found.*vvho-testbed"):
        LibvirtBackend(URI, "no-such-vm", port=1)
    with pytest.raises(BackendUnavailable, match=r"no TCP echo service answers on 127.0.0.1:1 .*hostfwd"):
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
    b = open_backend(URI, DOMAIN)
    try:
        with pytest.raises(ApplyRejected, match=r"'halt_poll_ns' cannot be set .*not KVM.*settable here"):
            b.apply({"halt_poll_ns": 100000})
        with pytest.raises(ApplyRejected, match=r"'vcpu_quota'.*out of range"):
            b.apply({"vcpu_quota": 5})
    finally:
        b.close()


def test_fifo_lease_reverts_when_not_renewed(testbed) -> None:  # type: ignore[no-untyped-def]
    from vvho_env.live import open_backend

    b = open_backend(URI, DOMAIN, fifo_lease_s=1.0)
    try:
        assert "vcpu_sched_policy" in b.capabilities().settable, b.unavailable
        assert b.apply({"vcpu_sched_policy": "fifo"}) == {"vcpu_sched_policy": "fifo"}
        time.sleep(2.0)  # nobody renews the lease
        assert b.read()["vcpu_sched_policy"] == "other"
        assert all(os.sched_getscheduler(t) == os.SCHED_OTHER for t in b.vcpu_tids)
    finally:
        b.close()


# ----------------------------------------------------------------------------- effects
def test_tight_vcpu_quota_raises_p99(backend) -> None:  # type: ignore[no-untyped-def]
    """A 20% vCPU quota raises p99 against no quota, windows alternating (free, tight, ...).

    One window alone is not a reference on this host (itself a VM shared with other jobs): a CI run
    measured 863 ms for the unthrottled window right after the guest booted and 108 ms throttled.
    Three pairs after a warm-up window; the medians are compared and the effect must show in two pairs.
    """
    _p99(backend, 2.0)  # warm-up: the guest's first requests after boot are not a reference
    free, tight = [], []
    for _ in range(3):
        backend.apply({"vcpu_quota": -1})
        free.append(_p99(backend)[1])
        backend.apply({"vcpu_quota": 20000, "vcpu_period": 100000})
        tight.append(_p99(backend)[1])
    p99_free, p99_tight = float(np.median(free)), float(np.median(tight))
    print(f"p99 unthrottled {p99_free:.0f} us {free}, vcpu_quota 20000/100000 {p99_tight:.0f} us {tight}")
    assert p99_tight > 3 * p99_free and p99_tight > 10_000
    assert sum(t > 3 * f for f, t in zip(free, tight, strict=True)) >= 2


def test_neighbour_on_the_vcpu_pcpu_raises_p99(backend) -> None:  # type: ignore[no-untyped-def]
    """A CPU-bound neighbour on the VM's dedicated pCPU raises p99 against the same pCPU without it.

    On this 2-pCPU host the only other pCPU runs the probe, so a neighbour "pinned away" would slow
    the probe instead and blur the comparison (measured: 1.04-1.06x); the reference is therefore the
    neighbour stopped. The guest does real work (250 req/s x 1 ms spin = 25% of its vCPU): a lightly
    loaded vCPU wakes up and preempts a CPU hog at once under the host's CFS, so light load shows
    little (measured 1.05x at 200 req/s x 50 us); at 400 req/s x 1 ms the guest saturates even without
    the neighbour while other jobs load the host, and both p99 sit at the probe's timeout. Windows
    alternate (with, without, ...) so that a drift of the host (itself a VM, shared with other jobs)
    cannot masquerade as the effect; five pairs, the effect in three or more. Measured 8x (340 vs 43
    ms, all five pairs) with other jobs on the host.
    """
    from vvho_env.live.neighbours import Neighbours

    vcpu_cpu = backend.topology.dedicated_cpus[0]
    backend.apply({"vcpu_pinning": "dedicated", "emulator_placement": "with_vcpus"})
    shared, alone, slowdowns = [], [], []
    for _ in range(5):
        hog = Neighbours([vcpu_cpu])  # started and stopped per window: nothing of it runs "without"
        try:
            hog.set_demand([1.0])
            s0 = hog.sample()
            shared.append(_p99(backend, 2.0, service_us=1000.0, rate_rps=NEIGHBOUR_TEST_RPS)[1])
            slowdowns.append((hog.sample() - s0).slowdown)
        finally:
            hog.close()
        alone.append(_p99(backend, 2.0, service_us=1000.0, rate_rps=NEIGHBOUR_TEST_RPS)[1])
    p99_shared, p99_alone = float(np.median(shared)), float(np.median(alone))
    print(
        f"p99 with a CPU-bound neighbour on the vCPU's pCPU {p99_shared:.0f} us {shared}, without it "
        f"{p99_alone:.0f} us {alone}; neighbour slowdown when sharing {np.median(slowdowns):.3f}"
    )
    assert p99_shared > 1.1 * p99_alone
    # the effect holds pair by pair: 3 of 5 is as unlikely by chance as the 2 of 3 asked before (p = 0.5)
    assert sum(a > b for a, b in zip(shared, alone, strict=True)) >= 3
    assert all(0.0 <= s <= 1.0 for s in slowdowns)


def test_measure_returns_full_telemetry(backend) -> None:  # type: ignore[no-untyped-def]
    from vvho_env.scenarios import load_scenario

    sc = load_scenario("testbed-echo-v0")
    backend.reset(1, sc)
    tel = backend.measure(1.0)
    assert tel.requests > 100 and tel.served_rps > 100
    assert tel.p50_us <= tel.p99_us <= tel.p999_us
    assert 0.0 < tel.vm_cpu < backend.topology.n_pcpu
    assert tel.slo_us == sc.slo_us
    assert tel.status in (Status.OK, Status.DEGRADED)
    if tel.status is Status.DEGRADED:
        assert tel.notes, "a degraded window must say why"


# ----------------------------------------------------------------------------- env (faults: test_live_faults.py)
def test_live_env_short_episode_with_random_actions(testbed) -> None:  # type: ignore[no-untyped-def]
    env = make_env(max_steps=3)
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
    assert schedinfo()["vcpu_quota"] == "-1"
