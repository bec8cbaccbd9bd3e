"""Faults injected for real into the live testbed, as an operator meets them.

libvirtd killed (SIGKILL) and restarted mid-episode; the domain destroyed, and destroyed then started;
QEMU stopped (SIGSTOP) past the probe timeout; the probe port blocked (iptables DROP); the controller
holding SCHED_FIFO killed (SIGKILL). Each test checks that no exception leaves step(), what step()
returned, that the env or backend recovers, and that every knob is back by read-back through virsh,
/proc and the guest's control line. Each prints one FAULT-TABLE row (run with -s to see them).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DOMAIN, URI, fault_row, make_env, read_back, schedinfo, virsh, wait_for_echo, wait_until

from vvho_env.types import BackendError

pytestmark = pytest.mark.live
HERE = Path(__file__).parent


def _action(env: Any, **settings: object) -> np.ndarray:
    from vvho_env.harness import encode_settings

    return encode_settings(env.unwrapped, settings)


def _steps_until_ok(env: Any, action: np.ndarray, timeout_s: float) -> tuple[float | None, list[dict]]:
    """Step (resetting after a truncation) until a window comes back OK with no fault on the way;
    returns the seconds it took and the info of every step."""
    infos: list[dict] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        _, reward, _, truncated, info = env.step(action)
        infos.append(info)
        assert np.isfinite(reward)
        if truncated:
            with contextlib.suppress(BackendError):
                env.reset()
            continue
        if info["status"] == "ok" and not info.get("faults"):
            return time.monotonic() - t0, infos
    return None, infos


def _returned(info: dict) -> str:
    if "truncated_reason" in info:
        return f"truncated: {info['truncated_reason'][:120]}"
    tel = info["telemetry"]
    extra = f", faults retried: {len(info['faults'])}" if info.get("faults") else ""
    return (f"{info['status'].upper()} window: {tel['requests']} requests, {tel['errors']} timed out or failed, "
            f"p99 {tel['p99_us'] / 1000:.0f} ms{extra}")


@pytest.fixture
def original(testbed: dict[str, object]) -> dict[str, Any]:
    """The testbed's settings before the test, read back independently of the backend."""
    return read_back(port=int(testbed["port"]))  # type: ignore[call-overload]


def _libvirtd_pid() -> int:
    out = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def test_libvirtd_killed_and_restarted_mid_episode(testbed, original) -> None:  # type: ignore[no-untyped-def]
    from vvho_env.live import testbed as tb

    env = make_env(max_steps=60, retries=3, backoff_s=0.5)
    restarted: dict[str, float] = {}

    def restart_later() -> None:
        time.sleep(2.0)
        tb.ensure_libvirtd()
        restarted["t"] = time.monotonic()

    try:
        env.reset(seed=1)
        a, b = _action(env, vcpu_quota=50000, cpu_shares=512), _action(env, vcpu_quota=80000, cpu_shares=2048)
        env.step(a)
        os.kill(_libvirtd_pid(), signal.SIGKILL)
        restarter = threading.Thread(target=restart_later)
        restarter.start()
        _, _, _, truncated, during = env.step(b)  # its apply needs libvirtd, which is gone
        assert truncated or during.get("faults"), during
        restarter.join()
        took, _ = _steps_until_ok(env, a, 60.0)
        assert took is not None, "no OK window within 60 s of libvirtd's restart"
        recover = time.monotonic() - restarted["t"]
        si = schedinfo()
        assert (si["vcpu_quota"], si["cpu_shares"]) == ("50000", "512"), "the apply after the restart holds"
    finally:
        tb.ensure_libvirtd()
        env.close()
    after = read_back(port=int(testbed["port"]))
    assert after == original
    fault_row("libvirtd SIGKILLed mid-episode, restarted 2 s later", _returned(during), recover,
              f"all {len(after)} read back as before")


def test_domain_destroyed(testbed, original) -> None:  # type: ignore[no-untyped-def]
    port = int(testbed["port"])
    env = make_env(max_steps=10)
    try:
        env.reset(seed=2)
        env.step(_action(env, vcpu_quota=30000, vcpu_pinning="dedicated"))
        snapshot = env.unwrapped.backend.snapshot_path
        assert snapshot.exists(), "the original settings are persisted before the first change"
        virsh("destroy", DOMAIN)
        _, reward, _, truncated, info = env.step(_action(env, vcpu_quota=60000))
        assert truncated and reward == 0.0 and "not running" in info["truncated_reason"], info
    finally:
        env.close()  # no exception: the live settings went with the instance
        assert not snapshot.exists(), "nothing is left to restore: the snapshot is dropped"
        virsh("start", DOMAIN)
        boot = wait_for_echo(port)
    after = read_back(port=port)
    assert after == original, "restarted from its persistent definition, which the backend never changed"
    fault_row("domain destroyed", _returned(info), None,
              f"live settings died with the instance; after `virsh start` ({boot:.0f} s boot) all {len(after)} "
              "read back as before")


