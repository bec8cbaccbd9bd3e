"""Host-side plumbing for a local libvirt domain: vCPU thread ids, cgroup files, RT budgets, CPU time.

Kept apart from the drivers so that they read as knob logic, not as /proc parsing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
RT_RUNTIME_SYSCTL = Path("/proc/sys/kernel/sched_rt_runtime_us")
HALT_POLL = Path("/sys/module/kvm/parameters/halt_poll_ns")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1


VCPU_THREAD = re.compile(r"CPU (\d+)/(KVM|TCG|HVF|WHPX)$")  # QEMU's vCPU thread names (debug-threads=on)


def vcpu_thread_ids(pid: int) -> list[int]:
    """vCPU thread ids of a QEMU process, in vCPU order, from the thread names QEMU gives them.

    libvirt always starts QEMU with ``-name ...,debug-threads=on``, so vCPU n's thread is called
    "CPU n/TCG" (or /KVM). Read from /proc rather than asked over QEMU's monitor (query-cpus-fast): the
    monitor blocks while QEMU is stopped, /proc answers whatever QEMU's state.
    """
    found: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            m = VCPU_THREAD.match((task / "comm").read_text().strip())
            if m:
                found[int(m.group(1))] = int(task.name)
    return [found[i] for i in sorted(found)]


def process_start_ticks(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), None if gone.

    A pid plus its start time names one process for good: pids are reused, start times are not."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent thread exits (PR_SET_PDEATHSIG).

    Called first thing in a helper process, so that a killed controller never leaves helpers behind;
    exits at once if the parent is already gone (the race between fork and prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getppid()
    if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent or parent == 1:
        os._exit(0)


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
                # libvirt passes "-name guest=NAME,debug-threads=on": match the whole name, not a prefix
                if f"\0guest={domain},".encode() in (proc / "cmdline").read_bytes():
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


def rt_chain(vcpu_groups: Sequence[Path]) -> list[Path]:
    """The cgroup-v1 directories whose cpu.rt_runtime_us a FIFO vCPU needs: each vCPU group and its
    parents below the root, parents first."""
    chain: set[Path] = set()
    for g in vcpu_groups:
        node = g
        while (node / "cpu.rt_runtime_us").is_file() and node != CGROUP_ROOT / "cpu":
            chain.add(node)
            node = node.parent
    return sorted(chain, key=lambda p: len(p.parts))


def read_rt_runtime(paths: Sequence[Path]) -> dict[str, int]:
    return {str(p): int((p / "cpu.rt_runtime_us").read_text()) for p in paths}


@dataclass
class RtBudget:
    """RT runtime granted down a cgroup-v1 chain so SCHED_FIFO is allowed (CONFIG_RT_GROUP_SCHED).

    With RT group scheduling a thread in a group with cpu.rt_runtime_us = 0 cannot become FIFO (EPERM).
    Granting each vCPU group a share (< 1 CPU) is itself a second RT limit on top of the global one.
    `before` maps each cgroup directory to the runtime it had, for the revert (by us or the lease).
    """

    before: dict[str, int]

    @classmethod
    def grant(cls, vcpu_groups: Sequence[Path], share: float) -> RtBudget:
        chain = rt_chain(vcpu_groups)
        want: dict[Path, int] = {}
        for g in vcpu_groups:
            grant = int(share * int((g / "cpu.rt_period_us").read_text()))
            for node in chain:
                if node == g or node in g.parents:
                    want[node] = want.get(node, 0) + grant if node != g else max(want.get(node, 0), grant)
        budget = cls(read_rt_runtime(chain))
        try:
            for path in chain:  # parents first: a child may not get more than its parent has
                if budget.before[str(path)] < want.get(path, 0):
                    (path / "cpu.rt_runtime_us").write_text(str(want[path]))
        except OSError:
            budget.restore()
            raise
        return budget

    def restore(self) -> None:
        for path in sorted(self.before, key=lambda p: -len(Path(p).parts)):  # children first
            with contextlib.suppress(OSError):
                (Path(path) / "cpu.rt_runtime_us").write_text(str(self.before[path]))
