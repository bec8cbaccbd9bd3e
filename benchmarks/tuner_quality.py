"""Tuner quality targets of issue 9: are the classic tuners, the article's gradient descent first, at their best?

1. Stationary problems: every phase of every catalogue scenario (host profile xeon-kvm) on its own, as a
   single-phase scenario. Each tuner tunes for BUDGET windows (settle windows included) on a tuning
   episode and is evaluated on a held-out episode; the figure is the median over the tuning seeds of
   J_tuner / J_best-static, where best-static is the best single setting the best-known search of record
   found for that problem (vvho.compare_methods, level full), evaluated on the same held-out episode.
   Targets: gradient descent (SPSA and FD, offline) <= 1.15x at budget 400 and <= 1.05x at 2,000; BO,
   random search and the feedback controller printed beside it.
2. Dynamic scenarios (diurnal, bursty, flash crowd, neighbour churn, mixed): no tuner's recommendation
   worse than static-default beyond its 95% interval (J_tuner / J_static-default, paired by seed).
3. No method beats best-known beyond its 95% interval on any of those scenarios.

Every trial goes through the compare's adapter (vvho.compare_methods.run_tuner_trial), so it meets the
same measurement protocol, seeds and budgets as `vvho compare`. Results are cached per trial under
--results-dir (bench/tuner_quality), so a killed run resumes.

    .venv/bin/python benchmarks/tuner_quality.py                        # everything (hours on 2 cores)
    .venv/bin/python benchmarks/tuner_quality.py --budgets 400 --seeds 3 --scenarios steady-low-v0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GD_METHODS = ("gd-offline", "gd-fd-offline")
OTHERS = ("bo", "random", "controller")
DYNAMIC = ("diurnal", "bursty", "flash-crowd", "neighbour-churn", "mixed")
TARGET = {400: 1.15, 2000: 1.05}


def _single_phase(sid: str, phase: int) -> Any:
    from vvho_env.scenarios import load_scenario

    sc = load_scenario(sid)
    ph = sc.phases[phase]
    return sc.model_copy(update={"id": f"{sc.id}.{ph.name}", "phases": (ph,)})


def distinct_phases(sc: Any) -> list[int]:
    """Indices of the phases that are distinct problems (steady-low-v0's two phases are one)."""
    seen, out = [], []
    for i, ph in enumerate(sc.phases):
        conditions = ph.model_dump(exclude={"name", "intervals"})
        if conditions not in seen:
            seen.append(conditions)
            out.append(i)
    return out


def _trial(job: tuple[str, int | None, str, int, int, str]) -> dict[str, Any]:
    """One (scenario, phase or None, method, seed, budget) trial: its evaluation J, p99 and budget."""
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from vvho.compare_methods import run_tuner_trial
    from vvho_env.paths import Paths
    from vvho_env.scenarios import load_scenario

    sid, phase, method, seed, budget, results = job
    sc = load_scenario(sid) if phase is None else _single_phase(sid, phase)
    out = run_tuner_trial(method, sc, seed, max(budget, 1), Paths.at(results), "full")
    m = out.evaluation.metrics()
    return {"J": m["objective"], "p99_us": m["p99_us"], "budget": out.budget}


def _cached(job: tuple, folder: Path) -> Path:
    from vvho_env import SIM_HASH

    key = hashlib.sha256(json.dumps([*job[:5], SIM_HASH]).encode()).hexdigest()[:20]
    return folder / f"{key}.json"


def run_all(jobs: list[tuple], folder: Path, workers: int) -> dict[tuple, dict[str, Any]]:
    folder.mkdir(parents=True, exist_ok=True)
    out, todo = {}, []
    for j in jobs:
        p = _cached(j, folder)
        if p.exists():
            out[j[:5]] = json.loads(p.read_text())
        else:
            todo.append(j)
    print(f"{len(jobs)} trials, {len(jobs) - len(todo)} cached, {len(todo)} to run on {workers} workers",
          flush=True)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for j, r in zip(todo, pool.map(_trial, todo), strict=True):
            _cached(j, folder).write_text(json.dumps(r))
            out[j[:5]] = r
    return out


def main() -> None:
    from vvho.compare_methods import available_tuners
    from vvho.stats import ratio_of_means
    from vvho_env.paths import Paths
    from vvho_env.scenarios import catalogue

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budgets", default="400,2000")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--scenarios", default="", help="comma-separated catalogue ids (default: all xeon-kvm)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--results-dir", type=Path, default=None)
    args = ap.parse_args()
    results = str(Paths.at(args.results_dir).root)
    budgets = [int(b) for b in args.budgets.split(",")]
    seeds = list(range(args.seeds))
    cat = {k: v for k, v in catalogue().items() if v.host_profile == "xeon-kvm"}
    ids = [s for s in args.scenarios.split(",") if s] or list(cat)
    avail = set(available_tuners())
    tuners = [m for m in (*GD_METHODS, *OTHERS) if m in avail]
    missing = [m for m in OTHERS if m not in avail]
    folder = Paths.at(args.results_dir).root / "bench" / "tuner_quality"

    # 1. stationary problems
    problems = [(sid, p) for sid in ids for p in distinct_phases(cat[sid])]
    jobs = [(sid, p, m, s, b, results) for sid, p in problems for m in tuners for s in seeds for b in budgets]
    jobs += [(sid, p, "best-static", s, 0, results) for sid, p in problems for s in seeds]  # spends no windows
    got = run_all(jobs, folder, args.workers)
    print(f"\n1. stationary problems: median over {len(seeds)} tuning seeds of J / J_best-static "
          f"(held-out episodes){'; not provided: ' + ', '.join(missing) if missing else ''}")
    head = f"{'problem':<34}" + "".join(f"{m + ' @' + str(b):>22}" for b in budgets for m in tuners)
    print(head)
    fails: dict[str, list[str]] = defaultdict(list)
    settle: dict[str, list[float]] = defaultdict(list)
    for sid in ids:
        for p in distinct_phases(cat[sid]):
            ph = cat[sid].phases[p]
            cells = []
            for b in budgets:
                for m in tuners:
                    r = [got[(sid, p, m, s, b)]["J"] / got[(sid, p, "best-static", s, 0)]["J"] for s in seeds]
                    med = float(np.median(r))
                    settle[f"{m} @{b}"].append(np.mean([got[(sid, p, m, s, b)]["budget"].get("settle_windows", 0)
                                                        for s in seeds]))
                    ok = "" if m not in GD_METHODS else (" ok" if med <= TARGET.get(b, math.inf) else " MISS")
                    if ok == " MISS":
                        fails[f"{m} @{b}"].append(f"{sid}.{ph.name} {med:.2f}")
                    cells.append(f"{med:.2f}{ok}")
            print(f"{sid + '.' + ph.name:<34}" + "".join(f"{c:>22}" for c in cells))
    print("settle windows per trial (mean over problems, counted in the budget): "
          + ", ".join(f"{k} {np.mean(v):.0f}" for k, v in settle.items()))
    for b in budgets:
        if b in TARGET:
            print(f"target: gradient descent (SPSA, FD) <= {TARGET[b]:.2f}x best-static at budget {b}")
    for k, v in fails.items():
        print(f"  MISS {k}: {', '.join(v)}")
    if not fails:
        print("  every gradient-descent row meets its target")

    # 2-3. dynamic scenarios
    dyn = [sid for sid in ids if any(sid.startswith(d) for d in DYNAMIC)]
    if not dyn:
        return
    b0 = budgets[0]
    jobs = [(sid, None, m, s, b0, results) for sid in dyn for m in (*tuners, "static-default", "best-known")
            for s in seeds]
    got = run_all(jobs, folder, args.workers)
    print(f"\n2-3. dynamic scenarios at budget {b0}: J / J_static-default and J / J_best-known "
          "(ratio of means over seeds, 95% interval)")
    bad = []
    for sid in dyn:
        for m in tuners:
            j = [got[(sid, None, m, s, b0)]["J"] for s in seeds]
            sd = ratio_of_means(j, [got[(sid, None, "static-default", s, b0)]["J"] for s in seeds])
            bk = ratio_of_means(j, [got[(sid, None, "best-known", s, b0)]["J"] for s in seeds])
            worse = sd.lo > 1.0
            beats = bk.hi < 1.0
            if worse or beats:
                bad.append(f"{sid} {m}: " + ("worse than static-default " if worse else "") +
                           ("beats best-known" if beats else ""))
            print(f"{sid:<24}{m:<16} / static-default {sd.value:.2f} [{sd.lo:.2f}, {sd.hi:.2f}]"
                  f"   / best-known {bk.value:.2f} [{bk.lo:.2f}, {bk.hi:.2f}]")
    print("targets: no tuner worse than static-default beyond its interval; none beats best-known beyond it: "
          + ("hold" if not bad else "MISS: " + "; ".join(bad)))


if __name__ == "__main__":
    main()
