"""The episode runner and metrics shared by the tuners and the agents.

Every method runs through a VVHOEnv, so the objective, the change cost, the budget (env steps =
measurement windows), retries and truncation are the same for all of them. A method is a
Controller: it sees the env's observation and info and returns an action; a classic tuner wraps its
chosen settings into an absolute action with ``SettingsController``/``encode_settings``.
Metrics pool the windows' latency histograms, so an episode's p99 is the p99 of all its requests.

The measurement protocol of every tuner
---------------------------------------
A tuner (``AskTell``: ask for settings, be told what a window cost) is driven by ``MeasuredController``,
which applies one ``MeasurementProtocol`` for all of them (gradient descent, random search, BO, the
feedback controller), offline and online alike:

- **Settle windows.** After a change of settings that follows a window with a backlog (served below
  offered load by more than ``drain_tol``, or the VM throttled by CPU bandwidth), the next ``settle``
  windows run with the new settings but are not told to the tuner: they carry the queue and the
  throttling debt the previous setting left (after vcpu_quota -> unlimited J stays high for several
  windows), so scoring them would credit or blame the new setting for the old one's backlog. They are
  counted in the budget (they cost real time on a host) and reported as ``settle_windows``. The default
  is derived from the scenario: ``ceil(SETTLE_S / interval_s)`` windows (one at the catalogue's 0.25-1 s
  intervals), and more, up to ``max_settle``, while a settle window still drains a backlog (served above
  offered by more than ``drain_tol``). A change after a clean window settles nothing: at low load a queue
  drains in milliseconds, and on steady-low-v0 settling after every change halved the updates gradient
  descent could make in 400 windows (J 0.18-0.22 without settling, 0.23-0.47 with). Cost: ``settle``
  windows per change made from a backlogged state, 0 otherwise; ``always_settle`` settles every change.
- **Measured context as a covariate.** Each scored window's objective is adjusted for its measured
  context, the offered load and the neighbours' CPU *demand* (their CPU plus the time they waited
  runnable: what they asked for, which the latency VM's settings do not change, unlike the CPU they got):
  J_adj = J - beta . (c - c_ref), with beta the within-settings regression of J on c (windows of the same
  settings only, so that an effect of the settings cannot be absorbed into beta), refitted every window,
  and c_ref the mean context of the windows scored before the adjustment started (held fixed, so that
  windows adjusted at different times stay comparable). A phase change (more load, busier neighbours)
  then does not pose as an effect of the settings measured during it, and on a stationary scenario the
  adjustment removes the window-to-window noise that follows the Poisson arrivals (CUPED-style variance
  reduction). It costs no windows; until ``min_dof`` within-settings degrees of freedom are seen (a
  tuner that never measures a setting twice gets none) the objective is told as measured. Candidates
  are also compared in adjacent windows where the tuner allows (gradient descent's probe pairs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vvho_env.env import VVHOEnv
from vvho_env.histogram import N_BUCKETS, percentiles_ns
from vvho_env.scenarios import Scenario
from vvho_env.types import KnobValue, Settings, Telemetry

SETTLE_S = 0.25  # after a change: one default interval for queues, bandwidth periods and halt-poll windows


class Controller(Protocol):
    """Anything that picks the next action: an RL policy, a tuner, fixed settings."""

    def reset(self, env: VVHOEnv, seed: int | None) -> None: ...

    def act(self, obs: np.ndarray, info: Mapping[str, Any]) -> np.ndarray: ...

    def observe(self, reward: float, info: Mapping[str, Any]) -> None: ...


def encode_settings(env: VVHOEnv, settings: Mapping[str, KnobValue]) -> np.ndarray:
    """The absolute-mode action that sets `settings` (knobs the env does not act on are ignored)."""
    if env.codec.mode != "absolute":
        raise ValueError("settings can only be encoded as actions of an env in absolute action mode")
    merged = dict(env.settings)
    merged.update({k: v for k, v in settings.items() if k in env.knob_names})
    return env.codec.encode(merged)


class SettingsController:
    """Holds fixed settings (static-default, expert, the best setting a tuner found)."""

    def __init__(self, settings: Mapping[str, KnobValue]) -> None:
        self.settings = dict(settings)
        self._action: np.ndarray | None = None

    def reset(self, env: VVHOEnv, seed: int | None) -> None:
        self._action = encode_settings(env, self.settings)

    def act(self, obs: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        assert self._action is not None, "reset() first"
        return self._action

    def observe(self, reward: float, info: Mapping[str, Any]) -> None:
        pass


class AskTell(Protocol):
    """What ``MeasuredController`` drives: a tuner asked for settings and told each scored window."""

    def ask(self) -> Settings: ...

    def tell(self, settings: Settings, objective: float, telemetry: Telemetry | None = None) -> None: ...


def neighbour_demand(tel: Telemetry) -> float:
    """The neighbours' CPU demand: the CPU they got plus the time they waited runnable (slowdown is the
    waiting share of their runnable time), so the latency VM's settings do not move it."""
    return tel.neighbour_cpu / max(1e-9, 1.0 - tel.neighbour_slowdown)


