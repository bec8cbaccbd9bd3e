"""The one interface of the non-RL tuners: ask for the settings of the next measurement window, tell
what the window cost.

A tuner never sees the simulator, a seed or a reset: ``TunerController`` plugs it into the shared
episode runner (``vvho_env.harness.run_episode``), so it measures consecutive windows of one running
episode through the env, and every window it asks for is one unit of the budget. The objective it is
told is the env's (``-reward``: the one objective of ``vvho_env.objective``, change cost included).
A tuner that receives no ``tell`` for a window (the backend truncated the episode) is asked again
and must return the same pending probe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from baselines.space import UnitSpace
from vvho_env.env import VVHOEnv
from vvho_env.harness import encode_settings
from vvho_env.types import Settings


@runtime_checkable
class Tuner(Protocol):
    """Ask/tell tuner over the normalised knob space."""

    name: str
    online: bool  # keeps adapting while it is evaluated (the article's "monitor" step)

    def start(self, space: UnitSpace, budget: int, rng: np.random.Generator) -> None:
        """Begin tuning `space` with `budget` measurement windows."""

    def ask(self) -> Settings:
        """Full settings to apply for the next window."""

    def tell(self, settings: Settings, objective: float) -> None:
        """The settings actually applied during the window and its objective (lower is better)."""

    def recommend(self) -> Settings:
        """The settings to hold once the budget is spent."""


class TunerController:
    """A Controller (see vvho_env.harness) that drives the env with a tuner's asks."""

    def __init__(self, tuner: Tuner) -> None:
        self.tuner = tuner
        self._env: VVHOEnv | None = None
        self.windows = 0  # windows measured through this controller (the budget spent)

    def reset(self, env: VVHOEnv, seed: int | None) -> None:
        self._env = env

    def act(self, obs: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        assert self._env is not None, "reset() first"
        return encode_settings(self._env, self.tuner.ask())

    def observe(self, reward: float, info: Mapping[str, Any]) -> None:
        if "telemetry" not in info:
            return
        self.windows += 1
        self.tuner.tell(dict(info["settings"]), -float(reward))
