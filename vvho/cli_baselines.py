"""`vvho baseline`: run one non-RL tuner through the shared harness, track it in MLflow, print a summary."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import typer

from vvho import ui
from vvho.options import (
    OptionError,
    ResultsDirOpt,
    RunNameOpt,
    TagOpt,
    TrackingUriOpt,
    int_option,
    paths,
    writable,
)

SEED_MAX = 2**31 - 1  # the tuning seed and the evaluation seeds derived from it stay numpy-seedable


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


HPARAMS_OPTION = "--tune-hparams-on"


def _training_scenarios(text: str | None, flag: bool | None, evaluation: Any) -> list[Any]:
    """The scenarios of --tune-hparams-on, checked: none when not given; refused when one is the evaluation
    scenario (by content) or when --tune-hparams asks for a sweep without them."""
    from baselines.hparams import HParamError, check_training
    from vvho_env.scenarios import load_scenario

    if text is None:
        if flag:
            raise HParamError(f"--tune-hparams: name the training scenarios to sweep on with {HPARAMS_OPTION} "
                              "SCENARIO[,SCENARIO]; accepted: scenarios other than the evaluation scenario "
                              "(hyperparameters are never tuned on it)")
        return []
    if flag is False:
        raise HParamError(f"--no-tune-hparams and {HPARAMS_OPTION} contradict each other; accepted: one of them")
    refs = [r.strip() for r in text.split(",") if r.strip()]
    training = [load_scenario(r) for r in dict.fromkeys(refs)]
    check_training(training, [evaluation], HPARAMS_OPTION)
    return training


def _label(name: str) -> str:
    """What users read: the oracle search is a best-known reference, not a limit."""
    return "best-known" if name == "oracle" else name


COLS = [ui.Col("method", "id"), ui.Col("p50 us"), ui.Col("p99 us"), ui.Col("p99.9 us"), ui.Col("SLO viol %"),
        ui.Col("VM CPU"), ui.Col("nb CPU"), ui.Col("nb slow"), ui.Col("J"), ui.Col("windows")]


def summary_rows(report: Any) -> tuple[list[ui.Col], list[list[str]]]:
    """The method and its references: figures, windows spent, and the method's ratios to each reference."""
    refs = list(report.references)
    cols = COLS + [ui.Col(f"{m} / {_label(r)}") for m in ("J", "p99", "CPU") for r in refs]
    out = report.outcome
    windows = {out.label: f"{out.windows:,} + {report.hparams.get('sweep_windows', 0):,} hp"}  # tuning + sweep

    def row(name: str, m: dict[str, float], ratios: bool) -> list[str]:
        cells = [_label(name), ui.fmt(m["p50_us"], ",.1f"), ui.fmt(m["p99_us"], ",.1f"), ui.fmt(m["p999_us"], ",.1f"),
                 ui.fmt(100 * m["slo_violation_frac"], ".2f"), ui.fmt(m["vm_cpu"], ".2f"),
                 ui.fmt(m["neighbour_cpu"], ".2f"), ui.fmt(m["neighbour_slowdown"], ".3f"), ui.fmt(m["objective"]),
                 windows.get(name, "0" if name == "static-default" else "-")]
        for metric in ("objective", "p99_us", "vm_cpu"):
            for r in refs:
                cells.append(ui.fmt(report.ratio(r, metric), ".2f") if ratios else "")
        return cells

    rows = [row(out.label, out.metrics, True)]
    rows += [row(r, report.references[r], False) for r in refs if r != out.label]
    return cols, rows


def _summary_json(report: Any, spec: Any, hp_info: dict[str, Any], changed: dict[str, Any]) -> dict[str, Any]:
    out = report.outcome
    return {"method": out.label, "scenario": report.config.scenario.id, "backend": report.config.backend,
            "metrics": out.metrics, "references": {_label(r): m for r, m in report.references.items()},
            "ratios": {f"{metric}/{_label(r)}": report.ratio(r, metric) for r in report.references
                       for metric in ("objective", "p99_us", "vm_cpu")},
            "windows": {"tuning": out.windows, "settle": out.settle_windows, "resumed": out.resumed_windows,
                        "hyperparameters": hp_info.get("sweep_windows", 0)},
            "hyperparameters": spec.config_dict(), "hyperparameter_source": hp_info["source"],
            "hyperparameter_scenarios": hp_info.get("scenarios", []),
            "settings": out.settings, "changed_settings": changed, "beats_best_known": report.beats_oracle}


