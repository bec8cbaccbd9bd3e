"""Terminal output helpers: tables that fit without cutting a value, heartbeats into silence, JSON."""

from __future__ import annotations

import io
import json
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from vvho import ui

CELL = st.one_of(st.floats(-1e9, 1e9, allow_nan=False).map(lambda v: ui.fmt(v, ",.3f")),
                 st.from_regex(r"[a-z][a-z0-9_.-]{0,30}", fullmatch=True))


@settings(max_examples=60, deadline=None)
@given(width=st.integers(40, 200), n_cols=st.integers(2, 14), rows=st.lists(st.lists(CELL, min_size=14, max_size=14),
                                                                              min_size=1, max_size=5))
def test_tables_fit_the_width_and_keep_every_value_whole(width: int, n_cols: int, rows: list[list[str]]) -> None:
    cols = [ui.Col("name", "id"), *(ui.Col(f"metric {i}") for i in range(1, n_cols))]
    body = [r[:n_cols] for r in rows]
    buf = io.StringIO()
    ui.print_table(cols, body, console=Console(file=buf, width=width, highlight=False))
    out = buf.getvalue()
    lines = out.splitlines()
    needed = max(len(c) for r in body for c in r)
    if needed + 2 <= width - max(len(r[0]) for r in body) - 2:  # a key column and one more fit side by side
        assert max(len(line) for line in lines) <= width
    for r in body:
        for cell in r:
            assert cell in out  # never wrapped or cut
    if sum(max(len(r[i]) for r in body) + 2 for i in range(n_cols)) > width:
        assert out.count(body[0][0]) >= 2  # split: the key column repeats in every table


def test_wide_prints_one_table() -> None:
    buf = io.StringIO()
    cols = [ui.Col("k", "id"), *(ui.Col(f"column number {i}") for i in range(12))]
    ui.print_table(cols, [["row", *(f"{i * 1e6:,.1f}" for i in range(12))]], wide=True,
                   console=Console(file=buf, width=60, highlight=False))
    assert buf.getvalue().count("row") == 1


def test_text_columns_wrap_into_what_is_left() -> None:
    buf = io.StringIO()
    text = "a long description " * 10
    ui.print_table([ui.Col("id", "id"), ui.Col("n"), ui.Col("description", "text")],
                   [["scenario-one-v0", "12", text]], console=Console(file=buf, width=60, highlight=False))
    lines = buf.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 60 and "scenario-one-v0" in buf.getvalue()
    assert sum("description" in line for line in lines) >= 3  # wrapped, in one table


def test_json_has_no_nan(capsys: pytest.CaptureFixture[str]) -> None:
    ui.emit_json({"a": math.nan, "b": [math.inf, 1.5], "c": None})
    assert json.loads(capsys.readouterr().out) == {"a": None, "b": [None, 1.5], "c": None}


def test_heartbeat_speaks_only_into_silence(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(ui, "HEARTBEAT_S", 0.1)
    with ui.heartbeat("searching"):
        time.sleep(1.0)
    assert "searching: still working" in capsys.readouterr().err
    with ui.heartbeat("busy"):
        for _ in range(10):
            ui.note("output of its own")
            time.sleep(0.05)
    assert "busy: still working" not in capsys.readouterr().err


def test_progress_lines_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(ui, "HEARTBEAT_S", 0.0)
    with ui.Progress("train", 10) as bar:
        for n in range(1, 11):
            bar.update(n, f"{n} done")
    err = capsys.readouterr().err
    assert "train: 10/10 (100%)" in err and "10 done" in err
