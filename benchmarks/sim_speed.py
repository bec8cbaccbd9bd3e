"""Speed and fidelity of the numba simulator against the plain SimPy reference (benchmarks/simpy_model.py).

Prints, one per line: simulated requests/s of the numba engine (one env, one core), of the SimPy
reference on the same scenario phase, their ratio, env steps/s per core of the batched simulator
(64 envs), the process RSS with those 64 envs, and per case the pooled p50 / p99 of both models
(PASS when both agree within 10%). Exits 1 when a gated case disagrees.

    .venv/bin/python benchmarks/sim_speed.py            # ~1-2 minutes on 2 cores
    .venv/bin/python benchmarks/sim_speed.py --quick    # smoke run, statistics too thin to judge
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.simpy_model import run_reference
from vvho_env.histogram import N_BUCKETS, percentiles_ns
from vvho_env.knobs import KnobValue
from vvho_env.scenarios import DEFAULT_SCENARIO, Scenario, load_scenario
from vvho_env.sim.backend import BatchSim

WINDOW_S = 0.25
TOLERANCE = 0.10


@dataclass(frozen=True)
class Case:
    name: str
    phase: int  # index into the scenario's phases, held at its start
    settings: dict[str, KnobValue]
    gated: bool = True  # False: printed for information, not part of PASS/FAIL


CASES = (
    Case("night, default knobs", 0, {}),
    Case("night, halt_poll_ns=0", 0, {"halt_poll_ns": 0}),
    Case("night, vcpu_pinning=dedicated", 0, {"vcpu_pinning": "dedicated"}),
    Case("morning start, busier neighbours", 1, {}),
    Case("evening start, 18k rps (near saturation)", 3, {}),
)


def single_phase(sc: Scenario, phase: int) -> Scenario:
    """The scenario reduced to one phase held at its start (a ramp's end rate dropped), so every window
    of the numba engine sees what the SimPy reference simulates."""
    return sc.model_copy(update={"phases": (sc.phases[phase].model_copy(update={"rate_end_rps": None}),)})


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def numba_percentiles(sc: Scenario, case: Case, n_envs: int, n_windows: int) -> tuple[np.ndarray, int]:
    """Pooled p50/p99 (us) of n_envs seeds x n_windows windows, and the number of requests."""
    sim = BatchSim(n_envs)
    one = single_phase(sc, case.phase)
    for k in range(n_envs):
        sim.reset_env(k, 10_000 + k, one, case.settings)
    pooled = np.zeros(N_BUCKETS, dtype=np.int64)
    requests = 0
    for _ in range(n_windows):
        requests += sum(t.requests for t in sim.run(WINDOW_S))
        pooled += sim.H.sum(axis=0)
    return percentiles_ns(pooled, (50.0, 99.0)) / 1000.0, requests


def simpy_percentiles(sc: Scenario, case: Case, n_seeds: int,
                      n_windows: int) -> tuple[np.ndarray, int, float]:
    """Pooled p50/p99 (us), requests, and wall seconds of the SimPy reference."""
    t0 = time.perf_counter()
    lat: list[np.ndarray] = []
    for seed in range(n_seeds):
        lat.extend(run_reference(sc, case.phase, case.settings, seed, n_windows, WINDOW_S).latencies_ns)
    wall = time.perf_counter() - t0
    all_lat = np.concatenate(lat)
    return np.percentile(all_lat, [50.0, 99.0]) / 1000.0, len(all_lat), wall


def numba_single_env_rps(sc: Scenario, phase: int | None, n_windows: int) -> float:
    """Simulated requests per wall second of one env on one core (compile time excluded)."""
    sim = BatchSim(1)
    scenario = sc if phase is None else single_phase(sc, phase)
    sim.reset_env(0, 1, scenario)
    sim.run(WINDOW_S)  # compiles or loads the numba cache
    t0 = time.perf_counter()
    requests = sum(sim.run(WINDOW_S)[0].requests for _ in range(n_windows))
    return requests / (time.perf_counter() - t0)


def batched_steps_per_s(sc: Scenario, n_envs: int, n_steps: int) -> tuple[float, float, float]:
    """Env steps/s of BatchSim(n_envs) over the whole episode (envs staggered over its phases), the
    process RSS after it, and the size of the state arrays, in MB."""
    sim = BatchSim(n_envs)
    for k in range(n_envs):
        sim.reset_env(k, 20_000 + k, sc)
    sim.step_idx[:] = (np.arange(n_envs) * sc.episode_intervals) // n_envs
    sim.run(WINDOW_S)  # warm-up
    t0 = time.perf_counter()
    for _ in range(n_steps):
        sim.run(WINDOW_S)
    steps_per_s = n_envs * n_steps / (time.perf_counter() - t0)
    state_mb = sum(a.nbytes for a in (sim.S, sim.X, sim.H, sim.T, sim.R, sim.cfg, sim.prof)) / 2**20
    return steps_per_s, rss_mb(), state_mb


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default=DEFAULT_SCENARIO)
    ap.add_argument("--quick", action="store_true", help="tiny budgets (smoke test; verdicts not meaningful)")
    args = ap.parse_args()
    sc = load_scenario(args.scenario)
    simpy_seeds, simpy_windows = (1, 2) if args.quick else (8, 4)
    numba_envs, numba_windows = (4, 2) if args.quick else (64, 4)

    numba_rps = numba_single_env_rps(sc, CASES[0].phase, 8 if args.quick else 80)
    episode_rps = numba_single_env_rps(sc, None, 8 if args.quick else sc.episode_intervals)
    steps, rss, state_mb = batched_steps_per_s(sc, 64, 2 if args.quick else 12)

    rows = []
    simpy_rps = float("nan")
    for case in CASES:
        nb_pct, _ = numba_percentiles(sc, case, numba_envs, numba_windows)
        sp_pct, sp_requests, sp_wall = simpy_percentiles(sc, case, simpy_seeds, simpy_windows)
        if case is CASES[0]:
            simpy_rps = sp_requests / sp_wall
        rows.append((case, nb_pct, sp_pct))

    print(f"numba requests/s, 1 env on 1 core ({sc.id} / {sc.phases[CASES[0].phase].name}): {numba_rps:,.0f}"
          f"  (whole episode: {episode_rps:,.0f})")
    print(f"simpy reference requests/s (same phase): {simpy_rps:,.0f}")
    print(f"speed ratio numba/simpy: {numba_rps / simpy_rps:.0f}x  (target >= 50x, aim 200x)")
    print(f"batched env steps/s per core (BatchSim, 64 envs, {WINDOW_S} s windows): {steps:,.0f}"
          f"  (= {steps * 10_000 * WINDOW_S / 1e6:.1f}M simulated requests/s at 10k rps)")
    print(f"RSS with 64 envs: {rss:.0f} MB  (target < 500 MB; state arrays {state_mb:.0f} MB)")
    failed = False
    for case, nb_pct, sp_pct in rows:
        rel = (sp_pct - nb_pct) / nb_pct
        ok = bool(np.all(np.abs(rel) <= TOLERANCE))
        if case.gated:
            verdict = "PASS" if ok else "FAIL"
        else:
            verdict = "info: within 10%" if ok else "info: >10% apart"
        failed |= case.gated and not ok
        print(f"agreement [{case.name}]: p50 numba {nb_pct[0]:.1f} us / simpy {sp_pct[0]:.1f} us"
              f" ({rel[0]:+.1%}), p99 numba {nb_pct[1]:.1f} us / simpy {sp_pct[1]:.1f} us"
              f" ({rel[1]:+.1%}): {verdict}")
    print(f"statistical agreement (p50 and p99 within {TOLERANCE:.0%}): {'FAIL' if failed else 'PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
