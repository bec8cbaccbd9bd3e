"""`vvho train`, `vvho export`, `vvho evaluate`: RL agents from config to deployable bundle.

Each command checks its input (config, seeds, paths, store) before torch and MLflow load, so a typo
is reported in about a second; prints the run id as soon as the run exists, how to look at it, and on
Ctrl-C how to resume.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vvho import ui
from vvho.options import ResultsDirOpt, RunNameOpt, TagOpt, TrackingUriOpt, parse_seeds, paths, writable

if TYPE_CHECKING:
    from agents.train import TrainProgress
    from vvho_env.paths import Paths

METRICS = (("objective", "J", ".3f"), ("p50_us", "p50 us", ",.1f"), ("p99_us", "p99 us", ",.1f"),
           ("p999_us", "p99.9 us", ",.1f"), ("slo_violation_frac", "viol %", ".2f"), ("vm_cpu", "VM CPU", ".2f"),
           ("neighbour_cpu", "nb CPU", ".2f"), ("neighbour_slowdown", "nb slow", ".3f"), ("steps", "steps", ",.0f"))


def _results_flag(p: Paths) -> str:
    """The --results-dir a follow-up command needs (none for the default)."""
    return "" if p == paths(None) else f" --results-dir {p.root}"


def _progress_status(p: TrainProgress) -> str:
    parts = [f"{p.steps_per_s:,.0f} steps/s"] if p.steps_per_s > 0 else ["starting"]
    if math.isfinite(p.p99_us):
        parts.append(f"p99 {p.p99_us:,.0f} us")
    if p.eval_objective is not None:
        parts.append(f"eval J {p.eval_objective:.3f}")
    return ", ".join(parts)


def _load_heavy() -> None:
    with ui.phase("loading torch, stable-baselines3 and MLflow"):
        import mlflow  # noqa: F401
        import stable_baselines3  # noqa: F401
    ui.quiet_libraries()


def train_cmd(
    config: Annotated[str | None, typer.Option("--config", "-c", help="experiment YAML, or the name of a shipped "
                                               "config (see `vvho configs`)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a field: section.field=value")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="continue this run from its last checkpoint")] = None,
    results_dir: ResultsDirOpt = None,
    tracking_uri: TrackingUriOpt = None,
    run_name: RunNameOpt = None,
    tag: TagOpt = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress display")] = False,
    json_out: ui.JsonOpt = False,
) -> None:
    """Train an agent (PPO, SAC, TD3, A2C, RecurrentPPO) on the simulator, tracked in MLflow."""
    from agents.resources import ResourceError, check_memory
    from vvho.config import ConfigError, load_config, resolve_config, source_of
    from vvho.options import OptionError
    from vvho.tracking import Store, parse_tags

    p = paths(results_dir)
    tags = parse_tags(tag or [])
    cfg = None
    if resume:
        if config is not None or set_ or run_name or tags:
            raise OptionError("--resume continues a run with its own config, name and tags; accepted: --resume "
                              "RUN_ID without --config, --set, --run-name or --tag")
        Store(p, tracking_uri).require()
    else:
        if config is None:
            raise OptionError("train needs --config FILE_OR_NAME (see `vvho configs`) or --resume RUN_ID")
        overrides = list(set_ or [])
        if tracking_uri:
            overrides.append(f"tracking.uri={tracking_uri}")
        notes: list[str] = []
        cfg = load_config(config, overrides, notes)
        for n in notes:
            ui.note(n)
        try:
            check_memory(cfg)
        except ResourceError as exc:
            raise ConfigError(f"{source_of(exc.field, str(resolve_config(config)), overrides)}: {exc}") from None
    writable(p)
    _load_heavy()
    from vvho.experiments import resume_run, train_run

    total = cfg.train.total_timesteps if cfg is not None else 0
    show = not no_progress and not json_out and (cfg is None or cfg.train.progress_bar)
    started: dict[str, str] = {}

    def on_start(run_id: str, name: str) -> None:
        started["id"] = run_id
        ui.info(f"run {run_id} ({name}) {'resumed' if resume else 'started'}; follow it with: vvho runs show "
                f"{run_id[:8]}{_results_flag(p)}")

    with ui.Progress("train", total) as bar, ui.graceful_interrupt("training") as stop:
        def report(pr: TrainProgress) -> None:
            bar.total = pr.total
            bar.update(pr.steps, _progress_status(pr))

        try:
            if resume:
                outcome = resume_run(resume, p, tracking_uri, report if show else None, on_start, stop)
            else:
                assert cfg is not None
                outcome = train_run(cfg, p, run_name, tags, report if show else None, on_start, stop)
        except KeyboardInterrupt:
            if "id" in started:
                ui.info(f"interrupted; the run is marked interrupted and a checkpoint was written. Resume with: "
                        f"vvho train --resume {started['id']}{_results_flag(p)}")
            else:
                ui.info("interrupted before the run started; nothing was tracked")
            raise typer.Exit(130) from None
    run_id = outcome.run_id
    result = outcome.result
    summary: dict[str, Any] = {"run_id": run_id, "store": outcome.store.uri, "resumed": bool(resume)}
    if result is None:
        ui.info(f"run {run_id} already finished its training; nothing to resume")
    else:
        summary.update(steps=result.num_timesteps, steps_this_session=result.steps_this_session,
                       wall_s=result.wall_s, final_objective=result.final_objective)
    if json_out:
        ui.emit_json(summary)
    elif result is not None:
        ui.print_table([ui.Col("run id", "id"), ui.Col("steps"), ui.Col("wall"), ui.Col("eval J")],
                       [[run_id, f"{result.num_timesteps:,}", f"{result.wall_s:,.0f} s",
                         ui.fmt(result.final_objective)]])
    ui.info(f"next: vvho runs show {run_id[:8]}{_results_flag(p)}  |  vvho export {run_id[:8]}{_results_flag(p)}")


def export_cmd(
    run_id: Annotated[str, typer.Argument(help="run id (or a unique prefix) of a `vvho train` run")],
    out: Annotated[Path | None, typer.Option(help="bundle directory [default: <results>/bundles/RUN_ID]")] = None,
    results_dir: ResultsDirOpt = None,
    tracking_uri: TrackingUriOpt = None,
    json_out: ui.JsonOpt = False,
) -> None:
    """Export a run's policy as a bundle: ONNX graph + JSON manifest, no pickle on the host.

    The bundle is also logged into the run, as artifacts and as an MLflow model."""
    from vvho.tracking import Store

    p = paths(results_dir)
    Store(p, tracking_uri).require()  # a missing store is reported before anything loads
    _load_heavy()
    from vvho.experiments import export_run

    with ui.phase(f"exporting run {run_id}"):
        exp = export_run(run_id, p, tracking_uri, out)
    if json_out:
        ui.emit_json({"run_id": exp.run_id, "bundle": str(exp.bundle), "model_uri": exp.model_uri})
        return
    ui.result(f"bundle {exp.bundle}")
    ui.info(f"MLflow model {exp.model_uri}; evaluate it with: vvho evaluate {exp.bundle}")


def evaluate_cmd(
    policy: Annotated[str, typer.Argument(help="bundle directory, or the run id (or prefix) of a `vvho train` run")],
    scenario: Annotated[str | None, typer.Option(help="scenario id [default: the one trained on]")] = None,
    seeds: Annotated[str, typer.Option(help="episode seeds: 1,2,3 or 1-5")] = "10001-10004",
    results_dir: ResultsDirOpt = None,
    tracking_uri: TrackingUriOpt = None,
    json_out: ui.JsonOpt = False,
    wide: ui.WideOpt = False,
) -> None:
    """Run a policy through the shared harness on the given seeds (same metrics as the baselines)."""
    from vvho_env.scenarios import load_scenario

    seed_list = parse_seeds(seeds)
    if scenario is not None:
        load_scenario(scenario)
    p = paths(results_dir)
    from agents.evaluate import evaluate_bundle, summarise, training_seed_overlap
    from vvho.experiments import looks_like_path, resolve_policy
    from vvho.tracking import Store

    def exporting(run_id: str) -> None:
        ui.note(f"run {run_id} has no bundle yet: exporting it to {p.bundles / run_id}")

    if looks_like_path(policy):
        bundle = resolve_policy(policy, p, tracking_uri)
    else:
        Store(p, tracking_uri).require()
        with ui.phase(f"looking up {policy} in the tracking store"):
            bundle = resolve_policy(policy, p, tracking_uri, exporting)
    m = bundle.manifest
    overlap = training_seed_overlap(bundle, scenario, seed_list)
    if overlap:
        ui.warn(f"seeds {', '.join(map(str, overlap[:8]))} also seeded this policy's training envs on "
                f"{m['scenario']}; results on them are not held out")
    where = scenario or m["scenario"]
    ui.info(f"policy {m['algorithm']} ({bundle.path}), trained on {m['scenario']}, evaluated on {where}")
    with ui.Progress("evaluate (episodes)", len(seed_list)) as bar:
        results = evaluate_bundle(bundle, scenario, seed_list,
                                  lambda r: bar.advance(f"seed {r.seed}: J {r.metrics()['objective']:.3f}"))
    mean = summarise(results)
    if json_out:
        ui.emit_json({"policy": str(bundle.path), "algorithm": m["algorithm"], "trained_on": m["scenario"],
                      "scenario": where, "episodes": [{"seed": r.seed, **r.metrics()} for r in results],
                      "mean": mean, "seeds_not_held_out": overlap})
        return
    rows = [[str(r.seed), *(_metric(r.metrics(), k, f) for k, _, f in METRICS)] for r in results]
    rows.append(["mean", *(_metric(mean, k, f) for k, _, f in METRICS)])
    ui.print_table([ui.Col("seed"), *(ui.Col(h) for _, h, _ in METRICS)], rows, wide=wide,
                   title=f"{m['algorithm']} on {where}")


def _metric(m: dict[str, float], key: str, spec: str) -> str:
    v = m.get(key, math.nan)
    return ui.fmt(100 * v if key == "slo_violation_frac" else v, spec)


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("export")(export_cmd)
    app.command("evaluate")(evaluate_cmd)
