"""Best-known settings on the simulator: coordinate refinement with restarts over common seeds.

Used by the oracle ("best known" per scenario phase) and by the adaptivity check (best per-phase
settings against the best single static setting). A candidate is scored by the one objective of
vvho_env, averaged over K seeds (the same seeds for every candidate) and M measured windows after a
warm-up, with each phase simulated on its own at its own conditions. All candidates of a coordinate
move are simulated together in one batched numba call.

The search, per incumbent: for each knob in turn try every value of its grid (all choices of a
categorical knob; an evenly spaced grid on the [-1, 1] scale plus the neighbours of the current
point for numeric knobs) and keep the best; sweep until no move improves by more than `tol`
(relative), at most `sweeps` times; then `refine` rounds of continuous refinement, each trying every
numeric knob at half the previous distance on either side of the incumbent (off the grid); restart
from each of `starts` and keep the best.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vvho_env import SIM_HASH, knobs
from vvho_env.env import acting_knobs
from vvho_env.objective import Objective, definition_digest, objective_for
from vvho_env.paths import Paths
from vvho_env.scenarios import Scenario, load_scenario
from vvho_env.sim.backend import BatchSim
from vvho_env.types import Settings


@dataclass(frozen=True)
class SearchConfig:
    seeds: tuple[int, ...] = (101, 202)
    windows: int = 6  # measured windows per phase evaluation
    warmup: int = 2  # windows simulated before measuring (queues, polling windows settle)
    grid: int = 5  # points of the numeric grid on [-1, 1]
    sweeps: int = 2
    tol: float = 0.01
    starts: tuple[str, ...] = ("default", "latency", "lean")
    refine: int = 0  # rounds of continuous refinement of numeric knobs around the grid's best (step halved)
    knob_names: tuple[str, ...] | None = None  # default: the env's acting knobs for the scenario

    def improves(self, new: float, old: float) -> bool:
        """The search's acceptance rule: better than `old` by more than the relative tolerance."""
        return new < old * (1 - self.tol) - 1e-9

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


START_PROFILES: dict[str, Settings] = {
    "default": {},
    # latency first: dedicated cores, shallow C-state, polling on, no quotas, emulator out of the way
    "latency": {"vcpu_pinning": "dedicated", "idle_state": "C1", "halt_poll_ns": 200_000, "vcpu_quota": -1,
                "global_quota": -1, "emulator_quota": -1, "emulator_placement": "housekeeping"},
    # CPU-lean: shared cores, no polling of any kind
    "lean": {"vcpu_pinning": "shared", "halt_poll_ns": 0, "busy_poll_us": 0, "guest_haltpoll": False},
}


def start_points(sc: Scenario, names: Sequence[str]) -> dict[str, Settings]:
    """Full settings for each start profile; knobs outside `names` keep the scenario's start value."""
    base = sc.settings_at_start()
    return {k: dict(base, **{n: v for n, v in p.items() if n in names}) for k, p in START_PROFILES.items()}


class PhaseEvaluator:
    """Scores settings on scenario phases with common seeds, many candidates per numba call."""

    def __init__(self, sc: Scenario, cfg: SearchConfig, objective: Objective | None = None) -> None:
        self.sc = sc
        self.cfg = cfg
        self.objective = objective or objective_for(sc)
        n = cfg.warmup + cfg.windows
        self.phases = [sc.model_copy(update={"phases": (ph.model_copy(update={"intervals": max(n, 10)}),)})
                       for ph in sc.phases]
        self.evaluations = 0

    def score(self, candidates: Sequence[Mapping[str, object]], phases: Sequence[int]) -> np.ndarray:
        """Mean objective of each candidate on each phase: array (len(candidates), len(phases))."""
        jobs = [(c, p, s) for c in range(len(candidates)) for p in range(len(phases)) for s in self.cfg.seeds]
        sim = BatchSim(len(jobs))
        for k, (c, p, s) in enumerate(jobs):
            sim.reset_env(k, s, self.phases[phases[p]], settings=candidates[c])  # type: ignore[arg-type]
        for _ in range(self.cfg.warmup):
            sim.run(self.sc.interval_s)
        total = np.zeros(len(jobs))
        for _ in range(self.cfg.windows):
            for k, tel in enumerate(sim.run(self.sc.interval_s)):
                total[k] += self.objective(tel)
        self.evaluations += len(jobs) * (self.cfg.warmup + self.cfg.windows)
        per = (total / self.cfg.windows).reshape(len(candidates), len(phases), len(self.cfg.seeds))
        return per.mean(axis=2)


