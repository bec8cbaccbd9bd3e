"""Suites: the scenarios agents train on, the held-out scenarios they are judged on, and what
``vvho compare`` runs over them.

A suite is a YAML file (shipped ones in ``vvho/configs/suites``, usable by name; ``schema.json`` there is
its JSON schema) validated by ``Suite``: one line per bad field, naming the file and the field.

- ``train``: scenarios (ids, files or variants) that training mixes, each episode drawing one, with
  ``randomisation`` (relative spreads of rates, service times, neighbour demand and host constants per
  episode). Compare evaluates them on held-out seeds.
- ``held_out``: variants generated from catalogue scenarios (``vvho_env.variants``: other rates,
  SLOs, phase orders and lengths, neighbour patterns, quotas) and ``external`` scenario files, never
  trained on. A held-out scenario whose content equals a training scenario's is refused.
- ``compare``: methods, budgets and seeds of ``vvho compare --suite NAME`` (options override them).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from vvho_env.config_base import StrictModel, field_errors
from vvho_env.env_config import checked_scenario_ref
from vvho_env.errors import VVHOError, did_you_mean
from vvho_env.mixture import check_batchable
from vvho_env.scenarios import Randomisation, Scenario, ScenarioError, load_scenario
from vvho_env.variants import SEPARATOR

SUITE_DIR = Path(str(resources.files("vvho") / "configs" / "suites"))
SCHEMA_PATH = SUITE_DIR / "schema.json"
TUNERS = ("static-default", "expert", "random", "gd-offline", "gd-fd-offline", "gd-online", "bo", "controller")
REFERENCES = ("best-known", "best-static")
RL_ALGORITHMS = ("ppo", "recurrent_ppo", "a2c", "sac", "td3")
DEFAULT_METHODS = (*TUNERS, *REFERENCES, "ppo")
SAFETY_SUFFIX = "+safety"
SCENARIO_ACCEPTED = "a catalogue id, a YAML scenario file (path or path#id) or a held-out variant BASE~N"


class SuiteError(VVHOError, ValueError):
    """A suite that cannot be used; the message names the file and the field."""


class Variants(StrictModel):
    base: str = Field(description="the catalogue scenario (or scenario file) the variants are generated from",
                      json_schema_extra={"accepted": "a catalogue id or a YAML scenario file"})
    numbers: list[int] = Field(min_length=1, max_length=100, description="variant numbers (each one scenario)")

    @field_validator("base")
    @classmethod
    def _base(cls, value: str) -> str:
        if SEPARATOR in value:
            raise ValueError("a variant of a variant is not accepted")
        return checked_scenario_ref(value)

    @field_validator("numbers")
    @classmethod
    def _numbers(cls, value: list[int]) -> list[int]:
        if any(n < 0 for n in value):
            raise ValueError("variant numbers are integers >= 0")
        if len(set(value)) != len(value):
            raise ValueError("a variant number listed twice")
        return value

    def refs(self) -> list[str]:
        return [f"{self.base}{SEPARATOR}{n}" for n in self.numbers]


class HeldOut(StrictModel):
    variants: list[Variants] = Field(default_factory=list, description="held-out variants of catalogue scenarios")
    external: list[str] = Field(default_factory=list, max_length=256,
                                description="further scenarios (YAML files) judged but never trained on",
                                json_schema_extra={"accepted": f"a list of scenarios, each {SCENARIO_ACCEPTED}"})

    @field_validator("external")
    @classmethod
    def _external(cls, value: list[str]) -> list[str]:
        return [checked_scenario_ref(v) for v in value]

    def refs(self) -> list[str]:
        return [r for v in self.variants for r in v.refs()] + list(self.external)


class RLAgent(StrictModel):
    """An RL method of a compare: trained within the command from a config, or an existing policy."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$",
                      description="the method's name in the tables")
    config: str | None = Field(None, description="experiment config to train with (a shipped name or a file); it "
                               "trains on the suite's training scenarios")
    steps: int | None = Field(None, ge=1, le=10**10, description="training steps [default: the config's]")
    policy: str | None = Field(None, description="instead of training: an MLflow run id or a bundle directory")
    safety: bool = Field(False, description="also judge the policy under its safety layer (agents/safety.py), as "
                         "the method NAME+safety")

    @model_validator(mode="after")
    def _one_source(self) -> RLAgent:
        if (self.config is None) == (self.policy is None):
            raise ValueError("config: give either config (train within the compare) or policy (a run id or bundle)")
        return self


