"""The `vvho` command line: the app, the one way commands are mounted, and errors as one line.

Every command module defines ``register(app)`` and is listed in ``COMMAND_MODULES``. Any ``VVHOError``
a command raises becomes one line per problem on stderr and exit code 2; a usage error (a bad option
value) is one line too; Ctrl-C exits with 130. Other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from vvho import ui
from vvho_env.errors import VVHOError

# Each defines register(app: typer.Typer).
COMMAND_MODULES = ("vvho.cli_catalogue", "vvho.cli_sim", "vvho.cli_mission", "vvho.cli_agents", "vvho.cli_runs",
                   "vvho.cli_compare", "vvho.cli_baselines", "vvho.cli_live", "vvho.cli_deploy")


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
def mount(target: typer.Typer, module: str) -> None:
    importlib.import_module(module).register(target)


for _module in COMMAND_MODULES:
    mount(app, _module)

if __name__ == "__main__":
    app()
