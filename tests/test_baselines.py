"""Baselines: every tuner beats static-default where that is possible, gradient descent converges,
projection/rounding properties, the oracle's search against brute force, Optuna resume after SIGKILL,
and the CLI's errors on bad input. Short scenarios and budgets: the whole file runs in minutes."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from baselines.controller import ControllerConfig, SLOController
from baselines.gradient import GDConfig, GradientDescent
from baselines.methods import MethodSpec
from baselines.oracle import PhaseScheduleController
from baselines.run import build_space, eval_seeds, evaluate, run_tuner
from baselines.search import PhaseEvaluator, SearchConfig, _grid, coordinate_search
from baselines.space import UnitSpace, project
from vvho_env import knobs
from vvho_env.env import VVHOEnv
from vvho_env.harness import SettingsController
from vvho_env.scenarios import load_scenario
from vvho_env.types import Telemetry

ROOT = Path(__file__).resolve().parents[1]
# The crowded phase of neighbour-churn alone: CPU-bound neighbours on every pCPU, so the stock settings
# (shared pCPUs, deep C-states) miss the SLO and dedicated cores / polling / weights can fix it.
CROWDED = load_scenario("neighbour-churn-v0")
CROWDED = CROWDED.model_copy(update={"id": "crowded-test-v0", "phases": (CROWDED.phases[1],)})
NUMERIC = ("vcpu_quota", "cpu_shares", "halt_poll_ns", "sched_slice_us")


def _static_default(env: VVHOEnv, seeds: list[int], steps: int) -> float:
    return evaluate(env, SettingsController(env.scenario.settings_at_start()), seeds, steps).metrics()["objective"]


@pytest.mark.parametrize("method,variant,budget", [
    ("expert", {}, 1),
    ("random", {}, 60),
    ("gd", {"estimator": "spsa"}, 60),
    ("gd", {"estimator": "fd"}, 60),
    ("gd", {"estimator": "spsa", "mode": "online"}, 40),
    ("bo", {"sampler": "tpe"}, 60),
    ("bo", {"sampler": "gp"}, 40),
    ("controller", {}, 40),
])
def test_tuner_improves_on_static_default(method: str, variant: dict, budget: int) -> None:
    env = VVHOEnv(CROWDED)
    seeds = eval_seeds(7, 1)
    base = _static_default(env, seeds, 20)
    out = run_tuner(MethodSpec.parse(method, **variant), env, build_space(env), budget, 7, seeds, 20)
    assert out.metrics["objective"] < 0.8 * base, (out.label, out.metrics["objective"], base, out.settings)


def test_oracle_improves_on_static_default() -> None:
    cfg = SearchConfig(seeds=(3,), windows=3, warmup=1, grid=3, sweeps=1, starts=("default", "latency"),
                       knob_names=("vcpu_pinning", "idle_state", "halt_poll_ns"))
    ev = PhaseEvaluator(CROWDED, cfg)
    res = coordinate_search(ev, [0], [1.0], cfg.knob_names or ())
    env = VVHOEnv(CROWDED)
    seeds = eval_seeds(5, 1)
    oracle = evaluate(env, PhaseScheduleController(CROWDED, [res.settings]), seeds, 20).metrics()["objective"]
    assert oracle < 0.8 * _static_default(env, seeds, 20)


def test_oracle_search_matches_brute_force() -> None:
    names = ("vcpu_pinning", "idle_state", "halt_poll_ns")
    cfg = SearchConfig(seeds=(11, 12), windows=3, warmup=1, grid=3, sweeps=3, tol=0.0,
                       starts=("default", "latency", "lean"), knob_names=names)
    ev = PhaseEvaluator(CROWDED, cfg)
    found = coordinate_search(ev, [0], [1.0], names)
    base = CROWDED.settings_at_start()
    grids = [sorted({*_grid(knobs.get(n), base[n], 3)}, key=str) for n in names]
    cands = [dict(base, **dict(zip(names, combo, strict=True))) for combo in itertools.product(*grids)]
    scores = ev.score(cands, [0])[:, 0]
    # common seeds make scores deterministic; "within noise" = within 5% of the brute-force optimum
    assert found.objective <= float(scores.min()) * 1.05 + 1e-9, (found.settings, cands[int(scores.argmin())])


# ------------------------------------------------------------------ gradient descent on test functions
def _drive(tuner: GradientDescent, space: UnitSpace, f, windows: int, rng: np.random.Generator) -> np.ndarray:
    tuner.start(space, windows, rng)
    for _ in range(windows):
        s = tuner.ask()
        tuner.tell(s, f(space.encode(s)))
    return space.encode(tuner.recommend())


@pytest.mark.parametrize("estimator", ["fd", "spsa"])
@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_gradient_descent_converges(estimator: str, noise: float) -> None:
    space = UnitSpace(NUMERIC, knobs.defaults())
    target = np.array([0.3, -0.4, 0.5, -0.2])
    rng = np.random.default_rng(1)

    def f(x: np.ndarray) -> float:
        return float(np.sum((x - target) ** 2) + noise * rng.standard_normal())

    cfg = GDConfig(estimator=estimator, perturb=0.1, repeats=2 if noise else 1)  # default step and caps
    x = _drive(GradientDescent(cfg), space, f, 2000 if noise else 1200, np.random.default_rng(2))
    assert np.linalg.norm(x - target) < (0.15 if noise else 0.05), x


def test_gradient_descent_projects_onto_bounds() -> None:
    space = UnitSpace(NUMERIC, knobs.defaults(), lo=(-1.0, -0.5, -1.0, -1.0), hi=(1.0, 0.0, 1.0, 1.0))
    x = _drive(GradientDescent(GDConfig(estimator="fd", step=0.3, perturb=0.1, max_move=0.3)), space,
               lambda x: float(np.sum((x - 2.0) ** 2)), 400, np.random.default_rng(0))
    assert x[1] <= 0.0 + 1e-3 and np.all(x >= space.lower - 1e-9), x


# The stationary scenario of the GD-versus-best-static check, on the knobs that matter there (C-state,
# polling, pinning): the best static setting by baselines.search on the same knobs, evaluated on the
# same seeds as gradient descent's recommendation. Measured (budget 400, seeds 0, 1, 2): J / best-static
# 1.713, 1.288, 1.200, median 1.29 (the tuner before issue 9's probe widths, SNR-aware gain and stall
# restarts: 1.418, 0.748, 2.101, median 1.42, which this test would fail).
STEADY_KNOBS = ("vcpu_pinning", "idle_state", "halt_poll_ns", "guest_haltpoll", "busy_poll_us")


def test_gradient_descent_ends_near_the_best_static_setting() -> None:
    sc = load_scenario("steady-low-v0")
    cfg = SearchConfig(seeds=(101,), windows=6, warmup=2, grid=5, sweeps=2, starts=("default",),
                       knob_names=STEADY_KNOBS)
    best = coordinate_search(PhaseEvaluator(sc, cfg), [0], [1.0], STEADY_KNOBS).settings
    env = VVHOEnv(sc, knob_names=STEADY_KNOBS)
    ratios = []
    for seed in (0, 1, 2):
        seeds = eval_seeds(seed, 2)
        ref = evaluate(env, SettingsController(best), seeds, 40).metrics()["objective"]
        out = run_tuner(MethodSpec.parse("gd", estimator="spsa"), env, build_space(env), 400, seed, seeds, 40)
        ratios.append(out.metrics["objective"] / ref)
    assert np.median(ratios) < 1.35 and max(ratios) < 1.8, ratios


# ------------------------------------------------------------------ projection / rounding properties
unit = st.floats(-5.0, 5.0, allow_nan=False)
ALL = tuple(k.name for k in knobs.KNOBS)


@settings(max_examples=200, deadline=None)
@given(st.lists(unit, min_size=len(ALL), max_size=len(ALL)))
def test_projection_and_rounding(xs: list[float]) -> None:
    space = UnitSpace(ALL, knobs.defaults())
    x = np.array(xs)
    p = project(x)
    assert np.all((p >= -1.0) & (p <= 1.0))
    assert np.array_equal(project(p), p)  # idempotent
    inside = (x >= -1.0) & (x <= 1.0)
    assert np.array_equal(p[inside], x[inside])
    s = space.decode(x)
    assert knobs.validate_settings(s) == s  # rounding gives accepted values only
    r = space.round(x)
    assert np.allclose(space.round(r), r)  # rounding is idempotent
    assert space.decode(r) == s


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([k for k in knobs.KNOBS if k.kind in ("categorical", "bool")]), st.data())
def test_discrete_probe_reaches_the_next_value(knob: knobs.Knob, data: st.DataObject) -> None:
    space = UnitSpace((knob.name,), knobs.defaults())
    i = data.draw(st.integers(0, len(knob.choices) - 2))
    x = knob.to_unit(knob.choices[i])
    assert knob.from_unit(x + float(space.min_probe[0])) == knob.choices[i + 1]


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([k for k in knobs.KNOBS if k.kind in ("categorical", "bool") or k.off is not None
                        or k.unlimited is not None]), st.floats(-1.0, 1.0))
def test_probe_of_reach_width_changes_the_applied_value(knob: knobs.Knob, x: float) -> None:
    # wherever noisy updates left the relaxed coordinate, a probe pair of half-width max(c, reach) applies
    # another value on at least one side (c >= 0.003 here): a discrete knob cannot freeze at its start value
    space = UnitSpace((knob.name,), knobs.defaults())
    w = max(0.003, float(space.reach(np.array([x]))[0]))
    v = knob.from_unit(x)
    assert knob.from_unit(min(1.0, x + w)) != v or knob.from_unit(max(-1.0, x - w)) != v


# ------------------------------------------------------------------ Optuna resume after SIGKILL
def _completed(db: Path) -> list[int]:
    try:
        with sqlite3.connect(db) as c:
            return [r[0] for r in c.execute("select number from trials where state='COMPLETE' order by number")]
    except sqlite3.Error:
        return []


def test_optuna_study_resumes_after_sigkill(tmp_path: Path) -> None:
    BUDGET = 80  # 40 trials of 2 windows: killed after 10, so the resumed run has 30 left to prove it continues
    cmd = [sys.executable, "-m", "vvho.cli", "baseline", "--method", "bo", "--scenario", "steady-low-v0",
           "--budget", str(BUDGET), "--seed", "3", "--no-tune-hparams", "--no-oracle", "--eval-steps", "2",
           "--eval-episodes", "1", "--results-dir", str(tmp_path), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    db = None
    deadline = time.time() + 120
    while time.time() < deadline:
        dbs = list(tmp_path.glob("baselines/*/optuna.db"))
        if dbs and len(_completed(dbs[0])) >= 10:
            db = dbs[0]
            break
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        time.sleep(0.05)
    assert db is not None, "the study never reached 10 trials"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _completed(db)
    assert 10 <= len(before) < BUDGET // 2, "killed too late: the study had finished"
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    after = _completed(db)
    assert after[: len(before)] == before  # old trials kept
    assert min(set(after) - set(before)) > max(before)  # numbering continues
    # the budget is spent across both attempts: the resumed run counts the completed trials' windows (2
    # each) as spent earlier, and its own windows include the settle windows the measurement protocol runs
    # after a change (counted in the budget, not scored, not stored in the study)
    out = " ".join(done.stdout.split())
    m = re.search(r"tuning windows spent: ([\d,]+) \(([\d,]+) of them settle windows after changes, not scored\) "
                  r"\(\+([\d,]+) by an earlier attempt", out)
    assert m, done.stdout
    spent, settle, earlier = (int(g.replace(",", "")) for g in m.groups())
    assert earlier == 2 * len(before)
    assert BUDGET - 2 < spent + earlier <= BUDGET  # at most one trial's windows left unspent at the end
    # every scored window of the resumed run belongs to a completed trial, but the last trial's first window
    # when the budget ends before its second
    assert 0 <= (spent - settle) - 2 * (len(after) - len(before)) < 2


# ------------------------------------------------------------------ CLI: smoke and bad input
def _cli(*args: str, tmp: Path) -> tuple[int, str]:
    from vvho.cli import app

    r = CliRunner().invoke(app, ["baseline", *args, "--results-dir", str(tmp),
                                 "--tracking-uri", f"sqlite:///{tmp}/m.db"])
    return r.exit_code, r.output


def test_cli_runs_a_tuner(tmp_path: Path) -> None:
    code, out = _cli("--method", "gd", "--estimator", "fd", "--scenario", "steady-low-v0", "--budget", "6",
                     "--no-tune-hparams", "--no-oracle", "--eval-steps", "3", "--eval-episodes", "1", tmp=tmp_path)
    assert code == 0, out
    assert "gd-fd-offline" in out and "J / static-default" in out


@pytest.mark.parametrize("args,expect", [
    (("--method", "annealing", "--scenario", "steady-low-v0", "--budget", "5"), "accepted: static-default"),
    (("--method", "gd", "--scenario", "nope-v0", "--budget", "5"), "accepted: a catalogue id"),
    (("--method", "gd", "--scenario", "steady-low-v0", "--budget", "0"),
     "Invalid value for '--budget': '0' not accepted; accepted: an integer in 1"),
    (("--method", "gd", "--scenario", "steady-low-v0", "--budget", "5", "--seed", "-1"),
     "Invalid value for '--seed': '-1' not accepted"),
    (("--method", "gd", "--scenario", "testbed-echo-v0", "--budget", "5", "--bound", "idle_state=C1:C6"),
     "cannot set it"),
    (("--method", "gd", "--scenario", "steady-low-v0", "--budget", "5", "--bound", "halt_poll_ns=zero:1"),
     "accepted"),
    (("--method", "oracle", "--scenario", "testbed-echo-v0", "--budget", "5", "--backend", "live"),
     "accepted on live"),
    (("--method", "random", "--scenario", "steady-low-v0", "--budget", "5", "--mode", "online"),
     "--mode online does not apply to random; --mode is accepted by gd only"),
    (("--method", "gd", "--scenario", "steady-low-v0", "--budget", "5", "--sampler", "gp"),
     "--sampler gp does not apply to gd; --sampler is accepted by bo only"),
    (("--method", "bo", "--scenario", "steady-low-v0", "--budget", "5", "--profile", "network-latency"),
     "--profile network-latency does not apply to bo"),
    (("--method", "expert", "--scenario", "steady-low-v0", "--budget", "5", "--estimator", "fd"),
     "--estimator fd does not apply to expert"),
])
def test_cli_bad_input(tmp_path: Path, args: tuple[str, ...], expect: str) -> None:
    code, out = _cli(*args, "--no-tune-hparams", "--no-oracle", tmp=tmp_path)
    assert code == 2, out
    assert expect in out, out


@pytest.mark.parametrize("args,expect", [
    (("--tune-hparams-on", "steady-low-v0"), "--tune-hparams-on: steady-low-v0 is the evaluation scenario"),
    (("--tune-hparams-on", "flash-crowd-v0,steady-low-v0"), "--tune-hparams-on: steady-low-v0 is the evaluation"),
    (("--tune-hparams",), "--tune-hparams: name the training scenarios to sweep on with --tune-hparams-on"),
    (("--tune-hparams-on", "flash-crowd-v0", "--no-tune-hparams"), "contradict each other"),
])
def test_cli_never_tunes_hyperparameters_on_the_evaluation_scenario(tmp_path: Path, args: tuple[str, ...],
                                                                    expect: str) -> None:
    code, out = _cli("--method", "random", "--scenario", "steady-low-v0", "--budget", "4", "--no-oracle", *args,
                     tmp=tmp_path)
    assert code == 2, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and expect in lines[0], out  # one line, naming the option
    assert not (tmp_path / "baselines" / "hparams").exists()  # refused before any sweep


def test_cli_sweeps_hyperparameters_on_the_training_scenario_and_counts_them(tmp_path: Path) -> None:
    code, out = _cli("--method", "random", "--scenario", "steady-low-v0", "--budget", "4", "--no-oracle",
                     "--eval-steps", "2", "--eval-episodes", "1", "--tune-hparams-on", "flash-crowd-v0", "--json",
                     tmp=tmp_path)
    assert code == 0, out
    lines = out.splitlines()
    d = json.loads("\n".join(lines[next(i for i, ln in enumerate(lines) if ln.startswith("{")):]))
    assert d["windows"]["hyperparameters"] > 0
    assert d["hyperparameter_scenarios"] == [load_scenario("flash-crowd-v0").key]
    assert d["hyperparameter_source"].startswith("sweep on training scenario(s) flash-crowd-v0")
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/m.db")
    run = client.get_run(d["run_id"])
    assert run.data.metrics["budget/hparam_windows"] == d["windows"]["hyperparameters"]
    code, out = _cli("--method", "random", "--scenario", "steady-low-v0", "--budget", "4", "--no-oracle",
                     "--eval-steps", "2", "--eval-episodes", "1", "--tune-hparams-on", "flash-crowd-v0",
                     tmp=tmp_path)
    assert code == 0, out
    assert "hyperparameter sweep:" in out and "(cached: spent earlier, not now)" in out
    assert f"+ {d['windows']['hyperparameters']:,} hp" in out  # the sweep's windows beside the result


def test_sweep_refuses_the_evaluation_scenario_by_content() -> None:
    from baselines.hparams import HParamError, sweep
    from baselines.methods import MethodSpec

    sc = load_scenario("steady-low-v0")
    with pytest.raises(HParamError, match="is the evaluation scenario"):
        sweep(MethodSpec.parse("random"), [sc], 4, 2, evaluation=[load_scenario("steady-low-v0")], use_cache=False)


def test_refinement_off_the_grid_improves_the_search() -> None:
    """Refinement only accepts improvements of the swept incumbent, so it is never worse; on steady-low-v0
    the halt-polling optimum lies between grid points (measured: J 0.182 on the 3-point grid, 0.157 with
    two refinement rounds, halt_poll_ns 59,530 -> 43,970)."""
    sc = load_scenario("steady-low-v0")
    names = ("halt_poll_ns", "rx_usecs", "vcpu_quota")
    found = {}
    for refine in (0, 2):
        cfg = SearchConfig(seeds=(3,), windows=3, warmup=1, grid=3, sweeps=1, starts=("default",),
                           knob_names=names, refine=refine)
        found[refine] = coordinate_search(PhaseEvaluator(sc, cfg), [0], [1.0], names)
    assert found[2].objective < 0.95 * found[0].objective
    assert found[2].settings["halt_poll_ns"] != found[0].settings["halt_poll_ns"]


# ------------------------------------------------------------------ the SLO feedback controller
def _window(p99_us: float, throttled: float, vm_cpu: float = 0.5, polling: float = 0.0) -> Telemetry:
    return Telemetry(window_s=0.25, requests=1000, p50_us=p99_us / 4, p99_us=p99_us, p999_us=p99_us, mean_us=p99_us / 3,
                     slo_us=2000, slo_violations=0, offered_rps=4000, served_rps=4000, vm_cpu=vm_cpu,
                     polling_cpu=polling, reserved_cores=0, throttled_frac=throttled, neighbour_cpu=0,
                     neighbour_slowdown=0)


def test_controller_raises_quota_over_the_slo_and_lowers_it_with_headroom() -> None:
    space = UnitSpace(("vcpu_quota", "idle_state"), dict(knobs.defaults(), vcpu_quota=40_000, idle_state="C1"))
    ctl = SLOController(ControllerConfig(up=1.5, down=0.9, slack=0.5, hold=2))
    ctl.start(space, 100, np.random.default_rng(0))
    ctl.tell(ctl.ask(), 1.0, _window(p99_us=5000, throttled=0.3))  # over the SLO while throttled
    assert ctl.ask()["vcpu_quota"] == 60_000
    for _ in range(2):  # the hold after an action: no second move before the first one is measured
        ctl.tell(ctl.ask(), 1.0, _window(p99_us=5000, throttled=0.3))
    assert ctl.ask()["vcpu_quota"] == 60_000
    ctl.tell(ctl.ask(), 1.0, _window(p99_us=5000, throttled=0.3))
    assert ctl.ask()["vcpu_quota"] == 90_000
    for _ in range(4):  # p99 a fifth of the SLO, not throttled: headroom
        ctl.tell(ctl.ask(), 0.1, _window(p99_us=400, throttled=0.0))
    assert ctl.ask()["vcpu_quota"] == 81_000
    for _ in range(30):  # more headroom: down to one step above the quota that was throttled, no sawtooth
        ctl.tell(ctl.ask(), 0.1, _window(p99_us=400, throttled=0.0))
    assert ctl.ask()["vcpu_quota"] == int(60_000 / 0.9)
    unlimited = SLOController(ControllerConfig(margin=0.3, hold=1))
    unlimited.start(UnitSpace(("vcpu_quota",), dict(knobs.defaults(), vcpu_count=2)), 10, np.random.default_rng(0))
    unlimited.tell(unlimited.ask(), 0.1, _window(p99_us=300, throttled=0.0, vm_cpu=0.5))
    assert unlimited.ask()["vcpu_quota"] == int(0.5 / 2 * 100_000 * 1.3)  # what it used per vCPU, plus margin


def test_controller_runs_through_the_harness_and_frees_a_starved_vm() -> None:
    sc = load_scenario("quota-tight-v0")
    high = sc.model_copy(update={"id": "quota-high-test-v0", "phases": (sc.phases[1],)})
    env = VVHOEnv(high)
    seeds = eval_seeds(2, 1)
    base = _static_default(env, seeds, 20)
    out = run_tuner(MethodSpec.parse("controller"), env, build_space(env), 40, 2, seeds, 20)
    assert out.settings["vcpu_quota"] == -1 or out.settings["vcpu_quota"] > high.settings_at_start()["vcpu_quota"]
    assert out.metrics["objective"] < 0.8 * base, (out.metrics["objective"], base, out.settings)
