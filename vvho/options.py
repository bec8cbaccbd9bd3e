"""Options shared by the commands: the results directory, the tracking store, run names and tags, seeds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from agents.config import SEED_MAX
from vvho_env.config_base import int_like
from vvho_env.errors import VVHOError
from vvho_env.paths import ENV_VAR, Paths

ResultsDirOpt = Annotated[Path | None, typer.Option(
    "--results-dir", envvar=ENV_VAR, show_envvar=True,
    help="folder for the MLflow store and its artifacts, checkpoints, bundles and caches [default: ./results]")]
TrackingUriOpt = Annotated[str | None, typer.Option(
    "--tracking-uri", help="MLflow tracking URI [default: the results directory's mlflow.db]")]
RunNameOpt = Annotated[str | None, typer.Option(
    "--run-name", help="name of the MLflow run [default: method.sSEED.MMDD-HHMMSS.scenario]")]
TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="key=value tag on the run (repeatable)")]
MAX_SEEDS = 1000


class OptionError(VVHOError):
    """A command-line option value that is not accepted; the message names the option."""


def int_option(lo: int, hi: int) -> Callable[[str], int]:
    """A parser for an integer option that also takes 1e5 and 100_000, within [lo, hi]."""

    def parse(text: str) -> int:
        value = int_like(text)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise typer.BadParameter(f"{text!r} not accepted; accepted: an integer in {lo:_} .. {hi:_} (1e5 and "
                                     "100_000 work)")
        return value

    return parse


def paths(results_dir: Path | None) -> Paths:
    return Paths.at(results_dir)


def writable(p: Paths) -> Paths:
    """The results directory, created; an error naming it when it cannot be."""
    try:
        p.ensure()
    except OSError as exc:
        raise OptionError(f"--results-dir {p.root}: cannot create it ({exc.strerror or exc}); accepted: a "
                          "writable folder") from None
    if not p.root.is_dir():
        raise OptionError(f"--results-dir {p.root}: not a folder; accepted: a writable folder")
    return p


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    """'1,2,3', '1-5' or a mix; distinct integers in 0 .. 2**32 - 1."""
    accepted = f"accepted: 1,2,3 or 1-5 or a mix, distinct integers in 0 .. {SEED_MAX}, at most {MAX_SEEDS}"
    seeds: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise OptionError(f"{option} {text!r}: {part!r} is not a seed or a range; {accepted}") from None
        if not (0 <= a <= SEED_MAX and 0 <= b <= SEED_MAX) or b < a or b - a >= MAX_SEEDS:
            raise OptionError(f"{option} {text!r}: {part!r} is out of range; {accepted}")
        seeds.extend(range(a, b + 1))
    if not seeds:
        raise OptionError(f"{option} {text!r}: no seeds given; {accepted}")
    if len(seeds) > MAX_SEEDS:
        raise OptionError(f"{option} {text!r}: {len(seeds)} seeds; {accepted}")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise OptionError(f"{option} {text!r}: seed(s) {', '.join(map(str, twice[:5]))} given twice; {accepted}")
    return seeds
