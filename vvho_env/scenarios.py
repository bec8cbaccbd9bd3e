"""The versioned scenario catalogue: workload + neighbours + host profile, phase by phase.

Scenarios live in ``scenarios.yaml`` beside this file and are validated by the pydantic models below.
An id names a version (``diurnal-noisy-v1``); changing a scenario's behaviour means a new version.
Wherever a scenario is accepted, ``load_scenario`` also takes a YAML file in the catalogue's format
(``vvho_env.scenario_files``) and a held-out variant of a catalogue scenario (``vvho_env.variants``);
a scenario is identified by its id plus ``content_hash``, so that two versions never mix.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vvho_env import knobs
from vvho_env.config_base import StrictModel, field_errors
from vvho_env.errors import VVHOError, did_you_mean
from vvho_env.sim.profiles import PROFILES

CATALOGUE = Path(__file__).with_name("scenarios.yaml")
DEFAULT_SCENARIO = "diurnal-noisy-v1"


class ScenarioError(VVHOError, ValueError):
    """Unknown scenario id or an invalid scenario definition."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Phase(_Strict):
    name: str = Field(description="what this part of the episode represents")
    intervals: int = Field(ge=10, description="control intervals in this phase (>= 10)")
    rate_rps: float = Field(ge=0, description="offered request rate at the start of the phase")
    rate_end_rps: float | None = Field(None, ge=0, description="rate at the end (linear ramp); None = constant")
    mmpp_mult: float = Field(1.0, ge=1.0, description="rate multiplier in the burst state of a 2-state MMPP")
    mmpp_on_ms: float = Field(20.0, gt=0, description="mean burst duration")
    mmpp_off_ms: float = Field(200.0, gt=0, description="mean time between bursts")
    service_mean_us: float = Field(gt=0, description="mean guest service time per request")
    service_cv: float = Field(1.0, ge=0, description="coefficient of variation (lognormal)")
    long_frac: float = Field(0.0, ge=0, le=1, description="share of requests that are long")
    long_mult: float = Field(1.0, ge=1, description="service multiplier of long requests")
    lock_prob: float = Field(0.0, ge=0, le=1, description="share of requests taking a contended guest spinlock")
    neighbour_demand: tuple[float, ...] = Field(
        (0.0,), description="CPU demand (0..1) of the neighbour on each shared pCPU; cycled over pCPUs"
    )

    def rate_at(self, frac: float) -> float:
        end = self.rate_rps if self.rate_end_rps is None else self.rate_end_rps
        return self.rate_rps + (end - self.rate_rps) * frac

    @model_validator(mode="after")
    def _demand_in_range(self) -> Phase:
        for d in self.neighbour_demand:
            if not 0.0 <= d <= 1.0:
                raise ValueError(f"neighbour_demand entries must be in [0, 1], got {d}")
        return self


class Randomisation(StrictModel):
    """Domain randomisation: relative spreads drawn once per episode from the reset seed (a config
    section too: booleans and non-finite spreads are refused as everywhere in configs)."""

    rate: float = Field(0.1, ge=0, lt=1)
    service: float = Field(0.1, ge=0, lt=1)
    neighbour: float = Field(0.1, ge=0, lt=1)
    profile: float = Field(0.1, ge=0, lt=1)


