"""A live window's telemetry: the VM's CPU accounting around the latency window, assembled into Telemetry.

For a local domain the accounting comes from /proc and cgroupfs (QEMU's utime+stime, what libvirt
itself reports as cpu_time without cpuacct; vCPU thread times; cgroup throttled_time), so windows can
still be measured while libvirtd restarts. For a remote URI it goes through libvirt (getCPUStats,
vcpus) and throttled time is unknown. The neighbours are the backend's own neighbour processes when
it runs them, else everything else on the host (vvho_env.live.hostload).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from vvho_env.live import hostctl, hostload
from vvho_env.live.drivers.base import HostContext
from vvho_env.live.latency import LatencyWindow
from vvho_env.live.neighbours import Neighbours, NeighbourSample
from vvho_env.types import Status, Telemetry


@dataclass(frozen=True)
class Counters:
    t: float  # monotonic seconds
    vm_cpu_s: float
    vcpu_cpu_s: float
    throttled_vcpu_s: float
    throttled_vm_s: float
    neighbours: NeighbourSample
    neighbour_cpu_s: float
    host: hostload.HostSample | None  # when the backend runs no neighbours: the rest of the host


def sample(ctx: HostContext, neighbours: Neighbours | None) -> Counters:
    """Cumulative counters now. Raises InstanceGone/OSError (local) or a typed libvirt fault (remote)."""
    if ctx.local:
        inst = ctx.require_instance()
        vm, vcpu = inst.cpu_s(), inst.vcpu_cpu_s()
        thr_vcpu, thr_vm = inst.throttled_s()
    else:
        vm = ctx.link.call("reading CPU stats", lambda d: d.getCPUStats(True)[0]["cpu_time"]) / 1e9
        vcpu = ctx.link.call("reading vCPU times", lambda d: sum(v[2] for v in d.vcpus()[0])) / 1e9
        thr_vcpu = thr_vm = 0.0
    ncpu = 0.0
    for pid in neighbours.pids() if neighbours else ():
        with contextlib.suppress(OSError):
            ncpu += hostctl.thread_cpu_s(pid)
    host = hostload.sample(ctx.instance.pid if ctx.instance else None) if ctx.local and not neighbours else None
    return Counters(time.monotonic(), vm, vcpu, thr_vcpu, thr_vm,
                    neighbours.sample() if neighbours else NeighbourSample(0.0, 0.0), ncpu, host)


def assemble(win: LatencyWindow, a: Counters, b: Counters, *, n_vcpu: int, dedicated: bool, slo_us: float,
             vcpu_cpus: tuple[int, ...], faults: list[str], remarks: list[str]) -> Telemetry:
    """Telemetry of one window. DEGRADED when requests timed out or failed, the probe was too noisy, or
    the backend met `faults` on the way (a reconnect, a re-apply); `remarks` are notes that do not
    degrade the window (where the probe ran, what the target cannot do)."""
    elapsed = max(b.t - a.t, 1e-9)
    all_notes = list(faults) + win.notes + list(remarks)
    status = Status.DEGRADED if (win.timeouts or win.errors or faults) else Status.OK
    if win.noise is not None:
        note = win.noise.note()
        if note:
            all_notes.append(note)
        if win.noise.too_noisy:
            status = Status.DEGRADED
    vcpu_busy = (b.vcpu_cpu_s - a.vcpu_cpu_s) / elapsed
    reserved = max(0.0, n_vcpu - vcpu_busy) if dedicated else 0.0
    if a.host is not None and b.host is not None:
        nb_cpu, nb_slow = hostload.neighbour_load(a.host, b.host, vcpu_cpus, b.vm_cpu_s - a.vm_cpu_s, elapsed)
    else:
        nb_cpu, nb_slow = (b.neighbour_cpu_s - a.neighbour_cpu_s) / elapsed, (b.neighbours - a.neighbours).slowdown
    h = win.histogram
    return Telemetry(
        window_s=win.window_s,
        requests=win.requests,
        p50_us=h.percentile_us(50),
        p99_us=h.percentile_us(99),
        p999_us=h.percentile_us(99.9),
        mean_us=win.mean_us,
        slo_us=slo_us,
        slo_violations=win.violations,
        offered_rps=win.offered / win.window_s,
        served_rps=win.completed / win.window_s,
        vm_cpu=(b.vm_cpu_s - a.vm_cpu_s) / elapsed + reserved,
        polling_cpu=0.0,  # not separable here: host halt-polling shows as vCPU time, TCG has none
        reserved_cores=reserved,
        throttled_frac=min(1.0, max((b.throttled_vcpu_s - a.throttled_vcpu_s) / (elapsed * n_vcpu),
                                    (b.throttled_vm_s - a.throttled_vm_s) / elapsed)),
        neighbour_cpu=nb_cpu,
        neighbour_slowdown=nb_slow,
        errors=win.errors + win.timeouts,
        status=status,
        notes=tuple(all_notes),
        histogram=h.counts.copy(),
    )
