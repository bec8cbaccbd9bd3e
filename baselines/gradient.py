"""The source article's method: gradient descent on the knobs, R* = R - a * grad_R L (same for C, S).

The article's sample code differentiates a scalar; here the gradient of the objective with respect to
the normalised knob vector x in [-1, 1]^d (R, C and S knobs together, one coordinate per knob) is
estimated from noisy measurement windows:

- ``fd``: central finite differences, two probes x +- c e_i per coordinate (2d probes per step);
- ``spsa``: simultaneous perturbation (Spall 1992), two probes x +- c * delta with delta a random
  +-1 vector (2 probes per step whatever d is).

Each probe is measured over ``repeats`` consecutive windows and averaged. The gradient component i is
(J(x+) - J(x-)) / (r(x+)_i - r(x-)_i) where r rounds to the settings actually applied (see
baselines.space: discrete knobs are relaxed to their unit coordinate and rounded when applied; a
discrete probe is at least ``space.min_probe`` wide so that it reaches the next value; a component
whose probes round to the same value has no measured slope and is 0). Gains follow Spall's schedule
a_t = a / (t + 1 + A)^0.602 and c_t = c / (t + 1)^0.101 with A = 10% of the planned steps; one
update moves each coordinate by at most ``max_move`` (noisy slopes can be huge) and is projected onto
[-1, 1]^d.

Modes. ``offline``: tune for the budget and hold the last iterate (the article's method converges to
it; picking the best-measured iterate would favour whichever probe happened to meet a quiet phase).
``online``: after the budget the tuner keeps stepping while it is evaluated (the article's "monitor"
step), with the gains floored at ``online_floor`` of their initial values so that it keeps tracking a
moving optimum; its probes then cost real evaluation windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from baselines.space import UnitSpace
from vvho_env.types import Settings

ESTIMATORS = ("fd", "spsa")
MODES = ("offline", "online")


@dataclass(frozen=True)
class GDConfig:
    estimator: str = "spsa"  # "fd" | "spsa"
    mode: str = "offline"  # "offline" | "online"
    step: float = 0.05  # a: initial step size (unit-scale move per unit of objective slope)
    perturb: float = 0.2  # c: initial probe half-width on the unit scale
    repeats: int = 1  # windows averaged per probe
    max_move: float = 0.1  # cap on one update per coordinate
    online_floor: float = 0.5  # online mode: gains never decay below this share of a and c

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator {self.estimator!r} not accepted; accepted: {', '.join(ESTIMATORS)}")
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} not accepted; accepted: {', '.join(MODES)}")
        if self.step <= 0 or not 0 < self.perturb <= 1 or self.repeats < 1 or self.max_move <= 0:
            raise ValueError("GDConfig: step > 0, 0 < perturb <= 1, repeats >= 1 and max_move > 0 are required")


@dataclass
class _Probe:
    x: np.ndarray  # relaxed point
    settings: Settings
    total: float = 0.0
    n: int = 0


class GradientDescent:
    def __init__(self, cfg: GDConfig | None = None) -> None:
        self.cfg = cfg or GDConfig()
        self.name = f"gd-{self.cfg.estimator}-{self.cfg.mode}"
        self.online = self.cfg.mode == "online"
        self._space: UnitSpace | None = None
        self._rng = np.random.default_rng(0)
        self.x = np.zeros(0)
        self.t = 0
        self._planned = 1
        self._probes: list[_Probe] = []
        self._next = 0
        self.trace: list[tuple[np.ndarray, np.ndarray, float]] = []  # iterate, gradient, centre estimate

    # -- schedule ---------------------------------------------------------------------------------
    def gains(self, t: int) -> tuple[float, float]:
        c = self.cfg
        big_a = 0.1 * self._planned
        a_t = c.step / (t + 1 + big_a) ** 0.602 * (1 + big_a) ** 0.602  # a_0 = step
        c_t = c.perturb / (t + 1) ** 0.101
        if self.online:
            a_t, c_t = max(a_t, c.online_floor * c.step), max(c_t, c.online_floor * c.perturb)
        return a_t, c_t

    def windows_per_step(self, dim: int) -> int:
        return (2 * dim if self.cfg.estimator == "fd" else 2) * self.cfg.repeats

    # -- ask / tell --------------------------------------------------------------------------------
    def start(self, space: UnitSpace, budget: int, rng: np.random.Generator) -> None:
        self._space = space
        self._rng = rng
        self.x = space.project(space.encode(space.base))
        self.t = 0
        self._planned = max(1, budget // self.windows_per_step(space.dim))
        self.trace = []
        self._plan()

    def _plan(self) -> None:
        assert self._space is not None
        sp = self._space
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
        self._next = 0

    def ask(self) -> Settings:
        return dict(self._probes[self._next].settings)

    def tell(self, settings: Settings, objective: float) -> None:
        p = self._probes[self._next]
        p.total += objective
        p.n += 1
        if p.n >= self.cfg.repeats:
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
            dj = plus.total / plus.n - minus.total / minus.n
            moved = np.abs(dx) > 1e-9  # a finite-difference pair moves one coordinate, SPSA all
            g[moved] = dj / dx[moved]
        a_t, _ = self.gains(self.t)
        centre = float(np.mean([p.total / p.n for p in self._probes]))
        self.trace.append((self.x.copy(), g, centre))
        self.x = sp.project(self.x - np.clip(a_t * g, -self.cfg.max_move, self.cfg.max_move))
        self.t += 1

    def recommend(self) -> Settings:
        assert self._space is not None, "start() first"
        return self._space.decode(self.x)
