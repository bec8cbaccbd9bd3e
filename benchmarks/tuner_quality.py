"""Tuner quality on stationary problems (issue 9's targets): each tuner's J over the best static setting's.

For every single-phase variant of the chosen scenarios (one phase held for the whole episode: a
stationary problem whose static optimum is the per-phase best), each method tunes for ``--budget``
windows on tuning seeds 0..N-1 (the harness's measurement protocol: settle windows counted), and its
recommendation (online methods: the method itself, still adapting) is evaluated on held-out evaluation
seeds beside the best static setting of baselines.search (full SearchConfig, cached under the results
directory's oracle/ folder). Printed per variant and method: the median and the range of J / best-static
over the tuning seeds, and the settle windows spent. Targets of issue 9: gradient descent (SPSA and FD,
offline) within 1.15x at budget 400 and 1.05x at 2,000.

    .venv/bin/python benchmarks/tuner_quality.py [--scenarios steady-low-v0,quota-tight-v0] [--budget 400]
        [--seeds 5] [--methods gd-spsa,gd-fd,random,bo,controller] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from baselines.methods import MethodSpec
from baselines.run import build_space, eval_seeds, evaluate, run_tuner
from baselines.search import SearchConfig, best_settings
from vvho_env.env import VVHOEnv
from vvho_env.harness import SettingsController
from vvho_env.paths import Paths
from vvho_env.scenarios import Scenario, load_scenario

METHODS = {"gd-spsa": ("gd", {"estimator": "spsa"}), "gd-fd": ("gd", {"estimator": "fd"}),
           "random": ("random", {}), "bo": ("bo", {}), "controller": ("controller", {})}
EVAL_EPISODES = 2
EVAL_STEPS = 40


def single_phase_variants(sc: Scenario) -> list[Scenario]:
    """One scenario per distinct phase (steady-low-v0's two phases are one problem)."""
    if len(sc.phases) == 1:
        return [sc]
    out, seen = [], []
    for ph in sc.phases:
        conditions = ph.model_dump(exclude={"name", "intervals"})
        if conditions not in seen:
            seen.append(conditions)
            out.append(sc.model_copy(update={"id": f"{sc.id}@{ph.name}", "phases": (ph,)}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="steady-low-v0,quota-tight-v0")
    ap.add_argument("--budget", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=5, help="tuning seeds per method and variant")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--results-dir", default=None, help="results directory (default: $VVHO_RESULTS_DIR or ./results)")
    args = ap.parse_args()
    paths = Paths.at(args.results_dir)
    methods = args.methods.split(",")
    for name in args.scenarios.split(","):
        for sc in single_phase_variants(load_scenario(name)):
            t0 = time.time()
            static = best_settings(sc, SearchConfig(), cache_dir=paths.oracle).static.settings
            print(f"# {sc.id}: best static setting found in {time.time() - t0:.0f} s", flush=True)
            env = VVHOEnv(sc)
            refs = [evaluate(env, SettingsController(static), eval_seeds(s, EVAL_EPISODES), EVAL_STEPS)
                    .metrics()["objective"] for s in range(args.seeds)]
            for m in methods:
                method, variant = METHODS[m]
                ratios, settle = [], 0
                for s in range(args.seeds):
                    out = run_tuner(MethodSpec.parse(method, **variant), env, build_space(env), args.budget, s,
                                    eval_seeds(s, EVAL_EPISODES), EVAL_STEPS)
                    ratios.append(out.metrics["objective"] / refs[s])
                    settle += out.settle_windows
                print(f"{sc.id:28s} {m:11s} budget {args.budget:5d}  J/best-static median {np.median(ratios):.3f} "
                      f"[{min(ratios):.3f}, {max(ratios):.3f}] over {args.seeds} seeds, "
                      f"settle windows {settle / args.seeds:.0f} per run", flush=True)
            env.close()


if __name__ == "__main__":
    main()
