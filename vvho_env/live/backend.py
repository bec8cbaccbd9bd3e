"""LibvirtBackend: the Backend protocol over a real libvirt domain and a real latency source.

It wires the parts together: the libvirt link (reconnects after libvirtd restarts), the domain's QEMU
instance on this host (rediscovered after the domain restarts), the knob drivers (one per mechanism),
the apply transaction, the persisted snapshot of the original settings, the latency source (the
active probe, or a passive one) and the CPU accounting. Its promises:

- Every host fault surfaces as a typed backend error (BackendUnavailable, MeasurementFailed,
  ApplyRejected), never as a libvirtError, OSError or TimeoutError, so the env can truncate or retry.
- Before the first change, the original settings are persisted (vvho_env.live.snapshot). A backend
  that finds a snapshot left by a dead process restores it before anything else; `close()` restores
  the original settings with retries and raises RestoreFailed naming what it could not restore.
- After a domain restart the new vCPU threads are found and the settings re-applied; SCHED_FIFO is
  only ever held under an out-of-process lease; helpers (neighbours, the local echo) die with it.
- It attaches to any domain by URI, name and probe port and never defines, destroys or redefines one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from vvho_env import knobs
from vvho_env.live import guest as guest_mod
from vvho_env.live.connection import DomainGone, LibvirtLink
from vvho_env.live.custody import HOST_WIDE, Custody
from vvho_env.live.drivers import HostContext, KnobDriver, Topology, all_drivers
from vvho_env.live.drivers.pinning import housekeeping_for
from vvho_env.live.drivers.sched_policy import FifoDriver
from vvho_env.live.instance import InstanceGone, QemuInstance
from vvho_env.live.latency import LatencySource, ProbeSource
from vvho_env.live.neighbours import Neighbours
from vvho_env.live.snapshot import LIVE_TOKENS, SnapshotStore
from vvho_env.live.telemetry import assemble, sample
from vvho_env.live.transaction import Transaction, error_text
from vvho_env.types import (
    ApplyRejected,
    BackendError,
    BackendUnavailable,
    Capabilities,
    KnobValue,
    MeasurementFailed,
    Settings,
    Telemetry,
)

if TYPE_CHECKING:
    from pathlib import Path

    from vvho_env.scenarios import Scenario


@dataclass(frozen=True)
class Workload:
    """What the probe drives in a window, and what it is judged against."""

    rate_rps: float
    service_us: float  # per-request guest work (the project's service only)
    slo_us: float
    neighbour_demand: tuple[float, ...] = ()  # for the backend's own neighbour processes, if it runs any


def is_local_uri(uri: str) -> bool:
    """Host-side knobs (thread policies, sysfs) need the domain on this machine."""
    return not urlparse(uri).netloc


class LibvirtBackend:
    """Backend protocol over libvirt (any URI) + a latency source into the guest.

    Arguments: uri, domain; port = the host port of a TCP echo service in the guest (the probe's target)
    unless `latency` gives another source; service = "auto" (detect), "vvho" (the project's service:
    service time and guest-side knobs) or "echo" (any TCP echo); echo_binary = the service binary run on
    loopback as the probe's noise reference; rate_scale and max_rate_rps map the scenario's request
    rate onto what the guest can serve (TCG guests serve a few hundred req/s); neighbour_cpus = pCPUs that
    get a CPU-bound neighbour (default: every pCPU but 0, where the probe runs); fifo_rt_share = RT budget
    per vCPU group while SCHED_FIFO is held; fifo_lease_s = the watchdog's lease; state_dir = where the
    original settings are persisted; restore_attempts = how often close() tries before RestoreFailed;
    recover_dead_owner = restore a snapshot a dead controller left before anything else (False: only
    report it in `pending_restore` and refuse to apply, as `vvho host check` does). Without a port and
    a latency source the backend can read, apply and restore but not measure (`vvho host restore`).
    """

    def __init__(
        self,
        uri: str,
        domain: str,
        *,
        port: int | None = None,
        probe_host: str = "127.0.0.1",
        service: str = "auto",
        latency: LatencySource | None = None,
        echo_binary: Path | None = None,
        rate_scale: float = 1.0,
        max_rate_rps: float = 400.0,
        connections: int = 4,
        neighbour_cpus: tuple[int, ...] | None = None,
        fifo_rt_share: float = 0.5,
        fifo_lease_s: float = 30.0,
        probe_timeout_s: float = 1.0,
        state_dir: Path | None = None,
        restore_attempts: int = 3,
        recover_dead_owner: bool = True,
    ) -> None:
        self.uri, self.domain_name = uri, domain
        self.local = is_local_uri(uri)
        self.rate_scale, self.max_rate_rps = rate_scale, max_rate_rps
        self.restore_attempts = restore_attempts
        self._closed = True  # until fully opened: close() must not restore what was never read
        self.link = LibvirtLink(uri, domain)
        try:
            self._open(port, probe_host, service, latency, echo_binary, connections, probe_timeout_s,
                       neighbour_cpus, fifo_rt_share, fifo_lease_s, state_dir, recover_dead_owner)
        except BaseException:
            self.link.close()
            raise
        LIVE_TOKENS.add(self.custody.owner.token)
        self._closed = False
        atexit.register(self.close)

    def _open(self, port: int | None, probe_host: str, service: str, latency: LatencySource | None,
              echo_binary: Path | None, connections: int, probe_timeout_s: float,
              neighbour_cpus: tuple[int, ...] | None, fifo_rt_share: float, fifo_lease_s: float,
              state_dir: Path | None, recover_dead_owner: bool) -> None:
        dom = self.link.ensure()
        info = self.link.call("reading the domain", lambda d: (d.connect().getInfo()[2], d.info()[3],
                                                               d.XMLDesc(0)))
        n_pcpu, n_vcpu, xml = info
        self.target: guest_mod.Target | None = None
        if latency is None and port is not None:
            try:
                self.target = guest_mod.detect(probe_host, port, service)
            except OSError as exc:
                raise BackendUnavailable(
                    f"no TCP echo service answers on {probe_host}:{port} ({error_text(exc)}); tried a control "
                    f"line and an echo line there. Check the port forward of domain {self.domain_name!r} (e.g. "
                    f"virsh dumpxml {self.domain_name} | grep hostfwd), that the guest finished booting and runs "
                    "an echo service, or pass the right --port") from None
            latency = ProbeSource(self.target, connections=connections, timeout_s=probe_timeout_s,
                                  echo_binary=echo_binary)
        self.latency: LatencySource | None = latency
        self.port = self.target.port if self.target else None
        topo = Topology(n_pcpu, n_vcpu)
        domain_type = "kvm" if xml.lstrip().startswith("<domain type='kvm'") else "qemu"
        self.ctx = HostContext(self.link, topo, self.local, domain_type,
                               self.target.control() if self.target else None,
                               fifo_rt_share=fifo_rt_share, fifo_lease_s=fifo_lease_s)
        self._domain_id = int(dom.ID())
        if self.local:
            try:
                self.ctx.instance = QemuInstance.find(self.domain_name, n_vcpu)
            except InstanceGone as exc:
                raise BackendUnavailable(f"{exc}; a local URI needs the domain's QEMU process on this host") \
                    from None
        self.neighbour_cpus = (neighbour_cpus if neighbour_cpus is not None
                               else (tuple(c for c in topo.all_cpus if c != 0) or (0,)))
        self._all_drivers = all_drivers()
        self.unavailable: dict[str, str] = {}  # knob -> why this host cannot set it
        by_knob: dict[str, KnobDriver] = {}
        for d in self._all_drivers:
            ok = d.settable(self.ctx)
            by_knob.update({k: d for k in ok})
            reason = d.unavailable(self.ctx) or "not offered by libvirt for this domain"
            self.unavailable.update({k: reason for k in d.knobs if k not in ok})
        self._drivers = by_knob
        settable = frozenset(by_knob)
        self._caps = Capabilities(settable, settable & HOST_WIDE, deterministic=False,
                                  service_time=self.latency is not None and self.latency.service_time)
        self.tx = Transaction(self.ctx, by_knob, lambda: self.custody.persist())
        self.custody = Custody(self.uri, self.domain_name, self.link, self.ctx, self._all_drivers, by_knob, self.tx,
                               SnapshotStore(state_dir))
        self._faults_seen: list[str] = []  # faults met since the last window: they degrade the next one
        self.recovered, self.pending_restore = self.custody.left_by_dead_owner(recover_dead_owner)
        self._current: Settings = dict(self.custody.take().settings)
        self._needs_reapply = False
        self._scenario: Scenario | None = None
        self._workload: Workload | None = None
        self._step = 0
        self._seed = 0
        self._neighbours: Neighbours | None = None

    @property
    def snapshot_path(self) -> Path:
        return self.custody.path

    # ------------------------------------------------------------------ faults
    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable("the backend was closed; create a new LibvirtBackend")

    def _sync(self) -> None:
        """Make sure the domain is the running instance we know, else find the new one and re-apply."""
        if self.local:
            inst = self.ctx.instance
            if inst is not None and inst.alive() and not self._needs_reapply:
                return
            if inst is None or not inst.alive():
                if not self.link.call("checking the domain", lambda d: d.isActive()):
                    raise DomainGone(f"domain {self.domain_name!r} at {self.uri!r} is not running (destroyed or "
                                     "shut down); its live settings went with it")
                try:
                    new = QemuInstance.find(self.domain_name, self.ctx.topology.n_vcpu)
                except InstanceGone as exc:
                    raise BackendUnavailable(f"domain {self.domain_name!r} is restarting: {exc}") from None
                self._new_instance(new.pid)
                self.ctx.instance = new
        else:
            dom_id = self.link.domain_id()
            if dom_id < 0:
                raise DomainGone(f"domain {self.domain_name!r} at {self.uri!r} is not running")
            if dom_id != self._domain_id:
                self._new_instance(dom_id)
                self._domain_id = dom_id
        if self._needs_reapply:
            self._reapply()

    def _new_instance(self, ident: int) -> None:
        for d in self._all_drivers:
            d.forget_instance()
        self._needs_reapply = True
        self._faults_seen.append(f"domain {self.domain_name!r} restarted (now {'pid' if self.local else 'id'} {ident})")

    def _reapply(self) -> None:
        """Put the settings this backend last applied back on the domain (after a restart, or after an
        apply whose rollback could not finish)."""
        try:
            now = self.tx.read(set(self._current))
        except (OSError, self.link.lv.libvirtError) as exc:
            raise BackendUnavailable(f"reading the settings to re-apply failed: {error_text(exc)}") from None
        diff = {k: v for k, v in self._current.items() if now.get(k) != v}
        if diff:
            self.tx.apply(diff)  # ApplyRejected / BackendUnavailable propagate; we retry next call
            self._faults_seen.append(f"re-applied {', '.join(f'{k}={v!r}' for k, v in diff.items())}")
        self._needs_reapply = False

    @contextlib.contextmanager
    def _faults(self, what: str, error: type[BackendError] = MeasurementFailed) -> Iterator[None]:
        """Map what /proc, cgroupfs, the guest or libvirt raise into typed backend errors."""
        try:
            yield
        except BackendError:
            raise
        except InstanceGone as exc:
            raise BackendUnavailable(f"the domain's QEMU process went away while {what}: {exc}") from None
        except (OSError, self.link.lv.libvirtError) as exc:
            raise error(f"{what} failed: {error_text(exc)}") from None

    # ------------------------------------------------------------------ capabilities
    def capabilities(self) -> Capabilities:
        return self._caps

    @property
    def topology(self) -> Topology:
        return self.ctx.topology

    @property
    def vcpu_tids(self) -> tuple[int, ...]:
        return self.ctx.instance.vcpu_tids if self.ctx.instance else ()

    def read(self) -> Settings:
        """The current value of every settable knob, read from libvirt, the host and the guest."""
        self._check_open()
        with self._faults("reading the settings", BackendUnavailable):
            self._sync()
            return self.tx.read()

    # ------------------------------------------------------------------ apply
    def apply(self, settings: Mapping[str, KnobValue]) -> Settings:
        """Set `settings` transactionally; returns their read-back values. Raises ApplyRejected (rolled
        back) or BackendUnavailable (the host could not be reached; rolled back as far as it could be)."""
        self._check_open()
        wanted: Settings = {}
        for name, value in settings.items():
            try:
                wanted[name] = knobs.get(name).validate(value)
            except knobs.KnobError as exc:
                raise ApplyRejected(str(exc)) from None
            if name not in self._caps.settable:
                raise ApplyRejected(
                    f"knob {name!r} cannot be set on domain {self.domain_name!r} at {self.uri!r}: "
                    f"{self.unavailable.get(name, 'no driver')}; settable here: "
                    f"{', '.join(sorted(self._caps.settable))}. Hold it fixed (action mask)."
                )
        if self.pending_restore is not None:
            raise ApplyRejected(
                f"a controller (pid {self.pending_restore.owner.pid}) died leaving domain {self.domain_name!r} "
                f"changed ({self.snapshot_path}); run `vvho host restore --connect {self.uri} --domain "
                f"{self.domain_name}` first")
        with self._faults("applying settings", BackendUnavailable):
            self._sync()
            try:
                applied = self.tx.apply(wanted)
            except BackendUnavailable:
                self._needs_reapply = True  # the rollback may not have finished: finish it on the next call
                raise
            except ApplyRejected as exc:
                if "rollback incomplete" in str(exc):
                    self._needs_reapply = True
                raise
        self._current.update(applied)
        return applied

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None, scenario: Scenario) -> None:
        """Set the scenario's start settings (the knobs this host can set) and start the neighbours."""
        self._check_open()
        self._scenario = scenario
        self._seed = 0 if seed is None else int(seed)
        self._step = 0
        start = scenario.settings_at_start()
        self.apply({k: v for k, v in start.items() if k in self._caps.settable})
        self._workload = None
        if self.neighbour_cpus and (self._neighbours is None or not self._neighbours.alive()):
            if self._neighbours is not None:
                self._neighbours.close()
            self._neighbours = Neighbours(self.neighbour_cpus)
        if self._neighbours is not None:
            self._neighbours.set_demand([0.0])

    def set_workload(self, workload: Workload) -> None:
        """Measure every window under a fixed probe workload instead of a scenario's phases, without
        touching any setting (the host agent's way in; reset() is the env's)."""
        self._check_open()
        self._workload = workload
        self._scenario = None

    def _rate(self, scenario_rps: float) -> float:
        return max(1.0, min(self.max_rate_rps, scenario_rps * self.rate_scale))

    def _dedicated(self) -> bool:
        return self._current.get("vcpu_pinning") == "dedicated"

    def probe_cpus(self) -> tuple[int, ...]:
        """pCPUs for the probe: those no vCPU may use when the vCPUs are pinned, else housekeeping."""
        topo = self.ctx.topology
        if self._dedicated():
            return housekeeping_for(topo, [(c,) for c in topo.dedicated_cpus])
        return topo.housekeeping_cpus

    def _place_neighbours(self) -> None:
        """Neighbours stay off pCPUs dedicated to vCPUs: a dedicated core is the VM's alone."""
        if self._neighbours is None:
            return
        dedicated = set(self.ctx.topology.dedicated_cpus) if self._dedicated() else set()
        for cpu, pid in zip(self._neighbours.cpus, self._neighbours.pids(), strict=False):
            target = {cpu} if cpu not in dedicated else set(self.ctx.topology.housekeeping_cpus)
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, target)

    def _load_now(self) -> Workload:
        """This window's workload: the fixed one, or the scenario's current phase (advancing it)."""
        if self._workload is not None:
            return self._workload
        if self._scenario is None:
            raise MeasurementFailed("measure() before reset() or set_workload(): call one of them first")
        _, phase, frac = self._scenario.phase_at(self._step)
        return Workload(self._rate(phase.rate_at(frac)), phase.service_mean_us, float(self._scenario.slo_us),
                        phase.neighbour_demand)

    def measure(self, window_s: float) -> Telemetry:
        """One control interval: neighbours (if the backend runs any) at the workload's demand, the latency
        source for `window_s`, the VM's CPU accounting around it."""
        self._check_open()
        if self.latency is None:
            raise MeasurementFailed("this backend has no latency source: open it with port= (a TCP echo "
                                    "service in the guest) or latency=")
        load = self._load_now()
        with self._faults("measuring", BackendUnavailable):
            self._sync()
        self._step += 1
        if self._neighbours is not None:
            if not self._neighbours.alive():
                self._faults_seen.append("a neighbour process died; restarted them")
                self._neighbours.close()
                self._neighbours = Neighbours(self.neighbour_cpus)
            demand = load.neighbour_demand or (0.0,)
            self._neighbours.set_demand([demand[i % len(demand)] for i in range(len(self._neighbours.cpus))])
            self._place_neighbours()
        for d in self._all_drivers:
            d.renew(self.ctx)
        slo = load.slo_us
        with self._faults("reading the VM's CPU accounting"):
            before = sample(self.ctx, self._neighbours)
        with self._faults("probing the guest"):
            win = self.latency.window(window_s, load.rate_rps, load.service_us, slo,
                                      self._seed * 100_003 + self._step, self.probe_cpus())
        with self._faults("reading the VM's CPU accounting"):
            after = sample(self.ctx, self._neighbours)
        for d in self._all_drivers:
            d.renew(self.ctx)
        if win.completed == 0 and win.timeouts == 0:
            with self._faults("measuring", BackendUnavailable):
                self._sync()  # a domain that went away explains it best
            raise MeasurementFailed(
                f"no request reached the guest in {win.window_s:.2f} s: all {win.errors} of {win.offered} failed "
                f"({self.latency.description}); the guest's service is down or the domain is rebooting")
        faults = self._faults_seen + self.ctx.notes + self.link.events
        remarks, self._faults_seen, self.custody.remarks = self.custody.remarks, [], []
        self.ctx.notes.clear()
        self.link.events.clear()
        if not self._dedicated():
            remarks.append("probe shares pCPUs with the vCPUs (they are not pinned away from it)")
        if self._neighbours is None and not self.local:
            remarks.append("neighbour CPU and slowdown not measured (remote host, no neighbour processes)")
        return assemble(win, before, after, n_vcpu=self.ctx.topology.n_vcpu, dedicated=self._dedicated(),
                        slo_us=slo, vcpu_cpus=self._vcpu_cpus(), faults=faults, remarks=remarks)

    def _vcpu_cpus(self) -> tuple[int, ...]:
        topo = self.ctx.topology
        return topo.dedicated_cpus if self._dedicated() else topo.all_cpus

    def helper_pids(self) -> list[int]:
        """Processes this backend started (neighbours, the local echo, the FIFO lease watchdog)."""
        pids = list(self._neighbours.pids()) if self._neighbours else []
        pids += self.latency.helper_pids() if self.latency else []
        pids += [d.lease.proc.pid for d in self._all_drivers if isinstance(d, FifoDriver) and d.lease is not None]
        return pids

    # ------------------------------------------------------------------ close
    def close(self, restore: bool = True) -> None:
        """Restore the original settings and stop the helpers. Idempotent. Retries `restore_attempts`
        times (reconnecting to libvirtd in between) and raises RestoreFailed naming what is left, with
        the persisted snapshot kept for `vvho host restore`. restore=False keeps the current settings
        (the operator's --keep) and drops the snapshot."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for helper in (self._neighbours, self.latency):
            if helper is not None:
                with contextlib.suppress(Exception):
                    helper.close()
        try:
            if self.custody.persisted and not restore:
                for d in self._all_drivers:  # keeping FIFO means keeping its lease: hand FIFO back instead
                    if isinstance(d, FifoDriver) and d.lease is not None:
                        d.write(self.ctx, "vcpu_sched_policy", "other")
                self.custody.drop()
            elif self.custody.persisted:
                self.custody.restore_at_close(self.restore_attempts)
        finally:
            LIVE_TOKENS.discard(self.custody.owner.token)
            self.link.close()
