"""The jobs of a compare, as picklable specs and the top-level functions worker processes run.

- ``Trial``: one method on one scenario with one seed (tuning, when the method tunes, then its
  evaluation episode); ``run_trial`` returns its JSON record (metrics, budget, per-step figures,
  knob positions, the pooled latency histogram, the settings it held).
- ``SearchJob``: the best-known search of one scenario (cached, outside every timed trial).
- ``HParamJob``: a tuner's hyperparameter sweep on the suite's training scenarios (cached, outside every
  timed trial); its choice and its cost in windows go into every trial of the tuner.
- ``TrainJob``: an RL agent trained within the compare on the suite's training scenarios, tracked as
  its own run nested under the compare, exported to a bundle; a killed training resumes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vvho_env.paths import Paths

POLICY = "policy"
TUNER = "tuner"


@dataclass(frozen=True)
class Trial:
    method: str
    kind: str  # TUNER (baselines and references) or POLICY (an RL bundle)
    scenario_ref: str
    scenario_key: str
    role: str  # "train" (held-out seeds of a training scenario) or "held-out" (a scenario never trained on)
    seed: int
    budget: int  # tuning windows (tuners); 0 for policies, whose budget is their training
    results_dir: str
    search_level: str = "full"
    bundle: str | None = None
    train_steps: int = 0
    safety: bool = False  # a policy judged under its safety layer
    reference: str = ""  # best-known and best-static: the digest of the reference settings they evaluate
    hparams: str = ""  # tuners: JSON of the hyperparameters the sweep on the training scenarios chose
    hparam_windows: int = 0  # what that sweep cost, counted in the trial's budget
    hparam_scenarios: tuple[str, ...] = ()  # the keys of the scenarios the sweep ran on

    @property
    def key(self) -> str:
        key = f"{self.method}|{self.scenario_key}|s{self.seed}|b{self.budget}"
        if self.hparams:
            key += "|h" + hashlib.sha256(self.hparams.encode()).hexdigest()[:8]
        return f"{key}|r{self.reference}" if self.reference else key


def _threads() -> None:
    # one worker, one core: torch and BLAS in a worker must not each spawn a thread per core
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_trial(trial: Trial) -> dict[str, Any]:
    """Run one trial; its record (JSON-able)."""
    _threads()
    from vvho.compare_methods import run_policy_trial, run_tuner_trial, trial_seeds, unit_positions
    from vvho_env.scenarios import load_scenario

    t0 = time.time()
    sc = load_scenario(trial.scenario_ref)
    if trial.kind == POLICY:
        assert trial.bundle is not None
        out = run_policy_trial(trial.bundle, sc, trial.seed, trial.train_steps, trial.safety)
    else:
        out = run_tuner_trial(trial.method, sc, trial.seed, trial.budget, Paths.at(trial.results_dir),
                              trial.search_level, json.loads(trial.hparams) if trial.hparams else None,
                              trial.hparam_windows)
    ev = out.evaluation
    hist = np.zeros(0, dtype=np.int64)
    for tel in ev.telemetry:
        if tel.histogram is not None:
            hist = tel.histogram.astype(np.int64) if hist.size == 0 else hist + tel.histogram
    nz = np.flatnonzero(hist)
    distinct: dict[str, int] = {}
    held = [distinct.setdefault(json.dumps(s, sort_keys=True), len(distinct)) for s in ev.settings]

    def num(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    return {
        "trial": asdict(trial), "key": trial.key, "scenario": sc.id, "eval_seed": trial_seeds(trial.seed)[1],
        "metrics": {k: num(v) for k, v in ev.metrics().items()},
        "budget": out.budget, "knob_names": list(out.knob_names),
        "steps": {"J": [num(j) for j in ev.objective],
                  "p50_us": [num(t.p50_us) for t in ev.telemetry], "p99_us": [num(t.p99_us) for t in ev.telemetry],
                  "vm_cpu": [num(t.vm_cpu) for t in ev.telemetry],
                  "phase": [sc.phase_at(i + 1)[1].name for i in range(ev.steps)],
                  "knobs": [unit_positions(s, out.knob_names) for s in ev.settings]},
        "histogram": {"index": nz.tolist(), "count": hist[nz].tolist()},
        # every setting held during the evaluation, exactly (the compare folds them into best-known)
        "held_per_step": {"settings": [json.loads(s) for s in distinct], "index": held},
        "held": out.held, "notes": out.notes, "truncated": ev.truncated_reason, "wall_s": time.time() - t0,
    }


@dataclass(frozen=True)
class SearchJob:
    scenario_ref: str
    results_dir: str
    level: str = "full"


def run_search(job: SearchJob) -> dict[str, Any]:
    """The best-known search of one scenario (a no-op when it is cached)."""
    _threads()
    from vvho.compare_methods import best_known_settings, reference_digest
    from vvho_env.scenarios import load_scenario

    t0 = time.time()
    per_phase, static = best_known_settings(load_scenario(job.scenario_ref), Paths.at(job.results_dir), job.level)
    return {"scenario_ref": job.scenario_ref, "per_phase": per_phase, "static": static,
            "reference": reference_digest(per_phase, static), "wall_s": time.time() - t0}


@dataclass(frozen=True)
class HParamJob:
    method: str  # a compare tuner name
    training_refs: tuple[str, ...]  # the suite's training scenarios: the sweep runs on these only
    held_out_refs: tuple[str, ...]  # scenarios judged but never trained on: refused as sweep scenarios
    budget: int
    results_dir: str


def run_hparams(job: HParamJob) -> dict[str, Any]:
    """A tuner's hyperparameter sweep on the training scenarios (baselines.hparams; cached)."""
    _threads()
    from vvho.compare_methods import sweep_hparams
    from vvho_env.scenarios import load_scenario

    t0 = time.time()
    hp = sweep_hparams(job.method, [load_scenario(r) for r in job.training_refs],
                       [load_scenario(r) for r in job.held_out_refs], job.budget, Paths.at(job.results_dir))
    return {"method": job.method, "hparams": hp.best, "windows": hp.windows, "scenarios": hp.scenarios,
            "cached": hp.cached, "wall_s": time.time() - t0}


