"""The neighbours' side of a window on a real host: CPU used by, and waiting of, everything but the VM.

When the backend runs no neighbour processes of its own (a host agent on a production host), the
neighbours are whatever else runs there. Their CPU is the busy time of the pCPUs the vCPUs may use
(/proc/stat) minus the VM's own; their slowdown is the share of their runnable time spent waiting for a
CPU, from every other task's sched_info (/proc/PID/task/TID/schedstat: ns on CPU, ns waiting on a
runqueue), the same quantity the project's neighbour processes report about themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vvho_env.live.hostctl import CLK_TCK


@dataclass(frozen=True)
class HostSample:
    busy_s: dict[int, float]  # pCPU -> cumulative busy seconds
    tasks: dict[int, tuple[int, int]]  # tid -> (ns on CPU, ns waiting), every task outside the VM


def _cpu_busy() -> dict[int, float]:
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *vals = line.split()
            v = [int(x) for x in vals]
            idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
            out[int(name[3:])] = (sum(v[:8]) - idle) / CLK_TCK  # guest time is already in user
    return out


def _tasks(exclude_pid: int | None) -> dict[int, tuple[int, int]]:
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == exclude_pid:
            continue
        with contextlib.suppress(OSError):
            for task in (proc / "task").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    run, wait, _ = (task / "schedstat").read_text().split()
                    out[int(task.name)] = (int(run), int(wait))
    return out


def sample(vm_pid: int | None) -> HostSample:
    return HostSample(_cpu_busy(), _tasks(vm_pid))


def neighbour_load(a: HostSample, b: HostSample, cpus: Sequence[int], vm_cpu_s: float,
                   elapsed_s: float) -> tuple[float, float]:
    """(CPU cores used by others on `cpus`, their slowdown 0..1) between samples a and b."""
    busy = sum(b.busy_s.get(c, 0.0) - a.busy_s.get(c, 0.0) for c in cpus)
    cpu = max(0.0, (busy - vm_cpu_s) / elapsed_s)
    run = wait = 0
    for tid, (r1, w1) in b.tasks.items():
        if tid in a.tasks:
            r0, w0 = a.tasks[tid]
            run, wait = run + r1 - r0, wait + w1 - w0
    return cpu, (wait / (run + wait) if run + wait > 0 else 0.0)
