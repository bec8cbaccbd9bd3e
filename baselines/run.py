"""Run one baseline through the shared harness: tune on a budget of measurement windows, then evaluate.

Protocol (the same for every method; docs/concepts.md describes the budget and the reference):

- Tuning: the tuner drives one running episode of the scenario for ``budget`` consecutive windows
  (env steps), seed ``seed``: no resets between probes, no reused seeds, no noise-free replays.
  Fixed-settings methods (static-default, expert) and the oracle spend nothing.
- Evaluation: ``eval_episodes`` fresh episodes (seeds derived from ``seed``, never the tuning seed) of
  ``eval_steps`` windows each. Offline tuners hold their recommended settings; online tuners keep
  adapting while they are evaluated, their probes included. Metrics pool all evaluation windows.
- References, on the same evaluation seeds: on the simulator the oracle (best known per phase,
  baselines.oracle) and static-default; on a live host static-default and the best static setting
  found on that host so far (a ledger of live evaluations under results/). A method whose objective
  beats the oracle's is flagged, never hidden.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from baselines.bayes import BayesOpt, windows_spent
from baselines.methods import LIVE_METHODS, MethodError, MethodSpec
from baselines.oracle import PhaseScheduleController, oracle_settings
from baselines.search import SearchConfig
from baselines.space import UnitSpace
from vvho_env import knobs
from vvho_env.env import VVHOEnv
from vvho_env.harness import (
    Controller,
    EpisodeResult,
    MeasuredController,
    MeasurementProtocol,
    SettingsController,
    run_episode,
)
from vvho_env.paths import Paths
from vvho_env.scenarios import Scenario
from vvho_env.types import ApplyRejected, KnobValue, Settings

BACKENDS = ("sim", "live")
LIVE_PROFILE = "tcg-testbed"


@dataclass(frozen=True)
class RunConfig:
    spec: MethodSpec
    scenario: Scenario
    budget: int
    seed: int = 0
    backend: str = "sim"
    eval_episodes: int = 3
    eval_steps: int | None = None  # default: the scenario's episode length
    knob_names: tuple[str, ...] | None = None  # default: every live knob the host and backend can set
    bounds: Mapping[str, tuple[KnobValue, KnobValue]] = field(default_factory=dict)
    results_dir: Path = Path("results")
    oracle: SearchConfig = field(default_factory=SearchConfig)
    with_oracle: bool = True  # simulator: evaluate the oracle reference (its search is cached)

    def __post_init__(self) -> None:
        if self.budget <= 0:
            raise ValueError(f"budget {self.budget} not accepted; accepted: an integer >= 1 (measurement windows)")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} not accepted; accepted: {', '.join(BACKENDS)}")
        if self.eval_episodes < 1:
            raise ValueError(f"eval_episodes {self.eval_episodes} not accepted; accepted: an integer >= 1")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError(f"eval_steps {self.eval_steps} not accepted; accepted: an integer >= 1")
        if self.backend == "live":
            if self.spec.method not in LIVE_METHODS:
                raise MethodError(f"{self.spec.method} needs the simulator (a live host has no oracle); "
                                  f"accepted on live: {', '.join(LIVE_METHODS)}")
            if self.scenario.host_profile != LIVE_PROFILE:
                raise ValueError(f"scenario {self.scenario.id!r} uses host profile {self.scenario.host_profile!r}; "
                                 f"the live backend runs scenarios of host profile {LIVE_PROFILE!r} "
                                 "(e.g. testbed-echo-v0)")

    @property
    def steps_per_eval(self) -> int:
        return self.eval_steps or self.scenario.episode_intervals


def eval_seeds(seed: int, n: int) -> list[int]:
    """Evaluation seeds of a run: derived from its seed, disjoint from tuning seeds (another stream)."""
    return [int(s) for s in np.random.SeedSequence([seed, 1]).generate_state(n, dtype=np.uint32)]


def tuning_seed(seed: int, attempt: int = 0) -> int:
    """The tuning episode's seed; a resumed study gets a fresh one per attempt (no reused seeds)."""
    return seed if attempt == 0 else int(np.random.SeedSequence([seed, 2, attempt]).generate_state(1)[0])


