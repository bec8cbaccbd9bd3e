"""Agent quality benchmark: the default PPO config on diurnal-noisy-v1 against the oracle and the best
single static setting (baselines.search.best_settings, cached under results/oracle).

Target: trained in <= 10 minutes on 2 cores, the policy's mean objective on held-out seeds is within
1.2x of the oracle's and below the best static setting's. Prints wall time, steps/s and both ratios.

    .venv/bin/python benchmarks/agent_quality.py [--config ppo_diurnal] [--set k=v ...] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from agents.evaluate import evaluate_bundle, summarise
from vvho import ui
from vvho.config import load_config
from vvho.experiments import export_run, train_run
from vvho_env.paths import Paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="ppo_diurnal", help="a config file or a shipped config's name")
    ap.add_argument("--results-dir", default=None, help="results directory (default: $VVHO_RESULTS_DIR or ./results)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--seeds", default="20001,20002,20003,20004,20005,20006")
    args = ap.parse_args()
    from baselines.search import best_settings

    cfg = load_config(args.config, args.overrides)
    paths = Paths.at(args.results_dir)
    t0 = time.perf_counter()
    oracle = best_settings(cfg.env.scenario)  # computed outside the timed part (and cached)
    print(f"oracle ready in {time.perf_counter() - t0:.0f} s: per-phase J {oracle.per_phase_objective:.3f}, "
          f"best static J {oracle.static_objective:.3f}")
    t0 = time.perf_counter()
    with ui.Progress("train", cfg.train.total_timesteps) as bar:
        run_id = train_run(cfg, paths, progress=lambda p: bar.update(p.steps, f"{p.steps_per_s:,.0f} steps/s")).run_id
    wall = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        bundle = export_run(run_id, paths, cfg.tracking.uri, Path(tmp) / "bundle").bundle
        seeds = [int(s) for s in args.seeds.split(",")]
        metrics = summarise(evaluate_bundle(bundle, cfg.env.scenario, seeds))
    j = metrics["objective"]
    print(f"run {run_id}: {cfg.algorithm} on {cfg.env.scenario}, {cfg.train.total_timesteps} steps")
    print(f"wall time (train incl. evals/checkpoints): {wall:.0f} s  steps/s: {cfg.train.total_timesteps / wall:.0f}")
    print(f"policy J {j:.3f} (p99 {metrics['p99_us']:.0f} us, CPU {metrics['vm_cpu']:.2f}) on held-out seeds {seeds}")
    print(f"ratio to oracle: {j / oracle.per_phase_objective:.3f} (target <= 1.2)  "
          f"ratio to best static: {j / oracle.static_objective:.3f} (target < 1)  "
          f"within 10 min: {wall <= 600}")


if __name__ == "__main__":
    main()
