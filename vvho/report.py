"""The report of a compare: ``<results>/<suite>/report.md`` with the tables, and PNG plots beside it.

Plots: latency CDF per scenario (pooled histograms of every trial of a method), latency and knob
timelines of one dynamic scenario for each method, J / best-known per scenario with 95% intervals,
CPU against p99, and performance profiles of the normalised score.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vvho import stats as S
from vvho.compare_tables import BEST_KNOWN, TAUS, Tables, build
from vvho_env.histogram import N_BUCKETS, bucket_value_ns
from vvho_env.provenance import git_commit

if TYPE_CHECKING:
    from vvho.compare import CompareResult

CAVEAT = ("best-known is the best settings per phase any search has shown (it knows the phase schedule, "
          "which no method does); it is not a physical limit")
DYNAMIC = ("diurnal-noisy-v1", "mixed-v1", "flash-crowd-v0", "neighbour-churn-v0", "bursty-mmpp-v0")


def fmt_est(e: S.Estimate, spec: str = ".3f") -> str:
    if not math.isfinite(e.value):
        return "-"
    if not e.has_interval:
        return format(e.value, spec)
    return f"{format(e.value, spec)} [{format(e.lo, spec)}, {format(e.hi, spec)}]"


def budget_text(budget: dict[str, float]) -> str:
    """What a method spent, in the units it spends."""
    parts = []
    if budget.get("train_steps"):
        steps = budget["train_steps"]
        parts.append(f"{steps:,.0f} training steps (once, all scenarios)" if steps >= 0 else "training steps unknown")
    if "tuning_windows" in budget:
        parts.append(f"{budget['tuning_windows']:,.0f} tuning windows")
    if budget.get("settle_windows"):
        parts.append(f"{budget['settle_windows']:,.0f} settle windows")
    if "hparam_windows" in budget:  # a tuner: what its hyperparameters cost, also when nothing (its defaults)
        parts.append(f"{budget['hparam_windows']:,.0f} hparam windows (once, on the training scenarios)")
    return ", ".join(parts) or "-"


def method_budgets(tables: Tables) -> dict[str, str]:
    out = {}
    for m in tables.methods:
        rows = [r for (_, mm), r in tables.rows.items() if mm == m]
        merged: dict[str, float] = defaultdict(float)
        for r in rows:
            for k, v in r.budget.items():
                merged[k] += v / len(rows)
        out[m] = budget_text(dict(merged))
    return out


def headline_rows(tables: Tables) -> list[list[str]]:
    budgets = method_budgets(tables)
    out = []
    for m in tables.methods:
        a = tables.aggregates[m]
        out.append([m, fmt_est(a.score_iqm), fmt_est(a.score_iqm_train), fmt_est(a.score_iqm_held_out),
                    fmt_est(a.poi_gd, ".2f"), fmt_est(a.poi_static, ".2f"), budgets[m]])
    return out


HEADLINE_COLS = ("method", "IQM J_bk/J (all)", "training scenarios", "held-out scenarios", "P(J < gd)",
                 "P(J < best-static)", "budget")
SCENARIO_COLS = ("method", "J mean", "J IQM", "p99 us mean", "p99 IQM", "CPU", "viol %", "J / bk", "p99 / bk",
                 "CPU / bk", "P(J < gd)", "P(J < static)")


def scenario_rows(tables: Tables, sc: str) -> list[list[str]]:
    out = []
    for m in tables.methods:
        r = tables.rows.get((sc, m))
        if r is None:
            continue
        flag = " (beats best-known beyond its CI)" if r.beats_best_known else ""
        out.append([m + flag, fmt_est(r.J), fmt_est(r.J_iqm), fmt_est(r.p99, ",.0f"), fmt_est(r.p99_iqm, ",.0f"),
                    fmt_est(r.cpu, ".2f"), "-" if not math.isfinite(r.viol) else f"{100 * r.viol:.2f}",
                    fmt_est(r.J_ratio, ".2f"), fmt_est(r.p99_ratio, ".2f"), fmt_est(r.cpu_ratio, ".2f"),
                    fmt_est(r.poi_gd, ".2f"), fmt_est(r.poi_static, ".2f")])
    return out


def _md_table(cols: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(result: CompareResult, out_dir: Path) -> list[Path]:
    """report.md and the plots of `result` into `out_dir`; the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = build(result.records, list(result.plan.methods))
    plots = _plots(result.records, tables, out_dir)
    plan = result.plan
    lines = [f"# vvho compare: suite `{plan.suite.name}`", "",
             f"{plan.suite.description.strip()}", "",
             f"- compare run `{result.parent_run_id}` (MLflow experiment `vvho-compare`, a child run per trial); "
             f"code {git_commit()}; written {time.strftime('%Y-%m-%d %H:%M:%S')}",
             f"- {len(tables.methods)} methods x {len(tables.scenarios)} scenarios x {len(plan.seeds)} seeds "
             f"(trial seeds {plan.seeds[0]}..{plan.seeds[-1]}): {len(result.records)} trials"
             + (f", {result.resumed} of them from an earlier, interrupted run of this compare" if result.resumed
                else "") + f"; wall time {result.wall_s / 60:.1f} min",
             f"- tuning budget per tuner trial: {plan.budget:,} measurement windows of a tuning episode, then one "
             "evaluation episode; RL agents train once on the suite's training scenarios and are evaluated per trial",
             f"- every figure is the mean (or IQM) over trials with a 95% bootstrap interval [lo, hi]; ratios are to "
             f"{BEST_KNOWN} on the same evaluation episodes (paired by seed). Note: {CAVEAT}."]
    for m, why in result.skipped.items():
        lines.append(f"- method `{m}` left out: {why}")
    for name, t in result.training.items():
        lines.append(f"- `{name}`: run `{t['run_id']}`, {t['train_steps']:,} training steps, bundle `{t['bundle']}`")
    lines += ["", "## Across scenarios", "",
              "Normalised score J_best-known / J per trial (1 = best-known, higher is better), IQM with stratified "
              "bootstrap intervals; probability of improvement averaged over scenarios.", "",
              _md_table(HEADLINE_COLS, headline_rows(tables)), ""]
    flagged = [r for r in tables.rows.values() if r.beats_best_known]
    if flagged:
        lines += ["**Beats best-known beyond its interval** (the reference search missed something, or the method "
                  "adapts within a phase, which one setting per phase cannot):", ""]
        lines += [f"- {r.method} on {r.scenario}: J / best-known {fmt_est(r.J_ratio, '.3f')}" for r in flagged]
        lines.append("")
    lines += ["## Per scenario", ""]
    for sc, role in tables.scenarios:
        lines += [f"### {sc} ({'training scenario, held-out seeds' if role == 'train' else 'held-out scenario'})", "",
                  _md_table(SCENARIO_COLS, scenario_rows(tables, sc)), ""]
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return [report, *plots]


