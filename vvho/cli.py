"""The `vvho` command line."""

from __future__ import annotations

import math
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vvho_env import knobs
from vvho_env.objective import objective_for
from vvho_env.scenarios import DEFAULT_SCENARIO, ScenarioError, catalogue, load_scenario
from vvho_env.types import ApplyRejected, Telemetry

app = typer.Typer(help="VVHO: tune virtualized hosts for low tail latency with reinforcement learning.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(width=180)


def _fail(msg: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {msg}")
    return typer.Exit(code=2)


@app.command("scenarios")
def scenarios_cmd() -> None:
    """List the scenario catalogue."""
    t = Table("id", "host profile", "SLO (us)", "phases", "steps", "description")
    for sc in catalogue().values():
        t.add_row(sc.id, sc.host_profile, f"{sc.slo_us:g}", ", ".join(p.name for p in sc.phases),
                  str(sc.episode_intervals), sc.description)
    console.print(t)


@app.command("knobs")
def knobs_cmd() -> None:
    """Show the knob registry: group, type, range, default, scope, change cost, setters."""
    t = Table("knob", "group", "type", "accepted", "default", "scope", "change", "backends")
    for k in knobs.KNOBS:
        t.add_row(k.name, k.group.value, k.kind, k.accepted(), repr(k.default), k.scope, k.change_cost.value,
                  ", ".join(k.setters))
    console.print(t)


def telemetry_table(rows: list[tuple[int, str, Telemetry, float]]) -> Table:
    t = Table("step", "phase", "req", "p50 us", "p99 us", "p99.9 us", "viol", "served/s", "VM CPU",
              "poll CPU", "thr %", "nb CPU", "nb slow", "J")
    for step, phase, tel, obj in rows:
        def f(v: float) -> str:
            return "-" if not math.isfinite(v) else f"{v:,.1f}"
        t.add_row(str(step), phase, str(tel.requests), f(tel.p50_us), f(tel.p99_us), f(tel.p999_us),
                  str(tel.slo_violations), f"{tel.served_rps:,.0f}", f"{tel.vm_cpu:.2f}", f"{tel.polling_cpu:.2f}",
                  f"{100 * tel.throttled_frac:.1f}", f"{tel.neighbour_cpu:.2f}", f"{tel.neighbour_slowdown:.2f}",
                  f"{obj:.3f}")
    return t


def simulate_rows(scenario: str, settings: dict, steps: int, seed: int) -> list[tuple[int, str, Telemetry, float]]:
    from vvho_env.sim.backend import SimBackend

    sc = load_scenario(scenario)
    backend = SimBackend()
    backend.reset(seed, sc)
    if settings:
        backend.apply(settings)
    objective = objective_for(sc)
    rows = []
    for step in range(steps):
        tel = backend.measure(sc.interval_s)
        rows.append((step, sc.phase_at(step)[1].name, tel, objective(tel)))
    backend.close()
    return rows


KnobOpt = Annotated[list[str] | None, typer.Option("--knob", "-k", help="name=value, repeatable (see `vvho knobs`)")]


@app.command()
def simulate(
    scenario: Annotated[str, typer.Option(help="scenario id (see `vvho scenarios`)")] = DEFAULT_SCENARIO,
    knob: KnobOpt = None,
    steps: Annotated[int, typer.Option(min=1, help="control intervals to simulate")] = 20,
    seed: Annotated[int, typer.Option(help="simulator seed")] = 0,
) -> None:
    """Run the simulator for N steps with fixed knob settings and print the telemetry table."""
    try:
        sc = load_scenario(scenario)
        settings = dict(knobs.parse_assignment(a) for a in knob or [])
        rows = simulate_rows(sc.id, settings, steps, seed)
    except (ScenarioError, knobs.KnobError, ApplyRejected) as exc:
        raise _fail(str(exc)) from None
    console.print(f"scenario [bold]{sc.id}[/bold] (SLO {sc.slo_us:g} us), host profile {sc.host_profile}, "
                  f"settings: {settings or 'scenario start settings'}")
    console.print(telemetry_table(rows))


@app.command()
def run(
    scenario: Annotated[str, typer.Option(help="scenario id")] = DEFAULT_SCENARIO,
    seed: Annotated[int, typer.Option(help="simulator seed")] = 0,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: results/mlflow.db)")] = None,
) -> None:
    """The main job on the embedded defaults: one episode of the default scenario on the simulator
    with the stock settings, summarised per phase and tracked in the local MLflow store."""
    from vvho.tracking import DEFAULT_URI, run_name, tracked_run

    sc = load_scenario(scenario)
    rows = simulate_rows(sc.id, {}, sc.episode_intervals, seed)
    by_phase: dict[str, list[tuple[int, str, Telemetry, float]]] = {}
    for r in rows:
        by_phase.setdefault(r[1], []).append(r)
    summary = Table("phase", "steps", "req/window", "p50 us", "p99 us", "viol %", "VM CPU", "nb slow", "J")
    for phase, rs in by_phase.items():
        tels = [r[2] for r in rs]
        req = sum(t.requests for t in tels)
        summary.add_row(phase, str(len(rs)), f"{req / len(rs):,.0f}",
                        f"{sum(t.p50_us for t in tels) / len(tels):,.1f}", f"{max(t.p99_us for t in tels):,.1f}",
                        f"{100 * sum(t.slo_violations for t in tels) / max(req, 1):.2f}",
                        f"{sum(t.vm_cpu for t in tels) / len(tels):.2f}",
                        f"{sum(t.neighbour_slowdown for t in tels) / len(tels):.2f}",
                        f"{sum(r[3] for r in rs) / len(rs):.3f}")
    console.print(f"[bold]{sc.id}[/bold]: static-default settings, {len(rows)} steps of {sc.interval_s} s")
    console.print(summary)
    mean_j = sum(r[3] for r in rows) / len(rows)
    console.print(f"mean objective J = {mean_j:.3f} (lower is better)")
    import mlflow

    with tracked_run("vvho-simulate", run_name(sc.id, "static-default", seed),
                     {"scenario": sc.id, "seed": seed, "method": "static-default", **knobs.defaults()},
                     uri=tracking_uri):
        for step, _, tel, obj in rows:
            mlflow.log_metrics({"latency/p50_us": tel.p50_us, "latency/p99_us": tel.p99_us,
                                "cpu/vm_cores": tel.vm_cpu, "neighbour/slowdown": tel.neighbour_slowdown,
                                "objective/J": obj}, step=step)
        mlflow.log_metric("objective/mean_J", mean_j)
    uri = tracking_uri or DEFAULT_URI
    console.print(f"tracked in MLflow at {uri}; open the UI with: mlflow ui --backend-store-uri {uri}")


@app.command()
def calibrate() -> None:
    """Run the calibration fixtures and compare with the published figures."""
    from vvho_env.sim import calibration as C

    t = Table("figure", "simulated", "published", "unit", "within 20%")
    results = [*C.halt_poll_tcp_rr(), *C.halt_poll_cpu_cost(), *C.vm_vs_native_ping(), *C.cfs_bandwidth_throttle(),
               C.vm_exit_cost()]
    for r in results:
        t.add_row(r.name, f"{r.measured:,.2f}", str(r.published), r.unit, "yes" if r.within() else "[red]NO[/red]")
    console.print(t)


def _mount_live() -> None:
    """The live testbed commands need libvirt-python; without it they say how to get it."""
    try:
        from vvho.cli_live import host_app, testbed_app
    except ImportError as exc:
        missing = str(exc)

        def unavailable() -> None:
            raise _fail(f"the live backend needs libvirt-python ({missing}); install it with "
                        "`make testbed-deps` (apt libvirt-dev + pkg-config, then pip install libvirt-python)")

        testbed_app = typer.Typer(help="(unavailable: libvirt-python missing)")
        host_app = typer.Typer(help="(unavailable: libvirt-python missing)")
        testbed_app.command("build")(unavailable)
        host_app.command("check")(unavailable)
    app.add_typer(testbed_app, name="testbed")
    app.add_typer(host_app, name="host")


_mount_live()

# Command modules register themselves here (each defines register(app)).
__import__("vvho.cli_agents").cli_agents.register(app)
__import__("vvho.cli_agents").cli_agents.register(app)
from vvho import cli_baselines  # noqa: E402

cli_baselines.register(app)

if __name__ == "__main__":
    app()
