"""The running QEMU process of a local domain: its pid, vCPU threads and cgroups, found from /proc.

A domain that is destroyed and started again is a new instance: new pid, new thread ids, the settings
of its persistent definition. The backend compares instances to notice that and re-apply its settings;
every read here goes to /proc or cgroupfs, never through libvirtd or QEMU's monitor, so it works while
libvirtd restarts or QEMU is stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vvho_env.live import hostctl


class InstanceGone(OSError):
    """The QEMU process of the domain is not running (any more)."""


@dataclass(frozen=True)
class QemuInstance:
    pid: int
    start_ticks: int
    vcpu_tids: tuple[int, ...]

    @classmethod
    def find(cls, domain: str, n_vcpu: int) -> QemuInstance:
        """The domain's QEMU process now; raises InstanceGone when it has none or its vCPU threads are
        not all there yet (QEMU still starting)."""
        pid = hostctl.qemu_pid(domain)
        start = hostctl.process_start_ticks(pid) if pid is not None else None
        if pid is None or start is None:
            raise InstanceGone(f"no QEMU process runs domain {domain!r} on this host")
        try:
            tids = hostctl.vcpu_thread_ids(pid)
        except OSError as exc:
            raise InstanceGone(f"QEMU process {pid} of domain {domain!r} went away: {exc}") from None
        if len(tids) != n_vcpu:
            raise InstanceGone(f"QEMU process {pid} of domain {domain!r} shows {len(tids)} of its {n_vcpu} "
                               "vCPU threads (still starting?)")
        return cls(pid, start, tuple(tids))

    def alive(self) -> bool:
        return hostctl.process_start_ticks(self.pid) == self.start_ticks

    def check(self) -> None:
        if not self.alive():
            raise InstanceGone(f"QEMU process {self.pid} has exited")

    def vcpu_cgroups(self) -> list[Path]:
        groups = [hostctl.cpu_cgroup_dir(t) for t in self.vcpu_tids]
        return [g for g in groups if g is not None]

    def cpu_s(self) -> float:
        """CPU time of the whole QEMU process (all threads, exited ones included): what libvirt reports
        as the domain's cpu_time when cpuacct is not in use."""
        try:
            return hostctl.thread_cpu_s(self.pid)
        except OSError as exc:
            raise InstanceGone(f"QEMU process {self.pid} has exited ({exc})") from None

    def vcpu_cpu_s(self) -> float:
        try:
            return sum(hostctl.thread_cpu_s(self.pid, t) for t in self.vcpu_tids)
        except OSError as exc:
            raise InstanceGone(f"a vCPU thread of QEMU process {self.pid} has exited ({exc})") from None

    def throttled_s(self) -> tuple[float, float]:
        """Cumulative throttled time of the vCPU cgroups (summed) and of the VM's cgroup."""
        groups = set(self.vcpu_cgroups())
        per_vcpu = sum(hostctl.throttled_s(g) for g in groups)
        vm = hostctl.throttled_s(next(iter(groups)).parent) if groups else 0.0
        return per_vcpu, vm
