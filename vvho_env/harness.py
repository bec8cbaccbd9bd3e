"""The episode runner and metrics shared by the tuners and the agents.

Every method runs through a VVHOEnv, so the objective, the change cost, the budget (env steps =
measurement windows), retries and truncation are the same for all of them. A method is a
Controller: it sees the env's observation and info and returns an action; a classic tuner wraps its
chosen settings into an absolute action with ``SettingsController``/``encode_settings``.
Metrics pool the windows' latency histograms, so an episode's p99 is the p99 of all its requests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vvho_env.env import VVHOEnv
from vvho_env.histogram import N_BUCKETS, percentiles_ns
from vvho_env.types import KnobValue, Settings, Telemetry


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
