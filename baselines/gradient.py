"""The source article's method: gradient descent on the knobs, R* = R - a * grad_R L (same for C, S).

The article's sample code differentiates a scalar; here the gradient of the objective with respect to
the normalised knob vector x in [-1, 1]^d (R, C and S knobs together, one coordinate per knob) is
estimated from noisy measurement windows of the running episode, measured under the harness's
protocol (vvho_env.harness: settle windows after each change, counted in the budget; objectives
adjusted for the measured context):

- ``fd``: central finite differences, two probes x +- w_i e_i per coordinate (2d probes per step);
- ``spsa``: simultaneous perturbation (Spall 1992), two probes x +- w * delta with delta a random
  +-1 vector (2 probes per step whatever d is).

Each probe is measured over ``repeats`` consecutive windows and averaged. It starts from the start
settings (the scenario's defaults), like every other tuner: no oracle start.

Noise. The first ``noise_windows`` windows measure the start setting; their spread, pooled with that
of every probe measured more than once, is the per-window noise variance s^2 of the objective.

Probe widths. w_i = max(c_t, reach_i(x)) with c_t = perturb / (t + 1)^0.101 (Spall's decay) and
reach_i(x) the distance from the relaxed coordinate to the nearest edge of the flat piece it lies in
(``UnitSpace.reach``: the next bin of a categorical knob, the end of an off/unlimited band). A discrete
knob is relaxed to its unit coordinate and rounded when applied (see baselines.space), so a probe
narrower than that measures nothing; with the width following the distance to the next bin, at least
one probe of every pair applies another value, wherever the noisy updates left the coordinate (a fixed
floor of 1/n only reached the next bin from a bin centre, and discrete knobs froze at their defaults).

Gradient and step. The slope of coordinate i is (J(x+) - J(x-)) / (r(x+)_i - r(x-)_i), r rounding
to the settings actually applied (a component whose probes round alike is 0). A pair whose difference
is within its standard error (s * sqrt(1/n+ + 1/n-)) is measured again, in reversed order, up to
``snr_repeats`` more times, so that a real but small effect gets the windows it needs. The update is

    x <- P(x - a_t * k * W^2 g / s_g)

- W = diag(w): the step is preconditioned by the probe widths (plain gradient descent in z_i = x_i / w_i,
  in which every probe has the same size), so a knob probed across a whole bin moves by bin-sized steps;
- s_g: a running RMS of the largest component of W g (Spall's gain calibration, done continuously);
- k = snr^2 / (1 + snr^2), snr = |J(x+) - J(x-)| / its standard error: the SNR-aware gain. A difference
  within noise moves the iterate a fraction of a step (the RMS normalisation alone kept the step about
  one probe wide when slopes were pure noise, and numeric knobs random-walked); a clear one a full step;
- a_t = step * ((1 + A) / (t + 1 + A))^0.602 with A = 10% of the planned updates (Spall's schedule);
- each coordinate moves at most ``max_move`` (numeric knobs) or one probe width (discrete knobs) per update;
- P: Euclidean projection onto the search box (a sub-box of [-1, 1]^d).

Restarts. The centre estimate of an update is the mean of its probes' objectives. The iterate returns to
the best centre of the last ``memory`` updates (older centres were measured under other load and
neighbours) and the schedule restarts (t = 0) when either (a) the centre is worse than that best by more
than ``restart_tol`` times the best plus three RMS probe differences for ``patience`` updates running
(diverged: the step is also halved), or (b) the best has not improved for ``stall`` updates (stalled: the
fresh schedule's larger probes and steps try again from the best point).

Modes. ``offline``: tune for the budget, then hold a choice made by measurement. When one more update
would leave fewer than ``verify`` windows, the tuner alternates windows between the iterate averaged
over the last half of the updates since the last restart (Polyak-Ruppert averaging, rounded) and the
best-measured probe, and holds the probe only if its mean over these fresh windows is lower by more than
one standard error of the difference. ``online``: it keeps stepping while it is evaluated (the article's
"monitor" step), with the gains floored at ``online_floor`` of their initial values; its probes then cost
real evaluation windows.

Budget. Every window the harness runs asks the tuner once (settle windows included), so the tuner counts
its asks as the windows spent; an update that the settle windows and re-measurements made run past the
verification's start is abandoned for the verification.
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
    """Hyperparameters of the article's gradient descent. step and perturb: the centre of the sweep grid of
    baselines.hparams, which sweeps them on training scenarios at a budget (`vvho compare`, `vvho baseline
    --tune-hparams-on`)."""

    estimator: str = "spsa"  # "fd" | "spsa"
    mode: str = "offline"  # "offline" | "online"
    step: float = 1.0  # a: typical largest move of one update, in probe widths (calibrated gain)
    perturb: float = 0.15  # c: initial probe half-width on the unit scale (floored per knob by its reach)
    repeats: int = 1  # windows averaged per probe
    # extra measurements of a pair whose difference is within noise; 0 by default: on steady-low-v0 (budget
    # 400, 10 seeds) 1 gave a median J / best-static of 2.49 against 1.87 without (each repeat is an update less)
    snr_repeats: int = 0
    noise_windows: int = 3  # windows of the start setting measured first (the noise estimate)
    max_move: float = 0.25  # cap on one update of a numeric knob (unit scale); discrete knobs: one probe width
    verify: int = 6  # offline: windows at the end re-measuring the iterate against the best probe
    restart_tol: float = 0.5  # restart when the centre exceeds the best by this share (+ noise)...
    patience: int = 3  # ...for this many updates running
    stall: int = 15  # restart from the best centre when it has not improved for this many updates
    memory: int = 10  # updates over which the best centre is remembered (phases make older ones incomparable)
    online_floor: float = 0.5  # online mode: gains never decay below this share of a and c

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator {self.estimator!r} not accepted; accepted: {', '.join(ESTIMATORS)}")
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} not accepted; accepted: {', '.join(MODES)}")
        if self.step <= 0 or not 0 < self.perturb <= 1 or self.repeats < 1 or self.max_move <= 0:
            raise ValueError("GDConfig: step > 0, 0 < perturb <= 1, repeats >= 1 and max_move > 0 are required")
        if self.verify < 0 or self.restart_tol <= 0 or self.patience < 1 or self.memory < 1 or self.stall < 1:
            raise ValueError("GDConfig: verify >= 0, restart_tol > 0, patience >= 1, memory >= 1 and stall >= 1 "
                             "are required")
        if self.snr_repeats < 0 or self.noise_windows < 0:
            raise ValueError("GDConfig: snr_repeats >= 0 and noise_windows >= 0 are required")
        if not 0 <= self.online_floor <= 1:
            raise ValueError(f"GDConfig: online_floor {self.online_floor} not accepted; accepted: 0..1")


@dataclass
class _Probe:
    x: np.ndarray  # relaxed point
    settings: Settings
    total: float = 0.0
    sumsq: float = 0.0
    n: int = 0
    pooled: tuple[float, int] = (0.0, 0)  # (ss, dof) this probe has added to the noise estimate

    def add(self, objective: float) -> None:
        self.total += objective
        self.sumsq += objective**2
        self.n += 1

    @property
    def mean(self) -> float:
        return self.total / self.n

    @property
    def ss(self) -> float:
        """Sum of squared deviations from the mean (n - 1 degrees of freedom)."""
        return max(0.0, self.sumsq - self.n * self.mean**2) if self.n else 0.0

    @property
    def var_of_mean(self) -> float:
        return self.ss / (self.n - 1) / self.n if self.n >= 2 else 0.0


@dataclass
class _Pair:
    plus: _Probe
    minus: _Probe
    rounds: int = 0  # measurements of the pair beyond the first


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
        self._gain = 1.0  # halves at every divergence restart
        self._scale = 0.0  # running mean square of the largest preconditioned slope
        self._dj_ms = 0.0  # running mean square of the probe differences J(x+) - J(x-) (noise + slope)
        self._pairs_seen = 0
        self._noise_ss, self._noise_dof = 0.0, 0  # pooled within-probe spread: the per-window noise
        self._budget = 0
        self._asked = 0  # windows spent (the harness asks once per window, settle windows included)
        self._planned = 1
        self._pairs: list[_Pair] = []
        self._queue: list[_Probe] = []  # probes still to measure for the pending update
        self._width = np.zeros(0)  # probe half-widths of the pending update
        self._centres: deque[tuple[float, np.ndarray]] = deque()  # (centre estimate, iterate) of past updates
        self._worse = 0
        self._since_best = 0
        self._iterates: list[np.ndarray] = []  # iterates since the schedule (re)started
        self._best_probe: _Probe | None = None
        self._verify: list[_Probe] = []  # offline verification: [iterate, best probe]
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
        """Scored windows of one update without re-measurements (settle windows come on top)."""
        return (2 * dim if self.cfg.estimator == "fd" else 2) * self.cfg.repeats

    @property
    def noise_var(self) -> float | None:
        """Per-window variance of the objective at fixed settings (None until measured)."""
        return self._noise_ss / self._noise_dof if self._noise_dof else None

    # -- ask / tell --------------------------------------------------------------------------------
    def start(self, space: UnitSpace, budget: int, rng: np.random.Generator) -> None:
        self._space = space
        self._rng = rng
        self.x = space.project(space.encode(space.base))
        self.t = self.updates = self.restarts = self._asked = 0
        self._gain, self._scale = 1.0, 0.0
        self._dj_ms, self._pairs_seen = 0.0, 0
        self._noise_ss, self._noise_dof = 0.0, 0
        self._budget = budget
        spend = budget - (0 if self.online else self.cfg.verify) - self.cfg.noise_windows
        self._planned = max(1, spend // self.windows_per_step(space.dim))
        # a window's objective depends on when it was measured (load and neighbours follow the scenario's
        # phases), so a restart only compares centres measured recently, in both modes
        self._centres = deque(maxlen=self.cfg.memory)
        self._worse, self._since_best, self._best_probe = 0, 0, None
        self._iterates = [self.x.copy()]
        self._verify = []
        self.trace = []
        self._pairs = []
        start = _Probe(self.x.copy(), space.decode(self.x))
        self._queue = [start] * self.cfg.noise_windows
        if not self._queue:
            self._plan()

    def _plan(self) -> None:
        assert self._space is not None
        sp = self._space
        if self._verification_due(self._budget - self._asked - self.windows_per_step(sp.dim)):
            self._start_verification()
            return
        _, c_t = self.gains(self.t)
        width = np.maximum(c_t, sp.reach(self.x))
        if self.cfg.estimator == "fd":
            dirs = [np.eye(sp.dim)[i] for i in range(sp.dim)]
        else:
            dirs = [self._rng.choice([-1.0, 1.0], size=sp.dim)]
        self._pairs = []
        for d in dirs:
            plus, minus = (sp.project(self.x + sign * width * d) for sign in (1.0, -1.0))
            self._pairs.append(_Pair(_Probe(plus, sp.decode(plus)), _Probe(minus, sp.decode(minus))))
        self._queue = [p for pair in self._pairs for p in (pair.plus, pair.minus) for _ in range(self.cfg.repeats)]
        self._width = width

    def _start_verification(self) -> None:
        assert self._space is not None and self._best_probe is not None
        recent = self._iterates[len(self._iterates) // 2:]  # Polyak-Ruppert: average the last half
        it = self._space.round(np.mean(recent, axis=0))
        self._verify = [_Probe(it, self._space.decode(it)), _Probe(self._best_probe.x, self._best_probe.settings)]
        self._queue, self._pairs = [], []

    @property
    def verifying(self) -> bool:
        return bool(self._verify)

    def _verification_due(self, left: int) -> bool:
        return not self.online and self._best_probe is not None and not self._verify and left < self.cfg.verify

    def ask(self) -> Settings:
        if self._verification_due(self._budget - self._asked):  # an update's re-measurements ran long
            self._start_verification()
        self._asked += 1
        if self._verify:
            a, b = self._verify
            return dict((a if a.n <= b.n else b).settings)
        return dict(self._queue[0].settings)

    def tell(self, settings: Settings, objective: float, telemetry: Telemetry | None = None) -> None:
        if self._verify:
            a, b = self._verify
            (a if a.n <= b.n else b).add(objective)
            return
        p = self._queue.pop(0)
        p.add(objective)
        if self._queue and self._queue[0] is p:
            return
        self._measured(p)
        if self._queue:
            return
        if not self._pairs:  # the start setting's noise windows
            self._centres.append((p.mean, p.x.copy()))
            self._plan()
            return
        again = [pair for pair in self._pairs if self._within_noise(pair) and pair.rounds < self.cfg.snr_repeats]
        for pair in again:  # reversed order: with the first round, an ABBA sequence that cancels a linear drift
            pair.rounds += 1
            self._queue += [pair.minus] * self.cfg.repeats + [pair.plus] * self.cfg.repeats
        if not self._queue:
            self._update()
            self._plan()

    def _measured(self, p: _Probe) -> None:
        """A probe finished a round of windows: pool its spread into the noise, track the best probe."""
        if p.n >= 2:
            # pooled over every probe: replace this probe's earlier contribution by its current one
            self._noise_ss += p.ss - p.pooled[0]
            self._noise_dof += (p.n - 1) - p.pooled[1]
            p.pooled = (p.ss, p.n - 1)
        if self._best_probe is None or p.mean < self._best_probe.mean:
            self._best_probe = p

    def _se(self, pair: _Pair) -> float | None:
        var = self.noise_var
        return None if var is None else float(np.sqrt(var * (1.0 / pair.plus.n + 1.0 / pair.minus.n)))

    def _within_noise(self, pair: _Pair) -> bool:
        se = self._se(pair)
        return se is not None and abs(pair.plus.mean - pair.minus.mean) < se

    def _update(self) -> None:
        assert self._space is not None
        sp = self._space
        g = np.zeros(sp.dim)
        shrink = np.ones(sp.dim)
        for pair in self._pairs:
            dx = sp.round(pair.plus.x) - sp.round(pair.minus.x)
            dj = pair.plus.mean - pair.minus.mean
            self._pairs_seen += 1
            self._dj_ms += (dj**2 - self._dj_ms) / self._pairs_seen
            moved = np.abs(dx) > 1e-9  # a finite-difference pair moves one coordinate, SPSA all
            g[moved] = dj / dx[moved]
            se = self._se(pair)
            if se is not None and se > 0:
                snr2 = (dj / se) ** 2
                shrink[moved] = snr2 / (1.0 + snr2)
        a_t, _ = self.gains(self.t)
        w = self._width
        wg = w * g  # slope per probe width
        peak = float(np.max(np.abs(wg)))
        if peak > 0:
            n = self.updates + 1
            self._scale += (peak**2 - self._scale) / n  # mean square over every update with a slope
        centre = float(np.mean([p.mean for pair in self._pairs for p in (pair.plus, pair.minus)]))
        self.trace.append((self.x.copy(), g, centre))
        move = np.zeros(sp.dim) if self._scale <= 0 else a_t * shrink * w * wg / np.sqrt(self._scale)
        cap = np.where(sp.discrete, np.maximum(w, self.cfg.max_move), self.cfg.max_move)
        self.x = sp.project(self.x - np.clip(move, -cap, cap))
        self.t += 1
        self.updates += 1
        self._check_restart(centre, self.trace[-1][0])
        self._iterates.append(self.x.copy())

    def _check_restart(self, centre: float, x: np.ndarray) -> None:
        best_before = min((c[0] for c in self._centres), default=np.inf)
        self._centres.append((centre, x))
        best = min(self._centres, key=lambda c: c[0])
        self._since_best = 0 if centre < best_before else self._since_best + 1
        # the best centre is the luckiest of many noisy ones: allow three RMS probe differences of noise
        if centre > best[0] + self.cfg.restart_tol * abs(best[0]) + 3.0 * np.sqrt(self._dj_ms):
            self._worse += 1
        else:
            self._worse = 0
        diverged, stalled = self._worse >= self.cfg.patience, self._since_best >= self.cfg.stall
        if diverged or stalled:
            self.x = best[1].copy()
            self.t, self._worse, self._since_best = 0, 0, 0
            self._iterates = [self.x.copy()]
            if diverged:
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
