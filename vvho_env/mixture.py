"""A training distribution over scenarios: which scenario an episode runs, and how it is randomised.

Agents that should generalise train on a mixture: each episode draws one of the scenarios (uniformly)
from the episode's seed, and with ``randomise`` the simulator jitters that episode's workload,
neighbours and host constants (``Scenario.randomised`` and ``HostProfile.randomised``) by the spreads
of ``randomisation`` (default: each scenario's own). Everything follows from the episode seed, so an
episode seed names the same episode in the single and the batched env.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vvho_env.scenarios import Randomisation, Scenario, ScenarioError, load_scenario
from vvho_env.sim.profiles import get_profile

_DRAW_STREAM = 7  # the mixture's draw has a stream of its own, apart from the simulator's and the jitter's


def check_batchable(scenarios: Sequence[Scenario]) -> None:
    """Scenarios that one policy and one batch of envs can run together: the same knob set (host
    profiles that can set the same knobs) and the same control interval."""
    if not scenarios:
        raise ScenarioError("no scenarios given; accepted: at least one")
    settable = {get_profile(sc.host_profile).settable for sc in scenarios}
    if len(settable) > 1:
        profiles = sorted({sc.host_profile for sc in scenarios})
        raise ScenarioError(f"scenarios of host profiles {', '.join(profiles)} can set different knobs; accepted: "
                            "scenarios whose host profiles can set the same knobs (one policy acts on one knob set)")
    intervals = sorted({sc.interval_s for sc in scenarios})
    if len(intervals) > 1:
        raise ScenarioError(f"scenarios with control intervals {', '.join(f'{i:g} s' for i in intervals)}; accepted: "
                            "one control interval (a batch of envs steps together)")


@dataclass(frozen=True)
class ScenarioMixture:
    scenarios: tuple[Scenario, ...]
    randomise: bool = True
    randomisation: Randomisation | None = None

    def __post_init__(self) -> None:
        check_batchable(self.scenarios)

    @classmethod
    def of(cls, refs: Sequence[str | Scenario], randomise: bool = True,
           randomisation: Randomisation | None = None) -> ScenarioMixture:
        return cls(tuple(load_scenario(r) for r in refs), randomise, randomisation)

    @property
    def episode_intervals(self) -> int:
        """The longest episode among the scenarios (a batch of envs ends together; shorter scenarios cycle)."""
        return max(sc.episode_intervals for sc in self.scenarios)

    def draw(self, seed: int) -> Scenario:
        """The scenario of the episode with backend seed `seed`, carrying the spreads it is randomised by."""
        i = int(np.random.default_rng([seed % 2**63, _DRAW_STREAM]).integers(len(self.scenarios)))
        sc = self.scenarios[i]
        return sc if self.randomisation is None else sc.model_copy(update={"randomise": self.randomisation})