def test_domain_destroyed_then_started(testbed, original) -> None:  # type: ignore[no-untyped-def]
    port = int(testbed["port"])
    env = make_env(max_steps=60, retries=3, backoff_s=0.5)
    held = {"vcpu_quota": 60000, "cpu_shares": 700, "vcpu_pinning": "dedicated"}
    try:
        env.reset(seed=3)
        env.step(_action(env, **held))
        backend = env.unwrapped.backend
        old_tids = backend.vcpu_tids
        virsh("destroy", DOMAIN)
        virsh("start", DOMAIN)
        t_start = time.monotonic()
        _, _, _, truncated, during = env.step(_action(env, **held))
        assert truncated or during.get("faults"), during
        errors: list[str] = []
        tel = None
        while time.monotonic() - t_start < 120:  # the guest boots in 15-25 s under TCG
            try:
                tel = backend.measure(1.0)
                break
            except BackendError as exc:
                errors.append(type(exc).__name__)
                time.sleep(1.0)
        recover = time.monotonic() - t_start
        assert tel is not None, errors
        assert backend.vcpu_tids != old_tids, "the new instance's vCPU threads were found"
        si = schedinfo()
        assert (si["vcpu_quota"], si["cpu_shares"]) == ("60000", "700")
        assert virsh("vcpupin", DOMAIN).strip().splitlines()[-1].split()[-1] == str(backend.topology.dedicated_cpus[0])
        assert tel.status.value == "degraded" and any("restarted" in n for n in tel.notes), tel.notes
        assert any("re-applied" in n for n in tel.notes), tel.notes
        env.reset()
        _, _, _, truncated, info = env.step(_action(env, cpu_shares=900))
        assert not truncated and info["settings"]["cpu_shares"] == 900
    finally:
        env.close()
        wait_for_echo(port)
    after = read_back(port=port)
    assert after == original
    fault_row("domain destroyed then started", _returned(during), recover,
              f"re-applied on the new instance ({', '.join(errors[:3])}... while it booted); after close all "
              f"{len(after)} read back as before")


def test_guest_stopped_past_the_probe_timeout(testbed, original) -> None:  # type: ignore[no-untyped-def]
    from vvho_env.live import hostctl

    env = make_env(max_steps=60, retries=3, backoff_s=0.5, backend_kwargs={"probe_timeout_s": 1.0})
    qemu = hostctl.qemu_pid(DOMAIN)
    assert qemu is not None
    resumed: dict[str, float] = {}

    def stall() -> None:
        time.sleep(0.3)
        os.kill(qemu, signal.SIGSTOP)
        time.sleep(2.5)
        os.kill(qemu, signal.SIGCONT)
        resumed["t"] = time.monotonic()

    try:
        env.reset(seed=4)
        a = _action(env, vcpu_quota=70000)
        env.step(a)
        staller = threading.Thread(target=stall)
        staller.start()
        _, _, _, truncated, during = env.step(a)  # same settings: only the window runs into the stall
        staller.join()
        assert not truncated and during["status"] == "degraded", during
        tel = during["telemetry"]
        assert tel["errors"] > 0 and tel["slo_violations"] >= tel["errors"], tel  # timeouts count as violations
        assert tel["p99_us"] >= 1e6, "timed-out requests count at their latency so far (>= the 1 s timeout)"
        assert tel["requests"] == round(tel["offered_rps"] * tel["window_s"]), "no request left out"
        took, _ = _steps_until_ok(env, a, 30.0)
        assert took is not None
        recover = time.monotonic() - resumed["t"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(qemu, signal.SIGCONT)
        env.close()
    after = read_back(port=int(testbed["port"]))
    assert after == original
    fault_row("QEMU SIGSTOPped 2.5 s (probe timeout 1 s)", _returned(during), recover,
              f"all {len(after)} read back as before")


def test_probe_port_blocked(testbed, original) -> None:  # type: ignore[no-untyped-def]
    port = int(testbed["port"])
    rule = ["INPUT", "-p", "tcp", "-i", "lo", "--dport", str(port), "-j", "DROP"]
    env = make_env(max_steps=60, retries=3, backoff_s=0.5)
    try:
        env.reset(seed=5)
        a = _action(env, cpu_shares=600)
        env.step(a)
        subprocess.run(["iptables", "-I", *rule], check=True)
        try:
            _, _, _, truncated, during = env.step(a)
        finally:
            subprocess.run(["iptables", "-D", *rule], check=True)
        unblocked = time.monotonic()
        assert not truncated and during["status"] == "degraded", during
        tel = during["telemetry"]
        assert tel["served_rps"] == 0 and tel["errors"] == tel["requests"] > 0, tel
        assert tel["slo_violations"] == tel["requests"], "every unanswered request is a violation"
        took, _ = _steps_until_ok(env, a, 30.0)
        assert took is not None
        recover = time.monotonic() - unblocked
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["iptables", "-D", *rule], check=True, capture_output=True)
        env.close()
    after = read_back(port=port)
    assert after == original
    fault_row("probe port blocked (iptables DROP) for one window", _returned(during), recover,
              f"all {len(after)} read back as before")