def _log_mlflow(report: Any, uri: str | None, name: str | None, extra_tags: dict[str, str]) -> str:
    import mlflow

    from vvho.tracking import run_name, tracked_run

    cfg, out = report.config, report.outcome
    params = {"method": cfg.spec.method, "variant": out.label, "scenario": cfg.scenario.id, "budget": cfg.budget,
              "seed": cfg.seed, "backend": cfg.backend, "eval_episodes": cfg.eval_episodes,
              "eval_steps": cfg.steps_per_eval, "knob_names": ",".join(cfg.knob_names or ()) or "all settable",
              "bounds": json.dumps(dict(cfg.bounds)),
              **{f"hp.{k}": v for k, v in cfg.spec.config_dict().items()}}
    tags = {"hparam_sweep_windows": str(report.hparams.get("sweep_windows", 0)),
            "hparams_source": str(report.hparams.get("source", "defaults")),
            "hparam_scenarios": ",".join(report.hparams.get("scenarios", [])), **extra_tags}
    if out.storage is not None:
        tags["optuna_storage"] = str(out.storage.resolve())
    with tracked_run("vvho-baselines", name or run_name(cfg.scenario.id, out.label, cfg.seed), params, uri=uri,
                     tags=tags, results_dir=cfg.results_dir) as tracker:
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
                            "budget/windows_spent": out.windows, "budget/windows_settle": out.settle_windows,
                            "budget/windows_resumed": out.resumed_windows,
                            "budget/hparam_windows": report.hparams.get("sweep_windows", 0)})
        for r in report.references:
            for metric, name in (("objective", "J"), ("p99_us", "p99"), ("vm_cpu", "cpu")):
                mlflow.log_metric(f"ratio/{name}_to_{r}", _finite(report.ratio(r, metric)))
        mlflow.log_metric("flag/beats_oracle", float(report.beats_oracle))
        mlflow.log_dict({"final_settings": out.settings, "trajectory": out.trace, "references": report.references,
                         "reference_settings": report.reference_settings, "hparams": report.hparams},
                        "baseline.json")
        if out.storage is not None and out.storage.exists():
            mlflow.log_artifact(str(out.storage))
        return tracker.run_id


def _finite(v: float) -> float:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else -1.0


