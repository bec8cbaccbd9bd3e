"""Fixed-settings tuners: static-default (the scenario's start settings) and any held setting."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from baselines.space import UnitSpace
from vvho_env.types import KnobValue, Settings, Telemetry


class FixedTuner:
    """Holds one setting; spends no budget (nothing to learn)."""

    online = False

    def __init__(self, name: str, settings: Mapping[str, KnobValue] | None = None) -> None:
        self.name = name
        self._overrides = dict(settings or {})
        self._settings: Settings = {}

    def start(self, space: UnitSpace, budget: int, rng: np.random.Generator) -> None:
        # knobs the env does not act on stay at the scenario's start values
        self._settings = dict(space.base)
        self._settings.update({k: v for k, v in self._overrides.items() if k in space.names})

    def ask(self) -> Settings:
        return dict(self._settings)

    def tell(self, settings: Settings, objective: float, telemetry: Telemetry | None = None) -> None:
        pass

    def recommend(self) -> Settings:
        return dict(self._settings)


def static_default() -> FixedTuner:
    """The knob registry's defaults overridden by the scenario's start settings (``base_settings``)."""
    return FixedTuner("static-default")
