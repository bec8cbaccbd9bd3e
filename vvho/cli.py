"""The `vvho` command line: the app, the one way commands are mounted, and errors as one line.

Every command module defines ``register(app)`` and is listed in ``COMMAND_MODULES``. Any ``VVHOError``
a command raises becomes one line per problem on stderr and exit code 2; a usage error (a bad option
value) is one line too; Ctrl-C exits with 130. Other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from vvho import ui
from vvho_env import knobs
from vvho_env.errors import VVHOError
from vvho_env.objective import objective_for
from vvho_env.scenarios import DEFAULT_SCENARIO, ScenarioError, load_scenario
from vvho_env.types import ApplyRejected, Telemetry

# Each defines register(app: typer.Typer).
COMMAND_MODULES = ("vvho.cli_catalogue", "vvho.cli_mission", "vvho.cli_agents", "vvho.cli_runs", "vvho.cli_compare",
                   "vvho.cli_baselines", "vvho.cli_live", "vvho.cli_deploy")


class VVHOGroup(TyperGroup):
    """Turns user errors into one line each (exit 2) and usage errors into one line (click's exit code)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except VVHOError as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                ui.error_line(line)
            raise typer.Exit(2) from None

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                                windows_expand_args=windows_expand_args, **extra)
        except typer.TyperException as exc:  # typer's click: usage errors, bad option values
            ctx = getattr(exc, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            ui.error_line(" ".join(message.split()) + where)
            code = int(getattr(exc, "exit_code", 2))
        except typer.Abort:
            ui.error_line("interrupted")
            code = 130
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=VVHOGroup, help="VVHO: tune virtualized hosts for low tail latency with reinforcement learning.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(width=180)  # the simulate and calibrate tables; they move to vvho.ui.print_table with their rework


def _fail(msg: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {msg}")
    return typer.Exit(code=2)


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
def calibrate() -> None:
    """Run the calibration fixtures and compare with the published figures."""
    from vvho_env.sim import calibration as C

    t = Table("figure", "simulated", "published", "unit", "within 20%")
    results = [*C.halt_poll_tcp_rr(), *C.halt_poll_cpu_cost(), *C.vm_vs_native_ping(), *C.cfs_bandwidth_throttle(),
               C.vm_exit_cost()]
    for r in results:
        t.add_row(r.name, f"{r.measured:,.2f}", str(r.published), r.unit, "yes" if r.within() else "[red]NO[/red]")
    console.print(t)


def mount(target: typer.Typer, module: str) -> None:
    importlib.import_module(module).register(target)


for _module in COMMAND_MODULES:
    mount(app, _module)

if __name__ == "__main__":
    app()
