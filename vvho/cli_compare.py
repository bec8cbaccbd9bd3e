"""`vvho compare --suite NAME`: methods x scenarios x seeds with intervals, tracked and reported."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from vvho import ui
from vvho.options import ResultsDirOpt, TrackingUriOpt, int_option, paths, writable

MLFLOW_VIEW = ("MLflow 3's UI opens in its GenAI view: the compare and its trials are under the "
               "'Model training' view, experiment vvho-compare (a parent run with a child run per trial)")


def compare_cmd(
    suite: Annotated[str, typer.Option("--suite", help="a shipped suite (core, quick, tiny) or a suite YAML file")],
    methods: Annotated[str | None, typer.Option("--methods", help="comma-separated methods [default: the "
                                                "suite's]")] = None,
    budget: Annotated[int | None, typer.Option(parser=int_option(1, 10**7), help="tuning windows per tuner trial "
                                               "[default: the suite's]")] = None,
    seeds: Annotated[int | None, typer.Option(parser=int_option(1, 1000), help="trials per method and scenario "
                                              "[default: the suite's]")] = None,
    workers: Annotated[int | None, typer.Option(parser=int_option(1, 256), help="parallel trial processes "
                                                "[default: the suite's]")] = None,
    tune_hparams: Annotated[bool | None, typer.Option(
        help="sweep each tuner's hyperparameters on the suite's training scenarios first (never on a held-out "
             "scenario; cached; its windows are counted in the tuner's budget) [default: the suite's]")] = None,
    results_dir: ResultsDirOpt = None,
    tracking_uri: TrackingUriOpt = None,
    json_out: ui.JsonOpt = False,
    wide: ui.WideOpt = False,
) -> None:
    """Compare methods on a suite's scenarios with equal, printed budgets, 95% intervals and a report.

    Re-running the same command after a kill resumes it: finished trials (child runs in MLflow) are
    kept, a killed training resumes from its checkpoint."""
    from vvho.compare import make_plan
    from vvho.suites import load_suite, suite_ref

    s = load_suite(suite)
    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    plan = make_plan(s, suite_ref(suite), chosen, budget, seeds, workers, tune_hparams)
    p = writable(paths(results_dir))
    with ui.phase("loading MLflow and the tuners"):
        from vvho.compare import run_compare
        from vvho.tracking import Store, ui_hint
        ui.quiet_libraries()
    total = len(plan.methods) * len(plan.scenarios()) * len(plan.seeds)
    ui.info(f"suite {s.name}: {len(plan.methods)} methods x {len(plan.scenarios())} scenarios x {len(plan.seeds)} "
            f"seeds; tuning budget {plan.budget:,} windows per tuner trial; {plan.workers} worker process(es)")
    with ui.Progress("compare trials", total) as bar, ui.heartbeat("compare"):
        def on_trial(rec: dict[str, Any], done: int, total: int) -> None:
            bar.total = total  # the methods this version of baselines/ provides
            j = rec["metrics"].get("objective")
            bar.update(done, f"{rec['trial']['method']} on {rec['scenario']} s{rec['trial']['seed']}: "
                       f"J {ui.fmt(j)}")

        try:
            result = run_compare(plan, p, tracking_uri, log=ui.note, on_trial=on_trial)
        except KeyboardInterrupt:
            ui.info("interrupted; finished trials are in MLflow. Run the same command again to resume.")
            raise typer.Exit(130) from None
    from vvho.compare_tables import build
    from vvho.report import HEADLINE_COLS, headline_rows, scenario_rows

    tables = build(result.records, list(plan.methods))
    report = p.root / s.name / "report.md"
    if json_out:
        ui.emit_json({"compare_run_id": result.parent_run_id, "report": str(report), "records": len(result.records),
                      "aggregates": {m: {"score_iqm": a.score_iqm.as_dict(), "poi_gd": a.poi_gd.as_dict(),
                                         "poi_best_static": a.poi_static.as_dict()}
                                     for m, a in tables.aggregates.items()},
                      "per_scenario": {f"{sc}|{m}": {"J": r.J.as_dict(), "J_over_best_known": r.J_ratio.as_dict(),
                                                     "p99_us": r.p99.as_dict(), "vm_cpu": r.cpu.as_dict(),
                                                     "budget": r.budget}
                                       for (sc, m), r in tables.rows.items()}})
        return
    for sc, role in tables.scenarios:
        ui.print_table([ui.Col(c, "id" if i == 0 else "num") for i, c in enumerate(
            ("method", "J mean [95% CI]", "J / best-known", "p99 us", "CPU", "P(J < gd)"))],
            [[r[0], r[1], r[7], r[3], r[5], r[10]] for r in scenario_rows(tables, sc)],
            title=f"{sc} ({'training scenario, held-out seeds' if role == 'train' else 'held-out scenario'})",
            wide=wide)
    ui.print_table([ui.Col(c, "id" if i == 0 else ("text" if c == "budget" else "num"))
                    for i, c in enumerate(HEADLINE_COLS)], headline_rows(tables),
                   title="across scenarios: IQM of J_best-known / J (1 = best-known; higher is better), 95% CIs",
                   wide=wide)
    ui.info(f"report: {report} (tables, plots); compare run {result.parent_run_id} with a child run per trial")
    ui.info(f"MLflow UI: {ui_hint(Store(p, tracking_uri))}. {MLFLOW_VIEW}")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_cmd)