def build_space(env: VVHOEnv, bounds: Mapping[str, tuple[KnobValue, KnobValue]] | None = None) -> UnitSpace:
    """The search space of an env: its acting knobs, the rest at the scenario's start values, and the
    bounds (name -> (low, high) in knob units) on the unit scale."""
    names = env.knob_names
    lo, hi = [-1.0] * len(names), [1.0] * len(names)
    for name, (low, high) in (bounds or {}).items():
        k = knobs.get(name)
        if name not in names:
            raise ApplyRejected(f"bound on knob {name!r}: this backend cannot set it on host profile "
                                f"{env.scenario.host_profile!r}; settable: {', '.join(names)}")
        a, b = k.to_unit(k.validate(low)), k.to_unit(k.validate(high))
        if a > b:
            raise knobs.KnobError(f"bound on knob {name!r}: low {low!r} is above high {high!r}")
        i = names.index(name)
        lo[i], hi[i] = a, b
    return UnitSpace(names, env.scenario.settings_at_start(), tuple(lo), tuple(hi))


def pool(results: Sequence[EpisodeResult]) -> EpisodeResult:
    out = EpisodeResult(seed=None)
    for r in results:
        out.objective += r.objective
        out.telemetry += r.telemetry
        out.settings += r.settings
        out.truncated_reason = out.truncated_reason or r.truncated_reason
    return out


def evaluate(env: VVHOEnv, controller: Controller, seeds: Sequence[int], steps: int) -> EpisodeResult:
    env.max_steps = steps
    return pool([run_episode(env, controller, seed=s, steps=steps) for s in seeds])


@dataclass
class Outcome:
    """One method's run: what it chose, what tuning cost, how it did on the evaluation seeds."""

    label: str
    settings: Settings  # held after tuning (online: where it ended)
    evaluation: EpisodeResult
    tuning: EpisodeResult | None = None
    windows: int = 0  # measurement windows spent tuning (this run; see resumed_windows), settle windows included
    settle_windows: int = 0  # of which settle windows after changes of settings (counted, not scored)
    resumed_windows: int = 0  # windows spent by earlier, killed attempts of the same study
    storage: Path | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float]:
        return self.evaluation.metrics()


def run_tuner(spec: MethodSpec, env: VVHOEnv, space: UnitSpace, budget: int, seed: int,
              seeds: Sequence[int], steps: int, storage: Path | None = None,
              protocol: MeasurementProtocol | None = None) -> Outcome:
    """Tune with `budget` windows of one episode (seed `seed`) under the measurement protocol (default:
    the scenario's, see vvho_env.harness), then evaluate on `seeds`."""
    protocol = protocol or MeasurementProtocol.for_scenario(env.scenario)
    tuner = spec.make(storage)
    rng = np.random.default_rng([seed, 3])
    remaining, resumed, attempt = budget, 0, 0
    if isinstance(tuner, BayesOpt):
        study = tuner.open(int(rng.integers(0, 2**31 - 1)))
        resumed = windows_spent(study)
        remaining = max(0, budget - resumed)
        attempt = tuner.resumed_trials
    tuner.start(space, budget, rng)
    tuning = None
    ctl = MeasuredController(tuner, protocol)
    tuning_settle = 0
    fixed = spec.method in ("static-default", "expert")
    if remaining > 0 and not fixed:
        env.max_steps = remaining
        tuning = run_episode(env, ctl, seed=tuning_seed(seed, attempt), steps=remaining)
        tuning_settle = ctl.settle_windows
    evaluator: Controller = ctl if tuner.online else SettingsController(tuner.recommend())
    evaluation = evaluate(env, evaluator, seeds, steps)
    settings = evaluation.settings[-1] if tuner.online and evaluation.settings else tuner.recommend()
    trace = []
    if tuning is not None:
        trace = [{"settings": s, "objective": j, "p99_us": t.p99_us, "vm_cpu": t.vm_cpu}
                 for s, j, t in zip(tuning.settings, tuning.objective, tuning.telemetry, strict=True)]
    return Outcome(spec.label, settings, evaluation, tuning, ctl.windows - (evaluation.steps if tuner.online else 0),
                   tuning_settle, resumed, storage, trace)


