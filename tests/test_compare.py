"""vvho compare end to end on the tiny suite through the real CLI, the report it writes, the MLflow runs it
leaves, and resuming after a kill without redoing finished trials."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vvho.cli import app
from vvho.suites import load_suite
from vvho_env.scenarios import load_scenario

pytest.importorskip("mlflow")
runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent


def _trial_runs(db: Path) -> list[str]:
    """The trial keys of the finished child runs in a store (read with sqlite3, as a watcher would)."""
    if not db.exists():
        return []
    con = sqlite3.connect(db, timeout=30)
    try:
        rows = con.execute("select t.value from tags t join tags r on t.run_uuid = r.run_uuid join runs u on "
                           "u.run_uuid = t.run_uuid where t.key = 'compare.trial' and r.key = 'compare.role' and "
                           "r.value = 'trial' and u.status = 'FINISHED'").fetchall()
    except sqlite3.OperationalError:  # the store is still being created
        return []
    finally:
        con.close()
    return [r[0] for r in rows]


def test_tiny_suite_end_to_end(tmp_path: Path) -> None:
    import mlflow

    res = runner.invoke(app, ["compare", "--suite", "tiny", "--results-dir", str(tmp_path), "--workers", "1",
                              "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    suite = load_suite("tiny")
    methods = suite.compare.methods
    scenarios = [load_scenario(r).id for r, _ in suite.evaluation_refs()]
    assert out["records"] == len(methods) * len(scenarios) * suite.compare.seeds
    report = Path(out["report"])
    assert report == tmp_path / "tiny" / "report.md"
    text = report.read_text()
    for m in methods:
        assert f"| {m} |" in text, m  # every method in the tables
    for sc in scenarios:
        assert f"### {sc} (" in text, sc  # every scenario has its table
    for plot in ("latency_cdf", "timelines", "j_over_best_known", "cpu_vs_p99", "performance_profiles"):
        assert (report.parent / f"{plot}.png").stat().st_size > 10_000
        assert f"({plot}.png)" in text
    assert "training steps" in text and "tuning windows" in text  # budgets beside the results
    # one parent run, a child run per trial with the same metric names and tags, the RL training nested too
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("vvho-compare")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = [r for r in runs if r.data.tags.get("compare.role") == "parent"]
    trials = [r for r in runs if r.data.tags.get("compare.role") == "trial"]
    training = [r for r in runs if r.data.tags.get("compare.role") == "training"]
    assert len(parent) == 1 and len(trials) == out["records"] and len(training) == 1
    pid = parent[0].info.run_id
    assert pid == out["compare_run_id"]
    assert all(r.data.tags["mlflow.parentRunId"] == pid for r in trials + training)
    keys = ("latency/p50_us", "latency/p99_us", "latency/p999_us", "slo/violation_frac", "cpu/vm_cores",
            "objective/J")
    for r in trials:
        assert {"scenario", "method", "seed", "budget"} <= set(r.data.tags)
        assert all(k in r.data.metrics for k in keys), r.data.metrics
        assert any(k.startswith("budget/") for k in r.data.metrics)
    assert all(k in training[0].data.metrics for k in (*keys, "budget/train_steps"))
    # training carries the same tags as the trials (its budget in training steps)
    assert {"scenario", "method", "seed", "budget"} <= set(training[0].data.tags)
    assert training[0].data.tags["budget"].endswith(" train_steps")
    arts = {a.path for a in client.list_artifacts(pid, "report")}
    assert "report/report.md" in arts and "report/timelines.png" in arts


def test_a_killed_compare_resumes_without_redoing_finished_trials(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "vvho.cli", "compare", "--suite", "tiny", "--methods",
            "static-default,random,gd-offline", "--results-dir", str(tmp_path), "--workers", "1"]
    db = tmp_path / "mlflow.db"
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while len(_trial_runs(db)) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _trial_runs(db)
    suite = load_suite("tiny")
    total = 3 * len(suite.evaluation_refs()) * suite.compare.seeds
    assert 3 <= len(before) < total, len(before)
    res = subprocess.run([*args, "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"{len(before)} trials already finished are kept" in res.stderr
    after = _trial_runs(db)
    assert sorted(set(after)) == sorted(after), "a trial was run twice"
    assert len(after) == total and set(before) <= set(after)
    assert json.loads(res.stdout)["records"] == total


def test_best_known_grows_with_what_methods_held(tmp_path: Path) -> None:
    """A best-known weaker than what the methods show (here planted: a search of one minor knob, cached
    where the compare looks) is improved by the settings they held, and the references are evaluated
    again at the new version; the superseded trials stay in the store, marked."""
    from dataclasses import replace

    import mlflow

    from baselines.search import best_settings, cache_path, save
    from vvho.compare_methods import _search_config
    from vvho_env.paths import Paths

    suite = load_suite("tiny")
    cfg = _search_config(suite.compare.reference_search)
    for ref, _ in suite.evaluation_refs():
        sc = load_scenario(ref)
        weak = best_settings(sc, replace(cfg, knob_names=("ple_window",)), cache_dir=tmp_path / "weak")
        save(weak, cache_path(sc, cfg, Paths.at(tmp_path).oracle))
    methods = "static-default,random,best-known,best-static"
    res = runner.invoke(app, ["compare", "--suite", "tiny", "--methods", methods, "--results-dir", str(tmp_path),
                              "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert "improved: static J" in res.output and "a setting random (seed" in res.output
    out = json.loads(res.stdout)
    n_scenarios = len(suite.evaluation_refs())
    assert out["records"] == 4 * n_scenarios * suite.compare.seeds
    folded = [best_settings(load_scenario(ref), cfg, cache_dir=Paths.at(tmp_path).oracle)
              for ref, _ in suite.evaluation_refs()]
    assert all(f.scored for f in folded) and any(f.folded for f in folded)  # random may end where it started
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("vvho-compare").experiment_id], max_results=1000)
    roles = [r.data.tags.get("compare.role") for r in runs]
    assert roles.count("trial") == out["records"]
    superseded = [r for r in runs if r.data.tags.get("compare.role") == "superseded"]
    assert superseded and {r.data.tags["method"] for r in superseded} <= {"best-known", "best-static"}


def test_tuner_hyperparameters_are_swept_on_training_scenarios_only(tmp_path: Path) -> None:
    """compare sweeps a tuner's hyperparameters on the suite's training scenarios, counts the windows in
    every trial of the tuner (hparam_windows > 0), and never runs the sweep on a held-out scenario."""
    import mlflow

    suite = load_suite("tiny")
    res = runner.invoke(app, ["compare", "--suite", "tiny", "--methods", "static-default,random", "--seeds", "1",
                              "--results-dir", str(tmp_path), "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    assert "random: hyperparameters" in res.output and "counted in its budget" in res.output
    training = {load_scenario(r).key for r in suite.train}
    held_out = {load_scenario(r).key for r in suite.held_out.refs()}
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("vvho-compare").experiment_id], max_results=1000)
    trials = [r for r in runs if r.data.tags.get("compare.role") == "trial"]
    assert {r.data.tags["role"] for r in trials} == {"train", "held-out"}  # judged on both kinds
    for r in trials:
        if r.data.tags["method"] == "random":
            assert r.data.metrics["budget/hparam_windows"] > 0
            swept = set(r.data.tags["hparam_scenarios"].split(","))
            assert swept == training and not swept & held_out
        else:
            assert r.data.metrics.get("budget/hparam_windows", 0) == 0  # static-default has none to sweep
    caches = list((tmp_path / "baselines" / "hparams").glob("*.json"))
    assert caches  # the sweep itself records where it ran
    for c in caches:
        assert set(json.loads(c.read_text())["scenarios"]) == training
    assert "hparam windows (once, on the training scenarios)" in (tmp_path / "tiny" / "report.md").read_text()
