"""Where ``vvho compare`` meets the methods: the tuners of baselines/, the best-known reference and RL
policy bundles, each run for one trial (method x scenario x seed) through the one harness.

This is the adapter to the tuners' API: the compare engine (vvho/compare.py) names methods and budgets
and receives ``MethodTrial`` results; only this module knows how a tuner is built, tuned and evaluated.

Seeds: trial seed s tunes on episode seed ``TUNE_BASE + s`` and is evaluated on episode seed
``EVAL_BASE + s`` (the same episode for every method of a scenario, so methods are paired), far from
the seeds training uses (``train.seed + k`` for its first episodes, then its own RNG stream, and its
evaluation seeds 10_001...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vvho_env import knobs
from vvho_env.env import VVHOEnv
from vvho_env.errors import VVHOError
from vvho_env.harness import Controller, EpisodeResult, SettingsController, run_episode
from vvho_env.paths import Paths
from vvho_env.scenarios import Scenario
from vvho_env.types import Settings

TUNE_BASE = 40_000
EVAL_BASE = 30_000
BEST_KNOWN = "best-known"
BEST_STATIC = "best-static"  # the best single static setting of the scenario, from the same search
# compare's method names -> (baselines method, variant options)
TUNER_SPECS: dict[str, tuple[str, dict[str, str]]] = {
    "static-default": ("static-default", {}),
    "expert": ("expert", {}),
    "random": ("random", {}),
    "gd-offline": ("gd", {"estimator": "spsa", "mode": "offline"}),
    "gd-fd-offline": ("gd", {"estimator": "fd", "mode": "offline"}),  # the article's other estimator
    "gd-online": ("gd", {"estimator": "spsa", "mode": "online"}),
    "bo": ("bo", {"sampler": "tpe"}),
    "controller": ("controller", {}),
}


class MethodUnavailable(VVHOError):
    """A method this version of the tuners does not provide."""


def available_tuners() -> tuple[str, ...]:
    """The compare methods the installed baselines/ provides."""
    from baselines.methods import METHODS

    return (*(m for m, (name, _) in TUNER_SPECS.items() if name in METHODS), BEST_KNOWN, BEST_STATIC)


@dataclass
class MethodTrial:
    """One trial's outcome: its evaluation episode, what it held, and what it cost."""

    evaluation: EpisodeResult
    knob_names: tuple[str, ...]
    held: Settings  # the settings held at the end of the evaluation (online methods: where they ended)
    budget: dict[str, int] = field(default_factory=dict)  # tuning_windows, settle_windows, hparam_windows, ...
    notes: list[str] = field(default_factory=list)


def trial_seeds(seed: int) -> tuple[int, int]:
    """(tuning episode seed, evaluation episode seed) of trial seed `seed`."""
    return TUNE_BASE + seed, EVAL_BASE + seed


def _search_config(level: str) -> Any:
    from baselines.search import SearchConfig

    if level == "reduced":  # the adaptivity test's reduced budget: one seed, one sweep
        return SearchConfig(seeds=(1,), windows=4, warmup=2, sweeps=1)
    if level == "smoke":  # for smoke tests only: one start, a 3-point grid, two measured windows
        return SearchConfig(seeds=(1,), windows=2, warmup=1, grid=3, sweeps=1, starts=("default",))
    # the reference of record: three seeds, and two rounds of refinement off the grid
    return SearchConfig(seeds=(101, 202, 303), refine=2)


def best_known_settings(scenario: Scenario, paths: Paths, level: str = "full") -> tuple[list[Settings], Settings]:
    """Best-known settings per phase and the best single static setting (searched once per scenario
    content and search level, then cached)."""
    from baselines import search

    found = search.best_settings(scenario, _search_config(level), cache_dir=paths.oracle)
    return [dict(r.settings) for r in found.per_phase], dict(found.static.settings)


