"""`vvho baseline`: run one non-RL tuner through the shared harness, track it in MLflow, print a summary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console(width=180)


def _fail(msg: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {msg}")
    return typer.Exit(code=2)


def _parse_bound(text: str) -> tuple[str, tuple[str, str]]:
    from vvho_env import knobs

    if "=" not in text or ":" not in text.split("=", 1)[1]:
        raise knobs.KnobError(f"bound {text!r} not accepted; accepted: name=low:high (e.g. vcpu_quota=10000:-1 "
                              f"is not allowed, use numbers in the knob's units), knobs: {', '.join(knobs.KNOB_NAMES)}")
    name, rng = text.split("=", 1)
    low, high = rng.split(":", 1)
    knob = knobs.get(name.strip())
    def conv(v: str) -> Any:
        v = v.strip().replace("_", "")
        return v if knob.kind in ("categorical", "bool") else float(v) if knob.kind == "float" else int(float(v))
    try:
        return knob.name, (conv(low), conv(high))
    except ValueError:
        raise knobs.KnobError(f"bound {text!r}: not a number; accepted for {knob.name}: {knob.accepted()}") from None


def _f(v: float, fmt: str = ",.1f") -> str:
    return "-" if not isinstance(v, float | int) or not math.isfinite(v) else format(v, fmt)


def summary_table(report: Any) -> Table:
    refs = list(report.references)
    t = Table("method", "p50 us", "p99 us", "p99.9 us", "SLO viol %", "VM CPU", "nb CPU", "nb slow", "objective",
              *[f"J / {r}" for r in refs], *[f"p99 / {r}" for r in refs], *[f"CPU / {r}" for r in refs],
              title=f"{report.config.scenario.id} on {report.config.backend}: evaluation over "
                    f"{report.config.eval_episodes} x {report.config.steps_per_eval} fresh windows")

    def row(name: str, m: dict[str, float], ratios: bool) -> list[str]:
        cells = [name, _f(m["p50_us"]), _f(m["p99_us"]), _f(m["p999_us"]), _f(100 * m["slo_violation_frac"], ".2f"),
                 _f(m["vm_cpu"], ".2f"), _f(m["neighbour_cpu"], ".2f"), _f(m["neighbour_slowdown"], ".3f"),
                 _f(m["objective"], ".3f")]
        for metric in ("objective", "p99_us", "vm_cpu"):
            for r in refs:
                cells.append(_f(report.ratio(r, metric), ".2f") if ratios else "")
        return cells

    label = report.outcome.label + ("  [bold red]BEATS ORACLE[/bold red]" if report.beats_oracle else "")
    t.add_row(*row(label, report.outcome.metrics, True))
    for r in refs:
        if r != report.outcome.label:
            t.add_row(*row(f"({r})", report.references[r], False))
    return t


def _log_mlflow(report: Any, uri: str | None) -> None:
    import mlflow

    from vvho.tracking import run_name, tracked_run

    cfg, out = report.config, report.outcome
    params = {"method": cfg.spec.method, "variant": out.label, "scenario": cfg.scenario.id, "budget": cfg.budget,
              "seed": cfg.seed, "backend": cfg.backend, "eval_episodes": cfg.eval_episodes,
              "eval_steps": cfg.steps_per_eval, "knob_names": ",".join(cfg.knob_names or ()) or "all settable",
              "bounds": json.dumps(dict(cfg.bounds)),
              **{f"hp.{k}": v for k, v in cfg.spec.config_dict().items()}}
    tags = {"hparam_sweep_windows": str(report.hparams.get("sweep_windows", 0)),
            "hparams_source": str(report.hparams.get("source", "defaults"))}
    if out.storage is not None:
        tags["optuna_storage"] = str(out.storage.resolve())
    with tracked_run("vvho-baselines", run_name(cfg.scenario.id, out.label, cfg.seed), params, uri=uri, tags=tags,
                     results_dir=cfg.results_dir):
        for step, row in enumerate(out.trace):
            if "objective" in row:
                mlflow.log_metrics({"tune/objective": row["objective"], "tune/p99_us": _finite(row["p99_us"]),
                                    "tune/vm_cpu": row["vm_cpu"]}, step=step)
        m = out.metrics
        mlflow.log_metrics({"latency/p50_us": _finite(m["p50_us"]), "latency/p99_us": _finite(m["p99_us"]),
                            "latency/p999_us": _finite(m["p999_us"]),
                            "slo/violation_frac": _finite(m["slo_violation_frac"]),
                            "cpu/vm_cores": m["vm_cpu"], "neighbour/cpu": m["neighbour_cpu"],
                            "neighbour/slowdown": m["neighbour_slowdown"], "objective/J": m["objective"],
                            "budget/windows_spent": out.windows, "budget/windows_resumed": out.resumed_windows})
        for r in report.references:
            for metric, name in (("objective", "J"), ("p99_us", "p99"), ("vm_cpu", "cpu")):
                mlflow.log_metric(f"ratio/{name}_to_{r}", _finite(report.ratio(r, metric)))
        mlflow.log_metric("flag/beats_oracle", float(report.beats_oracle))
        mlflow.log_dict({"final_settings": out.settings, "trajectory": out.trace, "references": report.references,
                         "reference_settings": report.reference_settings, "hparams": report.hparams},
                        "baseline.json")
        if out.storage is not None and out.storage.exists():
            mlflow.log_artifact(str(out.storage))


def _finite(v: float) -> float:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else -1.0


def baseline(
    method: Annotated[str, typer.Option(help="static-default, expert, random, gd, bo or oracle")],
    scenario: Annotated[str, typer.Option(help="scenario id (see `vvho scenarios`)")],
    budget: Annotated[int, typer.Option(help="tuning budget in measurement windows (env steps), >= 1")],
    seed: Annotated[int, typer.Option(help="seed of the tuning episode; evaluation seeds derive from it")] = 0,
    backend: Annotated[str, typer.Option(help="sim or live")] = "sim",
    estimator: Annotated[str | None, typer.Option(help="gd: fd (finite differences) or spsa")] = None,
    mode: Annotated[str | None, typer.Option(help="gd: offline or online")] = None,
    sampler: Annotated[str | None, typer.Option(help="bo: tpe or gp")] = None,
    profile: Annotated[str | None, typer.Option(help="expert: latency-performance, network-latency, "
                                                     "realtime-virtual-host")] = None,
    eval_episodes: Annotated[int | None, typer.Option(help="fresh evaluation episodes (default 3 sim, 1 live)")] = None,
    eval_steps: Annotated[int | None, typer.Option(help="windows per evaluation episode (default: episode)")] = None,
    knob: Annotated[list[str] | None, typer.Option("--knob", help="tune only these knobs (repeatable)")] = None,
    bound: Annotated[list[str] | None, typer.Option("--bound", help="name=low:high search bound (repeatable)")] = None,
    tune_hparams: Annotated[bool, typer.Option(help="sweep the tuner's own hyperparameters (cached)")] = True,
    oracle: Annotated[bool, typer.Option(help="sim: compare with the oracle (computed once, cached)")] = True,
    fresh: Annotated[bool, typer.Option(help="bo: delete a stored study instead of resuming it")] = False,
    results_dir: Annotated[Path, typer.Option(help="folder for studies, ledgers and caches")] = Path("results"),
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow URI (default results/mlflow.db)")] = None,
    uri: Annotated[str, typer.Option("--connect", "--uri", help="live: libvirt URI")] = "qemu:///system",
    domain: Annotated[str, typer.Option(help="live: libvirt domain")] = "vvho-testbed",
    port: Annotated[int | None, typer.Option(help="live: host port of a TCP echo service in the guest "
                                             "(default: the testbed's, else a hostfwd in the domain's XML)")] = None,
) -> None:
    """Tune with one baseline on a budget of measurement windows, evaluate on fresh seeds, compare with the
    oracle (simulator) or static-default and the best static setting found (live), and track it in MLflow."""
    from baselines.hparams import sweep
    from baselines.methods import MethodError, MethodSpec
    from baselines.run import RunConfig, run_baseline, study_path
    from vvho_env import knobs
    from vvho_env.env import VVHOEnv
    from vvho_env.scenarios import ScenarioError, load_scenario
    from vvho_env.types import ApplyRejected, BackendError

    try:
        spec = MethodSpec.parse(method, estimator=estimator, mode=mode, sampler=sampler, profile=profile)
        sc = load_scenario(scenario)
        bounds = dict(_parse_bound(b) for b in bound or [])
        cfg = RunConfig(spec, sc, budget, seed, backend,
                        eval_episodes or (1 if backend == "live" else 3), eval_steps,
                        tuple(knob) if knob else None, bounds, results_dir, with_oracle=oracle)
        hp_info: dict[str, Any] = {"source": "defaults"}
        if tune_hparams:
            hp = sweep(spec, sc, budget, cfg.steps_per_eval, results_dir)
            if hp.best:
                spec = spec.with_hparams(hp.best)
                hp_info = {"source": "held-out sweep on the simulator" + (" (cached)" if hp.cached else ""),
                           "sweep_windows": hp.windows, "chosen": hp.best,
                           "table": [[p, j] for p, j in hp.table]}
                cfg = RunConfig(spec, sc, budget, seed, backend, cfg.eval_episodes, eval_steps, cfg.knob_names,
                                bounds, results_dir, with_oracle=oracle)
        if fresh and spec.method == "bo":
            study_path(cfg).unlink(missing_ok=True)
        if backend == "live":
            from vvho_env.live import make_live_env

            env = make_live_env(sc.id, uri=uri, domain=domain, port=port, knob_names=cfg.knob_names)
        else:
            env = VVHOEnv(sc, knob_names=cfg.knob_names)
        try:
            report = run_baseline(cfg, env, log=lambda m: console.print(f"[dim]{m}[/dim]"))
        finally:
            env.close()
    except (MethodError, ScenarioError, knobs.KnobError, ApplyRejected, BackendError, ValueError) as exc:
        raise _fail(str(exc)) from None
    report.hparams.update(hp_info)
    console.print(summary_table(report))
    console.print(f"tuning windows spent: {report.outcome.windows}"
                  + (f" (+{report.outcome.resumed_windows} by an earlier attempt of this study)"
                     if report.outcome.resumed_windows else "")
                  + f" of {budget}; hyperparameters: {spec.config_dict() or 'none'} ({hp_info['source']}"
                  + (f", sweep cost {hp_info['sweep_windows']} windows)" if "sweep_windows" in hp_info else ")"))
    changed = {k: v for k, v in report.outcome.settings.items() if sc.settings_at_start().get(k) != v}
    console.print(f"final settings (changed from the start settings): {changed or 'none'}")
    if report.beats_oracle:
        console.print("[bold red]flag:[/bold red] this method beat the oracle's objective on these seeds; "
                      "the oracle is a best-known search, not a proof of optimality")
    if report.outcome.storage is not None:
        console.print(f"optuna study: {report.outcome.storage} (re-run the same command to resume)")
    _log_mlflow(report, tracking_uri)


def register(app: typer.Typer) -> None:
    app.command("baseline")(baseline)
