"""The baseline methods by name, their variants and their own hyperparameters."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from baselines.bayes import SAMPLERS, BayesOpt, BOConfig
from baselines.controller import ControllerConfig, SLOController
from baselines.expert import DEFAULT_PROFILE, PROFILES, expert
from baselines.gradient import ESTIMATORS, MODES, GDConfig, GradientDescent
from baselines.random_search import RandomConfig, RandomSearch
from baselines.static import static_default
from baselines.tuner import Tuner
from vvho_env.errors import VVHOError

METHODS = ("static-default", "expert", "random", "gd", "bo", "controller", "oracle")
LIVE_METHODS = tuple(m for m in METHODS if m != "oracle")  # a live host has no oracle
ALIASES = {"gradient": "gd", "bayes": "bo", "optuna": "bo", "default": "static-default", "random-search": "random",
           "best-known": "oracle", "slo-controller": "controller"}
TUNED = ("random", "gd", "bo", "controller")  # methods with hyperparameters of their own
# the variant options and the methods they apply to (any other method refuses them)
OPTION_METHODS = {"estimator": ("gd",), "mode": ("gd",), "sampler": ("bo",), "profile": ("expert",)}


class MethodError(VVHOError, ValueError):
    """Unknown method or an option it does not accept."""


@dataclass(frozen=True)
class MethodSpec:
    """A method and its variant: gd's estimator and mode, bo's sampler, expert's tuned profile."""

    method: str
    estimator: str = "spsa"
    mode: str = "offline"
    sampler: str = "tpe"
    profile: str = DEFAULT_PROFILE
    hparams: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def parse(cls, name: str, **variant: Any) -> MethodSpec:
        m = ALIASES.get(name.strip().lower(), name.strip().lower())
        if m not in METHODS:
            raise MethodError(f"unknown method {name!r}; accepted: {', '.join(METHODS)} "
                              f"(aliases: {', '.join(f'{a}={b}' for a, b in ALIASES.items())})")
        given = {k: v for k, v in variant.items() if v is not None}
        foreign = [k for k in given if m not in OPTION_METHODS.get(k, (m,))]
        if foreign:
            k = foreign[0]
            raise MethodError(f"--{k} {given[k]} does not apply to {m}; --{k} is accepted by "
                              f"{', '.join(OPTION_METHODS[k])} only")
        spec = cls(m, **given)
        if spec.estimator not in ESTIMATORS:
            raise MethodError(f"estimator {spec.estimator!r} not accepted; accepted: {', '.join(ESTIMATORS)}")
        if spec.mode not in MODES:
            raise MethodError(f"mode {spec.mode!r} not accepted; accepted: {', '.join(MODES)}")
        if spec.sampler not in SAMPLERS:
            raise MethodError(f"sampler {spec.sampler!r} not accepted; accepted: {', '.join(SAMPLERS)}")
        if spec.profile not in PROFILES:
            raise MethodError(f"expert profile {spec.profile!r} not accepted; accepted: {', '.join(PROFILES)}")
        return spec

    @property
    def label(self) -> str:
        if self.method == "gd":
            return f"gd-{self.estimator}-{self.mode}"
        if self.method == "bo":
            return f"bo-{self.sampler}"
        if self.method == "expert":
            return f"expert-{self.profile}"
        return self.method

    def with_hparams(self, hp: dict[str, Any]) -> MethodSpec:
        return MethodSpec(self.method, self.estimator, self.mode, self.sampler, self.profile, dict(hp))

    def config(self) -> GDConfig | RandomConfig | BOConfig | ControllerConfig | None:
        if self.method == "gd":
            return GDConfig(estimator=self.estimator, mode=self.mode, **self.hparams)
        if self.method == "random":
            return RandomConfig(**self.hparams)
        if self.method == "bo":
            return BOConfig(sampler=self.sampler, **self.hparams)
        if self.method == "controller":
            return ControllerConfig(**self.hparams)
        return None

    def config_dict(self) -> dict[str, Any]:
        cfg = self.config()
        return asdict(cfg) if cfg is not None else {}

    def key(self) -> str:
        blob = json.dumps({"label": self.label, **self.config_dict()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def make(self, storage: Path | None = None) -> Tuner:
        """The tuner of this spec (the oracle is not a tuner: see baselines.oracle)."""
        cfg = self.config()
        if self.method == "static-default":
            return static_default()
        if self.method == "expert":
            return expert(self.profile)
        if isinstance(cfg, RandomConfig):
            return RandomSearch(cfg)
        if isinstance(cfg, GDConfig):
            return GradientDescent(cfg)
        if isinstance(cfg, ControllerConfig):
            return SLOController(cfg)
        if isinstance(cfg, BOConfig):
            return BayesOpt(cfg, storage=storage, study_name=self.label)
        raise MethodError(f"{self.method} is not a tuner")
