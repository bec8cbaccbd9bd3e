"""Terminal output for every command: tables that fit, progress that keeps talking, JSON for scripts.

- Results go to stdout (a table, or JSON with ``--json``); notes, warnings, progress and errors go to
  stderr, so ``vvho ... --json | jq`` always sees clean JSON.
- Widths follow the terminal (``COLUMNS`` is respected; 80 when output is not a terminal). A table
  that does not fit is split into several, each repeating the key column, so no number is cut;
  ``--wide`` prints one table regardless.
- Long work reports at least every ``HEARTBEAT_S`` seconds (twice that where a stage is silent): a
  live bar or spinner on a terminal, a plain line per interval otherwise (logs, CI, pipes).
- Third-party chatter (MLflow's INFO lines and download bars) is turned off by ``quiet_libraries``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

HEARTBEAT_S = 5.0

JsonOpt = Annotated[bool, typer.Option("--json", help="print the results as JSON on stdout (notes go to stderr)")]
WideOpt = Annotated[bool, typer.Option("--wide", help="one table however wide, instead of splitting it to fit")]


class _Stamped:
    """stderr that records when it was last written to, so that a heartbeat speaks only into silence."""

    last_write = time.monotonic()

    def write(self, text: str) -> int:
        _Stamped.last_write = time.monotonic()
        return sys.stderr.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding: those of the real stderr
        return getattr(sys.stderr, name)


def stdout() -> Console:
    # built per call: COLUMNS and the streams may change between commands (tests, wrappers)
    return Console(highlight=False)


def stderr() -> Console:
    return Console(file=_Stamped(), highlight=False)  # type: ignore[arg-type]


def result(text: str) -> None:
    """A line of results on stdout, as given: no markup, no highlighting, not wrapped (paths and ids stay whole)."""
    stdout().print(text, soft_wrap=True, markup=False)


def note(message: str) -> None:
    stderr().print(f"[dim]{escape(message)}[/dim]", soft_wrap=True)


def info(message: str) -> None:
    """A line the user should read (run ids, where results went, what to run next); on stderr."""
    stderr().print(escape(message), soft_wrap=True)


def warn(message: str) -> None:
    stderr().print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)


def error_line(message: str) -> None:
    stderr().print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)


# -- JSON ------------------------------------------------------------------------------------------

def plain(value: Any) -> Any:
    """A value JSON can hold: containers recursively, paths as text, numpy scalars as Python, NaN/inf as None."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(plain(data), indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


# -- tables ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Col:
    """A table column: 'num' (right-aligned, never wrapped), 'id' (left-aligned, never wrapped: names
    and ids) or 'text' (left-aligned, wraps at spaces into the width that is left)."""

    header: str
    kind: str = "num"


TEXT_MIN = 24  # a text column narrower than this goes to a table of its own rather than being squeezed


def fmt(value: Any, spec: str = ",.3f") -> str:
    """A number for a table: '-' for missing or not finite."""
    if value is None or isinstance(value, bool):
        return "-" if value is None else str(value)
    if isinstance(value, int | float):
        return format(value, spec) if math.isfinite(value) else "-"
    return str(value)


def _needs(cols: Sequence[Col], rows: Sequence[Sequence[str]]) -> list[int]:
    """Width each column needs: its longest cell, or for text its longest word (up to TEXT_MIN)."""
    out = []
    for i, c in enumerate(cols):
        cells = [c.header, *(r[i] for r in rows)]
        if c.kind == "text":
            words = [len(w) for cell in cells for w in cell.split()]
            out.append(min(max(words, default=1), TEXT_MIN))
        else:
            out.append(max(len(line) for cell in cells for line in (cell.splitlines() or [""])))
    return out


def _chunks(needs: list[int], key: int, width: int) -> list[list[int]]:
    """Column indices per table: the key columns in each, the others packed left to right."""
    base = sum(needs[:key]) + 2 * key
    chunks: list[list[int]] = []
    current: list[int] = []
    used = base
    for i in range(key, len(needs)):
        cost = needs[i] + 2
        if current and used + cost > width:
            chunks.append(current)
            current, used = [], base
        current.append(i)
        used += cost
    if current or not chunks:
        chunks.append(current)
    return [list(range(key)) + c for c in chunks]


def _natural(cols: Sequence[Col], rows: Sequence[Sequence[str]], i: int) -> int:
    return max(len(line) for cell in [cols[i].header, *(r[i] for r in rows)] for line in (cell.splitlines() or [""]))