def context(tel: Telemetry) -> np.ndarray:
    """A window's measured context, which settings do not change: offered load, neighbour demand."""
    return np.array([tel.offered_rps, neighbour_demand(tel)])


@dataclass(frozen=True)
class MeasurementProtocol:
    """Settle windows after a change and the context covariate (see the module docstring)."""

    settle: int = 1  # windows after each change of settings, counted in the budget, not scored
    max_settle: int = 4  # longest settle while a backlog drains
    drain_tol: float = 0.05  # backlog: served < (1 - drain_tol) x offered; draining: served > (1 + drain_tol) x
    always_settle: bool = False  # settle after every change, not only after a backlogged window
    covariate: bool = True  # adjust objectives for the measured context
    min_dof: int = 8  # within-settings degrees of freedom before the adjustment is used

    def __post_init__(self) -> None:
        if self.settle < 0 or self.max_settle < self.settle or self.drain_tol < 0 or self.min_dof < 1:
            raise ValueError("MeasurementProtocol: 0 <= settle <= max_settle, drain_tol >= 0 and min_dof >= 1 "
                             "are required")

    @classmethod
    def for_scenario(cls, scenario: Scenario, **overrides: Any) -> MeasurementProtocol:
        settle = max(1, math.ceil(SETTLE_S / scenario.interval_s - 1e-9))
        return cls(**{"settle": settle, "max_settle": max(4 * settle, settle), **overrides})

    def draining(self, tel: Telemetry) -> bool:
        return tel.served_rps > (1.0 + self.drain_tol) * tel.offered_rps

    def backlogged(self, tel: Telemetry) -> bool:
        """Whether a window leaves work to the next: load not served, or bandwidth throttling."""
        return tel.served_rps < (1.0 - self.drain_tol) * tel.offered_rps or tel.throttled_frac > 0


class ContextAdjustment:
    """J - beta . (c - c_ref), beta fitted on deviations from each setting's own means."""

    def __init__(self, min_dof: int) -> None:
        self.min_dof = min_dof
        self._groups: dict[tuple[tuple[str, KnobValue], ...], list[tuple[float, np.ndarray]]] = {}
        self._beta: np.ndarray | None = None
        self._ref: np.ndarray | None = None
        self._ctx_sum = np.zeros(0)
        self._n = 0

    def adjust(self, settings: Settings, objective: float, ctx: np.ndarray) -> float:
        """Record the window and return its adjusted objective (with beta from the earlier windows)."""
        out = objective
        if self._beta is not None:
            if self._ref is None:
                self._ref = self._ctx_sum / self._n
            out = objective - float(self._beta @ (ctx - self._ref))
        self._groups.setdefault(tuple(sorted(settings.items())), []).append((objective, ctx))
        self._ctx_sum = ctx if self._n == 0 else self._ctx_sum + ctx
        self._n += 1
        self._fit()
        return out

    def _fit(self) -> None:
        dj, dc = [], []
        for windows in self._groups.values():
            if len(windows) < 2:
                continue
            j = np.array([w[0] for w in windows])
            c = np.array([w[1] for w in windows])
            dj.append(j - j.mean())
            dc.append(c - c.mean(axis=0))
        dof = sum(len(x) - 1 for x in dj)
        if dof < self.min_dof:
            return
        x, y = np.concatenate(dc), np.concatenate(dj)
        scale = x.std(axis=0)
        keep = scale > 1e-9 * (1.0 + np.abs(x).max(axis=0))  # a constant context column carries nothing
        beta = np.zeros(x.shape[1])
        if keep.any():
            beta[keep] = np.linalg.lstsq(x[:, keep], y, rcond=None)[0]
        self._beta = beta


