"""Policy quality targets of issue 11, measured on a `vvho compare` of a suite (default: quick).

Runs the suite's compare (or resumes it: a compare of the same suite, methods, budgets and seeds in the
same results directory is reused trial by trial, so this can follow `make run` or `vvho compare`) and
prints each target per scenario with its figure, its 95% bootstrap interval and whether it holds:

1. on the dynamic scenarios (diurnal, bursty, flash crowd, neighbour churn, mixed) and the held-out
   variants, the best RL policy's J within 1.10x of best-known's (ratio of means, paired by seed);
2. there, that policy's p99 at most 0.75x gradient descent's (gd-offline) at no more VM CPU;
3. one suite-trained policy no worse than static-default on any scenario, held-out variants included
   (upper bound of the interval of J_policy / J_static-default at most 1).

The budget of every method (tuning windows, RL training steps) is printed first.

    .venv/bin/python benchmarks/quality.py [--suite quick|core|FILE] [--seeds N] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from typing import Any

from vvho.compare import make_plan, run_compare
from vvho.compare_tables import BEST_KNOWN, GD, paired_ratio
from vvho.stats import Estimate
from vvho.suites import SAFETY_SUFFIX, load_suite, suite_ref
from vvho_env.paths import Paths

DYNAMIC = ("diurnal", "bursty", "flash-crowd", "neighbour-churn", "mixed")
STATIC_DEFAULT = "static-default"
J_TO_BEST_KNOWN = 1.10
P99_TO_GD = 0.75


def _fmt(e: Estimate) -> str:
    return f"{e.value:.3f} [{e.lo:.3f}, {e.hi:.3f}]" if e.has_interval else f"{e.value:.3f} [no interval]"


def _verdict(ok: bool) -> str:
    return "holds" if ok else "MISSED"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="quick", help="a shipped suite (core, quick, tiny) or a suite YAML file")
    ap.add_argument("--seeds", type=int, default=None, help="trials per method and scenario [default: the suite's]")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--results-dir", default=None, help="results directory (default: $VVHO_RESULTS_DIR or ./results)")
    args = ap.parse_args()

    suite = load_suite(args.suite)
    plan = make_plan(suite, suite_ref(args.suite), seeds=args.seeds, workers=args.workers)
    result = run_compare(plan, Paths.at(args.results_dir), log=lambda m: print(f"# {m}"))
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    roles: dict[str, str] = {}
    for r in result.records:
        by[(r["scenario"], r["trial"]["method"])].append(r)
        roles[r["scenario"]] = r["trial"]["role"]
    methods = sorted({m for _, m in by})
    policies = [m for m in methods if m.removesuffix(SAFETY_SUFFIX) in plan.agents]
    print(f"suite {suite.name}: {len(roles)} scenarios x {len(plan.seeds)} seeds; compare run {result.parent_run_id}")
    for m in methods:
        spent: dict[str, float] = defaultdict(float)
        for (_, mm), recs in by.items():
            if mm == m:
                for r in recs:
                    for k, v in r["budget"].items():
                        spent[k] = max(spent[k], float(v))
        print(f"budget {m}: " + (", ".join(f"{k} {v:,.0f}" for k, v in sorted(spent.items())) or "none"))
    if not policies:
        print("no RL policy in this compare: targets not measurable")
        return

    judged = sorted(s for s, role in roles.items() if role == "held-out" or s.startswith(DYNAMIC))
    met = {1: True, 2: True}
    for sc in judged:
        bk = by.get((sc, BEST_KNOWN), [])
        gd = by.get((sc, GD), [])
        ratios = {m: paired_ratio(by[(sc, m)], bk, "objective") for m in policies if by.get((sc, m)) and bk}
        ranked = [m for m in ratios if math.isfinite(ratios[m].value)]
        if not ranked:
            print(f"target 1 J/best-known <= {J_TO_BEST_KNOWN:.2f}: {sc} ({roles[sc]}): not measurable (no best-known)")
            met[1] = False
            continue
        best = min(ranked, key=lambda m: ratios[m].value)
        ok1 = ratios[best].value <= J_TO_BEST_KNOWN
        met[1] &= ok1
        print(f"target 1 J/best-known <= {J_TO_BEST_KNOWN:.2f}: {sc} ({roles[sc]}): {best} {_fmt(ratios[best])} "
              f"{_verdict(ok1)}")
        if not gd:
            print(f"target 2 p99/GD <= {P99_TO_GD:.2f} at CPU/GD <= 1: {sc}: not measurable (no {GD})")
            met[2] = False
            continue
        p99 = paired_ratio(by[(sc, best)], gd, "p99_us")
        cpu = paired_ratio(by[(sc, best)], gd, "vm_cpu")
        ok2 = p99.value <= P99_TO_GD and cpu.value <= 1.0
        met[2] &= ok2
        print(f"target 2 p99/GD <= {P99_TO_GD:.2f} at CPU/GD <= 1: {sc} ({roles[sc]}): {best} p99 {_fmt(p99)}, "
              f"CPU {_fmt(cpu)} {_verdict(ok2)}")
    print(f"target 1 overall (best RL J within {J_TO_BEST_KNOWN:.2f}x best-known on {len(judged)} scenarios): "
          f"{_verdict(met[1])}")
    print(f"target 2 overall (best RL p99 <= {P99_TO_GD:.2f}x GD's at no more CPU on {len(judged)} scenarios): "
          f"{_verdict(met[2])}")

    # target 3: one policy, every scenario, the upper interval bound against static-default
    passing = []
    for m in policies:
        worst: tuple[str, Estimate] | None = None
        ok = True
        for sc in sorted(roles):
            ref = by.get((sc, STATIC_DEFAULT), [])
            if not (by.get((sc, m)) and ref):
                ok = False
                continue
            e = paired_ratio(by[(sc, m)], ref, "objective")
            bad = not (e.has_interval and e.hi <= 1.0)
            ok &= not bad
            if worst is None or (e.hi if e.has_interval else math.inf) > (worst[1].hi if worst[1].has_interval
                                                                           else math.inf):
                worst = (sc, e)
            print(f"target 3 J/static-default upper bound <= 1: {m} on {sc} ({roles[sc]}): {_fmt(e)} "
                  f"{_verdict(not bad)}")
        if worst is not None:
            print(f"target 3 {m}: worst scenario {worst[0]} {_fmt(worst[1])}; {_verdict(ok)} on all {len(roles)}")
        if ok:
            passing.append(m)
    print("target 3 overall (one suite-trained policy no worse than static-default anywhere): "
          + (f"holds ({', '.join(passing)})" if passing else "MISSED"))


if __name__ == "__main__":
    main()