def start_holder(lease_s: float, domain: str = DOMAIN, port: int | None = None) \
        -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start fifo_holder.py; its JSON line also lists every process it started (its children now)."""
    args = [sys.executable, str(HERE / "fifo_holder.py"), str(lease_s), domain, *([str(port)] if port else [])]
    proc = subprocess.Popen(args, cwd=HERE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"fifo_holder.py exited with {proc.wait()}"
    held = json.loads(line)
    held["children"] = _children(proc.pid)
    return proc, held


def _children(pid: int) -> list[int]:
    """Every process whose parent is `pid` (multiprocessing's resource tracker included)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_sigkill_of_the_fifo_holder(testbed, original) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from vvho.cli import app
    from vvho_env.live import hostctl, open_backend

    port = int(testbed["port"])
    lease = 5.0
    tid0 = hostctl.vcpu_thread_ids(hostctl.qemu_pid(DOMAIN) or 0)[0]
    cg = hostctl.cpu_cgroup_dir(tid0)
    assert cg is not None
    rt_before = (cg / "cpu.rt_runtime_us").read_text()
    proc, held = start_holder(lease)
    assert all(os.sched_getscheduler(t) == os.SCHED_FIFO for t in held["tids"])
    assert len(held["helpers"]) >= 3, held  # neighbour(s), local echo, lease watchdog
    assert set(held["helpers"]) <= set(held["children"]), held
    proc.kill()
    proc.wait()
    fifo_gone = wait_until(lambda: all(os.sched_getscheduler(t) == os.SCHED_OTHER for t in held["tids"]), lease + 2)
    helpers_gone = wait_until(lambda: not any(alive(p) for p in held["children"]), lease + 2)
    assert fifo_gone is not None and fifo_gone <= lease, "the vCPU threads are back to SCHED_OTHER within the lease"
    assert helpers_gone is not None and helpers_gone <= lease, [p for p in held["children"] if alive(p)]
    assert (cg / "cpu.rt_runtime_us").read_text() == rt_before, "the RT budget was handed back"
    assert schedinfo()["vcpu_quota"] == "40000" and Path(held["snapshot"]).exists(), "the rest waits for a restore"
    r = CliRunner().invoke(app, ["host", "restore", "--connect", URI, "--domain", DOMAIN])
    assert r.exit_code == 0, r.output
    assert "restored domain" in r.output and not Path(held["snapshot"]).exists()
    assert read_back(port=port) == original, "vvho host restore put every knob back"

    proc, held = start_holder(lease)  # killed again: this time a new backend finds the snapshot
    proc.kill()
    proc.wait()
    b = open_backend(URI, DOMAIN)
    try:
        assert b.recovered is not None and b.recovered.owner.pid == proc.pid
        assert read_back(port=port) == original, "restored before the new backend took its own snapshot"
    finally:
        b.close()
    fault_row("SIGKILL of the process holding SCHED_FIFO (lease 5 s)",
              "(no step: the controller is dead)", fifo_gone,
              f"FIFO and RT budget reverted by the lease watchdog in {fifo_gone:.2f} s, {len(held['children'])} "
              f"helper processes gone in {helpers_gone:.2f} s; quota/pinning/busy_poll by `vvho host restore` or "
              "the next backend, read back as before")


def test_close_reports_what_it_could_not_restore(testbed, original) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from vvho.cli import app
    from vvho_env.live import open_backend
    from vvho_env.types import RestoreFailed

    port = int(testbed["port"])
    rule = ["INPUT", "-p", "tcp", "-i", "lo", "--dport", str(port), "-j", "DROP"]
    b = open_backend(URI, DOMAIN, restore_attempts=2)
    b.apply({"busy_poll_us": 40, "cpu_shares": 300})
    subprocess.run(["iptables", "-I", *rule], check=True)  # the guest's control line cannot be reached
    try:
        with pytest.raises(RestoreFailed, match=r"after 2 attempts: guest-control: .*does not answer.*"
                                                r"vvho host restore --connect qemu:///system --domain vvho-testbed"):
            b.close()
    finally:
        subprocess.run(["iptables", "-D", *rule], check=True)
    assert schedinfo()["cpu_shares"] == "1024", "what could be restored was"
    assert b.snapshot_path.exists(), "the rest waits in the persisted snapshot"
    r = CliRunner().invoke(app, ["host", "restore", "--connect", URI, "--domain", DOMAIN])
    assert r.exit_code == 0, r.output
    assert read_back(port=port) == original