@dataclass
class Report:
    config: RunConfig
    outcome: Outcome
    references: dict[str, dict[str, float]]  # reference name -> its evaluation metrics
    reference_settings: dict[str, Any]
    hparams: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def ratio(self, ref: str, metric: str) -> float:
        a, b = self.outcome.metrics.get(metric, math.nan), self.references[ref].get(metric, math.nan)
        return a / b if b and math.isfinite(a) and math.isfinite(b) and b > 0 else math.nan

    @property
    def beats_oracle(self) -> bool:
        o = self.references.get("oracle")
        return o is not None and self.outcome.label != "oracle" and self.outcome.metrics["objective"] < o["objective"]


def study_path(cfg: RunConfig) -> Path:
    """Where a Bayesian optimisation study is stored: the run's folder under results/, keyed so that
    re-running the same command resumes it."""
    name = f"{cfg.scenario.id}__{cfg.spec.label}__s{cfg.seed}__b{cfg.budget}__{cfg.backend}__{cfg.spec.key()}"
    return cfg.results_dir / "baselines" / name / "optuna.db"


def run_baseline(cfg: RunConfig, env: VVHOEnv, log: Any = print) -> Report:
    """Tune and evaluate `cfg.spec` on `env`, with the references of its backend."""
    t0 = time.time()
    space = build_space(env, cfg.bounds)
    seeds = eval_seeds(cfg.seed, cfg.eval_episodes)
    steps = cfg.steps_per_eval
    refs: dict[str, dict[str, float]] = {}
    ref_settings: dict[str, Any] = {}
    if cfg.spec.method == "oracle":
        per_phase = oracle_settings(cfg.scenario, cfg.oracle, Paths.at(cfg.results_dir).oracle)
        ev = evaluate(env, PhaseScheduleController(cfg.scenario, per_phase), seeds, steps)
        outcome = Outcome("oracle", per_phase[0], ev)
        outcome.trace = [{"phase": p.name, "settings": s} for p, s in zip(cfg.scenario.phases, per_phase, strict=True)]
    else:
        storage = study_path(cfg) if cfg.spec.method == "bo" else None
        outcome = run_tuner(cfg.spec, env, space, cfg.budget, cfg.seed, seeds, steps, storage)
    if cfg.spec.method != "static-default":
        log("evaluating the static-default reference on the same seeds")
        refs["static-default"] = evaluate(env, SettingsController(space.base), seeds, steps).metrics()
    else:
        refs["static-default"] = outcome.metrics
    if cfg.backend == "sim" and (cfg.with_oracle or cfg.spec.method == "oracle"):
        if cfg.spec.method == "oracle":
            refs["oracle"] = outcome.metrics
        else:
            log(f"evaluating the best-known reference on the same seeds (its search is cached under "
                f"{Paths.at(cfg.results_dir).oracle})")
            per_phase = oracle_settings(cfg.scenario, cfg.oracle, Paths.at(cfg.results_dir).oracle)
            refs["oracle"] = evaluate(env, PhaseScheduleController(cfg.scenario, per_phase), seeds, steps).metrics()
            ref_settings["oracle"] = per_phase
    elif cfg.backend == "live":
        best = _ledger_update(cfg, outcome, refs["static-default"], space.base)
        refs["best-static"] = best["metrics"]
        ref_settings["best-static"] = {"method": best["method"], "settings": best["settings"]}
    return Report(cfg, outcome, refs, ref_settings, dict(cfg.spec.hparams), time.time() - t0)


def _ledger_update(cfg: RunConfig, outcome: Outcome, default_metrics: dict[str, float],
                   default_settings: Mapping[str, KnobValue]) -> dict[str, Any]:
    """Record the static settings evaluated on this live host and return the best one found so far."""
    path = cfg.results_dir / "baselines" / f"live-static__{cfg.scenario.id}.json"
    entries: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    entries.append({"method": "static-default", "settings": dict(default_settings), "metrics": default_metrics,
                    "time": stamp})
    if outcome.label != "static-default" and cfg.spec.mode != "online":
        entries.append({"method": outcome.label, "settings": outcome.settings, "metrics": outcome.metrics,
                        "time": stamp})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=1, default=str))
    scored = [e for e in entries if math.isfinite(e["metrics"].get("objective", math.nan))]
    return min(scored, key=lambda e: e["metrics"]["objective"]) if scored else entries[-1]