class Scenario(_Strict):
    id: str
    version: int = Field(ge=0)
    description: str
    host_profile: str = "xeon-kvm"
    slo_us: float = Field(gt=0, description="latency SLO the p99 is judged against")
    interval_s: float = Field(0.25, gt=0, description="control interval (one env step)")
    client_rtt_us: float = Field(10.0, ge=0, description="client + wire round trip outside the host")
    closed_loop: bool = Field(False, description="one client, next request after the response (TCP_RR)")
    think_us: float = Field(0.0, ge=0, description="closed loop: client think time")
    vcpu_util_target: float | None = Field(None, description="stated operating point (mean vCPU utilisation)")
    base_settings: dict[str, knobs.KnobValue] = Field(
        default_factory=dict, description="host settings in force at episode start (else knob defaults)"
    )
    cpu_weight: float | None = Field(None, ge=0, description="objective CPU weight override (e.g. paid CPU)")
    guest_spinlock: Literal["test_and_set", "queued", "paravirt"] = Field(
        "test_and_set",
        description="the guest kernel's spinlock: test_and_set (virt_spin_lock, a KVM guest without PV_UNHALT, "
        "libvirt <pvspinlock state='off'/>), queued (native qspinlock in queue order: nopvspin or the "
        "dedicated-pCPU hint), paravirt (pv qspinlock: a waiter halts after SPIN_THRESHOLD loops and the "
        "unlocker kicks it; <pvspinlock state='on'/>)",
    )
    phases: tuple[Phase, ...]
    randomise: Randomisation = Randomisation()

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        if self.host_profile not in PROFILES:
            raise ValueError(f"host_profile {self.host_profile!r} unknown; known: {', '.join(PROFILES)}")
        knobs.validate_settings(self.base_settings)
        if not self.phases:
            raise ValueError("a scenario needs at least one phase")
        return self

    @property
    def content_hash(self) -> str:
        """sha256 of everything that changes what the scenario does (not its id or description)."""
        body = self.model_dump(mode="json", exclude={"id", "description"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    @property
    def key(self) -> str:
        """Id plus a short content hash: the name caches and tracked runs use."""
        return f"{self.id}@{self.content_hash[:12]}"

    @property
    def episode_intervals(self) -> int:
        return sum(p.intervals for p in self.phases)

    def phase_at(self, step: int) -> tuple[int, Phase, float]:
        """(phase index, phase, fraction elapsed in it) for a step; episodes longer than the
        phase list cycle through it."""
        s = step % self.episode_intervals
        for i, ph in enumerate(self.phases):
            if s < ph.intervals:
                return i, ph, s / ph.intervals
            s -= ph.intervals
        raise AssertionError("unreachable")

    def settings_at_start(self) -> knobs.Settings:
        out = knobs.defaults()
        out.update(knobs.validate_settings(self.base_settings))
        return out

    def randomised(self, seed: int) -> Scenario:
        """A copy with rates, service times and neighbour demand jittered (domain randomisation)."""
        rng = np.random.default_rng(seed)
        r = self.randomise

        def jitter(spread: float) -> float:
            return float(rng.uniform(1 - spread, 1 + spread))

        phases = []
        for ph in self.phases:
            kr, ks = jitter(r.rate), jitter(r.service)
            phases.append(
                ph.model_copy(
                    update={
                        "rate_rps": ph.rate_rps * kr,
                        "rate_end_rps": None if ph.rate_end_rps is None else ph.rate_end_rps * kr,
                        "service_mean_us": ph.service_mean_us * ks,
                        "neighbour_demand": tuple(
                            min(1.0, d * jitter(r.neighbour)) for d in ph.neighbour_demand
                        ),
                    }
                )
            )
        return self.model_copy(update={"phases": tuple(phases)})


@cache
def catalogue() -> dict[str, Scenario]:
    try:
        raw = yaml.safe_load(CATALOGUE.read_text())
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{CATALOGUE}: not valid YAML: {exc}") from exc
    return parse_scenarios(raw, str(CATALOGUE))


def parse_scenarios(raw: object, source: str) -> dict[str, Scenario]:
    """The scenarios of a document in the catalogue's format (``scenarios:`` and a list), validated,
    by id; every problem is one line naming `source`, the scenario and the field."""
    if not isinstance(raw, dict) or not isinstance(raw.get("scenarios"), list) or not raw["scenarios"]:
        raise ScenarioError(f"{source}: not accepted; accepted: a YAML mapping with 'scenarios:' and a non-empty "
                            "list of scenarios in the catalogue's format (see vvho_env/scenarios.yaml)")
    extra = sorted(set(raw) - {"scenarios"})
    if extra:
        raise ScenarioError(f"{source}: unknown top-level field(s) {', '.join(map(repr, extra))}; accepted: "
                            "scenarios")
    out: dict[str, Scenario] = {}
    for i, entry in enumerate(raw["scenarios"]):
        name = entry.get("id", f"#{i}") if isinstance(entry, dict) else f"#{i}"
        try:
            sc = Scenario.model_validate(entry)
        except ValidationError as exc:
            raise ScenarioError("\n".join(field_errors(f"{source}: scenario {name}", exc, Scenario))) from None
        if sc.id in out:
            raise ScenarioError(f"{source}: duplicate scenario id {sc.id!r}")
        if not sc.id.endswith(f"-v{sc.version}"):
            raise ScenarioError(f"{source}: scenario {sc.id}: field id: {sc.id!r} not accepted; accepted: an id "
                                f"that ends with -v{sc.version} (its version)")
        out[sc.id] = sc
    return out


def scenario_ids() -> list[str]:
    return list(catalogue())


def load_scenario(scenario: str | Scenario) -> Scenario:
    """A scenario by catalogue id, YAML file (``path`` or ``path#id``) or held-out variant
    (``base-id~N``); a Scenario passes through."""
    if isinstance(scenario, Scenario):
        return scenario
    cat = catalogue()
    if scenario in cat:
        return cat[scenario]
    from vvho_env import scenario_files, variants  # they build on this module

    if scenario_files.looks_like_file(scenario):
        return scenario_files.load_file(scenario)
    if variants.SEPARATOR in scenario:
        return variants.from_ref(scenario)
    raise ScenarioError(f"unknown scenario {scenario!r}{did_you_mean(scenario, cat)}; accepted: a catalogue id "
                        f"({', '.join(cat)}), a YAML file in the catalogue's format (path or path#id), or a "
                        f"held-out variant BASE{variants.SEPARATOR}N")


def mean_requests_per_window(sc: Scenario) -> float:
    total = 0.0
    for ph in sc.phases:
        mean_rate = 0.5 * (ph.rate_rps + (ph.rate_end_rps if ph.rate_end_rps is not None else ph.rate_rps))
        mult = 1.0 + (ph.mmpp_mult - 1.0) * ph.mmpp_on_ms / (ph.mmpp_on_ms + ph.mmpp_off_ms)
        total += mean_rate * mult * ph.intervals
    return total / sc.episode_intervals * sc.interval_s


def lognormal_median_us(mean_us: float, cv: float) -> float:
    return mean_us / math.sqrt(1.0 + cv * cv)
