"""The oracle ("best known", simulator only): the best settings of each scenario phase, found by
baselines.search (coordinate refinement with restarts over common seeds, cached per scenario version,
simulator hash and search configuration), switched at the phase boundaries.

It knows the phase schedule, which no other method does: that is what makes it a reference, not a
competitor. Its search runs outside any timed job (``best_settings`` is cached on disk); evaluating it
costs only the evaluation windows every method pays.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from baselines.search import SearchConfig, best_settings
from vvho_env.env import VVHOEnv
from vvho_env.harness import encode_settings
from vvho_env.scenarios import Scenario
from vvho_env.types import Settings


class PhaseScheduleController:
    """A Controller that applies per-phase settings at the step the phase starts."""

    def __init__(self, scenario: Scenario, per_phase: list[Settings]) -> None:
        if len(per_phase) != len(scenario.phases):
            raise ValueError(f"{scenario.id} has {len(scenario.phases)} phases; got {len(per_phase)} settings")
        self.scenario = scenario
        self.per_phase = per_phase
        self._actions: list[np.ndarray] = []
        self._step = 0

    def reset(self, env: VVHOEnv, seed: int | None) -> None:
        self._actions = [encode_settings(env, s) for s in self.per_phase]
        self._step = 0

    def act(self, obs: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        self._step += 1  # the env's step k measures the scenario at step index k
        return self._actions[self.scenario.phase_at(self._step)[0]]

    def observe(self, reward: float, info: Mapping[str, Any]) -> None:
        pass


def oracle_settings(scenario: Scenario, cfg: SearchConfig | None = None,
                    cache_dir: Path | None = None) -> list[Settings]:
    """Best per-phase settings (computed once per scenario version, simulator hash and config)."""
    return [dict(r.settings) for r in best_settings(scenario, cfg, cache_dir=cache_dir).per_phase]
