"""Bayesian optimisation with Optuna (TPE or GP sampler), offline: tune for the budget, hold the best.

The search space is the normalised knob space: a categorical/boolean knob is an Optuna categorical
over its choices, every numeric knob a float on its [-1, 1] scale (so log ranges and the explicit
off/unlimited points are shared with every other method). The first trial is the start setting.
Each trial is measured over ``repeats`` consecutive windows; its value is their mean objective and the
windows it cost are stored as a trial attribute.

The study lives in an SQLite file (``storage``), so a killed run resumes: trials left RUNNING by the
dead process are marked FAIL (their windows are lost, as on a real host), completed trials and their
windows count against the budget, and trial numbers continue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from baselines.space import UnitSpace
from vvho_env import knobs
from vvho_env.types import KnobValue, Settings, Telemetry

SAMPLERS = ("tpe", "gp")
WINDOWS_ATTR = "windows"


@dataclass(frozen=True)
class BOConfig:
    sampler: str = "tpe"
    repeats: int = 2  # windows per trial
    n_startup: int = 8  # random trials before the model takes over

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler {self.sampler!r} not accepted; accepted: {', '.join(SAMPLERS)}")
        if self.repeats < 1 or self.n_startup < 1:
            raise ValueError("BOConfig: repeats >= 1 and n_startup >= 1 are required")


def distributions(space: UnitSpace) -> dict[str, BaseDistribution]:
    """Optuna distributions of the search space (categorical choices restricted to the bounds)."""
    out: dict[str, BaseDistribution] = {}
    for n, lo, hi in zip(space.names, space.lower, space.upper, strict=True):
        k = knobs.get(n)
        if k.kind in ("categorical", "bool"):
            out[n] = CategoricalDistribution([c for c in k.choices if lo - 1e-9 <= k.to_unit(c) <= hi + 1e-9])
        else:
            out[n] = FloatDistribution(float(lo), float(hi))
    return out


def _make_sampler(cfg: BOConfig, seed: int) -> optuna.samplers.BaseSampler:
    if cfg.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=cfg.n_startup)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.n_startup, multivariate=True)


def windows_spent(study: optuna.Study) -> int:
    return sum(int(t.user_attrs.get(WINDOWS_ATTR, 0)) for t in study.get_trials(deepcopy=False))


class BayesOpt:
    online = False

    def __init__(self, cfg: BOConfig | None = None, storage: Path | None = None, study_name: str = "vvho") -> None:
        self.cfg = cfg or BOConfig()
        self.name = f"bo-{self.cfg.sampler}"
        self.storage = storage
        self.study_name = study_name
        self.study: optuna.Study | None = None
        self._space: UnitSpace | None = None
        self._dists: dict[str, BaseDistribution] = {}
        self._trial: optuna.Trial | None = None
        self._settings: Settings = {}
        self._sum = 0.0
        self._n = 0
        self.resumed_trials = 0  # trials found in the storage when started

    def open(self, seed: int) -> optuna.Study:
        """Create or load the study; trials a killed process left RUNNING become FAIL."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        url = None
        if self.storage is not None:
            self.storage.parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{self.storage}"
        study = optuna.create_study(study_name=self.study_name, storage=url, direction="minimize",
                                    sampler=_make_sampler(self.cfg, seed), load_if_exists=True)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL)
        self.study = study
        self.resumed_trials = len(study.trials)
        return study

    def start(self, space: UnitSpace, budget: int, rng: np.random.Generator) -> None:
        self._space = space
        self._dists = distributions(space)
        study = self.study or self.open(int(rng.integers(0, 2**31 - 1)))
        if not study.trials:
            study.enqueue_trial(self._params(space.decode(space.encode(space.base))), skip_if_exists=True)
        self._trial = None

    def _params(self, settings: Settings) -> dict[str, object]:
        out: dict[str, object] = {}
        for n, d in self._dists.items():
            out[n] = settings[n] if isinstance(d, CategoricalDistribution) else knobs.get(n).to_unit(settings[n])
        return out

    def _settings_of(self, params: dict[str, object]) -> Settings:
        assert self._space is not None
        out = dict(self._space.base)
        for n, v in params.items():
            k = knobs.get(n)
            out[n] = v if k.kind in ("categorical", "bool") else k.from_unit(float(v))  # type: ignore[assignment,arg-type]
        return out

    def ask(self) -> Settings:
        assert self.study is not None, "start() first"
        if self._trial is None:
            self._trial = self.study.ask(self._dists)
            self._settings = self._settings_of(self._trial.params)
            self._sum, self._n = 0.0, 0
        return dict(self._settings)

    def tell(self, settings: Settings, objective: float, telemetry: Telemetry | None = None) -> None:
        assert self.study is not None and self._trial is not None
        self._sum += objective
        self._n += 1
        if self._n >= self.cfg.repeats:
            self._trial.set_user_attr(WINDOWS_ATTR, self._n)
            applied: dict[str, KnobValue] = {n: settings[n] for n in self._dists}
            self._trial.set_user_attr("applied", {k: v for k, v in applied.items()})
            self.study.tell(self._trial, self._sum / self._n)
            self._trial = None

    def recommend(self) -> Settings:
        assert self.study is not None and self._space is not None
        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return self._space.decode(self._space.encode(self._space.base))
        best = min(done, key=lambda t: float(t.value))  # type: ignore[arg-type]
        applied = best.user_attrs.get("applied")
        return dict(self._space.base, **applied) if applied else self._settings_of(best.params)
