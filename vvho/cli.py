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
    """Show the knob registry: group, type, range, default, scope, change cost, and how each backend sets
    it (the libvirt backend's text comes from its knob drivers)."""
    from vvho_env.live import drivers

    live = drivers.setters()
    t = Table("knob", "group", "type", "accepted", "default", "scope", "change", f"{drivers.BACKEND} sets it by")
    for k in knobs.KNOBS:
        t.add_row(k.name, k.group.value, k.kind, k.accepted(), repr(k.default), k.scope, k.change_cost.value,
                  live.get(k.name, "- (simulator only)"))
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
    seed: Annotated[int, typer.Option(help="seed of training, tuning and the evaluation seeds")] = 0,
    steps: Annotated[int, typer.Option(min=1, help="measurement windows (env steps) for PPO and for gradient descent")]
    = 65_536,
    eval_episodes: Annotated[int, typer.Option(min=1, help="held-out evaluation episodes per method")] = 3,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default: results/mlflow.db)")] = None,
) -> None:
    """The main job on the embedded defaults: train PPO on the default scenario, run the article's
    gradient descent with the same budget, evaluate both and static-default on held-out seeds, and
    compare them with the oracle, all tracked in the local MLflow store."""
    from vvho.mission import run_mission

    run_mission(seed=seed, steps=steps, eval_episodes=eval_episodes, tracking_uri=tracking_uri, console=console)


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
from vvho import cli_baselines, cli_deploy  # noqa: E402

cli_baselines.register(app)
cli_deploy.register(app)

if __name__ == "__main__":
    app()
