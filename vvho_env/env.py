"""Gymnasium environments over the Backend protocol: VVHOEnv (any backend) and VVHOVectorEnv (the
simulator, N envs stepped in one numba call)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from vvho_env import knobs
from vvho_env.errors import VVHOError
from vvho_env.mixture import ScenarioMixture, check_batchable
from vvho_env.objective import Objective, ObjectiveWeights, change_cost, objective_for
from vvho_env.scenarios import DEFAULT_SCENARIO, Scenario, load_scenario, mean_requests_per_window
from vvho_env.sim.profiles import get_profile
from vvho_env.types import ApplyRejected, Backend, BackendError, KnobValue, Settings, Status, Telemetry

# Features per measurement window, all as a live host measures them (no neighbour demand, no phase).
FEATURES = (
    "log_p50_over_slo",
    "log_p99_over_slo",
    "log_p999_over_slo",
    "violation_share",
    "offered_over_ref",
    "served_over_ref",
    "vm_cpu",
    "polling_cpu",
    "throttled_frac",
    "neighbour_cpu",
    "neighbour_slowdown",
)
OBS_CLIP = 10.0


class ActionError(VVHOError, ValueError):
    """An action the env cannot turn into settings (wrong shape, NaN or inf)."""


def episode_seed(seed: int) -> int:
    """The backend seed of the episode that ``reset(seed=seed)`` starts: the same in VVHOEnv and in every
    env of VVHOVectorEnv, so that a held-out seed names the same episode everywhere."""
    return int(gym.utils.seeding.np_random(seed)[0].integers(0, 2**63 - 1))


def reference_rps(sc: Scenario) -> float:
    """The scenario's own mean offered load: what observations express load against, so that they stay
    comparable across scenarios (latencies are expressed against each scenario's own SLO)."""
    return mean_requests_per_window(sc) / sc.interval_s


def window_features(tel: Telemetry, ref_rps: float, out: np.ndarray | None = None) -> np.ndarray:
    """The FEATURES of one window (float32, clipped to +-OBS_CLIP), into `out` if given."""
    def lg(v: float) -> float:
        return math.log(max(v, 1e-3) / tel.slo_us) if math.isfinite(v) else math.log(100.0)

    viol = tel.slo_violations / max(tel.requests, 1)
    values = [lg(tel.p50_us), lg(tel.p99_us), lg(tel.p999_us), viol, tel.offered_rps / ref_rps,
              tel.served_rps / ref_rps, tel.vm_cpu, tel.polling_cpu, tel.throttled_frac, tel.neighbour_cpu,
              tel.neighbour_slowdown]
    if out is None:
        out = np.empty(len(FEATURES), dtype=np.float32)
    out[:] = values
    # np.minimum/np.maximum rather than np.clip, whose Python-level checks cost more than the clip on 11 values
    return np.minimum(np.maximum(out, -OBS_CLIP, out=out), OBS_CLIP, out=out)


@dataclass
class Codec:
    """Actions <-> settings (through the one knob-space encoder, ``knobs.KnobSpace``) and telemetry ->
    observations; shared by the single and vector envs."""

    names: tuple[str, ...]
    mode: str  # "absolute" | "delta"
    delta_step: float
    history: int
    ref_rps: float

    def __post_init__(self) -> None:
        self.space = knobs.KnobSpace(self.names)
        if self.mode not in ("absolute", "delta"):
            raise ValueError(f"action_mode {self.mode!r} not accepted; accepted: 'absolute', 'delta'")
        if not 0.0 < self.delta_step <= 2.0:
            raise ValueError(f"delta_step {self.delta_step} not accepted; accepted: (0, 2]")
        if self.history < 1:
            raise ValueError(f"history {self.history} not accepted; accepted: an integer >= 1")

    @classmethod
    def for_scenario(cls, sc: Scenario, names: tuple[str, ...], mode: str, delta_step: float, history: int) -> Codec:
        return cls(names, mode, delta_step, history, reference_rps(sc))

    @property
    def action_space(self) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, shape=(len(self.names),), dtype=np.float32)

    @property
    def obs_size(self) -> int:
        return self.history * len(FEATURES) + len(self.names)

    @property
    def observation_space(self) -> spaces.Box:
        return spaces.Box(-OBS_CLIP, OBS_CLIP, shape=(self.obs_size,), dtype=np.float32)

    def decode(self, action: Any, position: np.ndarray) -> tuple[Settings, np.ndarray]:
        """Settings and the new position on the [-1, 1] scales. In delta mode the action moves the
        continuous position (kept by the env between steps), so that repeated small steps do cross
        a categorical knob's bin boundary."""
        a = np.asarray(action)
        if a.shape != (len(self.names),):
            raise ActionError(f"action has shape {a.shape}; expected ({len(self.names)},) for knobs {self.names}")
        # in Python floats (float64, as numpy would compute): for 9 knobs, cheaper than numpy's calls, and
        # the host agent decodes every interval
        xs = a.tolist()
        if not all(map(math.isfinite, xs)):
            bad = [n for n, v in zip(self.names, xs, strict=True) if not math.isfinite(v)]
            raise ActionError(f"action is NaN/inf for knob(s) {', '.join(bad)}; accepted: finite values in [-1, 1]")
        xs = [min(1.0, max(-1.0, v)) for v in xs]
        if self.mode == "delta":
            step = self.delta_step
            xs = [min(1.0, max(-1.0, p + v * step)) for p, v in zip(np.asarray(position).tolist(), xs, strict=True)]
        pos = np.array(xs, dtype=np.float32)  # settings follow the float32 position the observation shows
        return self.space.decode_checked(pos.tolist()), pos

    def encode(self, settings: Mapping[str, KnobValue]) -> np.ndarray:
        return self.space.encode(settings).astype(np.float32)

    def observe(self, windows: Sequence[np.ndarray], prev_action: np.ndarray) -> np.ndarray:
        hist = list(windows)[-self.history:]
        pad = [np.zeros(len(FEATURES), dtype=np.float32)] * (self.history - len(hist))
        return np.concatenate([*pad, *hist, prev_action]).astype(np.float32)

    def advance(self, obs: np.ndarray, tel: Telemetry, prev_action: np.ndarray) -> np.ndarray:
        """Move an observation on by one window, in place, and return it: observe() of the same windows
        and previous action, where `obs` holds the previous observation (zeros before the first window).
        What a host agent does every interval without building the observation again."""
        k = len(FEATURES)
        end = self.history * k
        obs[: end - k] = obs[k:end]  # numpy copies overlapping slices as if through a buffer
        window_features(tel, self.ref_rps, obs[end - k:end])
        obs[end:] = prev_action
        return obs