def _grid(knob: knobs.Knob, current: object, n: int) -> list[object]:
    if knob.kind in ("categorical", "bool"):
        return list(knob.choices)
    xs = set(np.linspace(-1.0, 1.0, n).round(3))
    x0 = knob.to_unit(current)  # type: ignore[arg-type]
    step = 1.0 / (n - 1)
    xs |= {round(min(1.0, max(-1.0, x0 + d)), 3) for d in (-step, step)}
    vals: list[object] = []
    for x in sorted(xs):
        v = knob.from_unit(float(x))
        if v not in vals:
            vals.append(v)
    return vals


@dataclass
class SearchResult:
    settings: Settings
    objective: float
    evaluations: int
    trace: list[tuple[str, object, float]] = field(default_factory=list)


def _best_move(ev: PhaseEvaluator, phases: Sequence[int], w: np.ndarray, cur: Settings, cur_j: float, name: str,
               vals: Sequence[object], trace: list[tuple[str, object, float]]) -> tuple[Settings, float, bool]:
    """Score `cur` with knob `name` set to each of `vals`; move to the best if the search accepts it."""
    if not vals:
        return cur, cur_j, False
    cands: list[Settings] = [{**cur, name: v} for v in vals]  # type: ignore[dict-item]
    js = ev.score(cands, phases) @ w
    i = int(np.argmin(js))
    if not ev.cfg.improves(float(js[i]), cur_j):
        return cur, cur_j, False
    trace.append((name, vals[i], float(js[i])))
    return cands[i], float(js[i]), True


def coordinate_search(ev: PhaseEvaluator, phases: Sequence[int], weights: Sequence[float],
                      names: Sequence[str]) -> SearchResult:
    """Minimise the weighted mean objective over `phases` by coordinate refinement with restarts."""
    w = np.asarray(weights, dtype=float) / float(np.sum(weights))
    best: SearchResult | None = None
    starts = start_points(ev.sc, names)
    start_list = [starts[s] for s in ev.cfg.starts]
    start_scores = ev.score(start_list, phases) @ w
    for s0, j0 in zip(start_list, start_scores, strict=True):
        cur, cur_j = dict(s0), float(j0)
        trace: list[tuple[str, object, float]] = [("start", None, cur_j)]
        for _ in range(ev.cfg.sweeps):
            improved = False
            for name in names:
                vals = [v for v in _grid(knobs.get(name), cur[name], ev.cfg.grid) if v != cur[name]]
                cur, cur_j, moved = _best_move(ev, phases, w, cur, cur_j, name, vals, trace)
                improved |= moved
            if not improved:
                break
        step = 1.0 / (ev.cfg.grid - 1)
        for _ in range(ev.cfg.refine):
            step /= 2.0
            for name in names:
                k = knobs.get(name)
                if k.kind in ("categorical", "bool"):
                    continue
                x0 = k.to_unit(cur[name])
                vals = list(dict.fromkeys(v for d in (-step, step) if (v := k.from_unit(x0 + d)) != cur[name]))
                cur, cur_j, _ = _best_move(ev, phases, w, cur, cur_j, name, vals, trace)
        if best is None or cur_j < best.objective:
            best = SearchResult(cur, cur_j, 0, trace)
    assert best is not None
    best.evaluations = ev.evaluations
    return best


