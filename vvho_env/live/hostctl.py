"""Host-side plumbing for a local libvirt domain: vCPU thread ids, cgroup files, RT budgets, CPU time.

Kept apart from the backend so the transaction logic reads as knob logic, not as /proc parsing.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
RT_RUNTIME_SYSCTL = Path("/proc/sys/kernel/sched_rt_runtime_us")
HALT_POLL = Path("/sys/module/kvm/parameters/halt_poll_ns")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def vcpu_thread_ids(dom) -> list[int]:
    """vCPU thread ids as QEMU reports them to libvirt (query-cpus-fast through libvirt's monitor)."""
    import libvirt_qemu

    reply = json.loads(libvirt_qemu.qemuMonitorCommand(dom, '{"execute":"query-cpus-fast"}', 0))
    return [int(c["thread-id"]) for c in sorted(reply["return"], key=lambda c: c["cpu-index"])]


def qemu_pid(domain: str) -> int | None:
    """PID of the domain's QEMU process (system or session pid file, else the process list)."""
    candidates = [
        Path(f"/run/libvirt/qemu/{domain}.pid"),
        Path.home() / f".cache/libvirt/qemu/run/{domain}.pid",
    ]
    for path in candidates:
        with contextlib.suppress(OSError, ValueError):
            pid = int(path.read_text().strip())
            if Path(f"/proc/{pid}").exists():
                return pid
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if f"guest={domain}".encode() in (proc / "cmdline").read_bytes():
                    return int(proc.name)
    return None


def thread_cpu_s(pid: int, tid: int | None = None) -> float:
    """utime + stime of a process (all threads) or of one of its threads, in seconds."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_cgroup_dir(tid: int) -> Path | None:
    """The cgroup-v1 'cpu' controller directory (or the v2 unified one) a thread lives in."""
    try:
        lines = Path(f"/proc/{tid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            for mount in ("cpu", "cpu,cpuacct"):
                d = CGROUP_ROOT / mount / path.lstrip("/")
                if d.is_dir():
                    return d
    for line in lines:
        if line.startswith("0::"):
            d = CGROUP_ROOT / line[3:].lstrip("/")
            if (d / "cpu.stat").is_file():
                return d
    return None


def throttled_s(cgroup: Path) -> float:
    """Cumulative time the cgroup spent throttled by CPU bandwidth control, in seconds."""
    with contextlib.suppress(OSError):
        for line in (cgroup / "cpu.stat").read_text().splitlines():
            key, _, val = line.partition(" ")
            if key == "throttled_time":  # v1, ns
                return int(val) / 1e9
            if key == "throttled_usec":  # v2
                return int(val) / 1e6
    return 0.0


def rt_limit_in_force() -> bool:
    """True when the kernel caps RT tasks (sched_rt_runtime_us != -1): a FIFO spinner cannot own a CPU."""
    try:
        return int(RT_RUNTIME_SYSCTL.read_text()) >= 0
    except (OSError, ValueError):
        return False


@dataclass
class RtBudget:
    """RT runtime granted down a cgroup-v1 chain so SCHED_FIFO is allowed (CONFIG_RT_GROUP_SCHED).

    With RT group scheduling a thread in a group with cpu.rt_runtime_us = 0 cannot become FIFO (EPERM).
    Granting each vCPU group a share (< 1 CPU) is itself a second RT limit on top of the global one.
    """

    before: dict[Path, int]

    @classmethod
    def grant(cls, vcpu_groups: Sequence[Path], share: float) -> RtBudget:
        chains: dict[Path, int] = {}
        for g in vcpu_groups:
            period = int((g / "cpu.rt_period_us").read_text())
            chains[g] = max(chains.get(g, 0), int(share * period))
            parent = g.parent
            while (parent / "cpu.rt_runtime_us").is_file() and parent != CGROUP_ROOT / "cpu":
                chains[parent] = chains.get(parent, 0) + int(share * period)
                parent = parent.parent
        before = {p: int((p / "cpu.rt_runtime_us").read_text()) for p in chains}
        budget = cls(before)
        try:
            for path in sorted(chains, key=lambda p: len(p.parts)):  # parents first
                if before[path] < chains[path]:
                    (path / "cpu.rt_runtime_us").write_text(str(chains[path]))
        except OSError:
            budget.restore()
            raise
        return budget

    def restore(self) -> None:
        for path in sorted(self.before, key=lambda p: -len(p.parts)):  # children first
            with contextlib.suppress(OSError):
                (path / "cpu.rt_runtime_us").write_text(str(self.before[path]))


class RtWatchdog:
    """Reverts SCHED_FIFO on the vCPU threads when its lease runs out or the host looks starved.

    A FIFO vCPU spinning under TCG can otherwise stall the host. The backend renews the lease every
    measurement; if the controlling process stops renewing (hung, crashed in a way atexit still sees) or
    the watchdog's own wake-ups come late (RT tasks hogging the CPU), it reverts to SCHED_OTHER.
    """

    def __init__(self, revert: Callable[[str], None], lease_s: float, late_s: float = 0.5) -> None:
        self._revert = revert
        self._lease_s = lease_s
        self._late_s = late_s
        self._expires = time.monotonic() + lease_s
        self._stop = threading.Event()
        self.fired: str | None = None
        self._thread = threading.Thread(target=self._run, name="vvho-rt-watchdog", daemon=True)
        self._thread.start()

    def renew(self) -> None:
        self._expires = time.monotonic() + self._lease_s

    def _run(self) -> None:
        tick = 0.05
        last = time.monotonic()
        while not self._stop.wait(tick):
            now = time.monotonic()
            reason = None
            if now > self._expires:
                reason = f"lease of {self._lease_s:.0f} s not renewed"
            elif now - last > tick + self._late_s:
                reason = f"watchdog woke {1000 * (now - last - tick):.0f} ms late (host starved)"
            last = now
            if reason:
                self.fired = reason
                self._revert(reason)
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
