"""Random search: uniform points of the normalised knob space, each measured over a few windows.

The first candidate is the start setting (what the host runs before tuning), so the search can only
recommend something else when it measured better. Candidates are scored by the mean objective of
their windows; the recommendation is the candidate with the lowest mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from baselines.space import UnitSpace
from vvho_env.types import Settings, Telemetry


@dataclass(frozen=True)
class RandomConfig:
    repeats: int = 2  # windows measured per candidate (averages the window-to-window noise)

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError(f"repeats={self.repeats} not accepted; accepted: an integer >= 1")


class RandomSearch:
    online = False

    def __init__(self, cfg: RandomConfig | None = None) -> None:
        self.cfg = cfg or RandomConfig()
        self.name = "random"
        self._space: UnitSpace | None = None
        self._rng = np.random.default_rng(0)
        self._current: Settings = {}
        self._sum = 0.0
        self._n = 0
        self.history: list[tuple[Settings, float, int]] = []  # candidate, mean objective, windows

    def start(self, space: UnitSpace, budget: int, rng: np.random.Generator) -> None:
        self._space = space
        self._rng = rng
        self._current = space.decode(space.encode(space.base))
        self._sum, self._n = 0.0, 0
        self.history = []

    def ask(self) -> Settings:
        return dict(self._current)

    def tell(self, settings: Settings, objective: float, telemetry: Telemetry | None = None) -> None:
        assert self._space is not None, "start() first"
        self._sum += objective
        self._n += 1
        if self._n >= self.cfg.repeats:
            self.history.append((dict(settings), self._sum / self._n, self._n))
            self._current = self._space.decode(self._space.sample(self._rng))
            self._sum, self._n = 0.0, 0

    def recommend(self) -> Settings:
        if not self.history:
            return dict(self._current)
        return dict(min(self.history, key=lambda h: h[1])[0])