@dataclass(frozen=True)
class FoldJob:
    scenario_ref: str
    results_dir: str
    level: str
    held: tuple[tuple[str, str], ...]  # (source, JSON of full settings) of every setting methods held


def run_fold(job: FoldJob) -> dict[str, Any]:
    """Fold the settings methods held into the scenario's best-known (baselines.best_known); the
    improvements and the reference digest after them."""
    _threads()
    from vvho.compare_methods import best_known_settings, fold_into_best_known, reference_digest
    from vvho_env.scenarios import load_scenario

    t0 = time.time()
    sc, paths = load_scenario(job.scenario_ref), Paths.at(job.results_dir)
    improved = fold_into_best_known(sc, [(src, json.loads(s)) for src, s in job.held], paths, job.level)
    per_phase, static = best_known_settings(sc, paths, job.level)
    return {"scenario_ref": job.scenario_ref, "improved": improved, "candidates": len(job.held),
            "reference": reference_digest(per_phase, static), "wall_s": time.time() - t0}


@dataclass(frozen=True)
class TrainJob:
    agent: str
    config: str
    suite: str  # the suite reference training takes its scenarios from
    steps: int | None
    results_dir: str
    tracking_uri: str | None
    tags: dict[str, str] = field(default_factory=dict)
    resume_run_id: str | None = None


def run_training(job: TrainJob) -> dict[str, Any]:
    """Train (or resume) the agent, export its bundle; the run id, bundle and steps."""
    _threads()
    from vvho.config import load_config
    from vvho.experiments import export_run, resume_run, train_run
    from vvho.ui import quiet_libraries

    quiet_libraries()
    paths = Paths.at(job.results_dir)
    t0 = time.time()
    if job.resume_run_id is not None:
        outcome = resume_run(job.resume_run_id, paths, job.tracking_uri)
    else:
        overrides = [f"suite={job.suite}", "train.progress_bar=false", "tracking.experiment=vvho-compare"]
        if job.steps is not None:
            overrides.append(f"train.total_timesteps={job.steps}")
        if job.tracking_uri:
            overrides.append(f"tracking.uri={job.tracking_uri}")
        cfg = load_config(job.config, overrides)
        outcome = train_run(cfg, paths, name=f"compare-train.{job.agent}", tags=job.tags)
    exp = export_run(outcome.run_id, paths, job.tracking_uri)
    steps = outcome.result.num_timesteps if outcome.result is not None else -1
    return {"agent": job.agent, "run_id": outcome.run_id, "bundle": str(exp.bundle), "train_steps": steps,
            "wall_s": time.time() - t0}
