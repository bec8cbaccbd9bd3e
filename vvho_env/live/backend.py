"""LibvirtBackend: the Backend protocol over a real libvirt domain and a real latency probe.

Knobs are set through libvirt where libvirt can (pinning, CFS bandwidth, shares), on the host where only the
host can (SCHED_FIFO on the vCPU thread ids libvirt reports, KVM's halt_poll_ns) and inside the guest through
the test service's control lines (net.core.busy_poll). Every apply is a transaction: snapshot, apply, read
back, and on any failure roll back everything to the snapshot before raising ApplyRejected naming the knob.
close() restores the snapshot taken when the backend was opened.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from vvho_env import knobs
from vvho_env.live import hostctl
from vvho_env.live.neighbours import Neighbours, NeighbourSample
from vvho_env.live.probe import LocalEcho, ProbeResult, run_probe
from vvho_env.live.testbed import DEFAULT_DOMAIN, DEFAULT_URI, TestbedState, cache_dir
from vvho_env.types import (
    ApplyRejected,
    BackendUnavailable,
    Capabilities,
    KnobValue,
    MeasurementFailed,
    Settings,
    Status,
    Telemetry,
)

if TYPE_CHECKING:
    from vvho_env.scenarios import Scenario

SCHED_KEYS = {
    "vcpu_quota": ("vcpu_quota",),
    "emulator_quota": ("emulator_quota",),
    "global_quota": ("global_quota",),
    "cpu_shares": ("cpu_shares",),
    "vcpu_period": ("vcpu_period", "emulator_period", "global_period"),
}
LIBVIRT_MAX_QUOTA = 17592186044415  # what libvirt shows for an unlimited quota after a cgroup round trip


QUOTA_CHILDREN_FIRST = ("vcpu_quota", "emulator_quota", "global_quota")  # global_* is the parent cgroup


def apply_order(settings: Mapping[str, KnobValue]) -> list[str]:
    """The order to set knobs in: placement first, then quotas being lifted to unlimited, then the period,
    then limited quotas children before the parent, then the rest. cgroup v1 rejects (EINVAL) a period
    or quota that would give a child a larger quota/period ratio than its parent's, so a constraint is
    lifted before the period changes and a new one is imposed after it, bottom-up."""
    def key(k: str) -> tuple[int, int, str]:
        if k == "vcpu_pinning":
            return (0, 0, k)
        if k in QUOTA_CHILDREN_FIRST:
            return (1, 0, k) if settings[k] == -1 else (3, QUOTA_CHILDREN_FIRST.index(k), k)
        return (2, 0, k) if k == "vcpu_period" else (4, 0, k)

    return sorted(settings, key=key)
GUEST_KNOBS = {"busy_poll_us": "busy_poll"}
NOISE_BUDGET = 0.10  # probe noise p99 must stay under this share of the guest's baseline p99


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError as exc:
        raise BackendUnavailable(
            "libvirt-python is not installed; run scripts/install-testbed-deps.sh .venv"
        ) from exc
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors arrive as exceptions instead
    return libvirt


def is_local_uri(uri: str) -> bool:
    """Host-side knobs (thread policies, sysfs) need the domain on this machine."""
    return not urlparse(uri).netloc


@dataclass
class _Snapshot:
    settings: Settings
    vcpu_pins: list[tuple[bool, ...]]
    emulator_pin: tuple[bool, ...]
    sched: dict[str, int]
    policies: dict[int, int] = field(default_factory=dict)
    halt_poll_ns: int | None = None


class GuestControl:
    """The guest service's control lines ('!get NAME', '!set NAME VALUE') over the forwarded port."""

    def __init__(self, host: str, port: int, timeout_s: float = 5.0) -> None:
        self.addr = (host, port)
        self.timeout_s = timeout_s

    def _ask(self, line: str) -> str:
        with socket.create_connection(self.addr, timeout=self.timeout_s) as s:
            s.sendall(line.encode() + b"\n")
            reply = s.makefile().readline().strip()
        if not reply.startswith("ok "):
            raise OSError(f"guest answered {reply!r} to {line!r}")
        return reply.split()[-1]

    def get(self, name: str) -> int:
        return int(self._ask(f"!get {name}"))

    def set(self, name: str, value: int) -> int:
        return int(self._ask(f"!set {name} {value}"))