def baseline(
    method: Annotated[str, typer.Option(help="static-default, expert, random, gd, bo or best-known (the "
                                         "cached best-known search, alias oracle)")],
    scenario: Annotated[str, typer.Option(help="scenario id (see `vvho scenarios`)")],
    budget: Annotated[int, typer.Option(parser=int_option(1, 10**9), metavar="WINDOWS",
                                        help="tuning budget in measurement windows (env steps), >= 1")],
    seed: Annotated[int, typer.Option(parser=int_option(0, SEED_MAX), metavar="SEED",
                                      help="seed of the tuning episode; evaluation seeds derive from it")] = 0,
    backend: Annotated[str, typer.Option(help="sim or live")] = "sim",
    estimator: Annotated[str | None, typer.Option(help="gd: fd (finite differences) or spsa")] = None,
    mode: Annotated[str | None, typer.Option(help="gd: offline or online")] = None,
    sampler: Annotated[str | None, typer.Option(help="bo: tpe or gp")] = None,
    profile: Annotated[str | None, typer.Option(help="expert: latency-performance, network-latency, "
                                                     "realtime-virtual-host")] = None,
    eval_episodes: Annotated[int | None, typer.Option(parser=int_option(1, 1000), metavar="N",
                                                      help="fresh evaluation episodes (default 3 sim, 1 live)")] = None,
    eval_steps: Annotated[int | None, typer.Option(parser=int_option(1, 10**7), metavar="N",
                                                   help="windows per evaluation episode (default: episode)")] = None,
    knob: Annotated[list[str] | None, typer.Option("--knob", help="tune only these knobs (repeatable)")] = None,
    bound: Annotated[list[str] | None, typer.Option("--bound", help="name=low:high search bound (repeatable)")] = None,
    tune_hparams_on: Annotated[str | None, typer.Option(
        "--tune-hparams-on", metavar="SCENARIO[,SCENARIO]",
        help="first sweep the tuner's own hyperparameters on these training scenarios, never the evaluation "
             "scenario (opt-in; cached; its progress and cost in windows are printed beside the result)")] = None,
    tune_hparams: Annotated[bool | None, typer.Option(
        help="--no-tune-hparams: no sweep (the default); --tune-hparams needs --tune-hparams-on")] = None,
    oracle: Annotated[bool, typer.Option("--best-known/--no-best-known", "--oracle/--no-oracle",
                                         help="sim: compare with the best-known reference (its search is "
                                              "computed once and cached)")] = True,
    fresh: Annotated[bool, typer.Option(help="bo: delete a stored study instead of resuming it")] = False,
    results_dir: ResultsDirOpt = None,
    tracking_uri: TrackingUriOpt = None,
    run_name: RunNameOpt = None,
    tag: TagOpt = None,
    json_out: ui.JsonOpt = False,
    wide: ui.WideOpt = False,
    uri: Annotated[str, typer.Option("--connect", "--uri", help="live: libvirt URI")] = "qemu:///system",
    domain: Annotated[str, typer.Option(help="live: libvirt domain")] = "vvho-testbed",
    port: Annotated[int | None, typer.Option(help="live: host port of a TCP echo service in the guest "
                                             "(default: the testbed's, else a hostfwd in the domain's XML)")] = None,
) -> None:
    """Tune with one baseline on a budget of measurement windows, evaluate on fresh seeds, compare with the
    best-known reference (simulator) or static-default and the best static setting found (live), and
    track it in MLflow."""
    from baselines.hparams import grid_cost, has_grid, sweep
    from baselines.methods import MethodSpec
    from baselines.run import RunConfig, run_baseline, study_path
    from vvho.tracking import Store, parse_tags
    from vvho_env.env import VVHOEnv
    from vvho_env.errors import VVHOError
    from vvho_env.scenarios import load_scenario

    p = paths(results_dir)
    Store(p, tracking_uri)  # a bad --tracking-uri is refused now, not after the work
    tags = parse_tags(tag or [])
    results_dir = writable(p).root
    try:
        spec = MethodSpec.parse(method, estimator=estimator, mode=mode, sampler=sampler, profile=profile)
        sc = load_scenario(scenario)
        bounds = dict(_parse_bound(b) for b in bound or [])
        cfg = RunConfig(spec, sc, budget, seed, backend,
                        eval_episodes or (1 if backend == "live" else 3), eval_steps,
                        tuple(knob) if knob else None, bounds, results_dir, with_oracle=oracle)
        training = _training_scenarios(tune_hparams_on, tune_hparams, sc)
    except VVHOError:
        raise
    except ValueError as exc:  # the run's own checks (budget, episodes, knob names)
        raise OptionError(str(exc)) from None
    hp_info: dict[str, Any] = {"source": "defaults"}
    if training and not has_grid(spec):
        ui.info(f"{spec.label} has no hyperparameters to sweep; --tune-hparams-on ignored")
        training = []
    with ui.heartbeat(f"{spec.label} on {sc.id}"):
        if training:
            ids = ", ".join(t.id for t in training)
            ui.info(f"sweeping {spec.label}'s hyperparameters on training scenario(s) {ids} (never {sc.id}): up to "
                    f"{grid_cost(spec, training, budget, eval_steps):,} windows, cached")
            hp = sweep(spec, training, budget, eval_steps, results_dir, evaluation=[sc], option=HPARAMS_OPTION)
            ui.info(f"hyperparameter sweep: {hp.windows:,} windows" + (" (cached: spent earlier, not now)"
                    if hp.cached else "") + f"; chosen {hp.best}")
            spec = spec.with_hparams(hp.best)
            hp_info = {"source": f"sweep on training scenario(s) {ids}" + (" (cached)" if hp.cached else ""),
                       "sweep_windows": hp.windows, "chosen": hp.best, "scenarios": hp.scenarios,
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
            report = run_baseline(cfg, env, log=ui.note)
        finally:
            env.close()
    report.hparams.update(hp_info)
    changed = {k: v for k, v in report.outcome.settings.items() if sc.settings_at_start().get(k) != v}
    run_id = _log_mlflow(report, tracking_uri, run_name, tags)
    if json_out:
        ui.emit_json({"run_id": run_id, **_summary_json(report, spec, hp_info, changed)})
        return
    cols, rows = summary_rows(report)
    ui.print_table(cols, rows, title=f"{sc.id} on {backend}: evaluation over {cfg.eval_episodes} x "
                   f"{cfg.steps_per_eval} fresh windows", wide=wide)
    ui.result(f"tuning windows spent: {report.outcome.windows:,}"
              + f" ({report.outcome.settle_windows:,} of them settle windows after changes, not scored)"
              + (f" (+{report.outcome.resumed_windows:,} by an earlier attempt of this study)"
                 if report.outcome.resumed_windows else "")
              + f" of {budget:,}; hyperparameters: {spec.config_dict() or 'none'} ({hp_info['source']}, "
              + f"sweep cost {hp_info.get('sweep_windows', 0):,} windows)")
    ui.result(f"final settings (changed from the start settings): {changed or 'none'}")
    if report.beats_oracle:
        ui.warn("this method beat the best-known reference on these seeds: best-known is the best setting a "
                "search found, not a limit; re-run its search with more seeds (benchmarks/tuner_quality.py)")
    if report.outcome.storage is not None:
        ui.info(f"optuna study: {report.outcome.storage} (re-run the same command to resume)")


def register(app: typer.Typer) -> None:
    app.command("baseline")(baseline)