class CompareSettings(StrictModel):
    methods: list[str] = Field(list(DEFAULT_METHODS), min_length=1, description="methods to compare, in order",
                               json_schema_extra={"accepted": "a list of "
                                                  f"{', '.join((*TUNERS, *REFERENCES))} and names of rl entries"})
    budget: int = Field(400, ge=1, le=10**7, description="measurement windows every tuner spends tuning, per trial")
    seeds: int = Field(5, ge=1, le=1000, description="trials (seeds) per method and scenario")
    first_seed: int = Field(0, ge=0, le=2**31, description="the first trial seed; trial seeds are consecutive")
    rl: list[RLAgent] = Field(default_factory=lambda: [RLAgent(name="ppo", config="ppo_core")],
                              description="RL agents among the methods")
    workers: int = Field(2, ge=1, le=256, description="parallel trial processes")
    tune_hparams: bool = Field(True, description="sweep each tuner's own hyperparameters on the training scenarios "
                               "first (never on a held-out scenario; cached), at the compare's budget; the windows "
                               "spent are counted in every trial's budget as hparam_windows")
    reference_search: Literal["full", "reduced", "smoke"] = Field(
        "full", description="the best-known search: the full one, a reduced one (one seed, one sweep) for short "
        "jobs, or a token one for smoke tests (cached either way); its level is printed in the report")

    @model_validator(mode="after")
    def _methods(self) -> CompareSettings:
        rl = [a.name for a in self.rl] + [f"{a.name}{SAFETY_SUFFIX}" for a in self.rl if a.safety]
        known = [*TUNERS, *REFERENCES, *rl]
        for m in self.methods:
            if m not in known:
                raise ValueError(f"methods: {m!r} is no method{did_you_mean(m, known)}; accepted: {', '.join(known)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("methods: a method listed twice")
        if len({a.name for a in self.rl}) != len(self.rl):
            raise ValueError("rl: two agents of the same name")
        return self


class Suite(StrictModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$", description="the suite's name")
    description: str = Field("", description="what the suite is for")
    train: list[str] = Field(min_length=1, max_length=256, description="scenarios training mixes (each episode "
                             "draws one); compare evaluates them on held-out seeds",
                             json_schema_extra={"accepted": f"a list of scenarios, each {SCENARIO_ACCEPTED}"})
    randomisation: Randomisation = Field(Randomisation(), description="per-episode relative spreads of rates, "
                                         "service times, neighbour demand and host constants in training")
    held_out: HeldOut = Field(HeldOut(), description="scenarios judged but never trained on")
    compare: CompareSettings = Field(CompareSettings(), description="what `vvho compare --suite` runs")

    @field_validator("train")
    @classmethod
    def _train(cls, value: list[str]) -> list[str]:
        refs = [checked_scenario_ref(v) for v in value]
        try:
            check_batchable([load_scenario(r) for r in refs])
        except ScenarioError as exc:
            raise ValueError(str(exc)) from None
        return refs

    @model_validator(mode="after")
    def _held_out_is_held_out(self) -> Suite:
        trained = {load_scenario(r).content_hash: r for r in self.train}
        for ref in self.held_out.refs():
            h = load_scenario(ref).content_hash
            if h in trained:
                raise ValueError(f"held_out: {ref} has the content of training scenario {trained[h]}, so it is not "
                                 "held out")
        return self

    def training_scenarios(self) -> list[Scenario]:
        return [load_scenario(r) for r in self.train]

    def held_out_scenarios(self) -> list[Scenario]:
        return [load_scenario(r) for r in self.held_out.refs()]

    def evaluation_refs(self) -> list[tuple[str, str]]:
        """(reference, role) of every scenario a compare judges: training ones, then held-out ones."""
        return [(r, "train") for r in self.train] + [(r, "held-out") for r in self.held_out.refs()]


def shipped_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SUITE_DIR.glob("*.yaml"))}


def resolve_suite(text: str) -> Path:
    path = Path(text)
    if path.is_file():
        return path
    shipped = shipped_suites()
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if name in shipped and path.parent == Path("."):
        return shipped[name]
    raise SuiteError(f"{text}: no such suite{did_you_mean(name, shipped)}; accepted: a suite YAML file or a shipped "
                     f"suite: {', '.join(shipped)}")


def suite_ref(text: str) -> str:
    """How a compare names its suite (part of its resume key): a shipped suite's name, else the file's
    absolute path."""
    path = resolve_suite(text)
    return text if path.parent == SUITE_DIR and "/" not in text else str(path.absolute())


def parse_suite(raw: object, source: str) -> Suite:
    if not isinstance(raw, dict):
        raise SuiteError(f"{source}: a {type(raw).__name__} at the top level is not accepted; accepted: a mapping "
                         f"with fields {', '.join(Suite.model_fields)}")
    try:
        return Suite.model_validate(raw)
    except ValidationError as exc:
        raise SuiteError("\n".join(field_errors(source, exc, Suite))) from None


def load_suite(text: str) -> Suite:
    """A suite by file path or shipped name, validated."""
    p = resolve_suite(text)
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{p}: cannot read the suite ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SuiteError(f"{p}: not valid YAML{where}; accepted: a YAML mapping with fields "
                         f"{', '.join(Suite.model_fields)}") from None
    return parse_suite(raw, str(p))


def schema() -> dict[str, Any]:
    return Suite.model_json_schema()


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    path.write_text(json.dumps(schema(), indent=2) + "\n")
    return path


def expand_into(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """An experiment config's ``suite: NAME`` as its env section: the suite's training scenarios as the
    mixture, its randomisation, randomise on (fields the config sets itself are kept)."""
    text = raw.get("suite")
    if not isinstance(text, str):
        return raw
    try:
        suite = load_suite(text)
    except SuiteError as exc:
        raise SuiteError(f"{source}: field suite: {exc}") from None
    env = dict(raw.get("env") or {})
    env.setdefault("mixture", list(suite.train))
    env.setdefault("scenario", env["mixture"][0])
    env.setdefault("randomise", True)
    env.setdefault("randomisation", suite.randomisation.model_dump())
    return {**raw, "env": env}

