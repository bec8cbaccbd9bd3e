"""The main job on the embedded defaults: the mission in one command.

Train PPO on the default scenario, run the article's gradient descent with the same measurement
budget (env steps), evaluate both and static-default on the same held-out seeds through the one
harness, and print them side by side with their ratio to the oracle (best known settings per phase,
cached under results/oracle). Everything is tracked in the local MLflow store.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "ppo_diurnal.yaml"
# The oracle's search at the reduced budget of the adaptivity test (one seed, one sweep after the best
# of three starting profiles; cache shared with it), so that a first run stays within 10 minutes.
ORACLE_SEARCH_KW = {"seeds": (1,), "windows": 4, "warmup": 2, "sweeps": 1}
METRICS = (("p50_us", "p50 us"), ("p99_us", "p99 us"), ("slo_violation_frac", "SLO viol"), ("vm_cpu", "CPU cores"),
           ("objective", "objective J"))


def _fmt(metric: str, v: float) -> str:
    if not math.isfinite(v):
        return "-"
    if metric == "slo_violation_frac":
        return f"{100 * v:.2f}%"
    return f"{v:,.1f}" if metric.endswith("_us") else f"{v:.3f}"


def run_mission(seed: int = 0, steps: int = 65_536, eval_episodes: int = 3, tracking_uri: str | None = None,
                console: Console | None = None) -> dict[str, dict[str, float]]:
    """Run the mission; returns method -> pooled evaluation metrics."""
    import mlflow

    from agents.bundle import PolicyBundle
    from agents.evaluate import BundleController, env_for_bundle, export_run
    from agents.train import train
    from baselines.methods import MethodSpec
    from baselines.run import RunConfig, eval_seeds, evaluate, run_baseline
    from baselines.search import SearchConfig
    from vvho.config import load_config
    from vvho.tracking import DEFAULT_URI, run_name, tracked_run
    from vvho_env.env import VVHOEnv
    from vvho_env.scenarios import load_scenario

    oracle_search = SearchConfig(**ORACLE_SEARCH_KW)  # type: ignore[arg-type]
    con = console or Console(width=160)
    t0 = time.time()
    cfg = load_config(CONFIG, [f"train.total_timesteps={steps}", f"train.seed={seed}"]
                      + ([f"tracking.uri={tracking_uri}"] if tracking_uri else []))
    scenario = cfg.env.scenario
    seeds = eval_seeds(seed, eval_episodes)
    con.print(f"[bold]VVHO mission[/bold] on {scenario}: PPO and the article's gradient descent, "
              f"{steps:,} measurement windows each; evaluation on held-out seeds {seeds}")

    con.print("[1/3] gradient descent (SPSA, offline) with the same budget, then static-default and the "
              "oracle on the evaluation seeds")
    sc = load_scenario(scenario)
    gd_cfg = RunConfig(spec=MethodSpec.parse("gd"), scenario=sc, budget=steps, seed=seed, eval_episodes=eval_episodes,
                       oracle=oracle_search)
    gd_env = VVHOEnv(sc)
    report = run_baseline(gd_cfg, gd_env, log=lambda m: con.print(f"      {m}"))
    gd_env.close()

    con.print(f"[2/3] PPO: {steps:,} env steps on the batched simulator (progress bar below)")
    run_id = train(cfg, show_progress=True)
    pb = PolicyBundle(export_run(run_id))
    env = env_for_bundle(pb, scenario)
    ppo = evaluate(env, BundleController(pb), seeds, sc.episode_intervals).metrics()
    env.close()

    con.print("[3/3] results (pooled over the evaluation episodes; ratio = method / oracle)")
    rows: dict[str, dict[str, float]] = {
        "static-default": report.references["static-default"],
        report.outcome.label: report.outcome.metrics,
        "ppo": ppo,
        "oracle": report.references["oracle"],
    }
    oracle = rows["oracle"]
    table = Table("method", *(f"{label}" for _, label in METRICS), *(f"{label} / oracle" for _, label in METRICS))
    for name, m in rows.items():
        ratios = [m[k] / oracle[k] if oracle[k] and math.isfinite(oracle[k]) and oracle[k] > 0 else math.nan
                  for k, _ in METRICS]
        flag = " [yellow](beats oracle)[/yellow]" if name != "oracle" and m["objective"] < oracle["objective"] else ""
        table.add_row(name + flag, *(_fmt(k, m[k]) for k, _ in METRICS), *(f"{r:.2f}" for r in ratios))
    con.print(table)
    elapsed = time.time() - t0
    params: dict[str, Any] = {"scenario": scenario, "seed": seed, "budget_windows": steps, "ppo_run_id": run_id,
                              "eval_seeds": seeds, "gd_settings": report.outcome.settings}
    with tracked_run("vvho-mission", run_name(scenario, "mission", seed), params, uri=tracking_uri):
        for name, m in rows.items():
            mlflow.log_metrics({f"{name}/{k}": v for k, v in m.items() if math.isfinite(v)})
        mlflow.log_metric("wall_time_s", elapsed)
    uri = tracking_uri or DEFAULT_URI
    con.print(f"done in {elapsed / 60:.1f} min. Open the MLflow UI with: "
              f"[bold]mlflow ui --backend-store-uri {uri}[/bold] (then http://127.0.0.1:5000)")
    return rows
