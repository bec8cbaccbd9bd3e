"""Each tuner's own hyperparameters, chosen by a small sweep on held-out seeds of the simulator.

The sweep runs the method with every grid point on the same scenario and budget, tuning on a held-out
tuning seed and scoring on a held-out evaluation episode (seeds no run uses), and keeps the point with
the lowest evaluation objective. Its cost in measurement windows (tuning + evaluation, all points) is
reported beside the method's results. Results are cached per scenario version, method variant, budget,
simulator hash and grid under results/baselines/hparams, so the sweep runs once, outside timed jobs. Live
runs use the sweep of the same scenario on the simulator (its host profile matches the testbed).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from baselines.methods import MethodSpec
from vvho_env import SIM_HASH
from vvho_env.env import VVHOEnv
from vvho_env.scenarios import Scenario

GRIDS: dict[str, list[dict[str, Any]]] = {
    "gd": [{"step": a, "perturb": c} for a in (0.5, 1.0, 2.0) for c in (0.1, 0.2)],  # step in probe widths
    "random": [{"repeats": r} for r in (1, 2, 4)],
    "bo": [{"repeats": r, "n_startup": n} for r in (1, 2) for n in (5, 10)],
    "controller": [{"slack": s, "up": u} for s in (0.3, 0.6) for u in (1.25, 2.0)],
}
HELD_OUT_TUNE_SEED = 990_001
HELD_OUT_EVAL_SEED = 990_002


@dataclass
class HParamSweep:
    best: dict[str, Any]
    table: list[tuple[dict[str, Any], float]]  # grid point, held-out evaluation objective
    windows: int  # measurement windows the sweep cost
    cached: bool = False


def sweep(spec: MethodSpec, scenario: Scenario, budget: int, eval_steps: int,
          results_dir: Path = Path("results"), use_cache: bool = True) -> HParamSweep:
    """Best hyperparameters of `spec` for (scenario, budget), by a grid sweep on held-out seeds."""
    from baselines.run import build_space, run_tuner

    grid = GRIDS.get(spec.method)
    if not grid:
        return HParamSweep({}, [], 0)
    grid_key = hashlib.sha256(json.dumps(grid, sort_keys=True).encode()).hexdigest()[:8]  # a new grid re-sweeps
    path = (results_dir / "baselines" / "hparams"
            / f"{scenario.id}__{spec.label}__b{budget}__e{eval_steps}__{SIM_HASH}__{grid_key}.json")
    if use_cache and path.exists():
        d = json.loads(path.read_text())
        return HParamSweep(d["best"], [(p, j) for p, j in d["table"]], d["windows"], cached=True)
    table: list[tuple[dict[str, Any], float]] = []
    windows = 0
    for point in grid:
        cand = spec.with_hparams(point)
        env = VVHOEnv(scenario)
        out = run_tuner(cand, env, build_space(env), budget, HELD_OUT_TUNE_SEED, [HELD_OUT_EVAL_SEED], eval_steps)
        env.close()
        table.append((point, out.metrics["objective"]))
        windows += out.windows + out.evaluation.steps
    best = grid[int(np.argmin([j for _, j in table]))]
    result = HParamSweep(dict(best), table, windows)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"best": best, "table": table, "windows": windows}))
    return result
