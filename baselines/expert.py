"""The expert baseline: Red Hat's tuned profiles for low-latency virtualization, mapped to our knobs.

Each profile below is the union of what the named tuned profile (and the profiles it includes) sets on
a host, plus the libvirt guest definition Red Hat documents next to it, restricted to knobs we have.
Sources (tuned = github.com/redhat-performance/tuned, profiles/<name>/tuned.conf):

- latency-performance (tuned): ``[cpu] force_latency=cstate.id_no_zero:1|3`` keeps the CPUs out of
  deep C-states (-> idle_state C1), ``governor=performance``. No scheduler, polling or pinning change.
- network-latency (tuned; include=latency-performance): ``net.core.busy_read=50`` and
  ``net.core.busy_poll=50`` (-> busy_poll_us 50), THP off, numa_balancing off.
- realtime (tuned; include=network-latency): isolated_cores for the latency work, housekeeping CPUs
  for everything else.
- realtime-virtual-host (tuned; include=realtime): the KVM host for RT guests; ``kvm_intel
  ple_gap=0`` (-> ple_window 0, PLE off). The matching guest definition (Red Hat "Real Time KVM"
  / RHEL for Real Time guide, libvirt formatdomain cputune) pins each vCPU to its own isolated
  pCPU (``vcpupin`` -> vcpu_pinning dedicated), gives the vCPU threads ``vcpusched scheduler='fifo'
  priority='1'`` (-> vcpu_sched_policy fifo), pins the emulator threads to housekeeping CPUs
  (``emulatorpin`` -> emulator_placement housekeeping) and sets no CPU bandwidth limits (quotas
  unlimited, the libvirt default).

Knobs no profile touches (halt_poll_ns, coalescing, guest haltpoll, the scheduler slice, shares) keep
the scenario's start values. A host profile that cannot set a knob (e.g. the TCG testbed has no
C-states or PLE) simply holds it, as for every method.
"""

from __future__ import annotations

from baselines.static import FixedTuner
from vvho_env.types import Settings

_LATENCY_PERFORMANCE: Settings = {"idle_state": "C1"}
_NETWORK_LATENCY: Settings = {**_LATENCY_PERFORMANCE, "busy_poll_us": 50}
_REALTIME_VIRTUAL_HOST: Settings = {
    **_NETWORK_LATENCY,
    "ple_window": 0,
    "vcpu_pinning": "dedicated",
    "vcpu_sched_policy": "fifo",
    "emulator_placement": "housekeeping",
    "vcpu_quota": -1,
    "emulator_quota": -1,
    "global_quota": -1,
}

PROFILES: dict[str, Settings] = {
    "latency-performance": _LATENCY_PERFORMANCE,
    "network-latency": _NETWORK_LATENCY,
    "realtime-virtual-host": _REALTIME_VIRTUAL_HOST,
}
DEFAULT_PROFILE = "realtime-virtual-host"


def expert(profile: str = DEFAULT_PROFILE) -> FixedTuner:
    if profile not in PROFILES:
        raise ValueError(f"unknown expert profile {profile!r}; accepted: {', '.join(PROFILES)}")
    return FixedTuner(f"expert:{profile}", PROFILES[profile])
