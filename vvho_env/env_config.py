"""EnvConfig: the simulated environment an experiment trains and evaluates on (one section of a config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from vvho_env import knobs
from vvho_env.config_base import StrictModel
from vvho_env.errors import did_you_mean
from vvho_env.mixture import ScenarioMixture
from vvho_env.scenario_files import absolute_ref, looks_like_file
from vvho_env.scenarios import Randomisation, Scenario, ScenarioError, load_scenario
from vvho_env.sim.profiles import get_profile

_SCENARIO_ACCEPTED = ("a scenario id (see `vvho scenarios`), a YAML file in the catalogue's format (path or "
                      "path#id) or a held-out variant BASE~N")


def checked_scenario_ref(value: str) -> str:
    """A scenario reference checked and made loadable from any directory (files become absolute paths)."""
    try:
        load_scenario(value)
    except ScenarioError as exc:
        raise ValueError(str(exc)) from None
    return absolute_ref(value) if looks_like_file(value) else value


class EnvConfig(StrictModel):
    """The environment the agent trains on (always the simulator; live hosts only deploy)."""

    scenario: str = Field("diurnal-noisy-v1", description="the scenario (an id, a YAML file or a held-out variant "
                          "BASE~N); its host profile decides which knobs the policy acts on; with a mixture, the "
                          "first of it", json_schema_extra={"accepted": _SCENARIO_ACCEPTED})
    mixture: list[str] | None = Field(None, min_length=1, max_length=256, description="train on these scenarios: "
                                      "each episode draws one (uniformly) from its seed; default: the scenario alone",
                                      json_schema_extra={"accepted": f"a list of scenarios, each {_SCENARIO_ACCEPTED}"
                                                         ", of host profiles that can set the same knobs"})
    randomisation: Randomisation | None = Field(None, description="with randomise: the relative spreads each "
                                                "episode's workload, neighbours and host constants are jittered by; "
                                                "default: each scenario's own")
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
        return checked_scenario_ref(value)

    @field_validator("mixture")
    @classmethod
    def _known_mixture(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        refs = [checked_scenario_ref(v) for v in value]
        try:
            ScenarioMixture.of(refs)
        except ScenarioError as exc:
            raise ValueError(str(exc)) from None
        return refs

    @model_validator(mode="before")
    @classmethod
    def _scenario_leads_the_mixture(cls, raw: object) -> object:
        """With a mixture and no scenario, the scenario is the mixture's first."""
        if isinstance(raw, dict) and raw.get("mixture") and "scenario" not in raw and isinstance(raw["mixture"], list):
            return {**raw, "scenario": raw["mixture"][0]}
        return raw

    def training_scenarios(self, randomise: bool | None = None) -> str | ScenarioMixture:
        """What the training envs run: the scenario, or the mixture with its randomisation."""
        if self.mixture is None and self.randomisation is None:
            return self.scenario
        return ScenarioMixture.of(self.mixture or [self.scenario], self.randomise if randomise is None else randomise,
                                  self.randomisation)

    def scenario_list(self) -> list[Scenario]:
        """The scenarios training draws from (the scenario alone without a mixture)."""
        return [load_scenario(r) for r in (self.mixture or [self.scenario])]

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
        if self.mixture is not None and load_scenario(self.scenario).host_profile not in {
                load_scenario(r).host_profile for r in self.mixture}:
            raise ValueError(f"scenario: {self.scenario} has another host profile than the mixture's scenarios")
        profile = get_profile(load_scenario(self.scenario).host_profile)
        unsettable = [n for n in self.knob_names if n not in profile.settable]
        if unsettable:
            raise ValueError(f"knob_names: {', '.join(unsettable)} cannot be set on host profile {profile.name!r} "
                             f"of scenario {self.scenario}; settable: {', '.join(sorted(profile.settable))}")
        return self
