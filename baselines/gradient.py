"""The source article's method: gradient descent on the knobs, R* = R - a * grad_R L (same for C, S).

The article's sample code differentiates a scalar; here the gradient of the objective with respect to
the normalised knob vector x in [-1, 1]^d (R, C and S knobs together, one coordinate per knob) is
estimated from noisy measurement windows of the running episode:

- ``fd``: central finite differences, two probes x +- w_i e_i per coordinate (2d probes per step);
- ``spsa``: simultaneous perturbation (Spall 1992), two probes x +- w * delta with delta a random
  +-1 vector (2 probes per step whatever d is).

Each probe is measured over ``repeats`` consecutive windows and averaged.

Probe widths. w_i = max(c_t, min_probe_i) with c_t = perturb / (t + 1)^0.101 (Spall's decay). A
discrete knob is relaxed to its unit coordinate and rounded when applied (see baselines.space), so
its probe is at least ``space.min_probe`` wide: from a bin centre it reaches the next value. Once
the relaxed coordinate sits deep inside a bin, both probes round to the same value, the knob has no
measured slope (component 0) and stops being flipped: the relaxation's depth is the method's
confidence in that choice.

Gradient and step. The slope of coordinate i is (J(x+) - J(x-)) / (r(x+)_i - r(x-)_i), r rounding
to the settings actually applied (a component whose probes round alike is 0). The update is

    x <- P(x - a_t * W^2 g / s)

- W = diag(w): the step is preconditioned by the probe widths (it is plain gradient descent in the
  coordinates z_i = x_i / w_i, in which every probe has the same size), so a knob probed across a
  whole bin also moves by bin-sized steps, and a knob whose probes got clipped by a bound is not
  thrown across the space by its steep-looking slope;
- s: a running RMS of the largest component of W g (Spall's gain calibration, done continuously):
  with it, ``step`` is the typical largest move per update in probe widths, whatever the units and
  noise of the objective;
- a_t = step * ((1 + A) / (t + 1 + A))^0.602 with A = 10% of the planned updates (Spall's schedule);
- each coordinate moves at most ``max_move`` (numeric knobs) or one probe width (discrete knobs) per
  update: a per-knob step cap, since a single noisy difference can be huge;
- P: Euclidean projection onto the search box (a sub-box of [-1, 1]^d).

Restarts. The centre estimate of an update is the mean of its probes' objectives. If it is worse than
the best centre of the last ``memory`` updates (older centres were measured under other load and
neighbours: across a scenario's phases they are not comparable) by more than
``restart_tol`` times that best plus three RMS probe differences (the noise a lucky best carries)
for ``patience`` updates running, the iterate returns to
that best point and the schedule restarts with half the step (the gains had grown too large for the
local curvature, or a noisy difference threw the iterate into a bad region).

Modes. ``offline``: tune for the budget, then hold a choice made by measurement. The last updates'
windows are spent on a verification: when one more update would leave fewer than ``verify``
windows, the tuner alternates windows between the iterate averaged over the last half of the updates
since the last restart (Polyak-Ruppert averaging, rounded; it cancels much of the noise the last
iterate carries) and the best-measured probe, and holds the probe only if its mean over these fresh
windows (not its original, possibly lucky window) is lower by more than one standard error of the
difference. ``online``: it keeps stepping while it is
evaluated (the article's "monitor" step), with the gains floored at ``online_floor`` of their
initial values so that it keeps tracking a moving optimum; its probes then cost real evaluation
windows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from baselines.space import UnitSpace
from vvho_env.types import Settings, Telemetry

ESTIMATORS = ("fd", "spsa")
MODES = ("offline", "online")


@dataclass(frozen=True)
class GDConfig:
    """Hyperparameters of the article's gradient descent. Defaults: the centre of the sweep grid of
    baselines.hparams (step 0.5-2 probe widths x perturb 0.1-0.2), which the held-out sweep on the crowded
    phase of neighbour-churn-v0 (budget 60) and on neighbour-churn-v0 (budget 160) found within noise of
    the grid's best for the offline estimators; `vvho baseline` sweeps them per scenario and budget."""

    estimator: str = "spsa"  # "fd" | "spsa"
    mode: str = "offline"  # "offline" | "online"
    step: float = 1.0  # a: typical largest move of one update, in probe widths (calibrated gain)
    perturb: float = 0.15  # c: initial probe half-width on the unit scale (floored per knob by min_probe)
    repeats: int = 1  # windows averaged per probe
    max_move: float = 0.25  # cap on one update of a numeric knob (unit scale); discrete knobs: one probe width
    verify: int = 6  # offline: windows at the end re-measuring the iterate against the best probe
    restart_tol: float = 0.5  # restart when the centre exceeds the best by this share (+ noise)...
    patience: int = 3  # ...for this many updates running
    memory: int = 10  # updates over which the best centre is remembered (phases make older ones incomparable)
    online_floor: float = 0.5  # online mode: gains never decay below this share of a and c

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator {self.estimator!r} not accepted; accepted: {', '.join(ESTIMATORS)}")
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} not accepted; accepted: {', '.join(MODES)}")
        if self.step <= 0 or not 0 < self.perturb <= 1 or self.repeats < 1 or self.max_move <= 0:
            raise ValueError("GDConfig: step > 0, 0 < perturb <= 1, repeats >= 1 and max_move > 0 are required")
        if self.verify < 0 or self.restart_tol <= 0 or self.patience < 1 or self.memory < 1:
            raise ValueError("GDConfig: verify >= 0, restart_tol > 0, patience >= 1 and memory >= 1 are required")
        if not 0 <= self.online_floor <= 1:
            raise ValueError(f"GDConfig: online_floor {self.online_floor} not accepted; accepted: 0..1")


