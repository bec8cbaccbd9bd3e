"""`vvho simulate` and `vvho calibrate`: the simulator with fixed settings, and its published figures."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer

from vvho import ui
from vvho.options import int_option
from vvho_env import knobs
from vvho_env.scenarios import DEFAULT_SCENARIO, Scenario, load_scenario
from vvho_env.types import Telemetry

MAX_STEPS = 1_000_000  # about 70 hours of simulated 0.25 s windows: enough for any look at the telemetry
SEED_MAX = 2**32 - 1

COLS = [ui.Col("step"), ui.Col("phase", "id"), ui.Col("req"), ui.Col("p50 us"), ui.Col("p99 us"),
        ui.Col("p99.9 us"), ui.Col("viol"), ui.Col("served/s"), ui.Col("VM CPU"), ui.Col("poll CPU"),
        ui.Col("thr %"), ui.Col("nb CPU"), ui.Col("nb slow"), ui.Col("J")]


def _row(step: int, phase: str, tel: Telemetry, j: float) -> list[str]:
    return [str(step), phase, f"{tel.requests:,}", ui.fmt(tel.p50_us, ",.1f"), ui.fmt(tel.p99_us, ",.1f"),
            ui.fmt(tel.p999_us, ",.1f"), f"{tel.slo_violations:,}", ui.fmt(tel.served_rps, ",.0f"),
            ui.fmt(tel.vm_cpu, ".2f"), ui.fmt(tel.polling_cpu, ".2f"), ui.fmt(100 * tel.throttled_frac, ".1f"),
            ui.fmt(tel.neighbour_cpu, ".2f"), ui.fmt(tel.neighbour_slowdown, ".2f"), ui.fmt(j)]


def _json_row(step: int, phase: str, tel: Telemetry, j: float) -> dict[str, Any]:
    d = {f.name: getattr(tel, f.name) for f in dataclasses.fields(tel) if f.name not in ("histogram", "notes")}
    return {"step": step, "phase": phase, **d, "objective": j}


def simulate_rows(scenario: str | Scenario, settings: dict[str, Any], steps: int, seed: int,
                  progress: ui.Progress | None = None) -> list[tuple[int, str, Telemetry, float]]:
    from vvho_env.objective import objective_for
    from vvho_env.sim.backend import SimBackend

    sc = load_scenario(scenario)
    if settings:  # from the start, as a guest booted with them: a restart-cost knob costs no outage here
        sc = sc.model_copy(update={"base_settings": {**sc.base_settings, **settings}})
    backend = SimBackend()
    backend.reset(seed, sc)
    objective = objective_for(sc)
    rows = []
    try:
        for step in range(steps):
            tel = backend.measure(sc.interval_s)
            rows.append((step, sc.phase_at(step)[1].name, tel, objective(tel)))
            if progress is not None:
                progress.advance()
    finally:
        backend.close()
    return rows


KnobOpt = Annotated[list[str] | None, typer.Option("--knob", "-k", help="name=value, repeatable (see `vvho knobs`)")]


def simulate(
    scenario: Annotated[str, typer.Option(help="scenario id or YAML file (see `vvho scenarios`)")] = DEFAULT_SCENARIO,
    knob: KnobOpt = None,
    steps: Annotated[int, typer.Option(parser=int_option(1, MAX_STEPS), metavar="N",
                                       help="control intervals to simulate")] = 20,
    seed: Annotated[int, typer.Option(parser=int_option(0, SEED_MAX), metavar="SEED", help="simulator seed")] = 0,
    json_out: ui.JsonOpt = False,
    wide: ui.WideOpt = False,
) -> None:
    """Run the simulator for N steps with fixed knob settings and print the telemetry per step."""
    sc = load_scenario(scenario)
    settings = dict(knobs.parse_assignment(a) for a in knob or [])
    with ui.Progress("simulate", steps) as bar:
        rows = simulate_rows(sc, settings, steps, seed, None if json_out else bar)
    if json_out:
        ui.emit_json({"scenario": sc.id, "slo_us": sc.slo_us, "host_profile": sc.host_profile,
                      "settings": settings, "steps": [_json_row(*r) for r in rows]})
        return
    ui.print_table(COLS, [_row(*r) for r in rows], wide=wide,
                   title=f"{sc.id} (SLO {sc.slo_us:g} us), host profile {sc.host_profile}, settings: "
                         f"{settings or 'scenario start settings'}")


def _published(value: Any) -> str:
    if isinstance(value, tuple | list):
        return f"{value[0]:,.6g}-{value[1]:,.6g}"
    return f"{value:,.6g}"


def _role(point: dict[str, Any], row: int) -> str:
    if row in point.get("fixture_fit_rows", ()):
        return "fixture"  # fixes a parameter of the fixture (a client share): matched by construction
    return "fit: " + ", ".join(point["fits"]) if point["role"] == "fit" else "check"


def calibrate(json_out: ui.JsonOpt = False, wide: ui.WideOpt = False) -> None:
    """Run the calibration fixtures and compare them with the published figures, each with its source and
    whether it fitted a constant of the host profile (fit) or is an independent check."""
    from vvho_env.sim import calibration as C

    with ui.heartbeat("calibration fixtures"):
        results = [(p, i, r) for p in C.load_points() for i, r in enumerate(C.rows(p))]
    if json_out:
        ui.emit_json([{"point": p["id"], "group": p["group"], "figure": r.name, "simulated": r.measured,
                       "published": r.published, "unit": r.unit, "within_20pct": r.within(),
                       "role": _role(p, i), "source": p["source"]} for p, i, r in results])
        return
    ui.print_table([ui.Col("point", "id"), ui.Col("figure", "text"), ui.Col("simulated"), ui.Col("published"),
                    ui.Col("unit", "id"), ui.Col("within 20%", "id"), ui.Col("role", "text"),
                    ui.Col("source", "text")],
                   [[p["id"], r.name, f"{r.measured:,.2f}", _published(r.published), r.unit,
                     "yes" if r.within() else "NO", _role(p, i), p["source"]] for p, i, r in results], wide=wide)


def register(app: typer.Typer) -> None:
    app.command()(simulate)
    app.command()(calibrate)
