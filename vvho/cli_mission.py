"""`vvho run`: the main job on the embedded defaults (vvho/mission.py), with its results side by side."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated

import typer

from agents.config import SEED_MAX
from vvho import ui
from vvho.options import ResultsDirOpt, TrackingUriOpt, int_option, paths, writable

if TYPE_CHECKING:
    from agents.train import TrainProgress

METRICS = (("p50_us", "p50 us", ",.1f"), ("p99_us", "p99 us", ",.1f"), ("slo_violation_frac", "viol %", ".2f"),
           ("vm_cpu", "CPU", ".2f"), ("objective", "J", ".3f"))


def run_cmd(
    seed: Annotated[int, typer.Option(parser=int_option(0, SEED_MAX), help="seed of training, tuning and the "
                                      "evaluation seeds")] = 0,
    steps: Annotated[int, typer.Option(parser=int_option(1, 10**10), help="measurement windows (env steps) for PPO "
                                       "and for gradient descent")] = 65_536,
    eval_episodes: Annotated[int, typer.Option(parser=int_option(1, 1000), help="held-out evaluation episodes per "
                                               "method")] = 3,
    results_dir: ResultsDirOpt = None,
    tracking_uri: TrackingUriOpt = None,
    json_out: ui.JsonOpt = False,
    wide: ui.WideOpt = False,
) -> None:
    """The main job: PPO and the article's gradient descent on one budget, compared with the oracle.

    Trains PPO on the default scenario, runs gradient descent with the same budget of measurement
    windows, evaluates both and static-default on held-out seeds, and compares them with the oracle,
    all tracked in the results directory's MLflow store."""
    from vvho.config import check_tracking_uri
    from vvho.options import OptionError

    if tracking_uri is not None:
        try:
            check_tracking_uri(tracking_uri)
        except ValueError as exc:
            raise OptionError(f"--tracking-uri {tracking_uri}: {exc}") from None
    p = writable(paths(results_dir))
    with ui.phase("loading torch, stable-baselines3 and MLflow"):
        from vvho.mission import run_mission
        ui.quiet_libraries()
    flag = "" if p == paths(None) else f" --results-dir {p.root}"
    training: dict[str, str] = {}

    def on_start(run_id: str, name: str) -> None:
        training["id"] = run_id
        ui.info(f"PPO training run {run_id} ({name}); follow it with: vvho runs show {run_id[:8]}{flag}")

    with ui.Progress("PPO training", steps) as bar:
        def report(pr: TrainProgress) -> None:
            bar.update(pr.steps, f"{pr.steps_per_s:,.0f} steps/s"
                       + (f", eval J {pr.eval_objective:.3f}" if pr.eval_objective is not None else ""))

        try:
            with ui.heartbeat("main job"):
                rows = run_mission(seed=seed, steps=steps, eval_episodes=eval_episodes, tracking_uri=tracking_uri,
                                   console=ui.stderr(), paths=p, progress=report, on_start=on_start)
        except KeyboardInterrupt:
            hint = (f" The PPO run is checkpointed; continue it with: vvho train --resume {training['id']}{flag}"
                    if "id" in training else "")
            ui.info("interrupted." + hint)
            raise typer.Exit(130) from None
    oracle = rows["oracle"]
    if json_out:
        ui.emit_json({"methods": rows, "ratio_to_oracle": {
            name: {k: _ratio(m[k], oracle[k]) for k, _, _ in METRICS} for name, m in rows.items()}})
        return
    table = []
    for name, m in rows.items():
        beats = name != "oracle" and m["objective"] < oracle["objective"]
        table.append([name + (" *" if beats else ""),
                      *(ui.fmt(100 * m[k] if k == "slo_violation_frac" else m[k], f) for k, _, f in METRICS),
                      *(ui.fmt(_ratio(m[k], oracle[k]), ".2f") for k, _, _ in METRICS)])
    ui.print_table([ui.Col("method", "id"), *(ui.Col(h) for _, h, _ in METRICS),
                    *(ui.Col(f"{h} / oracle") for _, h, _ in METRICS)], table, wide=wide,
                   title="pooled over the evaluation episodes; ratio = method / oracle")
    if any(r[0].endswith(" *") for r in table):
        ui.note("* beats the oracle's objective on these seeds: the oracle is the best known setting per phase, "
                "not a proof of optimality")


def _ratio(v: float, ref: float) -> float:
    return v / ref if math.isfinite(ref) and ref > 0 and math.isfinite(v) else math.nan


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
