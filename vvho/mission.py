"""The main job on the embedded defaults: the mission in one command.

Train PPO on the default scenario, run the article's gradient descent with the same measurement
budget (env steps), evaluate both and static-default on the same held-out seeds through the one
harness, and print them side by side with their ratio to the oracle (best known settings per phase,
cached under results/oracle). Everything is tracked in the local MLflow store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Console

from vvho_env.paths import Paths

if TYPE_CHECKING:
    from agents.train import ProgressFn

CONFIG = "ppo_diurnal"  # a shipped config (vvho/configs)
# The oracle's search at the reduced budget of the adaptivity test (one seed, one sweep after the best
# of three starting profiles; cache shared with it), so that a first run stays within 10 minutes.
ORACLE_SEARCH_KW = {"seeds": (1,), "windows": 4, "warmup": 2, "sweeps": 1}


def run_mission(seed: int = 0, steps: int = 65_536, eval_episodes: int = 3, tracking_uri: str | None = None,
                console: Console | None = None, paths: Paths | None = None, progress: ProgressFn | None = None,
                on_start: Callable[[str, str], None] | None = None) -> dict[str, dict[str, float]]:
    """Run the mission; returns method -> pooled evaluation metrics. `on_start(run_id, name)` is told
    of the PPO training run as it starts; `progress` sees its training progress."""
    import mlflow

    from agents.bundle import PolicyBundle
    from agents.evaluate import BundleController, env_for_bundle
    from baselines.methods import MethodSpec
    from baselines.run import RunConfig, eval_seeds, evaluate, run_baseline
    from baselines.search import SearchConfig
    from vvho.config import load_config
    from vvho.experiments import export_run, train_run
    from vvho.tracking import Store, run_name, tracked_run
    from vvho_env.env import VVHOEnv
    from vvho_env.scenarios import load_scenario

    oracle_search = SearchConfig(**ORACLE_SEARCH_KW)  # type: ignore[arg-type]
    con = console or Console()
    paths = paths or Paths.at()
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
                       results_dir=paths.root, oracle=oracle_search)
    gd_env = VVHOEnv(sc)
    report = run_baseline(gd_cfg, gd_env, log=lambda m: con.print(f"      {m}"))
    gd_env.close()

    con.print(f"[2/3] PPO: {steps:,} env steps on the batched simulator (progress below)")
    run_id = train_run(cfg, paths, progress=progress, on_start=on_start).run_id
    pb = PolicyBundle(export_run(run_id, paths, tracking_uri).bundle)
    env = env_for_bundle(pb, scenario)
    ppo = evaluate(env, BundleController(pb), seeds, sc.episode_intervals).metrics()
    env.close()

    con.print("[3/3] evaluation of all four on the held-out seeds done")
    rows: dict[str, dict[str, float]] = {
        "static-default": report.references["static-default"],
        report.outcome.label: report.outcome.metrics,
        "ppo": ppo,
        "oracle": report.references["oracle"],
    }
    elapsed = time.time() - t0
    params: dict[str, Any] = {"scenario": scenario, "seed": seed, "budget_windows": steps, "ppo_run_id": run_id,
                              "eval_seeds": seeds, "gd_settings": report.outcome.settings}
    with tracked_run("vvho-mission", run_name(scenario, "mission", seed), params, uri=tracking_uri,
                     results_dir=paths.root):
        for name, m in rows.items():
            mlflow.log_metrics({f"{name}/{k}": v for k, v in m.items() if math.isfinite(v)})
        mlflow.log_metric("wall_time_s", elapsed)
    uri = Store(paths, tracking_uri).uri
    con.print(f"done in {elapsed / 60:.1f} min. Open the MLflow UI with: "
              f"[bold]mlflow ui --backend-store-uri {uri}[/bold] (then http://127.0.0.1:5000)")
    return rows