@dataclass
class AdaptivityResult:
    scenario: str
    per_phase: list[SearchResult]
    static: SearchResult
    static_per_phase: list[float]  # the static setting's objective on each phase, re-scored
    weights: list[float]  # phase lengths in intervals
    # what methods have shown since the search (baselines.best_known): improvements folded in, and the
    # digests of every candidate already re-scored (so a later compare scores only new ones)
    folded: list[dict] = field(default_factory=list)
    scored: list[str] = field(default_factory=list)

    @property
    def per_phase_objective(self) -> float:
        return float(np.average([r.objective for r in self.per_phase], weights=self.weights))

    @property
    def static_objective(self) -> float:
        return float(np.average(self.static_per_phase, weights=self.weights))

    @property
    def gap(self) -> float:
        return self.static_objective / self.per_phase_objective



def best_settings(scenario: str | Scenario, cfg: SearchConfig | None = None,
                  use_cache: bool = True, cache_dir: Path | None = None) -> AdaptivityResult:
    """Best per-phase settings and best single static setting of a scenario (cached in `cache_dir`,
    default the results directory's oracle/ folder, per scenario content, simulator hash, objective
    definition, knob scales and search configuration)."""
    sc = load_scenario(scenario)
    cfg = cfg or SearchConfig()
    names = cfg.knob_names or acting_knobs(sc.host_profile, None)
    path = cache_path(sc, cfg, cache_dir)
    if use_cache and path.exists():
        return _load(path)
    ev = PhaseEvaluator(sc, cfg)
    phases = list(range(len(sc.phases)))
    weights = [float(p.intervals) for p in sc.phases]
    per_phase = [coordinate_search(ev, [p], [1.0], names) for p in phases]
    static = coordinate_search(ev, phases, weights, names)
    # re-score the winners on the same seeds so that both sides are measured alike
    static_pp = ev.score([static.settings], phases)[0]
    pp = [float(ev.score([r.settings], [p])[0, 0]) for p, r in zip(phases, per_phase, strict=True)]
    for r, j in zip(per_phase, pp, strict=True):
        r.objective = j
    # the static optimum can never beat the per-phase optimum on its own phase: if the search found
    # a better per-phase point via the static path, the per-phase result is that point
    for p, r in enumerate(per_phase):
        if static_pp[p] < r.objective:
            per_phase[p] = SearchResult(dict(static.settings), float(static_pp[p]), r.evaluations, r.trace)
    result = AdaptivityResult(sc.id, per_phase, static, [float(x) for x in static_pp], weights)
    if use_cache:
        save(result, path)
    return result


def cache_path(sc: Scenario, cfg: SearchConfig, cache_dir: Path | None = None) -> Path:
    """Where the search result of `sc` under `cfg` is cached (default: the results directory's oracle/)."""
    folder = cache_dir if cache_dir is not None else Paths.at().oracle
    # everything the cached objective values depend on: the scenario, the simulator, the objective, the scales
    values = hashlib.sha256(f"{definition_digest()}|{knobs.scales_digest()}".encode()).hexdigest()[:8]
    return folder / f"{sc.id}__{sc.content_hash[:16]}__{SIM_HASH}__{values}__{cfg.key()}.json"


def save(result: AdaptivityResult, path: Path) -> None:
    """Write a search result atomically (a killed writer leaves the previous file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_dump(result)))
    tmp.replace(path)


def _dump(r: AdaptivityResult) -> dict:
    def sr(x: SearchResult) -> dict:
        return {"settings": x.settings, "objective": x.objective, "evaluations": x.evaluations}

    return {"scenario": r.scenario, "per_phase": [sr(x) for x in r.per_phase], "static": sr(r.static),
            "static_per_phase": r.static_per_phase, "weights": r.weights, "folded": r.folded, "scored": r.scored}


def _load(path: Path) -> AdaptivityResult:
    d = json.loads(path.read_text())

    def sr(x: dict) -> SearchResult:
        return SearchResult(x["settings"], x["objective"], x["evaluations"])

    return AdaptivityResult(d["scenario"], [sr(x) for x in d["per_phase"]], sr(d["static"]), d["static_per_phase"],
                            d["weights"], d.get("folded", []), d.get("scored", []))
