"""`vvho deploy status`: what a run did, from its audit log: what changed, how often each guard fired,
latency and objective before the first change and after it, and a plot of the run."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from agents.deploy.gate import pooled_p99_us, split


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    decisions = [r for r in records if r.get("event") == "decision"]
    starts = [r for r in records if r.get("event") == "start"]
    stops = [r for r in records if r.get("event") == "stop"]
    changes = [r for r in decisions if r.get("applied")]
    verdicts: Counter[tuple[str, str]] = Counter(
        (v["guard"], v["verdict"]) for r in decisions for v in r.get("guards", []))
    before, after, rollbacks = split(records)

    def side(ws: list[dict[str, Any]]) -> dict[str, float]:
        j = [w["objective"] for w in ws]
        return {"windows": float(len(ws)), "objective": float(np.mean(j)) if j else math.nan,
                "p99_us": pooled_p99_us(ws),
                "degraded": float(sum(w["window"]["status"] == "degraded" for w in ws))}

    return {
        "runs": [{"time": s["time"], "mode": s["mode"], "dry_run": s.get("dry_run"), "bundle": s["bundle"],
                  "sha256": s["sha256"][:12]} for s in starts],
        "stops": [{"time": s["time"], "reason": s["reason"], "kept": s["kept"], "error": s.get("error")}
                  for s in stops],
        "decisions": len(decisions),
        "faults": sum(r.get("event") == "fault" for r in records),
        "changes": [{"time": r["time"], "applied": r["applied"], "rollback": r.get("rollback", False)}
                    for r in changes],
        "rollbacks": rollbacks,
        "guards": {f"{g} {v}": n for (g, v), n in sorted(verdicts.items())},
        "before": side(before),
        "after": side(after),
    }


def plot(records: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = [r for r in records if r.get("event") == "decision" and r.get("window")]
    t0 = ds[0]["unix"] if ds else 0.0
    t = [r["unix"] - t0 for r in ds]
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    ax1.plot(t, [r["window"]["p99_us"] / 1000 for r in ds], lw=0.8, marker=".")
    ax1.set_ylabel("p99 (ms)")
    ax1.set_yscale("log")
    ax2.plot(t, [r["objective"] for r in ds], lw=0.8, marker=".")
    ax2.set_ylabel("objective (lower is better)")
    ax2.set_xlabel("seconds since the first window")
    for r in records:
        if r.get("event") == "decision" and r.get("applied"):
            for ax in (ax1, ax2):
                ax.axvline(r["unix"] - t0, color="red" if r.get("rollback") else "green", lw=0.8, alpha=0.6)
    ax1.set_title("host agent run (green: change applied, red: rollback)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
