"""Each tuner's own hyperparameters, chosen by a small sweep on training scenarios, never on the
scenario a result is judged on.

The sweep runs the method with every grid point of ``GRIDS`` on each of the given training scenarios
at the same budget as the run it serves, tuning on a held-out tuning seed and scoring on a held-out
evaluation episode (seeds no run uses), and keeps the point with the lowest objective averaged over
the training scenarios. This is the tuners' counterpart of the agents' training: an RL agent's config
is chosen on (and it is trained on) a suite's training scenarios, and so are a tuner's
hyperparameters. ``sweep`` refuses an evaluation scenario among the training scenarios (by content,
so a renamed copy is refused too).

Its cost in measurement windows (tuning + evaluation, every point on every training scenario) is
returned as ``windows`` and printed beside every result of the method (``vvho baseline``'s summary
and MLflow metric ``budget/hparam_windows``, ``vvho compare``'s trial budget ``hparam_windows``).
Results are cached under results/baselines/hparams, keyed on everything that changes them: the
simulator (``SIM_HASH``), the objective and the knob scales (``knobs.scales_digest``, the source of
the objective, the tuners and the measurement protocol), the training scenarios' contents, the method
variant, the budget, the evaluation length and the grid; so the sweep runs once, outside timed jobs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from baselines.methods import MethodSpec
from vvho_env import SIM_HASH, knobs
from vvho_env.env import VVHOEnv
from vvho_env.errors import VVHOError
from vvho_env.scenarios import Scenario

GRIDS: dict[str, list[dict[str, Any]]] = {
    "gd": [{"step": a, "perturb": c} for a in (0.5, 1.0, 2.0) for c in (0.1, 0.2)],  # step in probe widths
    "random": [{"repeats": r} for r in (1, 2, 4)],
    "bo": [{"repeats": r, "n_startup": n} for r in (1, 2) for n in (5, 10)],
    "controller": [{"slack": s, "up": u} for s in (0.3, 0.6) for u in (1.25, 2.0)],
}
HELD_OUT_TUNE_SEED = 990_001
HELD_OUT_EVAL_SEED = 990_002
# what the swept values depend on beyond the simulator, the scenarios and the knob scales: the objective,
# the measurement protocol and the tuners themselves (their source, so that any change re-sweeps)
_CODE = ("vvho_env/objective.py", "vvho_env/harness.py", "baselines/run.py", "baselines/space.py",
         "baselines/methods.py", "baselines/tuner.py", "baselines/gradient.py", "baselines/random_search.py",
         "baselines/bayes.py", "baselines/controller.py")


class HParamError(VVHOError, ValueError):
    """A sweep that would tune on the scenario its result is judged on, or on no scenario."""


@dataclass
class HParamSweep:
    best: dict[str, Any]
    table: list[tuple[dict[str, Any], float]]  # grid point, held-out objective averaged over the scenarios
    windows: int  # measurement windows the sweep cost
    scenarios: list[str] = field(default_factory=list)  # the keys (id@content) of the scenarios it ran on
    cached: bool = False


def has_grid(spec: MethodSpec) -> bool:
    """Whether the method has hyperparameters to sweep."""
    return bool(GRIDS.get(spec.method))


def grid_cost(spec: MethodSpec, scenarios: Sequence[Scenario], budget: int, eval_steps: int | None) -> int:
    """The windows a sweep spends (at most: a tuner may stop before its budget), for the progress line."""
    return len(GRIDS.get(spec.method, [])) * sum(budget + (eval_steps or sc.episode_intervals) for sc in scenarios)


def check_training(training: Sequence[Scenario], evaluation: Sequence[Scenario], option: str) -> None:
    """Refuse an evaluation scenario (by content) among the training scenarios, naming `option`."""
    if not training:
        raise HParamError(f"{option}: no training scenario given; accepted: one or more scenario ids other than "
                          "the evaluation scenario")
    judged = {sc.content_hash: sc.id for sc in evaluation}
    for sc in training:
        if sc.content_hash in judged:
            raise HParamError(f"{option}: {sc.id} is the evaluation scenario {judged[sc.content_hash]}; accepted: "
                              "training scenarios other than it (hyperparameters are never tuned on the scenario "
                              "a result is judged on)")


def cache_key(spec: MethodSpec, scenarios: Sequence[Scenario], budget: int, eval_steps: int | None) -> str:
    """Digest of everything a sweep's result depends on."""
    root = Path(__file__).resolve().parent.parent
    code = hashlib.sha256()
    for rel in _CODE:
        code.update((root / rel).read_bytes())
    blob = {"sim": SIM_HASH, "scales": knobs.scales_digest(), "code": code.hexdigest(),
            "scenarios": [sc.content_hash for sc in scenarios], "method": spec.label, "budget": budget,
            "eval_steps": eval_steps, "grid": GRIDS.get(spec.method, []),
            "seeds": [HELD_OUT_TUNE_SEED, HELD_OUT_EVAL_SEED]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def sweep(spec: MethodSpec, scenarios: Sequence[Scenario], budget: int, eval_steps: int | None,
          results_dir: Path = Path("results"), use_cache: bool = True,
          evaluation: Sequence[Scenario] = (), option: str = "training scenarios") -> HParamSweep:
    """Best hyperparameters of `spec` at `budget` over the training `scenarios` (each evaluated for
    `eval_steps` windows, default its episode), by a grid sweep on held-out seeds. Raises HParamError if
    a scenario of `evaluation` is among them (`option` names where they were given)."""
    from baselines.run import build_space, run_tuner

    check_training(scenarios, evaluation, option)
    grid = GRIDS.get(spec.method)
    keys = [sc.key for sc in scenarios]
    if not grid:
        return HParamSweep({}, [], 0, keys)
    key = cache_key(spec, scenarios, budget, eval_steps)
    path = results_dir / "baselines" / "hparams" / f"{spec.label}__b{budget}__{key}.json"
    if use_cache and path.exists():
        d = json.loads(path.read_text())
        return HParamSweep(d["best"], [(p, j) for p, j in d["table"]], d["windows"], d["scenarios"], cached=True)
    table: list[tuple[dict[str, Any], float]] = []
    windows = 0
    for point in grid:
        cand = spec.with_hparams(point)
        scores = []
        for sc in scenarios:
            env = VVHOEnv(sc)
            try:
                out = run_tuner(cand, env, build_space(env), budget, HELD_OUT_TUNE_SEED, [HELD_OUT_EVAL_SEED],
                                eval_steps or sc.episode_intervals)
            finally:
                env.close()
            scores.append(out.metrics["objective"])
            windows += out.windows + out.evaluation.steps
        table.append((point, float(np.mean(scores))))
    best = grid[int(np.argmin([j for _, j in table]))]
    result = HParamSweep(dict(best), table, windows, keys)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # concurrent sweeps of one key: the last rename wins
        tmp.write_text(json.dumps({"best": best, "table": table, "windows": windows, "scenarios": keys}))
        tmp.replace(path)
    return result
