"""The normalised knob space every tuner searches: x in [-1, 1]^d over the env's acting knobs.

Each coordinate is one knob's [-1, 1] scale from ``vvho_env.knobs`` (linear/log, explicit off and
unlimited points, bins for categorical knobs), so every tuner, the agents and the oracle share one
geometry.

Relaxation and rounding of discrete knobs
-----------------------------------------
Integer, categorical and boolean knobs, and the explicit 'off'/'unlimited' points, are relaxed to
the continuous coordinate itself: a tuner moves x freely in [-1, 1] and the point is *rounded* only
when applied, by ``Knob.from_unit`` (nearest integer; the bin, i.e. the nearest choice centre, for a
categorical knob; the reserved end band for off/unlimited). ``round`` maps x to the unit point of
the settings actually applied, so measurements and gradients are taken between applied points.
A categorical knob with n choices is constant inside each bin of width 2/n, so a probe narrower than
half a bin measures nothing; ``min_probe`` gives the half-width that reaches the next bin from a
bin centre (1/n plus a margin), and for a knob with an off/unlimited point the width of that flat end
band. A relaxed coordinate rarely sits at a bin centre, though: ``reach`` gives, from the point itself,
the distance to the nearest edge of the flat piece it lies in (the next applied value, up or down), which
the gradient tuner uses as the floor of its probe widths so that a probe always changes what is applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from vvho_env import knobs
from vvho_env.types import KnobValue, Settings


@dataclass(frozen=True)
class UnitSpace:
    """The acting knobs of an env and the settings held fixed for the rest."""

    names: tuple[str, ...]
    base: Mapping[str, KnobValue]  # full settings; knobs outside `names` keep these values
    lo: tuple[float, ...] | None = None  # search bounds on the unit scale (default -1)
    hi: tuple[float, ...] | None = None  # (default +1)
    encoder: knobs.KnobSpace = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for b in (self.lo, self.hi):
            if b is not None and len(b) != len(self.names):
                raise ValueError(f"bounds have {len(b)} entries; expected {len(self.names)} for {self.names}")
        object.__setattr__(self, "encoder", knobs.KnobSpace(self.names))  # the one encoder

    @property
    def lower(self) -> np.ndarray:
        return np.full(self.dim, -1.0) if self.lo is None else np.asarray(self.lo, dtype=np.float64)

    @property
    def upper(self) -> np.ndarray:
        return np.full(self.dim, 1.0) if self.hi is None else np.asarray(self.hi, dtype=np.float64)

    def project(self, x: np.ndarray) -> np.ndarray:
        """Euclidean projection onto the search box [lo, hi] (a sub-box of [-1, 1]^d)."""
        return project(x, self.lower, self.upper)

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def discrete(self) -> np.ndarray:
        """True for categorical and boolean knobs (constant inside a bin)."""
        return self.encoder.discrete

    @property
    def min_probe(self) -> np.ndarray:
        """Per coordinate, the smallest perturbation that reaches a neighbouring value from a bin centre."""
        out = np.zeros(self.dim)
        for i, n in enumerate(self.names):
            k = knobs.get(n)
            if k.kind in ("categorical", "bool"):
                a, b = k.preimage(k.choices[0])  # every bin is as wide: from its centre, half of it
                out[i] = (b - a) / 2.0 + 1e-3
            elif (special := k.off if k.off is not None else k.unlimited) is not None:
                a, b = k.preimage(special)  # from the off/unlimited point out of its flat band
                out[i] = (b - a) + 1e-3
        return out

    def reach(self, x: np.ndarray, margin: float = 1e-3) -> np.ndarray:
        """Per coordinate, the smallest move from `x` (up or down, inside the bounds) that changes the
        applied value, plus `margin`; 0 where the value changes continuously at `x`, and 0 where no move
        inside the bounds changes it (a knob bounded to a single value)."""
        out = np.zeros(self.dim)
        for i, (n, lo, hi) in enumerate(zip(self.names, self.lower, self.upper, strict=True)):
            k = knobs.get(n)
            xi = float(min(hi, max(lo, x[i])))
            v0 = k.from_unit(xi)
            near = [d for d in (_edge(k, xi, v0, hi, margin), _edge(k, xi, v0, lo, margin)) if d is not None]
            if near and min(near) > 2 * margin:
                out[i] = min(near) + margin
        return out

    def encode(self, settings: Mapping[str, KnobValue]) -> np.ndarray:
        merged = dict(self.base)
        merged.update(settings)
        return self.encoder.encode(merged)

    def decode(self, x: Sequence[float] | np.ndarray) -> Settings:
        """Full settings for a relaxed point: acting knobs rounded, the rest from `base`."""
        out: Settings = dict(self.base)
        out.update(self.encoder.decode(self.project(np.asarray(x, dtype=np.float64))))
        return out

    def round(self, x: Sequence[float] | np.ndarray) -> np.ndarray:
        """The unit point of the settings that `x` applies (idempotent)."""
        return self.encode(self.decode(x))

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.lower, self.upper)


def _edge(knob: knobs.Knob, x: float, value: KnobValue, end: float, tol: float) -> float | None:
    """Distance from x towards `end` to the first point applying another value than `value`, by
    bisection to within tol / 10 (None if the whole way to `end` applies `value`)."""
    if knob.from_unit(end) == value:
        return None
    inside, outside = 0.0, abs(end - x)
    sign = 1.0 if end >= x else -1.0
    while outside - inside > tol / 10:
        mid = 0.5 * (inside + outside)
        if knob.from_unit(x + sign * mid) == value:
            inside = mid
        else:
            outside = mid
    return outside


def project(x: np.ndarray, lo: np.ndarray | float = -1.0, hi: np.ndarray | float = 1.0) -> np.ndarray:
    """Euclidean projection onto the box [lo, hi] (NaN is rejected, not clipped)."""
    if not np.all(np.isfinite(x)):
        raise ValueError(f"cannot project a non-finite point {x!r}; accepted: finite coordinates")
    return np.clip(x, lo, hi)