class LibvirtBackend:
    """Backend protocol over libvirt (any URI) + the open-loop probe into the guest service.

    Arguments: uri, domain; port = the loopback port forwarded to the guest service (default: the one
    `vvho testbed up` recorded); probe_host; rate_scale and max_rate_rps map the scenario's request rate onto
    what this host and guest can serve (TCG guests serve a few hundred req/s); neighbour_cpus = pCPUs that
    get a CPU-bound neighbour (default: every pCPU but 0, the housekeeping one the probe uses);
    fifo_rt_share = RT budget per vCPU group while SCHED_FIFO is applied; fifo_lease_s = watchdog lease.
    """

    def __init__(
        self,
        uri: str = DEFAULT_URI,
        domain: str = DEFAULT_DOMAIN,
        *,
        port: int | None = None,
        probe_host: str = "127.0.0.1",
        rate_scale: float = 1.0,
        max_rate_rps: float = 400.0,
        connections: int = 4,
        neighbour_cpus: tuple[int, ...] | None = None,
        fifo_rt_share: float = 0.5,
        fifo_lease_s: float = 30.0,
        probe_timeout_s: float = 1.0,
    ) -> None:
        self.uri, self.domain_name = uri, domain
        self.local = is_local_uri(uri)
        self.probe_host = probe_host
        self.rate_scale, self.max_rate_rps, self.connections = rate_scale, max_rate_rps, connections
        self.fifo_rt_share, self.fifo_lease_s, self.probe_timeout_s = (
            fifo_rt_share,
            fifo_lease_s,
            probe_timeout_s,
        )
        self._closed = False
        self._lv = _libvirt()
        try:
            self.conn = self._lv.open(uri)
        except self._lv.libvirtError as exc:
            raise BackendUnavailable(
                f"cannot connect to libvirt at {uri!r}: {exc.get_error_message()}. Check the URI "
                "(e.g. qemu:///system) and that libvirtd runs: scripts/start-libvirt.sh"
            ) from None
        self.dom = self._lookup_domain()
        state = TestbedState.load(domain)
        if port is None and state is None:
            raise BackendUnavailable(
                f"no probe port known for domain {domain!r}: pass port=<loopback port forwarded to the guest "
                f"service> or start the testbed with `vvho testbed up --domain {domain}`"
            )
        self.port = port if port is not None else state.port  # type: ignore[union-attr]
        self.guest = GuestControl(probe_host, self.port)
        self._check_probe_port()
        self.n_pcpu = self.conn.getInfo()[2]
        self.n_vcpu = self.dom.info()[3]
        self.all_cpus = tuple(range(self.n_pcpu))
        self.dedicated_cpus = tuple(self.n_pcpu - 1 - i for i in range(self.n_vcpu))
        self.housekeeping_cpus = tuple(c for c in self.all_cpus if c not in self.dedicated_cpus) or (0,)
        self.neighbour_cpus = (
            neighbour_cpus
            if neighbour_cpus is not None
            else (tuple(c for c in self.all_cpus if c != 0) or (0,))
        )
        self.qemu_pid = hostctl.qemu_pid(domain) if self.local else None
        self.vcpu_tids = self._vcpu_tids()
        self._caps = self._probe_capabilities()
        self._snapshot = self._take_snapshot()
        self._rt_budget: hostctl.RtBudget | None = None
        self._watchdog: hostctl.RtWatchdog | None = None
        self._scenario: Scenario | None = None
        self._step = 0
        self._seed = 0
        self._baseline_p99_us: float | None = None
        self._neighbours: Neighbours | None = None
        self._echo: LocalEcho | None = None
        self._notes: list[str] = []
        atexit.register(self.close)

    # ------------------------------------------------------------------ connection + checks
    def _lookup_domain(self) -> Any:
        try:
            dom = self.conn.lookupByName(self.domain_name)
        except self._lv.libvirtError:
            known = ", ".join(d.name() for d in self.conn.listAllDomains()) or "none"
            raise BackendUnavailable(
                f"domain {self.domain_name!r} not found at {self.uri!r} (domains there: {known}); start the "
                f"testbed with `vvho testbed up` or pass domain=<one of them>"
            ) from None
        if not dom.isActive():
            raise BackendUnavailable(
                f"domain {self.domain_name!r} at {self.uri!r} is defined but not running; start it with "
                f"`virsh -c {self.uri} start {self.domain_name}` or `vvho testbed up`"
            )
        return dom

    def _check_probe_port(self) -> None:
        try:
            self.guest.get("busy_poll")
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(
                f"the guest service does not answer on {self.probe_host}:{self.port} ({exc}); "
                f"tried a control request there. Check the domain's hostfwd "
                f"(virsh dumpxml {self.domain_name} | grep hostfwd), that the guest finished booting "
                "(`vvho testbed status`), or pass the right port="
            ) from None

    def _vcpu_tids(self) -> list[int]:
        if not self.local:
            return []
        try:
            return hostctl.vcpu_thread_ids(self.dom)
        except Exception:  # libvirt_qemu missing or monitor busy: host-side thread knobs become unavailable
            return []

    def _guard(self, what: str) -> None:
        """Turn a vanished libvirtd/domain into BackendUnavailable, the error the env truncates on."""
        try:
            alive = bool(self.conn.isAlive()) and bool(self.dom.isActive())
        except self._lv.libvirtError:
            alive = False
        if not alive:
            raise BackendUnavailable(
                f"lost domain {self.domain_name!r} at {self.uri!r} while {what} (libvirtd stopped or the "
                "domain was destroyed); restart with `vvho testbed up`"
            )

    # ------------------------------------------------------------------ capabilities
    def _probe_capabilities(self) -> Capabilities:
        settable: set[str] = set()
        if self.n_pcpu > self.n_vcpu:  # 'dedicated' needs a pCPU per vCPU plus one to house the rest
            settable |= {"vcpu_pinning", "emulator_placement"}
        params = self.dom.schedulerParameters()
        settable |= {k for k, keys in SCHED_KEYS.items() if all(p in params for p in keys)}
        if self.local and os.geteuid() == 0 and self.vcpu_tids and hostctl.rt_limit_in_force():
            settable.add("vcpu_sched_policy")
        host_wide: set[str] = set()
        if (
            self.local
            and self.dom.XMLDesc(0).lstrip().startswith("<domain type='kvm'")
            and os.access(hostctl.HALT_POLL, os.W_OK)
        ):
            settable.add("halt_poll_ns")
            host_wide.add("halt_poll_ns")
        with contextlib.suppress(OSError, ValueError):
            self.guest.get("busy_poll")
            settable.add("busy_poll_us")
        return Capabilities(frozenset(settable), frozenset(host_wide), deterministic=False)

    def capabilities(self) -> Capabilities:
        return self._caps

    # ------------------------------------------------------------------ read back
    def _cpuset(self, mask: tuple[bool, ...]) -> tuple[int, ...]:
        return tuple(i for i, on in enumerate(mask) if on)

    def _mask(self, cpus: tuple[int, ...]) -> tuple[bool, ...]:
        return tuple(i in cpus for i in range(self.n_pcpu))

    def read(self) -> Settings:
        """The current value of every settable knob, read from libvirt, the host and the guest."""
        caps = self._caps.settable
        out: Settings = {}
        vcpu_sets = [self._cpuset(m) for m in self.dom.vcpuPinInfo()]
        if "vcpu_pinning" in caps:
            ded = all(s == (c,) for s, c in zip(vcpu_sets, self.dedicated_cpus, strict=True))
            out["vcpu_pinning"] = "dedicated" if ded else "shared"
        if "emulator_placement" in caps:
            emu = self._cpuset(self.dom.emulatorPinInfo())
            out["emulator_placement"] = (
                "housekeeping"
                if emu == self._housekeeping_for(vcpu_sets) and set(emu) != set().union(*map(set, vcpu_sets))
                else "with_vcpus"
            )
        params = self.dom.schedulerParameters()
        for knob, keys in SCHED_KEYS.items():
            if knob in caps:
                value = int(params[keys[0]])
                unlimited = value <= 0 or value >= LIBVIRT_MAX_QUOTA  # libvirt reports either
                out[knob] = -1 if knob.endswith("_quota") and unlimited else value
        if "vcpu_sched_policy" in caps:
            pols = {os.sched_getscheduler(t) for t in self.vcpu_tids}
            out["vcpu_sched_policy"] = "fifo" if pols == {os.SCHED_FIFO} else "other"
        if "halt_poll_ns" in caps:
            out["halt_poll_ns"] = int(hostctl.HALT_POLL.read_text())
        for knob, name in GUEST_KNOBS.items():
            if knob in caps:
                out[knob] = self.guest.get(name)
        return out

    def _housekeeping_for(self, vcpu_sets: list[tuple[int, ...]]) -> tuple[int, ...]:
        used = set().union(*map(set, vcpu_sets))
        free = tuple(c for c in self.all_cpus if c not in used)
        return free or self.housekeeping_cpus

    def _take_snapshot(self) -> _Snapshot:
        policies = {t: os.sched_getscheduler(t) for t in self.vcpu_tids} if self.local else {}
        halt = int(hostctl.HALT_POLL.read_text()) if "halt_poll_ns" in self._caps.settable else None
        return _Snapshot(
            self.read(),
            list(self.dom.vcpuPinInfo()),
            tuple(self.dom.emulatorPinInfo()),
            {k: int(v) for k, v in self.dom.schedulerParameters().items()},
            policies,
            halt,
        )

    # ------------------------------------------------------------------ set
    def _set(self, knob: str, value: KnobValue, pending: Mapping[str, KnobValue]) -> None:
        flags = self._lv.VIR_DOMAIN_AFFECT_LIVE
        if knob == "vcpu_pinning":
            for v in range(self.n_vcpu):
                cpus = (self.dedicated_cpus[v],) if value == "dedicated" else self.all_cpus
                self.dom.pinVcpuFlags(v, self._mask(cpus), flags)
        elif knob == "emulator_placement":
            vcpu_sets = [self._cpuset(m) for m in self.dom.vcpuPinInfo()]
            cpus = (
                self._housekeeping_for(vcpu_sets)
                if value == "housekeeping"
                else tuple(sorted(set().union(*map(set, vcpu_sets))))
            )
            self.dom.pinEmulator(self._mask(cpus), flags)
        elif knob in SCHED_KEYS:
            raw = int(value)
            self.dom.setSchedulerParametersFlags({k: raw for k in SCHED_KEYS[knob]}, flags)
        elif knob == "vcpu_sched_policy":
            self._set_policy(str(value))
        elif knob == "halt_poll_ns":
            hostctl.HALT_POLL.write_text(str(int(value)))
        elif knob in GUEST_KNOBS:
            self.guest.set(GUEST_KNOBS[knob], int(value))
        else:
            raise ApplyRejected(f"knob {knob!r} has no setter in the libvirt backend")

    def _set_policy(self, policy: str) -> None:
        if policy == "fifo":
            if not hostctl.rt_limit_in_force():
                raise ApplyRejected(
                    "knob 'vcpu_sched_policy': refusing SCHED_FIFO while sched_rt_runtime_us = -1 "
                    "(no RT limit): a spinning FIFO vCPU could hang the host; "
                    "set /proc/sys/kernel/sched_rt_runtime_us to 950000"
                )
            groups = [g for g in (hostctl.cpu_cgroup_dir(t) for t in self.vcpu_tids) if g is not None]
            if self._rt_budget is None and groups and (groups[0] / "cpu.rt_runtime_us").is_file():
                self._rt_budget = hostctl.RtBudget.grant(groups, self.fifo_rt_share)
            for t in self.vcpu_tids:
                os.sched_setscheduler(t, os.SCHED_FIFO, os.sched_param(1))
            if self._watchdog is None:
                self._watchdog = hostctl.RtWatchdog(self._watchdog_revert, self.fifo_lease_s)
        else:
            for t in self.vcpu_tids:
                os.sched_setscheduler(t, os.SCHED_OTHER, os.sched_param(0))
            self._drop_rt()

    def _drop_rt(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        if self._rt_budget is not None:
            self._rt_budget.restore()
            self._rt_budget = None

    def _watchdog_revert(self, reason: str) -> None:
        for t in self.vcpu_tids:
            with contextlib.suppress(OSError):
                os.sched_setscheduler(t, os.SCHED_OTHER, os.sched_param(0))
        if self._rt_budget is not None:
            self._rt_budget.restore()
            self._rt_budget = None
        self._notes.append(f"RT watchdog reverted vcpu_sched_policy to 'other': {reason}")

    def apply(self, settings: Mapping[str, KnobValue]) -> Settings:
        """Set `settings` transactionally; returns their read-back values. Raises ApplyRejected."""
        self._check_open()
        wanted: Settings = {}
        for name, value in settings.items():
            try:
                wanted[name] = knobs.get(name).validate(value)
            except knobs.KnobError as exc:
                raise ApplyRejected(str(exc)) from None
            if name not in self._caps.settable:
                raise ApplyRejected(
                    f"knob {name!r} cannot be set on this host "
                    f"(domain {self.domain_name!r} at {self.uri!r}); "
                    f"settable here: {', '.join(sorted(self._caps.settable))}. Hold it fixed (action mask)."
                )
        self._guard("applying settings")
        before = self.read()
        order = apply_order(wanted)
        knob = "?"
        try:
            for knob in order:
                if before.get(knob) != wanted[knob]:
                    self._set(knob, wanted[knob], wanted)
            after = self.read()
            for knob in order:
                if after[knob] != wanted[knob]:
                    raise ApplyRejected(f"read back {after[knob]!r} after setting {wanted[knob]!r}")
        except Exception as exc:
            failed = knob
            rollback_errors = self._restore(before)
            if isinstance(exc, BackendUnavailable):
                raise
            self._guard(f"applying {failed!r}")
            msg = str(exc.get_error_message()) if isinstance(exc, self._lv.libvirtError) else str(exc)
            extra = f"; rollback also failed for: {rollback_errors}" if rollback_errors else ""
            raise ApplyRejected(
                f"knob {failed!r} = {wanted[failed]!r} failed: {msg}; every knob was rolled back to its "
                f"value before this apply{extra}"
            ) from exc
        return {k: after[k] for k in wanted}

    def _restore(self, target: Mapping[str, KnobValue]) -> list[str]:
        """Best-effort: set every knob back to `target`; returns the knobs that could not be restored."""
        failed = []
        current: Settings = {}
        with contextlib.suppress(Exception):
            current = self.read()
        order = apply_order(target)
        for knob in order:
            if current.get(knob) == target[knob]:
                continue
            try:
                self._set(knob, target[knob], target)
            except Exception as exc:
                failed.append(f"{knob} ({exc})")
        return failed

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None, scenario: Scenario) -> None:
        """Restore the opening snapshot, start neighbours and the local echo, measure the baseline once."""
        self._check_open()
        self._guard("resetting")
        self._scenario = scenario
        self._seed = 0 if seed is None else int(seed)
        self._step = 0
        failed = self._restore(self._snapshot.settings)
        if failed:
            raise ApplyRejected(f"reset could not restore the opening settings: {', '.join(failed)}")
        if self._neighbours is None or not self._neighbours.alive():
            if self._neighbours is not None:
                self._neighbours.close()
            self._neighbours = Neighbours(self.neighbour_cpus)
        self._place_neighbours()
        if self._echo is None:
            try:
                self._echo = LocalEcho(cache_dir() / "vvho-service", self._probe_cpus())
            except (OSError, RuntimeError) as exc:
                self._notes.append(f"no probe noise check: {exc}")
        if self._baseline_p99_us is None:
            _, phase, _ = scenario.phase_at(0)
            self._neighbours.set_demand([0.0])
            res = self._probe(
                min(2.0, max(1.0, scenario.interval_s)), self._rate(phase.rate_rps), phase.service_mean_us
            )
            if res.guest.completed:
                self._baseline_p99_us = res.guest.percentile_us(99)

    def _rate(self, scenario_rps: float) -> float:
        return max(1.0, min(self.max_rate_rps, scenario_rps * self.rate_scale))

    def _probe_cpus(self) -> tuple[int, ...]:
        vcpu_cpus = set().union(*(set(self._cpuset(m)) for m in self.dom.vcpuPinInfo()))
        away = tuple(c for c in self.housekeeping_cpus if c not in vcpu_cpus)
        return away or self.housekeeping_cpus

    def _place_neighbours(self) -> None:
        """Neighbours stay off pCPUs dedicated to vCPUs: a dedicated core is the VM's alone."""
        if self._neighbours is None:
            return
        dedicated = set(self.dedicated_cpus) if self.read().get("vcpu_pinning") == "dedicated" else set()
        for cpu, pid in zip(self._neighbours.cpus, self._neighbours.pids(), strict=False):
            target = {cpu} if cpu not in dedicated else (set(self.housekeeping_cpus) or {cpu})
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, target)

    def _probe(self, window_s: float, rate: float, service_us: float) -> ProbeResult:
        try:
            return run_probe(
                self.probe_host,
                self.port,
                rate,
                window_s,
                service_us=service_us,
                connections=self.connections,
                timeout_s=self.probe_timeout_s,
                local_port=self._echo.port if self._echo else None,
                probe_cpus=self._probe_cpus(),
                seed=self._seed * 100_003 + self._step,
            )
        except OSError as exc:
            self._guard("probing")
            raise MeasurementFailed(
                f"probe could not reach the guest service at {self.probe_host}:{self.port}: {exc}; "
                "the domain is running, so check the guest console (vvho testbed status)"
            ) from None

    def measure(self, window_s: float) -> Telemetry:
        """Run the probe for one control interval under the scenario's current phase."""
        self._check_open()
        if self._scenario is None:
            raise MeasurementFailed("measure() before reset(): call reset(seed, scenario) first")
        self._guard("measuring")
        if self._watchdog is not None:
            self._watchdog.renew()
        _, phase, frac = self._scenario.phase_at(self._step)
        self._step += 1
        assert self._neighbours is not None
        self._neighbours.set_demand(
            [
                phase.neighbour_demand[i % len(phase.neighbour_demand)]
                for i in range(len(self._neighbours.cpus))
            ]
        )
        self._place_neighbours()
        try:
            before = self._counters()
            t0 = time.monotonic()
            res = self._probe(window_s, self._rate(phase.rate_at(frac)), phase.service_mean_us)
            after = self._counters()
            elapsed = time.monotonic() - t0
        except (self._lv.libvirtError, OSError) as exc:
            self._guard("measuring")
            raise MeasurementFailed(f"reading the VM's CPU accounting failed: {exc}") from None
        if self._watchdog is not None:
            self._watchdog.renew()
        return self._telemetry(res, before, after, elapsed)

    @dataclass
    class _Counters:
        vm_cpu_s: float
        vcpu_cpu_s: float
        throttled_vcpu_s: float
        throttled_vm_s: float
        neighbours: NeighbourSample
        neighbour_cpu_s: float

    def _counters(self) -> LibvirtBackend._Counters:
        stats = self.dom.getCPUStats(True)[0]  # the VM cgroup's cpuacct, via libvirt (works remotely too)
        vcpu_s = sum(v[2] for v in self.dom.vcpus()[0]) / 1e9
        thr_vcpu = thr_vm = 0.0
        if self.local:
            groups = {g for g in (hostctl.cpu_cgroup_dir(t) for t in self.vcpu_tids) if g is not None}
            thr_vcpu = sum(hostctl.throttled_s(g) for g in groups)
            if groups:
                thr_vm = hostctl.throttled_s(next(iter(groups)).parent)
        assert self._neighbours is not None
        ncpu = 0.0
        for pid in self._neighbours.pids():
            with contextlib.suppress(OSError):
                ncpu += hostctl.thread_cpu_s(pid)
        return self._Counters(
            stats["cpu_time"] / 1e9, vcpu_s, thr_vcpu, thr_vm, self._neighbours.sample(), ncpu
        )

    def _telemetry(self, res: ProbeResult, a: _Counters, b: _Counters, elapsed: float) -> Telemetry:
        g = res.guest
        if g.completed == 0 and g.timeouts == 0:
            raise MeasurementFailed(
                f"no request completed in {res.window_s:.2f} s ({g.errors} errors, {g.sent} sent) to "
                f"{self.probe_host}:{self.port}; the guest service stopped answering — `vvho testbed status`"
            )
        settings = self.read()
        notes = list(self._notes)
        self._notes.clear()
        status = Status.OK
        reserved = 0.0
        vcpu_busy = (b.vcpu_cpu_s - a.vcpu_cpu_s) / elapsed
        if settings.get("vcpu_pinning") == "dedicated":
            reserved = max(0.0, self.n_vcpu - vcpu_busy)
        if res.local is not None and res.local.completed:
            noise = res.local.percentile_us(99)
            if self._baseline_p99_us and noise > NOISE_BUDGET * self._baseline_p99_us:
                status = Status.DEGRADED
                notes.append(
                    f"probe noise p99 {noise:.0f} us exceeds {NOISE_BUDGET:.0%} of the guest baseline "
                    f"p99 {self._baseline_p99_us:.0f} us (probe on pCPUs {list(res.probe_cpus)})"
                )
        if g.timeouts or g.errors:
            status = Status.DEGRADED
            notes.append(f"{g.timeouts} timeouts (> {self.probe_timeout_s:.1f} s) and {g.errors} errors")
        if not set(res.probe_cpus).isdisjoint(self._probe_cpus_overlap()):
            notes.append("probe shares pCPUs with the vCPUs (no free pCPU to pin it away)")
        n = b.neighbours - a.neighbours
        slo = float(self._scenario.slo_us) if self._scenario else math.inf
        lat = g.histogram()
        over = sum(1 for x in g.latencies_ns if x / 1000.0 > slo)
        return Telemetry(
            window_s=res.window_s,
            requests=g.completed + g.timeouts,
            p50_us=lat.percentile_us(50),
            p99_us=lat.percentile_us(99),
            p999_us=lat.percentile_us(99.9),
            mean_us=g.mean_us,
            slo_us=slo,
            slo_violations=over,
            offered_rps=g.offered / res.window_s,
            served_rps=g.completed / res.window_s,
            vm_cpu=(b.vm_cpu_s - a.vm_cpu_s) / elapsed + reserved,
            polling_cpu=0.0,
            reserved_cores=reserved,
            throttled_frac=min(
                1.0,
                max(
                    (b.throttled_vcpu_s - a.throttled_vcpu_s) / (elapsed * self.n_vcpu),
                    (b.throttled_vm_s - a.throttled_vm_s) / elapsed,
                ),
            ),
            neighbour_cpu=(b.neighbour_cpu_s - a.neighbour_cpu_s) / elapsed,
            neighbour_slowdown=n.slowdown,
            errors=g.errors + g.timeouts,
            status=status,
            notes=tuple(notes),
            histogram=lat.counts.copy(),
        )

    def _probe_cpus_overlap(self) -> set[int]:
        return set().union(*(set(self._cpuset(m)) for m in self.dom.vcpuPinInfo()))

    # ------------------------------------------------------------------ close
    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable("the backend was closed; create a new LibvirtBackend")

    def close(self) -> None:
        """Restore the opening snapshot (as far as the host still allows) and stop helpers. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for t, pol in self._snapshot.policies.items():
            with contextlib.suppress(OSError):
                os.sched_setscheduler(t, pol, os.sched_param(0 if pol == os.SCHED_OTHER else 1))
        self._drop_rt()
        if self._snapshot.halt_poll_ns is not None:
            with contextlib.suppress(OSError):
                hostctl.HALT_POLL.write_text(str(self._snapshot.halt_poll_ns))
        with contextlib.suppress(Exception):
            self.restore_failures = self._restore_raw()
        for helper in (self._neighbours, self._echo):
            if helper is not None:
                with contextlib.suppress(Exception):
                    helper.close()
        with contextlib.suppress(Exception):
            self.conn.close()

    def _restore_raw(self) -> list[str]:
        """Put back the exact libvirt state of the snapshot (cpumaps, every scheduler key) and guest knobs."""
        failed: list[str] = []
        flags = self._lv.VIR_DOMAIN_AFFECT_LIVE
        steps: list[tuple[str, Any]] = [
            *(
                (f"vcpupin {v}", lambda v=v, m=m: self.dom.pinVcpuFlags(v, m, flags))
                for v, m in enumerate(self._snapshot.vcpu_pins)
            ),
            ("emulatorpin", lambda: self.dom.pinEmulator(self._snapshot.emulator_pin, flags)),
            (
                "scheduler parameters",
                lambda: self.dom.setSchedulerParametersFlags(
                    {k: v for k, v in self._snapshot.sched.items() if not k.startswith("iothread")}, flags
                ),
            ),
            *(
                (k, lambda k=k: self.guest.set(GUEST_KNOBS[k], int(self._snapshot.settings[k])))
                for k in GUEST_KNOBS
                if k in self._snapshot.settings
            ),
        ]
        for name, step in steps:
            try:
                step()
            except Exception as exc:
                failed.append(f"{name}: {exc}")
        return failed