def print_table(cols: Sequence[Col], rows: Sequence[Sequence[str]], title: str | None = None, key: int = 1,
                wide: bool = False, console: Console | None = None) -> None:
    """Print rows under cols at the console's width: split into tables that each repeat the first
    `key` columns when one does not fit (unless `wide`); text columns share the width left over."""
    con = console or stdout()
    needs = _needs(cols, rows)
    natural = [_natural(cols, rows, i) for i in range(len(cols))]
    full = sum(natural) + 2 * len(cols)
    if wide or full <= con.width:
        parts, widths = [list(range(len(cols)))], natural
        if full > con.width:
            con = Console(highlight=False, width=full + 2, file=con.file)
    else:
        parts, widths = _chunks(needs, key, con.width), list(needs)
        for idx in parts:
            text = [i for i in idx if cols[i].kind == "text"]
            spare = con.width - sum(widths[i] + 2 for i in idx)
            for n, i in enumerate(text):  # the width left over goes to the text columns
                share = spare // (len(text) - n)
                widths[i] = min(natural[i], widths[i] + share)
                spare -= widths[i] - needs[i]
    for n, idx in enumerate(parts):
        heading = title if len(parts) == 1 else f"{title + ' ' if title else ''}(table {n + 1} of {len(parts)})"
        if heading:  # a line of its own: a table title would wrap at the table's width
            con.print(escape(heading), highlight=False)  # wraps at words: a heading holds no figure to cut
        header = any(c.header for c in cols)
        t = Table(box=box.SIMPLE_HEAD if header else None, pad_edge=False, collapse_padding=True, show_header=header)
        for i in idx:
            c = cols[i]
            t.add_column(c.header, justify="right" if c.kind == "num" else "left", no_wrap=c.kind != "text",
                         min_width=widths[i], max_width=widths[i] if c.kind == "text" else None,
                         overflow="fold")
        for r in rows:
            t.add_row(*(escape(r[i]) for i in idx))
        span = sum(widths[i] + 2 for i in idx)  # a key column and one more that alone exceed the width
        (con if span <= con.width else Console(highlight=False, width=span + 2, file=con.file)).print(t)
    if len(parts) > 1:
        note(f"split into {len(parts)} tables to fit {con.width} columns; --wide prints one")


# -- progress --------------------------------------------------------------------------------------

class Progress:
    """Steps out of a total with a status text: a live bar on a terminal, a line every HEARTBEAT_S
    seconds otherwise."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.console = stderr()
        self._live: Any = None
        self._task: Any = None
        self._last_line = 0.0
        self._t0: float | None = None  # the first update: work before it (setup, other stages) is not counted
        self._steps = 0
        self._status = ""

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._live = RichProgress(TextColumn("{task.description}"), BarColumn(bar_width=None),
                                      MofNCompleteColumn(), TimeRemainingColumn(compact=True),
                                      TextColumn("{task.fields[status]}"), console=self.console, transient=False)
            self._live.start()
            self._task = self._live.add_task(self.label, total=self.total, status="", start=False)
        return self

    def update(self, steps: int, status: str = "") -> None:
        self._steps, self._status = steps, status
        if self._t0 is None:
            self._t0 = time.monotonic()
            if self._live is not None:
                self._live.start_task(self._task)
        if self._live is not None:
            self._live.update(self._task, total=self.total, completed=steps, status=status)
            return
        now = time.monotonic()
        if now - self._last_line >= HEARTBEAT_S or steps >= self.total:
            self._last_line = now
            self._print_line()

    def advance(self, status: str = "") -> None:
        self.update(self._steps + 1, status)

    def _print_line(self) -> None:
        pct = 100.0 * self._steps / self.total if self.total else 100.0
        elapsed = time.monotonic() - (self._t0 or time.monotonic())
        self.console.print(f"{self.label}: {self._steps:,}/{self.total:,} ({pct:.0f}%) after "
                           f"{_duration(elapsed)}" + (f", {self._status}" if self._status else ""),
                           soft_wrap=True, highlight=False)

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@contextlib.contextmanager
def phase(text: str) -> Iterator[None]:
    """A step without a step count (loading libraries, exporting): a spinner on a terminal; else the
    text once and a heartbeat while it lasts."""
    con = stderr()
    if con.is_terminal:
        with con.status(escape(text)):
            yield
        return
    con.print(f"{escape(text)} ...", highlight=False, soft_wrap=True)
    with heartbeat(text):
        yield


@contextlib.contextmanager
def heartbeat(text: str) -> Iterator[None]:
    """Long work whose own output may pause (a search, an export after training): a line on stderr
    whenever nothing was written to it for twice HEARTBEAT_S (progress lines come every HEARTBEAT_S,
    so the heartbeat never interleaves with them)."""
    t0 = time.monotonic()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(min(1.0, HEARTBEAT_S / 2)):
            if time.monotonic() - _Stamped.last_write >= 2 * HEARTBEAT_S:
                stderr().print(f"{escape(text)}: still working ({_duration(time.monotonic() - t0)})",
                               highlight=False, soft_wrap=True)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextlib.contextmanager
def graceful_interrupt(what: str) -> Iterator[threading.Event]:
    """The first Ctrl-C sets the event (the work stops at its next safe point, e.g. the next env step);
    a second one interrupts at once. Outside the main thread, Ctrl-C keeps its usual meaning."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        info(f"stopping {what} at the next step (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


# -- third-party output ----------------------------------------------------------------------------

def quiet_libraries() -> None:
    """MLflow's INFO lines and artifact download bars off (its warnings stay); call before MLflow
    loads (the env vars) and again after (its loggers)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