def acting_knobs(profile_name: str, requested: Sequence[str] | None,
                 backend_settable: frozenset[str] | None = None) -> tuple[str, ...]:
    """The knobs an env acts on: those requested, by default every live knob the host profile can set.

    Only knobs both the host profile and the backend can set are acted on. Restart-cost knobs
    (vCPU count, virtio backend) are left out by default: mid-episode they cost
    a guest outage, so they belong to the scenario's start settings unless a config asks for them.
    """
    profile = get_profile(profile_name)
    settable = profile.settable if backend_settable is None else profile.settable & backend_settable
    if requested is None:
        return tuple(k.name for k in knobs.KNOBS
                     if k.name in settable and k.change_cost is knobs.ChangeCost.LIVE)
    names = tuple(knobs.get(n).name for n in requested)
    unsettable = [n for n in names if n not in settable]
    if unsettable:
        raise ApplyRejected(f"knob(s) {', '.join(unsettable)} cannot be set on host profile {profile.name!r} "
                            f"with this backend; settable: {', '.join(sorted(settable))}")
    return names


class VVHOEnv(gym.Env[np.ndarray, np.ndarray]):
    """Tune a virtualized host for tail latency.

    ## Description
    One latency-sensitive VM shares a host with neighbour VMs. Each step is one control interval
    (default 0.25 s): the agent sets the host's knobs (R: resource allocation, C: virtualization-layer
    communication, S: context-switch strategy), the backend (simulator or live libvirt host) runs the
    interval, and the agent observes what a live host can measure.

    ## Action Space
    ``Box(-1, 1, (n_knobs,))`` over the knobs the host profile can set, in registry order (see
    ``env.knob_names``), through each knob's scale in ``vvho_env.knobs`` (linear/log, explicit
    'off'/'unlimited' points, bins for categorical knobs). ``action_mode="absolute"`` sets the values;
    ``"delta"`` moves each knob by at most ``delta_step`` on the [-1, 1] scale. NaN/inf actions raise
    ``ActionError``; they are never turned into settings.

    ## Observation Space
    ``Box(-10, 10, (history * 11 + n_knobs,))``: for each of the last ``history`` windows, log p50,
    p99, p99.9 over the SLO, violation share, offered and served load over the scenario's reference,
    VM CPU, polling CPU, throttled share, neighbour CPU used, neighbour slowdown; then the previous
    action (in [-1, 1] units).

    ## Rewards
    ``-J`` with J from ``vvho_env.objective``:
    ``w_lat*(clip(log(p99/SLO), log 0.5, log 100) - log 0.5) + w_viol*violations/ref + w_cpu*vm_cpu
    + w_nb*slowdown + w_chg*change_cost``, defaults (1, 2, 0.1, 1, 1), the CPU weight per scenario
    where it says so.

    ## Starting State
    The scenario's start settings (knob defaults overridden by its ``base_settings``); one warm-up
    window is measured to fill the first observation.

    ## Episode End
    Never terminated (no MDP end state). Truncated after ``max_steps`` (default: the scenario's
    episode length), when the backend fails beyond its retries, or after ``max_degraded`` DEGRADED
    windows in a row (``info["truncated_reason"]`` says which and why).

    ## Backend faults and DEGRADED windows
    step() never raises for a backend fault (a BackendError): it retries ``retries`` times with
    exponential backoff from ``backoff_s`` (the faults met are in ``info["faults"]``), then truncates
    with the reason and a reward of 0. An ApplyRejected action is not retried: the knobs stay where
    they were (``info["apply_rejected"]``) and the window is measured. A DEGRADED window (requests
    timed out or failed, probe noise over budget, a reconnect or re-apply on the way; see
    ``vvho_env.types.Status``) is scored as measured, because its timed-out requests count at their
    latency so far and as violations: a stall costs what it cost the clients. ``info["status"]`` is
    "ok" or "degraded" and ``info["degraded"]`` lists the reasons, for a tuner to re-measure or a
    host agent's guards to hold. reset() retries the same way and raises the last BackendError
    if the backend stays unavailable (there is no episode to truncate).

    ## Arguments
    scenario (an id, file or variant reference, a Scenario, or a ScenarioMixture that each episode
    draws from), backend (default: the simulator), knob_names, action_mode, delta_step, history,
    max_steps, weights, randomise (domain randomisation, simulator only; a mixture says its own),
    retries, backoff_s, max_degraded.

    ## Version History
    v0: initial release.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium declares it so)

    def __init__(
        self,
        scenario: str | Scenario | ScenarioMixture = DEFAULT_SCENARIO,
        backend: Backend | None = None,
        knob_names: Sequence[str] | None = None,
        action_mode: str = "absolute",
        delta_step: float = 0.25,
        history: int = 4,
        max_steps: int | None = None,
        weights: ObjectiveWeights | None = None,
        randomise: bool = False,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_degraded: int = 5,
    ) -> None:
        self.mixture = scenario if isinstance(scenario, ScenarioMixture) else None
        if self.mixture is not None:
            randomise = self.mixture.randomise
        self.scenario = self.mixture.scenarios[0] if self.mixture is not None else load_scenario(scenario)  # type: ignore[arg-type]
        if backend is None:
            from vvho_env.sim.backend import SimBackend  # here: a live env never loads the simulator (numba)

            backend = SimBackend(profile=self.scenario.host_profile, randomise=randomise)
        self.backend: Backend = backend
        self.knob_names = acting_knobs(self.scenario.host_profile, knob_names,
                                       self.backend.capabilities().settable)
        self._codec_args = (action_mode, delta_step, history)
        self._weights = weights
        self._bind(self.scenario)
        self.max_steps = max_steps or (self.mixture or self.scenario).episode_intervals
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_degraded = max_degraded
        self._degraded_streak = 0
        self.action_space = self.codec.action_space
        self.observation_space = self.codec.observation_space
        self.settings: Settings = self.scenario.settings_at_start()
        self._windows: list[np.ndarray] = []
        self._prev_action = self.codec.encode(self.settings)
        self._steps = 0
        self._closed = False
        self.last_telemetry: Telemetry | None = None  # the last window, with its histogram

    def _bind(self, sc: Scenario) -> None:
        """Codec and objective of the scenario an episode runs."""
        self.scenario = sc
        self.codec = Codec.for_scenario(sc, self.knob_names, *self._codec_args)
        self.objective: Objective = objective_for(sc, self._weights)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        backend_seed = int(self.np_random.integers(0, 2**63 - 1))  # = episode_seed(seed) when a seed is given
        if self.mixture is not None:
            self._bind(self.mixture.draw(backend_seed))
        faults: list[str] = []
        tel = None
        for attempt in range(self.retries + 1):
            try:
                self.backend.reset(backend_seed, self.scenario)
                tel = self.backend.measure(self.scenario.interval_s)
                break
            except BackendError as exc:
                faults.append(f"{type(exc).__name__}: {exc}")
                if attempt == self.retries:
                    raise
                time.sleep(self.backoff_s * 2**attempt)
        assert tel is not None
        self.settings = self.scenario.settings_at_start()
        self._steps = 0
        self._prev_action = self.codec.encode(self.settings)
        self.last_telemetry = tel
        self._windows = [window_features(tel, self.codec.ref_rps)]
        info: dict[str, Any] = {"telemetry": tel.as_dict()}
        self._degraded_streak = self._note_status(tel, info, 0)
        if faults:
            info["faults"] = faults
        return self.codec.observe(self._windows, self._prev_action), info

    @staticmethod
    def _note_status(tel: Telemetry, info: dict[str, Any], streak: int) -> int:
        """Status and reasons of a window into info; returns the new run length of DEGRADED windows."""
        info["status"] = tel.status.value
        if tel.status is Status.DEGRADED:
            info["degraded"] = list(tel.notes)
            return streak + 1
        return 0

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        new, position = self.codec.decode(action, self._prev_action)
        info: dict[str, Any] = {}
        changed = {n: v for n, v in new.items() if v != self.settings.get(n)}
        tel = None
        reason = ""
        for attempt in range(self.retries + 1):
            try:
                if changed:
                    try:
                        applied = self.backend.apply(changed)
                    except ApplyRejected as exc:  # rolled back: measure the settings it left in place
                        info["apply_rejected"] = str(exc)
                        position = self._prev_action  # nothing moved
                    else:
                        info["change_cost"] = change_cost(self.settings, applied)
                        self.settings.update({n: applied[n] for n in self.knob_names if n in applied})
                    changed = {}
                tel = self.backend.measure(self.scenario.interval_s)
                break
            except BackendError as exc:
                reason = f"{type(exc).__name__}: {exc}"
                info.setdefault("faults", []).append(reason)
                if attempt < self.retries:
                    time.sleep(self.backoff_s * 2**attempt)
        self._steps += 1
        self.last_telemetry = tel
        if tel is None:
            info["truncated_reason"] = f"backend failed {self.retries + 1} times; last: {reason}"
            obs = self.codec.observe(self._windows, self._prev_action)
            return obs, 0.0, False, True, info
        self._prev_action = position
        self._windows.append(window_features(tel, self.codec.ref_rps))
        self._windows = self._windows[-self.codec.history:]
        terms = self.objective.terms(tel, info.get("change_cost", 0.0))
        reward = -float(sum(terms.values()))
        info.update(telemetry=tel.as_dict(), settings=dict(self.settings), objective_terms=terms,
                    phase=self.scenario.phase_at(self._steps)[1].name)
        self._degraded_streak = self._note_status(tel, info, self._degraded_streak)
        truncated = self._steps >= self.max_steps
        if self._degraded_streak >= self.max_degraded:
            truncated = True
            info["truncated_reason"] = (f"{self._degraded_streak} DEGRADED windows in a row; last: "
                                        f"{'; '.join(tel.notes) or 'no reason given'}")
        return self.codec.observe(self._windows, self._prev_action), reward, False, truncated, info

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.backend.close()


class VVHOVectorEnv(VectorEnv):
    """N simulated envs stepped together in one numba call (autoreset: next step).

    ``scenario`` is one scenario for every env, a sequence of one scenario per env, or a
    ScenarioMixture that each episode of each env draws from. Env k reset with seed s runs exactly the
    episode that VVHOEnv on the simulator runs after ``reset(seed=s)`` (``episode_seed``): each env has
    its own RNG stream and its own state rows. Observations express load against each env's own
    scenario and latency against its own SLO, so that they stay comparable across scenarios. Episodes
    last ``max_steps`` (default: each scenario's own length; for a mixture its longest, shorter
    scenarios cycling through their phases, so that a batch ends together).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}  # noqa: RUF012 (gymnasium declares it so)

    def __init__(
        self,
        num_envs: int,
        scenario: str | Scenario | Sequence[str | Scenario] | ScenarioMixture = DEFAULT_SCENARIO,
        knob_names: Sequence[str] | None = None,
        action_mode: str = "absolute",
        delta_step: float = 0.25,
        history: int = 4,
        max_steps: int | None = None,
        weights: ObjectiveWeights | None = None,
        randomise: bool = False,
    ) -> None:
        self.num_envs = num_envs
        self.mixture = scenario if isinstance(scenario, ScenarioMixture) else None
        if isinstance(scenario, ScenarioMixture):
            self._fixed: list[Scenario] | None = None
            randomise = scenario.randomise
            candidates = list(scenario.scenarios)
        else:
            listed: list[str | Scenario] = ([scenario] * num_envs if isinstance(scenario, str | Scenario)
                                            else list(scenario))
            if len(listed) != num_envs:
                raise ValueError(f"{len(listed)} scenarios for {num_envs} envs; accepted: one scenario, or one per env")
            self._fixed = candidates = [load_scenario(s) for s in listed]
        check_batchable(candidates)
        self.scenario = candidates[0]
        self.knob_names = acting_knobs(self.scenario.host_profile, knob_names)
        self.codec = Codec.for_scenario(self.scenario, self.knob_names, action_mode, delta_step, history)
        self.weights = weights
        self.randomise = randomise
        if max_steps:
            limits = [max_steps] * num_envs
        elif self.mixture is not None:
            limits = [self.mixture.episode_intervals] * num_envs
        else:
            limits = [sc.episode_intervals for sc in candidates]
        self.episode_steps = np.array(limits, dtype=np.int64)
        self.max_steps = int(self.episode_steps.max())
        self.scenarios: list[Scenario] = [self.scenario] * num_envs  # the scenario each env runs now
        self._ref = np.full(num_envs, self.codec.ref_rps)
        self._objectives = [objective_for(self.scenario, weights)] * num_envs
        from vvho_env.sim.backend import BatchSim

        self.sim = BatchSim(num_envs)
        self.single_action_space = self.codec.action_space
        self.single_observation_space = self.codec.observation_space
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self._windows: list[list[np.ndarray]] = [[] for _ in range(num_envs)]
        self._prev = np.zeros((num_envs, len(self.knob_names)), dtype=np.float32)
        self._steps = np.zeros(num_envs, dtype=np.int64)
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._rng = np.random.default_rng()
        self.last_telemetry: list[Telemetry] = []  # the last window of every env, with its histogram

    def _reset_env(self, k: int, backend_seed: int) -> np.ndarray:
        sc = self.mixture.draw(backend_seed) if self.mixture is not None else self._fixed[k]  # type: ignore[index]
        if sc is not self.scenarios[k]:
            self.scenarios[k] = sc
            self._ref[k] = reference_rps(sc)
            self._objectives[k] = objective_for(sc, self.weights)
        self.sim.reset_env(k, backend_seed, sc, randomise=self.randomise)
        self._steps[k] = 0
        self._prev[k] = self.codec.encode(self.sim.settings[k])
        self._windows[k] = []
        return self._prev[k]

    def reset(self, *, seed: int | Sequence[int] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Seed None: fresh episodes; an int s: env k runs episode seed s + k; a list: one episode seed per env."""
        if seed is None:
            backend_seeds = [int(s) for s in self._rng.integers(0, 2**63 - 1, self.num_envs)]
        else:
            if isinstance(seed, int):
                self._rng = np.random.default_rng(seed)
                seeds = [seed + k for k in range(self.num_envs)]
            else:
                seeds = [int(s) for s in seed]
            backend_seeds = [episode_seed(s) for s in seeds]
        for k, s in enumerate(backend_seeds):
            self._reset_env(k, s)
        tels = self.sim.run(self.scenario.interval_s)
        obs = np.stack([self._observe(k, tels[k]) for k in range(self.num_envs)])
        self._needs_reset[:] = False
        return obs, {}

    def _observe(self, k: int, tel: Telemetry) -> np.ndarray:
        self._windows[k].append(window_features(tel, float(self._ref[k])))
        self._windows[k] = self._windows[k][-self.codec.history:]
        return self.codec.observe(self._windows[k], self._prev[k])

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        actions = np.asarray(actions)
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        truncs = np.zeros(self.num_envs, dtype=bool)
        costs = np.zeros(self.num_envs)
        resetting = np.flatnonzero(self._needs_reset)
        for k in map(int, resetting):
            self._reset_env(k, int(self._rng.integers(0, 2**63 - 1)))
        for k in range(self.num_envs):
            if self._needs_reset[k]:
                continue
            new, position = self.codec.decode(actions[k], self._prev[k])
            changed = {n: v for n, v in new.items() if v != self.sim.settings[k][n]}
            if changed:
                prev = dict(self.sim.settings[k])
                applied = self.sim.apply_env(k, changed)
                costs[k] = change_cost(prev, applied)
            self._prev[k] = position
        tels = self.last_telemetry = self.sim.run(self.scenario.interval_s)
        obs = np.zeros((self.num_envs, self.codec.obs_size), dtype=np.float32)
        for k in range(self.num_envs):
            obs[k] = self._observe(k, tels[k])
            if self._needs_reset[k]:
                continue
            self._steps[k] += 1
            rewards[k] = -self._objectives[k](tels[k], costs[k])
            truncs[k] = self._steps[k] >= self.episode_steps[k]
        self._needs_reset[:] = False
        self._needs_reset[truncs] = True
        terms = np.zeros(self.num_envs, dtype=bool)
        info = {"p99_us": np.array([t.p99_us for t in tels]), "vm_cpu": np.array([t.vm_cpu for t in tels]),
                "p50_us": np.array([t.p50_us for t in tels]), "p999_us": np.array([t.p999_us for t in tels]),
                "slo_violation_frac": np.array([t.slo_violation_frac for t in tels])}
        return obs, rewards, terms, truncs, info
