"""The one interface of the non-RL tuners: ask for the settings of the next measurement window, tell
what the window cost.

A tuner never sees the simulator, a seed or a reset: ``vvho_env.harness.MeasuredController`` plugs it
into the shared episode runner (``run_episode``) under the one measurement protocol, so it measures
consecutive windows of one running episode through the env. Every window is one unit of the budget and
asks the tuner once; the settle windows after a change of settings are not told (the tuner is asked
again and must return the same pending probe, as after a window the backend truncated). The objective it
is told is the env's (``-reward``: the one objective of ``vvho_env.objective``, change cost included),
adjusted for the window's measured context.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from baselines.space import UnitSpace
from vvho_env.types import Settings, Telemetry


@runtime_checkable
class Tuner(Protocol):
    """Ask/tell tuner over the normalised knob space."""

    name: str
    online: bool  # keeps adapting while it is evaluated (the article's "monitor" step)

    def start(self, space: UnitSpace, budget: int, rng: np.random.Generator) -> None:
        """Begin tuning `space` with `budget` measurement windows (settle windows included: each window
        asks once, see the module docstring)."""

    def ask(self) -> Settings:
        """Full settings to apply for the next window."""

    def tell(self, settings: Settings, objective: float, telemetry: Telemetry | None = None) -> None:
        """The settings actually applied during the window, its objective (lower is better) and its
        telemetry (for feedback rules; search methods use the objective only)."""

    def recommend(self) -> Settings:
        """The settings to hold once the budget is spent."""