def reference_digest(per_phase: list[Settings], static: Settings) -> str:
    """Names one version of a scenario's references (best-known grows as methods show better settings)."""
    import hashlib
    import json

    blob = json.dumps({"per_phase": per_phase, "static": static}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def fold_into_best_known(scenario: Scenario, held: list[tuple[str, Settings]], paths: Paths,
                         level: str = "full") -> list[dict[str, Any]]:
    """Re-score the settings methods held on the search's seeds; fold the better ones into best-known."""
    from baselines.best_known import fold_in

    return [x.as_dict() for x in fold_in(scenario, _search_config(level), held, cache_dir=paths.oracle)]


def tuner_spec(method: str) -> Any:
    """The baselines MethodSpec of a compare tuner."""
    from baselines.methods import MethodSpec

    if method not in TUNER_SPECS:
        raise MethodUnavailable(f"method {method!r} not accepted; accepted: {', '.join(available_tuners())}")
    name, variant = TUNER_SPECS[method]
    return MethodSpec.parse(name, **variant)


def sweeps_hparams(method: str) -> bool:
    """Whether a compare method has hyperparameters of its own to sweep."""
    from baselines.hparams import has_grid

    return method in TUNER_SPECS and method in available_tuners() and has_grid(tuner_spec(method))


def sweep_hparams(method: str, training: list[Scenario], held_out: list[Scenario], budget: int,
                  paths: Paths) -> Any:
    """The tuner's hyperparameters swept on the suite's training scenarios at the compare's budget (each
    evaluated for one episode on held-out seeds), never on a held-out scenario (baselines.hparams)."""
    from baselines.hparams import sweep

    return sweep(tuner_spec(method), training, budget, None, paths.root, evaluation=held_out,
                 option="suite train")


def run_tuner_trial(method: str, scenario: Scenario, seed: int, budget: int, paths: Paths,
                    search_level: str = "full", hparams: Mapping[str, Any] | None = None,
                    hparam_windows: int = 0) -> MethodTrial:
    """Tune `method` (with `hparams`, swept on the training scenarios at a cost of `hparam_windows`; its
    defaults without them) for `budget` windows of the tuning episode, then evaluate it on the trial's
    episode."""
    from baselines.oracle import PhaseScheduleController
    from baselines.run import build_space, run_tuner

    tune_seed, eval_seed = trial_seeds(seed)
    env = VVHOEnv(scenario)
    try:
        if method in (BEST_KNOWN, BEST_STATIC):
            per_phase, static = best_known_settings(scenario, paths, search_level)
            ctl: Controller = (PhaseScheduleController(scenario, per_phase) if method == BEST_KNOWN
                               else SettingsController(static))
            ev = run_episode(env, ctl, eval_seed)
            return MethodTrial(ev, env.knob_names, _last(ev, static), {"tuning_windows": 0})
        if method not in available_tuners():
            raise MethodUnavailable(f"method {method!r} not accepted; accepted: {', '.join(available_tuners())}")
        spec = tuner_spec(method)
        if hparams:
            spec = spec.with_hparams(dict(hparams))
        outcome = run_tuner(spec, env, build_space(env), budget, tune_seed, [eval_seed], scenario.episode_intervals)
        return MethodTrial(outcome.evaluation, env.knob_names, _last(outcome.evaluation, outcome.settings),
                           {"tuning_windows": outcome.windows, "settle_windows": outcome.settle_windows,
                            "hparam_windows": hparam_windows})
    finally:
        env.close()


def _last(ev: EpisodeResult, fallback: Mapping[str, Any]) -> Settings:
    return dict(ev.settings[-1]) if ev.settings else dict(fallback)


def run_policy_trial(bundle_dir: str, scenario: Scenario, seed: int, train_steps: int,
                     safety: bool = False) -> MethodTrial:
    """Evaluate a policy bundle on the trial's episode (it spends no windows: its budget is its training)."""
    from agents.bundle import PolicyBundle
    from agents.evaluate import BundleController

    bundle = PolicyBundle(bundle_dir)
    m = bundle.manifest
    env = VVHOEnv(scenario, knob_names=m["knob_names"], action_mode=m["action_mode"], delta_step=m["delta_step"],
                  history=m["history"])
    try:
        controller: Controller = BundleController(bundle)
        notes = []
        if safety:
            from agents.safety import SafetyLayer

            layer = SafetyLayer(controller, bundle)
            controller = layer
        ev = run_episode(env, controller, trial_seeds(seed)[1])
        if safety:
            notes.append(f"safety layer held the action in {layer.held} of {layer.windows} windows")
        return MethodTrial(ev, env.knob_names, _last(ev, env.settings), {"train_steps": train_steps}, notes)
    finally:
        env.close()


def unit_positions(settings: Mapping[str, Any], names: tuple[str, ...]) -> list[float]:
    """Settings as positions on each knob's [-1, 1] scale (for knob timelines)."""
    return [round(float(x), 4) for x in knobs.encode(dict(settings), names)]
