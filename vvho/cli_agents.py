"""`vvho train`, `vvho export`, `vvho evaluate`: RL agents from config to deployable bundle."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console(width=180)

METRIC_COLUMNS = ("objective", "p50_us", "p99_us", "p999_us", "slo_violation_frac", "vm_cpu", "neighbour_cpu",
                  "neighbour_slowdown", "steps")


def _fail(msg: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {msg}")
    return typer.Exit(code=2)


def _parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            seeds.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        except ValueError:
            raise typer.BadParameter(f"{part!r} is not a seed; accepted: 1,2,3 or 1-5") from None
    if not seeds:
        raise typer.BadParameter("no seeds given")
    return seeds


def train_cmd(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="experiment YAML (see configs/)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a field: section.field=value")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="continue this MLflow run from its last "
                                               "checkpoint")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: results/mlflow.db)")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="hide the progress bar")] = False,
) -> None:
    """Train an agent (PPO, SAC, TD3, A2C, RecurrentPPO) on the simulator, tracked in MLflow."""
    from agents.checkpoint import CheckpointError
    from agents.train import RunNotFound, train
    from agents.train import resume as resume_run
    from vvho.config import ConfigError, load_config

    progress = None if not no_progress else False
    try:
        if resume:
            if config is not None or set_:
                raise ConfigError("--resume continues a run with its own config; drop --config/--set")
            run_id = resume_run(resume, tracking_uri, show_progress=progress)
        else:
            if config is None:
                raise ConfigError("give --config FILE (see configs/) or --resume RUN_ID")
            overrides = list(set_ or [])
            if tracking_uri:
                overrides.append(f"tracking.uri={tracking_uri}")
            run_id = train(load_config(config, overrides), show_progress=progress)
    except (ConfigError, RunNotFound, CheckpointError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"run_id {run_id}")


def export_cmd(
    run_id: Annotated[str, typer.Argument(help="MLflow run id of a `vvho train` run")],
    out: Annotated[Path | None, typer.Option(help="bundle directory (default: results/bundles/RUN_ID)")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: results/mlflow.db)")] = None,
) -> None:
    """Export a run's policy as a bundle: ONNX graph + JSON manifest (no pickle on the host)."""
    from agents.checkpoint import CheckpointError
    from agents.evaluate import export_run
    from agents.train import RunNotFound

    try:
        path = export_run(run_id, out, tracking_uri)
    except (RunNotFound, CheckpointError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"bundle {path}")


def evaluate_cmd(
    policy: Annotated[str, typer.Argument(help="bundle directory or MLflow run id")],
    scenario: Annotated[str | None, typer.Option(help="scenario id (default: the one trained on)")] = None,
    seeds: Annotated[str, typer.Option(help="episode seeds: 1,2,3 or 1-5")] = "10001-10004",
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: results/mlflow.db)")] = None,
) -> None:
    """Run a policy through the shared harness (same metrics as the baselines)."""
    from agents.bundle import BundleError
    from agents.checkpoint import CheckpointError
    from agents.evaluate import evaluate_bundle, resolve_policy, summarise
    from agents.train import RunNotFound
    from vvho_env.scenarios import ScenarioError, load_scenario
    from vvho_env.types import ApplyRejected

    seed_list = _parse_seeds(seeds)
    try:
        if scenario is not None:
            load_scenario(scenario)
        bundle = resolve_policy(policy, tracking_uri)
        results = evaluate_bundle(bundle, scenario, seed_list)
    except (BundleError, RunNotFound, CheckpointError, ScenarioError, ApplyRejected) as exc:
        raise _fail(str(exc)) from None
    m = bundle.manifest
    t = Table("seed", *METRIC_COLUMNS)

    def fmt(v: float) -> str:
        return "-" if not math.isfinite(v) else f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"

    for r in results:
        met = r.metrics()
        t.add_row(str(r.seed), *(fmt(met[c]) for c in METRIC_COLUMNS))
    mean = summarise(results)
    t.add_row("mean", *(fmt(mean[c]) for c in METRIC_COLUMNS))
    console.print(f"policy [bold]{m['algorithm']}[/bold] ({bundle.path}), trained on {m['scenario']}, "
                  f"evaluated on {scenario or m['scenario']}")
    console.print(t)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("export")(export_cmd)
    app.command("evaluate")(evaluate_cmd)
