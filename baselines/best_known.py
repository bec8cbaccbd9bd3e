"""Best-known as the best anything has shown: the search's result, improved by the settings methods held.

The search (baselines.search) is strong but finite. So that "beats best-known" triggers an update
instead of standing as a result, every setting a method held during an evaluation is re-scored by the
search's own evaluator (its seeds, warm-up and measured windows, each phase simulated at its own
conditions) on every phase of the scenario, and folded in where it is better by more than the search's
tolerance:

- per phase: a candidate whose objective on phase p beats best-known's entry for p replaces it;
- static: a candidate whose phase-length-weighted objective beats the best static setting replaces it
  (and, as in the search, no per-phase entry is left worse than the static setting on its own phase).

The updated result replaces the cached one, recording each improvement (where, by which method, J
before and after) and the digest of every candidate scored, so a later fold-in scores only new ones.
Cost: (candidates x phases x seeds) x (warm-up + measured) simulated windows, outside any timed trial.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from baselines.search import PhaseEvaluator, SearchConfig, SearchResult, best_settings, cache_path, save
from vvho_env.scenarios import Scenario
from vvho_env.types import Settings

BATCH = 64  # candidates per batched simulation (each is phases x seeds simulated envs)


@dataclass(frozen=True)
class Improvement:
    target: str  # "phase NAME" or "static"
    source: str  # the method (and trial) that held the setting
    before: float
    after: float
    settings: Settings

    def as_dict(self) -> dict[str, object]:
        return {"target": self.target, "source": self.source, "before": self.before, "after": self.after,
                "settings": self.settings}


def digest(settings: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(dict(settings), sort_keys=True, default=str).encode()).hexdigest()[:16]


def fold_in(sc: Scenario, cfg: SearchConfig, candidates: Iterable[tuple[str, Settings]],
            cache_dir: Path | None = None) -> list[Improvement]:
    """Re-score `candidates` ((source, full settings) pairs) and fold the better ones into the cached
    best-known result of `sc` under `cfg` (searched first if not cached). Returns the improvements."""
    result = best_settings(sc, cfg, cache_dir=cache_dir)
    seen = set(result.scored)
    fresh: dict[str, tuple[str, Settings]] = {}
    for source, settings in candidates:
        d = digest(settings)
        if d not in seen and d not in fresh:
            fresh[d] = (source, dict(settings))
    if not fresh:
        return []
    ev = PhaseEvaluator(sc, cfg)
    phases = list(range(len(sc.phases)))
    items = list(fresh.values())
    scores = np.concatenate([ev.score([s for _, s in items[i:i + BATCH]], phases)
                             for i in range(0, len(items), BATCH)])
    w = np.asarray(result.weights, dtype=float) / float(np.sum(result.weights))
    improved: list[Improvement] = []

    for p in phases:
        i = int(np.argmin(scores[:, p]))
        entry = result.per_phase[p]
        if cfg.improves(float(scores[i, p]), entry.objective):
            source, settings = items[i]
            improved.append(Improvement(f"phase {sc.phases[p].name}", source, entry.objective, float(scores[i, p]),
                                        settings))
            result.per_phase[p] = SearchResult(settings, float(scores[i, p]), entry.evaluations + ev.evaluations)
    weighted = scores @ w
    i = int(np.argmin(weighted))
    if cfg.improves(float(weighted[i]), result.static_objective):
        source, settings = items[i]
        improved.append(Improvement("static", source, result.static_objective, float(weighted[i]), settings))
        result.static = SearchResult(settings, float(weighted[i]), result.static.evaluations + ev.evaluations)
        result.static_per_phase = [float(x) for x in scores[i]]
        for p, entry in enumerate(result.per_phase):  # the static setting bounds every phase's entry
            if result.static_per_phase[p] < entry.objective:
                result.per_phase[p] = SearchResult(settings, result.static_per_phase[p], entry.evaluations)
    result.folded.extend(x.as_dict() for x in improved)
    result.scored.extend(fresh)
    save(result, cache_path(sc, cfg, cache_dir))
    return improved