# -- plots --------------------------------------------------------------------------------------------------

def _plots(records: Sequence[dict[str, Any]], tables: Tables, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by[(r["scenario"], r["trial"]["method"])].append(r)
    colours = {m: plt.get_cmap("tab20")(i % 20) for i, m in enumerate(tables.methods)}
    centres = bucket_value_ns(np.arange(N_BUCKETS)) / 1000.0

    # latency CDFs, one panel per scenario
    n = len(tables.scenarios)
    cols = min(3, n)
    rows_n = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.4 * rows_n), squeeze=False)
    for ax, (sc, role) in zip(axes.flat, tables.scenarios, strict=False):
        for m in tables.methods:
            hist = np.zeros(N_BUCKETS)
            for r in by.get((sc, m), []):
                hist[np.asarray(r["histogram"]["index"], dtype=int)] += r["histogram"]["count"]
            if hist.sum() > 0:
                ax.plot(centres, np.cumsum(hist) / hist.sum(), label=m, color=colours[m], lw=1)
        ax.set_xscale("log")
        ax.set_ylim(0.9, 1.001)
        ax.set_title(f"{sc} ({role})", fontsize=8)
        ax.set_xlabel("latency (us)", fontsize=7)
        ax.set_ylabel("CDF (tail above 0.9)", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    paths.append(_save(fig, out / "latency_cdf.png", plt))

    # timelines of one dynamic scenario: p99 and knob positions per method (the first trial seed)
    dynamic = next((sc for sc, _ in tables.scenarios if sc in DYNAMIC), tables.scenarios[0][0])
    ms = [m for m in tables.methods if by.get((dynamic, m))]
    fig, axes = plt.subplots(len(ms), 2, figsize=(11, 1.9 * len(ms)), squeeze=False)
    for (ax_l, ax_k), m in zip(axes, ms, strict=True):
        r = min(by[(dynamic, m)], key=lambda x: x["trial"]["seed"])
        p99 = [math.nan if v is None else v for v in r["steps"]["p99_us"]]
        ax_l.plot(p99, color=colours[m], lw=1)
        ax_l.set_yscale("log")
        ax_l.set_ylabel(f"{m}\np99 us", fontsize=7)
        knob_pos = np.asarray(r["steps"]["knobs"])
        if knob_pos.size:
            ax_k.imshow(knob_pos.T, aspect="auto", cmap="coolwarm", vmin=-1, vmax=1, interpolation="nearest")
            ax_k.set_yticks(range(len(r["knob_names"])))
            ax_k.set_yticklabels(r["knob_names"], fontsize=4)
        for a in (ax_l, ax_k):
            a.tick_params(labelsize=6)
    axes[0][0].set_title(f"{dynamic}: p99 per window (seed {min(x['trial']['seed'] for x in by[(dynamic, ms[0])])})",
                         fontsize=8)
    axes[0][1].set_title("knob positions on their [-1, 1] scales (blue -1, red +1)", fontsize=8)
    axes[-1][0].set_xlabel("control interval", fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, out / "timelines.png", plt))

    # J / best-known per scenario with intervals
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * n * len(tables.methods) / 3), 4))
    width = 0.8 / max(1, len(tables.methods))
    for i, m in enumerate(tables.methods):
        xs, ys, lo, hi = [], [], [], []
        for k, (sc, _) in enumerate(tables.scenarios):
            row = tables.rows.get((sc, m))
            if row is None or not math.isfinite(row.J_ratio.value):
                continue
            xs.append(k + i * width)
            ys.append(row.J_ratio.value)
            e = row.J_ratio
            lo.append(e.value - e.lo if e.has_interval else 0)
            hi.append(e.hi - e.value if e.has_interval else 0)
        ax.bar(xs, ys, width, yerr=[lo, hi], label=m, color=colours[m], error_kw={"lw": 0.6})
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xticks([k + 0.4 - width / 2 for k in range(n)])
    ax.set_xticklabels([sc for sc, _ in tables.scenarios], rotation=30, ha="right", fontsize=6)
    ax.set_yscale("log")
    ax.set_ylabel("J / best-known (95% CI; lower is better)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    paths.append(_save(fig, out / "j_over_best_known.png", plt))

    # CPU against p99
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for m in tables.methods:
        pts = np.array([(r.cpu.value, r.p99.value) for (_, mm), r in tables.rows.items() if mm == m])
        if pts.size:
            ax.scatter(pts[:, 0], pts[:, 1], label=m, color=colours[m], s=14)
    ax.set_yscale("log")
    ax.set_xlabel("VM CPU (cores, mean per scenario)")
    ax.set_ylabel("p99 (us, mean per scenario)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    paths.append(_save(fig, out / "cpu_vs_p99.png", plt))

    # performance profiles
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, a in tables.aggregates.items():
        if a.profile:
            ax.plot(TAUS, [e.value for e in a.profile], label=m, color=colours[m], lw=1)
            ax.fill_between(TAUS, [e.lo for e in a.profile], [e.hi for e in a.profile], color=colours[m], alpha=0.15)
    ax.set_xlabel("normalised score tau (J_best-known / J)")
    ax.set_ylabel("share of trials with score > tau")
    ax.legend(fontsize=6)
    fig.tight_layout()
    paths.append(_save(fig, out / "performance_profiles.png", plt))
    return paths


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

