"""`vvho runs list|show|compare`: the tracked runs of a results directory (or any tracking store).

Every VVHO run (train, baseline, the main job) carries the tags scenario, method, seed and
run_state, so runs can be filtered and compared without the MLflow UI. Reading never creates a
store; runs whose process died without closing them are shown (and recorded) as killed.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from vvho import ui
from vvho.options import ResultsDirOpt, TrackingUriOpt, paths

runs_app = typer.Typer(help="List, show and compare tracked runs.", no_args_is_help=True)

# The headline figures of each kind of run, first match wins: (label, metric names, format)
KEY_METRICS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("J", ("objective/J", "objective/final_J", "eval/final_objective", "eval/objective", "ppo/objective"), ".3f"),
    ("p99 us", ("latency/p99_us", "ppo/p99_us"), ",.0f"),
    ("CPU", ("cpu/vm_cores", "ppo/vm_cpu"), ".2f"),
    ("J/best-known", ("ratio/J_to_best-known", "ratio/J_to_oracle"), ".2f"),
    ("SPS", ("SPS",), ",.0f"),
)
ScenarioOpt = Annotated[str | None, typer.Option("--scenario", help="only runs of this scenario id")]
MethodOpt = Annotated[str | None, typer.Option("--method", help="only runs of this method (ppo, sac, gd-spsa-offline, "
                                               "static-default, mission, ...)")]


def _store(results_dir: Any, tracking_uri: str | None) -> Any:
    from vvho.tracking import Store

    return Store(paths(results_dir), tracking_uri)


def key_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for label, names, _ in KEY_METRICS:
        out[label] = next((metrics[n] for n in names if n in metrics), None)
    return out


def _when(ts: float) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(ts))


def _record(r: Any) -> dict[str, Any]:
    return {"run_id": r.run_id, "name": r.name, "experiment": r.experiment, "state": r.state,
            "scenario": r.scenario, "method": r.method, "seed": r.tags.get("seed"), "started": r.started,
            "key_metrics": key_metrics(r.metrics)}


@runs_app.command("list")
def list_cmd(scenario: ScenarioOpt = None, method: MethodOpt = None,
             limit: Annotated[int, typer.Option(min=1, max=10_000, help="newest runs shown")] = 20,
             results_dir: ResultsDirOpt = None, tracking_uri: TrackingUriOpt = None,
             json_out: ui.JsonOpt = False, wide: ui.WideOpt = False) -> None:
    """The newest runs, with their state and headline figures."""
    store = _store(results_dir, tracking_uri)
    if not store.exists():
        found = []
    else:
        with ui.phase("reading the tracking store"):
            found = store.runs(scenario, method, limit)
    if json_out:
        ui.emit_json([_record(r) for r in found])
        return
    if not found:
        ui.info(f"no runs in {store.describe()}" + (" matching the filters" if scenario or method else ""))
        return
    cols = [ui.Col("run", "id"), ui.Col("method", "id"), ui.Col("scenario", "id"), ui.Col("seed"),
            ui.Col("state", "id"), ui.Col("started", "id"), *(ui.Col(label) for label, _, _ in KEY_METRICS),
            ui.Col("name", "id")]
    rows = []
    for r in found:
        km = key_metrics(r.metrics)
        rows.append([r.run_id[:8], r.method, r.scenario, r.tags.get("seed", ""), r.state, _when(r.started),
                     *(ui.fmt(km[label], spec) for label, _, spec in KEY_METRICS), r.name])
    ui.print_table(cols, rows, wide=wide)
    ui.note("details: vvho runs show RUN  |  side by side: vvho runs compare RUN RUN ...")


@runs_app.command("show")
def show_cmd(run_id: Annotated[str, typer.Argument(help="run id or a unique prefix (see `vvho runs list`)")],
             results_dir: ResultsDirOpt = None, tracking_uri: TrackingUriOpt = None,
             json_out: ui.JsonOpt = False) -> None:
    """One run: state, tags, parameters, latest metrics and what to do next."""
    from vvho.tracking import ui_hint

    store = _store(results_dir, tracking_uri).require()
    with ui.phase("reading the tracking store"):
        r = store.get(run_id)
    if json_out:
        ui.emit_json({**_record(r), "tags": r.tags, "params": r.params, "metrics": r.metrics})
        return
    ui.result(f"run {r.run_id}  {r.name}")
    facts = [("experiment", r.experiment), ("state", r.state), ("method", r.method), ("scenario", r.scenario),
             ("seed", r.tags.get("seed", "")), ("started", time.strftime("%Y-%m-%d %H:%M:%S",
                                                                           time.localtime(r.started))),
             ("code", r.tags.get("git_commit", ""))]
    user_tags = {k: v for k, v in r.tags.items() if not k.startswith(("mlflow.", "version.", "vvho."))
                 and k not in ("scenario", "method", "seed", "run_state", "git_commit")}
    ui.print_table([ui.Col("", "id"), ui.Col("", "text")], [[k, v] for k, v in facts + sorted(user_tags.items())])
    if r.metrics:
        ui.print_table([ui.Col("metric", "id"), ui.Col("latest")],
                       [[k, ui.fmt(v, ",.4g")] for k, v in sorted(r.metrics.items())])
    if r.params:
        ui.print_table([ui.Col("parameter", "id"), ui.Col("value", "text")],
                       [[k, v] for k, v in sorted(r.params.items())])
    flag = "" if paths(results_dir) == paths(None) else f" --results-dir {paths(results_dir).root}"
    if r.tags.get("command") == "train" and r.state in ("interrupted", "killed", "failed"):
        ui.info(f"resume it with: vvho train --resume {r.run_id[:8]}{flag}")
    elif r.tags.get("command") == "train" and r.state == "finished":
        ui.info(f"export it with: vvho export {r.run_id[:8]}{flag}")
    ui.note(ui_hint(store))


@runs_app.command("compare")
def compare_cmd(run_ids: Annotated[list[str] | None, typer.Argument(help="runs to compare [default: the newest "
                                                                         "runs matching the filters]")] = None,
                scenario: ScenarioOpt = None, method: MethodOpt = None,
                limit: Annotated[int, typer.Option(min=2, max=50, help="runs compared when none are named")] = 5,
                all_metrics: Annotated[bool, typer.Option("--all", help="every metric, not just the headline "
                                                          "figures")] = False,
                results_dir: ResultsDirOpt = None, tracking_uri: TrackingUriOpt = None,
                json_out: ui.JsonOpt = False, wide: ui.WideOpt = False) -> None:
    """Runs side by side: headline figures (or --all metrics) and the parameters that differ."""
    from vvho.options import OptionError

    store = _store(results_dir, tracking_uri).require()
    with ui.phase("reading the tracking store"):
        if run_ids:
            found = [store.get(i) for i in run_ids]
        else:
            found = store.runs(scenario, method, limit)
    if scenario or method:
        found = [r for r in found if (not scenario or r.scenario == scenario) and (not method or r.method == method)]
    if len(found) < 2:
        raise OptionError(f"compare needs at least two runs; {len(found)} found in {store.describe()}"
                          + (" matching the filters" if scenario or method else "")
                          + "; accepted: two or more run ids, or filters that match two or more runs")
    names = sorted({k for r in found for k in r.metrics}) if all_metrics else [label for label, _, _ in KEY_METRICS]
    values = {r.run_id: (r.metrics if all_metrics else key_metrics(r.metrics)) for r in found}
    differ = sorted(k for k in {k for r in found for k in r.params}
                    if len({r.params.get(k) for r in found}) > 1)
    if json_out:
        ui.emit_json({"runs": [_record(r) for r in found], "metrics": {n: {r.run_id: values[r.run_id].get(n)
                                                                           for r in found} for n in names},
                      "differing_params": {k: {r.run_id: r.params.get(k) for r in found} for k in differ}})
        return
    cols = [ui.Col("", "id"), *(ui.Col(r.run_id[:8], "text") for r in found)]
    rows = [["method", *(r.method for r in found)], ["scenario", *(r.scenario for r in found)],
            ["state", *(r.state for r in found)]]
    spec = {label: s for label, _, s in KEY_METRICS}
    rows += [[n, *(ui.fmt(values[r.run_id].get(n), spec.get(n, ",.4g")) for r in found)] for n in names]
    rows += [[k, *(r.params.get(k, "-") for r in found)] for k in differ]
    ui.print_table(cols, rows, wide=wide, title="runs side by side" + (" (parameters that differ below the "
                                                                         "metrics)" if differ else ""))


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
