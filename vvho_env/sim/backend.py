"""The simulator behind the Backend protocol: N environments stepped together (struct of arrays).

``BatchSim`` owns the preallocated state of N envs and advances them in one numba call;
``SimBackend`` is the single-env Backend that the env, the tuners and the agents talk to.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from vvho_env import knobs
from vvho_env.histogram import percentiles_ns
from vvho_env.scenarios import Scenario, load_scenario
from vvho_env.sim import engine as E
from vvho_env.sim.engine.layout import MAX_EVENTS_PER_RUN, MP, NCFG, OFF_ACC, OFF_EV, Acc, Cfg, Ev, Scalar
from vvho_env.sim.profiles import HostProfile, get_profile
from vvho_env.types import ApplyRejected, Capabilities, KnobValue, Settings, Telemetry

RESTART_KNOBS = frozenset(k.name for k in knobs.KNOBS if k.change_cost is knobs.ChangeCost.RESTART)


class BatchSim:
    """N simulated environments advanced together; env k is bit-identical alone or batched."""

    def __init__(self, n_envs: int) -> None:
        self.n = n_envs
        self.S, self.X, self.H, self.T, self.R = E.new_state(n_envs)
        self.cfg = np.zeros((n_envs, NCFG), dtype=np.float64)
        self.prof = np.zeros((n_envs, len(HostProfile.__dataclass_fields__)), dtype=np.float64)
        self.now = np.zeros(n_envs, dtype=np.int64)
        self.step_idx = np.zeros(n_envs, dtype=np.int64)
        self.scenarios: list[Scenario | None] = [None] * n_envs
        self.profiles: list[HostProfile | None] = [None] * n_envs
        self.settings: list[Settings] = [knobs.defaults() for _ in range(n_envs)]

    # -- episode control ---------------------------------------------------------------------
    def reset_env(self, k: int, seed: int, scenario: Scenario, settings: Mapping[str, KnobValue] | None = None,
                  randomise: bool = False, trace: bool = False) -> None:
        sc = scenario.randomised(seed) if randomise else scenario
        profile = get_profile(sc.host_profile)
        if not 1 <= profile.n_pcpu <= MP - 1:
            raise ValueError(f"host profile {profile.name!r}: n_pcpu={profile.n_pcpu} not accepted; "
                             f"accepted: 1..{MP - 1} (the simulator's compiled capacity)")
        if randomise:
            profile = profile.randomised(np.random.default_rng([seed, 1]), sc.randomise.profile)
        self.scenarios[k] = sc
        self.profiles[k] = profile
        self.prof[k, : len(profile.to_array())] = profile.to_array()
        merged = sc.settings_at_start()
        if settings:
            merged.update(knobs.validate_settings(settings))
        self.settings[k] = merged
        self.R[k] = E.seed_rng(seed)
        self.now[k] = 0
        self.step_idx[k] = 0
        E.write_knobs(self.cfg[k], merged, profile)
        _, ph, frac = sc.phase_at(0)
        E.write_phase(self.cfg[k], sc, ph, frac)
        E.configure(self.S[k], self.X[k], self.R[k], self.cfg[k], self.prof[k], 0, True)
        self.S[k, Scalar.TRACE_ON] = 1 if trace else 0
        self.H[k] = 0

    def apply_env(self, k: int, settings: Mapping[str, KnobValue]) -> Settings:
        """Apply knob changes to env k mid-episode; restart-cost knobs cost a guest outage."""
        profile = self.profiles[k]
        if profile is None:
            raise ApplyRejected("apply before reset: call reset() first")
        new = dict(self.settings[k])
        for name, value in settings.items():
            knob = knobs.get(name)
            if name not in profile.settable:
                raise ApplyRejected(f"knob {name!r} cannot be set on host profile {profile.name!r}; "
                                    f"settable: {', '.join(sorted(profile.settable))}")
            new[name] = knob.validate(value)
        restart = any(new[n] != self.settings[k][n] for n in RESTART_KNOBS)
        self.settings[k] = new
        E.write_knobs(self.cfg[k], new, profile)
        now = int(self.now[k])
        if restart:
            self._restart(k, now, profile)
        else:
            E.configure(self.S[k], self.X[k], self.R[k], self.cfg[k], self.prof[k], now, False)
        return dict(new)

    def _restart(self, k: int, now: int, profile: HostProfile) -> None:
        """Guest restart: requests in the VM are lost, new ones wait at the NIC for the outage."""
        acc = self.X[k, OFF_ACC:].copy()
        lost = int(self.S[k, Scalar.INFLIGHT])
        E.configure(self.S[k], self.X[k], self.R[k], self.cfg[k], self.prof[k], now, True)
        acc[Acc.ERRORS] += lost
        acc[Acc.VIOL] += lost
        self.X[k, OFF_ACC:] = acc
        end = now + int(profile.restart_outage_ns)
        self.S[k, Scalar.OUTAGE_END] = end
        self.S[k, OFF_EV + Ev.OUTAGE] = end

    # -- measurement -------------------------------------------------------------------------
    def run(self, window_s: float) -> list[Telemetry]:
        """Advance every env by one window in one numba call; one Telemetry per env."""
        window_ns = round(window_s * 1e9)
        for k in range(self.n):
            sc = self.scenarios[k]
            assert sc is not None, "reset before run"
            _, ph, frac = sc.phase_at(int(self.step_idx[k]))
            E.write_phase(self.cfg[k], sc, ph, frac)
        self.X[:, OFF_ACC:] = 0.0
        self.H[:] = 0
        t_end = self.now + window_ns
        E.run_batch(self.S, self.X, self.H, self.T, self.R, self.cfg, self.prof, t_end)
        stuck = np.flatnonzero(self.S[:, Scalar.LIVELOCK])
        if stuck.size:
            k = int(stuck[0])
            sc = self.scenarios[k]
            raise RuntimeError(f"simulator livelock in env {k} at t={self.S[k, Scalar.LIVELOCK]} ns (scenario "
                               f"{sc.id if sc else '?'}, settings {self.settings[k]}): more than "
                               f"{MAX_EVENTS_PER_RUN:,} events in one window; please report it with these settings")
        self.now[:] = t_end
        self.step_idx += 1
        pct = percentiles_ns(self.H, (50.0, 99.0, 99.9))
        return [self._telemetry(k, window_s, pct[k]) for k in range(self.n)]

    def _telemetry(self, k: int, window_s: float, pct: np.ndarray) -> Telemetry:
        a = self.X[k, OFF_ACC:]
        sc = self.scenarios[k]
        assert sc is not None
        s = self.settings[k]
        w_ns = window_s * 1e9
        done = int(a[Acc.DONE])
        nv = int(self.cfg[k, Cfg.NVCPU])
        busy = a[Acc.VM_BUSY] / w_ns
        vcpu_busy = a[Acc.VCPU_BUSY] / w_ns
        polling = a[Acc.VM_POLL] / w_ns
        reserved = 0.0
        if s["vcpu_pinning"] == "dedicated":
            reserved += max(0.0, nv - vcpu_busy)  # dedicated cores are paid for even when idle
        if s["virtio_backend"] == "vhost_user_poll":
            reserved += 1.0  # the PMD core spins all the time
            polling += 1.0
        on = a[Acc.NEIGH_ON]
        slowdown = 1.0 - a[Acc.NEIGH_WORK] / on if on > 0 else 0.0
        nan = float("nan")
        return Telemetry(
            window_s=window_s,
            requests=done,
            p50_us=float(pct[0]) / 1000.0 if done else nan,
            p99_us=float(pct[1]) / 1000.0 if done else nan,
            p999_us=float(pct[2]) / 1000.0 if done else nan,
            mean_us=a[Acc.LAT_SUM] / done / 1000.0 if done else nan,
            slo_us=sc.slo_us,
            slo_violations=int(a[Acc.VIOL]),
            offered_rps=a[Acc.ARRIVALS] / window_s,
            served_rps=done / window_s,
            vm_cpu=busy + reserved,
            polling_cpu=polling,
            reserved_cores=reserved,
            throttled_frac=a[Acc.THROTTLED] / (w_ns * max(nv, 1)),
            neighbour_cpu=a[Acc.NEIGH_RUN] / w_ns,
            neighbour_slowdown=float(np.clip(slowdown, 0.0, 1.0)),
            errors=int(a[Acc.ERRORS]),
            histogram=self.H[k].copy(),
        )

    def trace(self, k: int) -> np.ndarray:
        return self.T[k, : self.S[k, Scalar.TRACE_N]].copy()


class SimBackend:
    """One simulated host behind the Backend protocol."""

    def __init__(self, profile: str | None = None, randomise: bool = False, trace: bool = False) -> None:
        self._sim = BatchSim(1)
        self._profile_name = profile
        self._randomise = randomise
        self._trace = trace
        self._scenario: Scenario | None = None

    @property
    def batch(self) -> BatchSim:
        return self._sim

    def reset(self, seed: int | None, scenario: Scenario | str) -> None:
        sc = load_scenario(scenario)
        if self._profile_name and self._profile_name != sc.host_profile:
            sc = sc.model_copy(update={"host_profile": self._profile_name})
        self._scenario = sc
        seed = int(np.random.SeedSequence(seed).generate_state(1)[0]) if seed is None else seed
        self._sim.reset_env(0, seed, sc, randomise=self._randomise, trace=self._trace)

    def apply(self, settings: Mapping[str, KnobValue]) -> Settings:
        return self._sim.apply_env(0, settings)

    def measure(self, window_s: float) -> Telemetry:
        return self._sim.run(window_s)[0]

    def capabilities(self) -> Capabilities:
        name = self._scenario.host_profile if self._scenario else (self._profile_name or "xeon-kvm")
        p = get_profile(name)
        return Capabilities(settable=p.settable, host_wide=p.host_wide & p.settable, deterministic=True)

    def current_settings(self) -> Settings:
        return dict(self._sim.settings[0])

    def close(self) -> None:
        self._scenario = None
