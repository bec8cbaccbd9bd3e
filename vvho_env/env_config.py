"""EnvConfig: the simulated environment an experiment trains and evaluates on (one section of a config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from vvho_env import knobs
from vvho_env.config_base import StrictModel
from vvho_env.errors import did_you_mean
from vvho_env.scenarios import ScenarioError, load_scenario
from vvho_env.sim.profiles import get_profile


class EnvConfig(StrictModel):
    """The environment the agent trains on (always the simulator; live hosts only deploy)."""

    scenario: str = Field("diurnal-noisy-v0", description="scenario id (see `vvho scenarios`); its host "
                          "profile decides which knobs the policy acts on",
                          json_schema_extra={"accepted": "a scenario id (see `vvho scenarios`)"})
    knob_names: list[str] | None = Field(None, min_length=1, description="knobs to act on; default: every live "
                                         "knob the scenario's host profile can set",
                                         json_schema_extra={"accepted": "a list of distinct knob names that the "
                                                            "scenario's host profile can set (see `vvho knobs`), "
                                                            "or null for all of them"})
    action_mode: Literal["absolute", "delta"] = Field("absolute", description="set knob values, or move them")
    delta_step: float = Field(0.25, gt=0, le=2, description="delta mode: largest move per step on [-1, 1]")
    history: int = Field(4, ge=1, le=32, description="measurement windows stacked in each observation")
    max_steps: int | None = Field(None, ge=1, le=1_000_000, description="episode length; default: the scenario's")
    randomise: bool = Field(False, description="domain randomisation over the scenario's parameters")

    @field_validator("scenario")
    @classmethod
    def _known_scenario(cls, value: str) -> str:
        try:
            return load_scenario(value).id
        except ScenarioError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("knob_names")
    @classmethod
    def _known_knobs(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for name in value:
            if name not in knobs.REGISTRY:
                raise ValueError(f"unknown knob {name!r}{did_you_mean(name, knobs.KNOB_NAMES)}")
        twice = sorted({n for n in value if value.count(n) > 1})
        if twice:
            raise ValueError(f"knob(s) {', '.join(twice)} listed twice")
        return value

    @model_validator(mode="after")
    def _settable(self) -> EnvConfig:
        if self.knob_names is None:
            return self
        profile = get_profile(load_scenario(self.scenario).host_profile)
        unsettable = [n for n in self.knob_names if n not in profile.settable]
        if unsettable:
            raise ValueError(f"knob_names: {', '.join(unsettable)} cannot be set on host profile {profile.name!r} "
                             f"of scenario {self.scenario}; settable: {', '.join(sorted(profile.settable))}")
        return self