@dataclass
class _Probe:
    x: np.ndarray  # relaxed point
    settings: Settings
    total: float = 0.0
    sumsq: float = 0.0
    n: int = 0

    def add(self, objective: float) -> None:
        self.total += objective
        self.sumsq += objective**2
        self.n += 1

    @property
    def mean(self) -> float:
        return self.total / self.n

    @property
    def var_of_mean(self) -> float:
        if self.n < 2:
            return 0.0
        return max(0.0, (self.sumsq - self.n * self.mean**2) / (self.n - 1)) / self.n


class GradientDescent:
    def __init__(self, cfg: GDConfig | None = None) -> None:
        self.cfg = cfg or GDConfig()
        self.name = f"gd-{self.cfg.estimator}-{self.cfg.mode}"
        self.online = self.cfg.mode == "online"
        self._space: UnitSpace | None = None
        self._rng = np.random.default_rng(0)
        self.x = np.zeros(0)
        self.t = 0  # updates since the schedule (re)started
        self.updates = 0  # updates in all
        self.restarts = 0
        self._gain = 1.0  # halves at every restart
        self._scale = 0.0  # running mean square of the largest preconditioned slope
        self._dj_ms = 0.0  # running mean square of the probe differences J(x+) - J(x-) (noise + slope)
        self._pairs = 0
        self._budget = 0
        self._told = 0
        self._planned = 1
        self._probes: list[_Probe] = []
        self._next = 0
        self._width = np.zeros(0)  # probe half-widths of the pending update
        self._centres: deque[tuple[float, np.ndarray]] = deque()  # (centre estimate, iterate) of past updates
        self._worse = 0
        self._iterates: list[np.ndarray] = []  # iterates since the schedule (re)started
        self._best_probe: _Probe | None = None
        self._verify: list[_Probe] = []  # offline verification: [iterate, best probe]
        self.chosen: Settings | None = None
        self.trace: list[tuple[np.ndarray, np.ndarray, float]] = []  # iterate, gradient, centre estimate

    # -- schedule ---------------------------------------------------------------------------------
    def gains(self, t: int) -> tuple[float, float]:
        c = self.cfg
        big_a = 0.1 * self._planned
        a_t = self._gain * c.step * ((1 + big_a) / (t + 1 + big_a)) ** 0.602
        c_t = c.perturb / (t + 1) ** 0.101
        if self.online:
            a_t, c_t = max(a_t, c.online_floor * self._gain * c.step), max(c_t, c.online_floor * c.perturb)
        return a_t, c_t

    def windows_per_step(self, dim: int) -> int:
        return (2 * dim if self.cfg.estimator == "fd" else 2) * self.cfg.repeats

    # -- ask / tell --------------------------------------------------------------------------------
    def start(self, space: UnitSpace, budget: int, rng: np.random.Generator) -> None:
        self._space = space
        self._rng = rng
        self.x = space.project(space.encode(space.base))
        self.t = self.updates = self.restarts = self._told = 0
        self._gain, self._scale = 1.0, 0.0
        self._dj_ms, self._pairs = 0.0, 0
        self._budget = budget
        per_step = self.windows_per_step(space.dim)
        self._planned = max(1, (budget - (0 if self.online else self.cfg.verify)) // per_step)
        # a window's objective depends on when it was measured (load and neighbours follow the scenario's
        # phases), so a restart only compares centres measured recently, in both modes
        self._centres = deque(maxlen=self.cfg.memory)
        self._worse, self._best_probe = 0, None
        self._iterates = [self.x.copy()]
        self._verify, self.chosen = [], None
        self.trace = []
        self._plan()

    def _plan(self) -> None:
        assert self._space is not None
        sp = self._space
        left = self._budget - self._told
        if not self.online and self._best_probe is not None and left - self.windows_per_step(sp.dim) < self.cfg.verify:
            self._start_verification()
            return
        _, c_t = self.gains(self.t)
        width = np.maximum(c_t, sp.min_probe)
        if self.cfg.estimator == "fd":
            dirs = [np.eye(sp.dim)[i] for i in range(sp.dim)]
        else:
            dirs = [self._rng.choice([-1.0, 1.0], size=sp.dim)]
        self._probes = []
        for d in dirs:
            for sign in (1.0, -1.0):
                x = sp.project(self.x + sign * width * d)
                self._probes.append(_Probe(x, sp.decode(x)))
        self._width = width
        self._next = 0

    def _start_verification(self) -> None:
        assert self._space is not None and self._best_probe is not None
        recent = self._iterates[len(self._iterates) // 2:]  # Polyak-Ruppert: average the last half
        it = self._space.round(np.mean(recent, axis=0))
        self._verify = [_Probe(it, self._space.decode(it)), _Probe(self._best_probe.x, self._best_probe.settings)]
        self._probes, self._next = [], 0

    @property
    def verifying(self) -> bool:
        return bool(self._verify)

    def ask(self) -> Settings:
        if self._verify:
            a, b = self._verify
            return dict((a if a.n <= b.n else b).settings)
        return dict(self._probes[self._next].settings)

    def tell(self, settings: Settings, objective: float, telemetry: Telemetry | None = None) -> None:
        self._told += 1
        if self._verify:
            a, b = self._verify
            (a if a.n <= b.n else b).add(objective)
            return
        p = self._probes[self._next]
        p.add(objective)
        if p.n >= self.cfg.repeats:
            if self._best_probe is None or p.mean < self._best_probe.mean:
                self._best_probe = p
            self._next += 1
            if self._next == len(self._probes):
                self._update()
                self._plan()

    def _update(self) -> None:
        assert self._space is not None
        sp = self._space
        g = np.zeros(sp.dim)
        pairs = [(self._probes[i], self._probes[i + 1]) for i in range(0, len(self._probes), 2)]
        for plus, minus in pairs:
            dx = sp.round(plus.x) - sp.round(minus.x)
            dj = plus.mean - minus.mean
            self._pairs += 1
            self._dj_ms += (dj**2 - self._dj_ms) / self._pairs
            moved = np.abs(dx) > 1e-9  # a finite-difference pair moves one coordinate, SPSA all
            g[moved] = dj / dx[moved]
        a_t, _ = self.gains(self.t)
        w = self._width
        wg = w * g  # slope per probe width
        peak = float(np.max(np.abs(wg)))
        if peak > 0:
            n = self.updates + 1
            self._scale += (peak**2 - self._scale) / n  # mean square over every update with a slope
        centre = float(np.mean([p.mean for p in self._probes]))
        self.trace.append((self.x.copy(), g, centre))
        move = np.zeros(sp.dim) if self._scale <= 0 else a_t * w * wg / np.sqrt(self._scale)
        cap = np.where(sp.discrete, np.maximum(w, self.cfg.max_move), self.cfg.max_move)
        self.x = sp.project(self.x - np.clip(move, -cap, cap))
        self.t += 1
        self.updates += 1
        self._check_divergence(centre, self.trace[-1][0])
        self._iterates.append(self.x.copy())

    def _check_divergence(self, centre: float, x: np.ndarray) -> None:
        self._centres.append((centre, x))
        best = min(self._centres, key=lambda c: c[0])
        # the best centre is the luckiest of many noisy ones: allow three RMS probe differences of noise
        if centre > best[0] + self.cfg.restart_tol * abs(best[0]) + 3.0 * np.sqrt(self._dj_ms):
            self._worse += 1
        else:
            self._worse = 0
        if self._worse >= self.cfg.patience:
            self.x = best[1].copy()
            self.t, self._worse = 0, 0
            self._iterates = [self.x.copy()]
            self._gain *= 0.5
            self.restarts += 1

    def recommend(self) -> Settings:
        assert self._space is not None, "start() first"
        if self._verify:
            a, b = self._verify
            if a.n and b.n:
                better = b.mean < a.mean - np.sqrt(a.var_of_mean + b.var_of_mean)
                return dict((b if better else a).settings)
        return self._space.decode(self.x)
