"""Calibration fixtures: each published figure of ../shared/calibration.yaml reproduced by a simulated
run whose workload, knobs and host profile are stated here. Tests assert them within +-20%.

Every fixture runs the full simulator; nothing is read back from an input. The exit-cost and
halt-poll rows are taken from the simulator's event trace.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from vvho_env.scenarios import Phase, Scenario
from vvho_env.sim.backend import BatchSim
from vvho_env.sim.engine.layout import Tr
from vvho_env.sim.profiles import PROFILES, XEON_KVM, HostProfile

# The published testbeds ran latency-tuned hosts whose idle states were limited to C1 ("maximum
# performance" BIOS power policy, the VMware paper's stated setup); the fixtures say the same.
LATENCY_TUNED = {"idle_state": "C1"}


@dataclass(frozen=True)
class Result:
    name: str
    measured: float
    published: float | tuple[float, float]
    unit: str

    def within(self, tol: float = 0.2) -> bool:
        if isinstance(self.published, tuple):
            lo, hi = self.published
            return lo * (1 - tol) <= self.measured <= hi * (1 + tol) if tol else lo <= self.measured <= hi
        return abs(self.measured - self.published) <= tol * self.published


def _scenario(name: str, phase: Phase, *, profile: str = "xeon-kvm", closed: bool = False, think_us: float = 0.0,
              client_rtt_us: float = 10.0, slo_us: float = 1000.0) -> Scenario:
    return Scenario(id=f"calib-{name}-v0", version=0, description=name, host_profile=profile, slo_us=slo_us,
                    closed_loop=closed, think_us=think_us, client_rtt_us=client_rtt_us, phases=(phase,))


def _run(sc: Scenario, settings: dict, profile: HostProfile, seconds: float, seed: int = 1,
         trace: bool = False) -> tuple[BatchSim, list]:
    PROFILES["calibration"] = profile
    sc = sc.model_copy(update={"host_profile": "calibration"})
    sim = BatchSim(1)
    sim.reset_env(0, seed, sc, settings=settings, trace=trace)
    tels = [sim.run(0.25)[0] for _ in range(int(seconds / 0.25))]
    del PROFILES["calibration"]
    return sim, tels


def _mean_latency_us(tels: list) -> float:
    n = sum(t.requests for t in tels)
    return sum(t.mean_us * t.requests for t in tels if t.requests) / n


# netperf TCP_RR: one client, one transaction in flight, 1-byte messages; the guest's echo work is
# ~1 us. The client + wire share of the round trip (netperf on the native peer over 10 GbE) is 12 us.
TCP_RR = Phase(name="tcp_rr", intervals=10, rate_rps=0, service_mean_us=1.0, service_cv=0.0)


def halt_poll_tcp_rr() -> tuple[Result, Result]:
    sc = _scenario("tcp-rr", TCP_RR, closed=True, client_rtt_us=12.0)
    out = []
    for hp, pub in ((0, 34.0), (200_000, 27.0)):
        _, tels = _run(sc, {**LATENCY_TUNED, "vcpu_count": 1, "halt_poll_ns": hp}, XEON_KVM, 1.0)
        out.append(Result(f"TCP_RR mean RTT, halt_poll_ns={hp}", _mean_latency_us(tels), pub, "us"))
    return out[0], out[1]


# An idle 250 Hz guest: no requests, one vCPU; its only wake-ups are timer ticks.
IDLE = Phase(name="idle", intervals=10, rate_rps=0, service_mean_us=1.0)


def halt_poll_cpu_cost() -> tuple[Result, Result, Result]:
    sc = _scenario("idle", IDLE)
    cases = (
        ("no polling", {"halt_poll_ns": 0}, XEON_KVM, 1.1),
        ("adaptive polling", {"halt_poll_ns": 200_000}, XEON_KVM, 1.2),
        ("always-poll", {"halt_poll_ns": 200_000}, replace(XEON_KVM, halt_poll_adaptive=0.0), (4.6, 14.0)),
    )
    out = []
    for name, knob, prof, pub in cases:
        _, tels = _run(sc, {**LATENCY_TUNED, "vcpu_count": 1, **knob}, prof, 4.0)
        c0 = 100.0 * float(np.mean([t.vm_cpu for t in tels]))
        out.append(Result(f"idle guest vCPU C0 share, {name}", c0, pub, "%"))
    return out[0], out[1], out[2]


# ping: one ICMP echo every 10 ms, 1 vCPU, idle host. The native figure fixes the client + wire
# share: 18 us minus what the host itself does for a native ping (NIC irq, wake from C1, switch,
# the stack's receive and transmit, ~1 us of reply work).
PING = Phase(name="ping", intervals=10, rate_rps=0, service_mean_us=1.0, service_cv=0.0)


def _native_host_path_us(p: HostProfile) -> float:
    return (p.nic_irq_ns + p.c1_exit_ns + p.ctx_switch_ns + p.guest_rx_ns + p.guest_tx_ns + 1000.0) / 1000.0


def vm_vs_native_ping() -> tuple[Result, Result]:
    client = 18.0 - _native_host_path_us(XEON_KVM)
    sc = _scenario("ping", PING, closed=True, think_us=10_000.0, client_rtt_us=client)
    out = []
    for name, knob, pub in (
        ("default VM", {}, 34.0),
        ("dedicated cores + passthrough", {"vcpu_pinning": "dedicated", "virtio_backend": "sriov"}, 20.0),
    ):
        _, tels = _run(sc, {**LATENCY_TUNED, "vcpu_count": 1, **knob}, XEON_KVM, 2.0)
        p50 = float(np.median([t.p50_us for t in tels if t.requests]))
        out.append(Result(f"ping median, {name}", p50, pub, "us"))
    return out[0], out[1]


# CFS bandwidth: a 1-vCPU guest serving 26 ms requests back to back (closed loop) under a quota of
# 60 ms per 100 ms. A request that starts when the quota is (nearly) spent by the previous ones
# waits for the next period: it completes in (period - quota) + service = 66 ms.
THROTTLE = Phase(name="burst", intervals=10, rate_rps=0, service_mean_us=26_000.0, service_cv=0.0)


def cfs_bandwidth_throttle() -> tuple[Result, Result]:
    sc = _scenario("throttle", THROTTLE, closed=True, client_rtt_us=0.0, slo_us=100_000.0)
    settings = {"vcpu_count": 1, "vcpu_quota": 60_000, "vcpu_period": 100_000}
    _, tels = _run(sc, settings, XEON_KVM, 4.0)
    worst = max(t.p99_us for t in tels if t.requests) / 1000.0
    settings_free = {"vcpu_count": 1}
    _, free = _run(sc, settings_free, XEON_KVM, 1.0)
    unthrottled = float(np.median([t.p50_us for t in free if t.requests])) / 1000.0
    return (Result("26 ms request under 60/100 ms quota, completion (worst)", worst, 66.0, "ms"),
            Result("26 ms request without quota", unthrottled, 26.0, "ms"))


def vm_exit_cost() -> Result:
    """One transmit kick (an ioeventfd exit) in the trace of a single request."""
    sc = _scenario("exit", PING, closed=True, think_us=10_000.0)
    sim, _ = _run(sc, {"vcpu_count": 1}, XEON_KVM, 0.25, trace=True)
    tr = sim.trace(0)
    begins = tr[tr[:, 1] == Tr.EXIT_BEGIN]
    ends = tr[tr[:, 1] == Tr.EXIT_END]
    n = min(len(begins), len(ends))
    cycles = (ends[:n, 0] - begins[:n, 0]) * XEON_KVM.cpu_ghz
    return Result("VM exit + entry (traced kick)", float(np.min(cycles)), (2000.0, 2528.0), "cycles")


def halt_poll_trace(seconds: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Halt-poll window trace of one vCPU under random request gaps: (block_ns, window after) pairs
    in event order, and the window sequence, for comparison against KVM's algorithm."""
    ph = Phase(name="gaps", intervals=10, rate_rps=8000, service_mean_us=5.0, service_cv=0.5)
    sc = _scenario("hp-trace", ph)
    sim, _ = _run(sc, {**LATENCY_TUNED, "vcpu_count": 1}, XEON_KVM, seconds, trace=True)
    tr = sim.trace(0)
    halts = tr[tr[:, 1] == Tr.HALT]
    wins = tr[tr[:, 1] == Tr.HPOLL_WINDOW]
    return halts, wins
