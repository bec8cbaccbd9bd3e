"""The tables of a compare, from its trial records: per scenario and across scenarios, every figure with
its 95% bootstrap interval (vvho.stats) and as a ratio to best-known.

Per scenario and method: mean and IQM of the episode objective J and of p99 over the trials (seeds);
J, p99 and CPU as ratios to best-known (paired by seed: every method meets the same evaluation
episodes); the probability that the method's J is lower than gradient descent's and than the best
static setting's. Across scenarios: the IQM of the normalised score J_best-known / J (1 = best-known,
higher is better) with stratified intervals, per role (training scenarios on held-out seeds, held-out
scenarios) and overall, the average probability of improvement, and performance profiles of the
normalised score. Best-known is the best any search has shown, not a physical limit: a method whose
J / best-known interval lies below 1 is flagged, never hidden.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vvho import stats as S

BEST_KNOWN = "best-known"
BEST_STATIC = "best-static"
GD = "gd-offline"
TAUS = tuple(float(t) for t in np.round(np.linspace(0.0, 1.2, 25), 3))


@dataclass
class MethodRow:
    method: str
    scenario: str
    role: str
    n: int
    J: S.Estimate
    J_iqm: S.Estimate
    p99: S.Estimate
    p99_iqm: S.Estimate
    cpu: S.Estimate
    viol: float
    J_ratio: S.Estimate  # to best-known
    p99_ratio: S.Estimate
    cpu_ratio: S.Estimate
    poi_gd: S.Estimate  # P(J lower than gradient descent's)
    poi_static: S.Estimate  # P(J lower than the best static setting's)
    budget: dict[str, float] = field(default_factory=dict)

    @property
    def beats_best_known(self) -> bool:
        return self.method != BEST_KNOWN and self.J_ratio.has_interval and self.J_ratio.hi < 1.0


@dataclass
class Aggregate:
    method: str
    score_iqm: S.Estimate
    score_iqm_train: S.Estimate
    score_iqm_held_out: S.Estimate
    poi_gd: S.Estimate
    poi_static: S.Estimate
    profile: list[S.Estimate]


@dataclass
class Tables:
    methods: list[str]
    scenarios: list[tuple[str, str]]  # (scenario id, role), in plan order
    rows: dict[tuple[str, str], MethodRow]  # (scenario, method) -> row
    aggregates: dict[str, Aggregate]


def _by_seed(records: Sequence[dict[str, Any]], metric: str) -> dict[int, float]:
    out = {}
    for r in records:
        v = r["metrics"].get(metric)
        out[int(r["trial"]["seed"])] = math.nan if v is None else float(v)
    return out


def _values(d: dict[int, float]) -> list[float]:
    return [v for _, v in sorted(d.items())]


def _paired(a: dict[int, float], b: dict[int, float]) -> tuple[list[float], list[float]]:
    common = sorted(s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s]))
    return [a[s] for s in common], [b[s] for s in common]


def _ratio(a: dict[int, float], b: dict[int, float]) -> S.Estimate:
    x, y = _paired(a, b)
    return S.ratio_of_means(x, y) if x else S.Estimate(math.nan, math.nan, math.nan)


def paired_ratio(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], metric: str) -> S.Estimate:
    """mean(a) / mean(b) of `metric` over the seeds both sets of trial records share, with its interval."""
    return _ratio(_by_seed(a, metric), _by_seed(b, metric))


def _poi(a: dict[int, float], b: dict[int, float] | None) -> S.Estimate:
    if not b:
        return S.Estimate(math.nan, math.nan, math.nan)
    x = [v for v in a.values() if math.isfinite(v)]
    y = [v for v in b.values() if math.isfinite(v)]
    return S.probability_of_improvement([(x, y)]) if x and y else S.Estimate(math.nan, math.nan, math.nan)


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def build(records: Sequence[dict[str, Any]], methods: Sequence[str]) -> Tables:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    order: dict[str, str] = {}
    for r in records:
        groups[(r["scenario"], r["trial"]["method"])].append(r)
        order.setdefault(r["scenario"], r["trial"]["role"])
    scenarios = sorted(order.items(), key=lambda kv: (kv[1] != "train", kv[0]))
    present = [m for m in methods if any((s, m) in groups for s, _ in scenarios)]
    rows: dict[tuple[str, str], MethodRow] = {}
    normalised: dict[str, dict[str, list[float]]] = defaultdict(dict)
    poi_pairs: dict[str, dict[str, list[tuple[list[float], list[float]]]]] = defaultdict(lambda: defaultdict(list))
    for sc, role in scenarios:
        bk = groups.get((sc, BEST_KNOWN), [])
        bk_j, bk_p99, bk_cpu = (_by_seed(bk, k) for k in ("objective", "p99_us", "vm_cpu"))
        gd_j = _by_seed(groups.get((sc, GD), []), "objective")
        st_j = _by_seed(groups.get((sc, BEST_STATIC), []), "objective")
        bk_mean = float(np.mean(_finite(_values(bk_j)))) if _finite(_values(bk_j)) else math.nan
        for m in present:
            recs = groups.get((sc, m), [])
            if not recs:
                continue
            j, p99, cpu = (_by_seed(recs, k) for k in ("objective", "p99_us", "vm_cpu"))
            viol = _by_seed(recs, "slo_violation_frac")
            jv, pv = _finite(_values(j)), _finite(_values(p99))
            budget = {k: float(np.mean([float(r["budget"].get(k, 0)) for r in recs]))
                      for k in sorted({k for r in recs for k in r["budget"]})}
            rows[(sc, m)] = MethodRow(
                m, sc, role, len(recs), S.estimate(jv, S.mean), S.estimate(jv, S.iqm), S.estimate(pv, S.mean),
                S.estimate(pv, S.iqm), S.estimate(_finite(_values(cpu)), S.mean),
                float(np.mean(_finite(_values(viol)))) if _finite(_values(viol)) else math.nan,
                _ratio(j, bk_j), _ratio(p99, bk_p99), _ratio(cpu, bk_cpu),
                _poi(j, gd_j if m != GD else None), _poi(j, st_j if m != BEST_STATIC else None), budget)
            if math.isfinite(bk_mean) and jv:
                normalised[m][sc] = [bk_mean / v if v > 0 else math.inf for v in jv]
            for target, ref in (("gd", gd_j), ("static", st_j)):
                x, y = _finite(list(j.values())), _finite(list(ref.values()))
                if x and y and m not in ((GD,) if target == "gd" else (BEST_STATIC,)):
                    poi_pairs[m][target].append((x, y))
    aggregates: dict[str, Aggregate] = {}
    roles = dict(scenarios)
    for m in present:
        per = normalised.get(m, {})

        def iqm_of(keep: str | None, per: dict[str, list[float]] = per) -> S.Estimate:
            strata = [v for sc, v in per.items() if keep is None or roles[sc] == keep]
            return S.stratified(strata, S.iqm) if strata else S.Estimate(math.nan, math.nan, math.nan)

        def poi_of(target: str, m: str = m) -> S.Estimate:
            pairs = poi_pairs[m][target]
            return S.probability_of_improvement(pairs) if pairs else S.Estimate(math.nan, math.nan, math.nan)

        profile = S.performance_profile(list(per.values()), TAUS) if per else []
        aggregates[m] = Aggregate(m, iqm_of(None), iqm_of("train"), iqm_of("held-out"), poi_of("gd"),
                                  poi_of("static"), profile)
    return Tables(present, scenarios, rows, aggregates)