class MeasuredController:
    """A Controller that drives the env with a tuner's asks under the measurement protocol."""

    def __init__(self, tuner: AskTell, protocol: MeasurementProtocol | None = None) -> None:
        self.tuner = tuner
        self.protocol = protocol
        self._env: VVHOEnv | None = None
        self.windows = 0  # windows measured through this controller (the budget spent), settle included
        self.settle_windows = 0  # of which settled (not told to the tuner)
        self._applied: Settings = {}
        self._settling = 0  # settle windows run since the last change (max_settle: none due)
        self._adjust: ContextAdjustment | None = None
        self._backlog = False  # the last window left a backlog

    def reset(self, env: VVHOEnv, seed: int | None) -> None:
        self._env = env
        if self.protocol is None:
            self.protocol = MeasurementProtocol.for_scenario(env.scenario)
        if self._adjust is None and self.protocol.covariate:
            self._adjust = ContextAdjustment(self.protocol.min_dof)
        self._applied, self._settling = dict(env.settings), self.protocol.max_settle  # nothing to settle yet
        self._backlog = False

    def act(self, obs: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        assert self._env is not None, "reset() first"
        return encode_settings(self._env, self.tuner.ask())

    def _settles(self, applied: Settings, tel: Telemetry) -> bool:
        """Whether this window, measured under `applied`, is a settle window."""
        assert self.protocol is not None
        p = self.protocol
        if applied != self._applied:
            self._applied = dict(applied)
            self._settling = 0 if (p.always_settle or self._backlog) else p.max_settle
        self._backlog = p.backlogged(tel)
        if self._settling < p.settle or (0 < self._settling < p.max_settle and p.draining(tel)):
            self._settling += 1
            return True
        return False

    def observe(self, reward: float, info: Mapping[str, Any]) -> None:
        if "telemetry" not in info or self._env is None or self._env.last_telemetry is None:
            return
        self.windows += 1
        applied, tel = dict(info["settings"]), self._env.last_telemetry
        if self._settles(applied, tel):
            self.settle_windows += 1
            return
        objective = -float(reward)
        if self._adjust is not None:
            objective = self._adjust.adjust(applied, objective, context(tel))
        self.tuner.tell(applied, objective, tel)


@dataclass
class EpisodeResult:
    """One episode: per-step records and pooled metrics."""

    seed: int | None
    objective: list[float] = field(default_factory=list)  # per step, lower is better
    telemetry: list[Telemetry] = field(default_factory=list)
    settings: list[Settings] = field(default_factory=list)
    truncated_reason: str = ""

    @property
    def steps(self) -> int:
        return len(self.objective)

    def metrics(self) -> dict[str, float]:
        """Pooled over the episode: latency percentiles of all requests, violation share of all
        requests, mean CPU, neighbour CPU and slowdown, mean objective."""
        tels = self.telemetry
        hist = np.zeros(N_BUCKETS, dtype=np.int64)
        for t in tels:
            if t.histogram is not None:
                hist += t.histogram
        p50, p99, p999 = (percentiles_ns(hist, (50.0, 99.0, 99.9)) / 1000.0) if hist.any() else (math.nan,) * 3
        requests = sum(t.requests for t in tels)
        return {
            "objective": float(np.mean(self.objective)) if self.objective else math.nan,
            "p50_us": float(p50),
            "p99_us": float(p99),
            "p999_us": float(p999),
            "slo_violation_frac": sum(t.slo_violations for t in tels) / requests if requests else math.nan,
            "vm_cpu": float(np.mean([t.vm_cpu for t in tels])) if tels else math.nan,
            "polling_cpu": float(np.mean([t.polling_cpu for t in tels])) if tels else math.nan,
            "neighbour_cpu": float(np.mean([t.neighbour_cpu for t in tels])) if tels else math.nan,
            "neighbour_slowdown": float(np.mean([t.neighbour_slowdown for t in tels])) if tels else math.nan,
            "requests": float(requests),
            "steps": float(self.steps),
        }


def run_episode(env: VVHOEnv, controller: Controller, seed: int | None, steps: int | None = None) -> EpisodeResult:
    """Run one episode of `env` driven by `controller`; every step is one measurement window."""
    obs, info = env.reset(seed=seed)
    controller.reset(env, seed)
    result = EpisodeResult(seed=seed)
    n = steps or env.max_steps
    for _ in range(n):
        action = controller.act(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        controller.observe(reward, info)
        if "telemetry" in info and env.last_telemetry is not None:
            result.objective.append(-reward)
            result.telemetry.append(env.last_telemetry)
            result.settings.append(dict(info["settings"]))
        if truncated and "truncated_reason" in info:
            result.truncated_reason = info["truncated_reason"]
            break
        if terminated or truncated:
            break
    return result
