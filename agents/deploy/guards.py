"""The guards every proposed action passes before it reaches the host, and the SLO-regression watch.

In order, for each decision (each records its verdict: pass, clamp, hold, block or rollback):

1. kill switch: while the file exists, go back to the settings found at start and hold them;
2. regression: a change is on probation for K windows; if their mean objective or pooled p99 is worse
   than under the last good settings by more than the margin, roll back to those and cool down;
   while a change is on probation, nothing else changes (so the verdict is about that change);
3. telemetry: a DEGRADED or missing window holds the current settings;
4. cool-down after a rollback: hold;
5. bounds: each knob clamped into the manifest's bounds intersected with the operator's limits;
6. max step: each knob moves at most `max_step` on its [-1, 1] scale per decision;
7. rate: no change sooner than `min_interval_s` after the previous one.

Guards act on the knobs' [-1, 1] positions (the scales every method shares, vvho_env.knobs), so
numeric, special ('unlimited', 'off') and categorical values are bounded alike.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from agents.deploy.limits import Limits
from vvho_env import knobs
from vvho_env.histogram import N_BUCKETS, percentile_ns
from vvho_env.types import Settings, Status, Telemetry

INSIDE = 1e-6  # how far a span stops inside the open edge of a flat piece of a knob's scale


@dataclass(frozen=True)
class Verdict:
    guard: str
    verdict: str  # pass | clamp | hold | block | rollback
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"guard": self.guard, "verdict": self.verdict, "detail": self.detail}


@dataclass
class Decision:
    """What the guards let through: target settings and positions (None: change nothing)."""

    verdicts: list[Verdict] = field(default_factory=list)
    target: Settings | None = None
    position: np.ndarray | None = None
    rollback: bool = False

    @property
    def blocked(self) -> bool:
        return any(v.verdict in ("hold", "block") for v in self.verdicts)


class Allowed:
    """The positions one knob may take: intervals and points on [-1, 1]."""

    def __init__(self, name: str, low: float | None, high: float | None, allow: Sequence[object] | None,
                 limited: bool) -> None:
        self.knob = k = knobs.get(name)
        self.spans: list[tuple[float, float]] = []
        # the flat pieces of the scale come from the knob (Knob.preimage); a bin's right edge and the special
        # bands' inner edges belong to a neighbouring value, so the spans stop INSIDE short of them
        if k.kind in ("categorical", "bool"):
            choices = list(allow) if allow is not None else list(k.choices)
            for c in k.choices:
                if c in choices:
                    a, b = k.preimage(c)
                    self.spans.append((a, b - INSIDE))
            return
        lo, hi = low if low is not None else k.low, high if high is not None else k.high
        self.spans.append((k.to_unit(lo), k.to_unit(hi)))

        def allowed(special: object) -> bool:  # without a limit of its own a knob keeps its special points
            return not limited or special in (allow or ())

        if k.off is not None and allowed(k.off):
            a, b = k.preimage(k.off)
            self.spans.append((a, b - INSIDE))
        if k.unlimited is not None and allowed(k.unlimited):
            a, b = k.preimage(k.unlimited)
            self.spans.append((a + INSIDE, b))

    def contains(self, x: float) -> bool:
        for a, b in self.spans:  # noqa: SIM110 (any() over a generator costs ~3x this loop; checked per decision)
            if a <= x <= b:
                return True
        return False

    def clamp(self, x: float) -> float:
        if self.contains(x):
            return x
        return min((min(max(x, a), b) for a, b in self.spans), key=lambda y: abs(y - x))


class RegressionWatch:
    """Judges each change on the K windows after it against the windows of the last good settings."""

    def __init__(self, windows: int, objective_margin: float, p99_margin: float) -> None:
        self.k, self.obj_margin, self.p99_margin = windows, objective_margin, p99_margin
        self.good: list[tuple[float, Telemetry]] = []
        self.probation: list[tuple[float, Telemetry]] | None = None
        self._good_cache: tuple[tuple[tuple[float, Telemetry], ...], float, float] | None = None

    @staticmethod
    def _p99(windows: Sequence[tuple[float, Telemetry]]) -> float:
        hist = np.zeros(N_BUCKETS, dtype=np.int64)
        for _, t in windows:
            if t.histogram is not None:
                hist += t.histogram
        return percentile_ns(hist, 99.0) / 1000.0  # NaN when no window has a request

    def _good_summary(self) -> tuple[float, float]:
        """Mean objective and pooled p99 of the last good windows, computed again only when they changed
        (after a rollback, the next change is judged against the same good windows)."""
        # the windows themselves (held, so never mistaken for others) and their objectives
        key = tuple(self.good)
        if self._good_cache is None or len(key) != len(self._good_cache[0]) or any(
                ja != jb or ta is not tb for (ja, ta), (jb, tb) in zip(key, self._good_cache[0], strict=True)):
            self._good_cache = (key, self._mean([j for j, _ in self.good]), self._p99(self.good))
        return self._good_cache[1], self._good_cache[2]

    @staticmethod
    def _mean(values: Sequence[float]) -> float:
        """np.mean of a few floats, bit for bit (the same pairwise sum, then the division), without its
        Python-level wrapper."""
        return float(np.add.reduce(np.asarray(values, dtype=np.float64))) / len(values)

    def window(self, objective: float, tel: Telemetry) -> str | None:
        """Record a window; returns 'rollback: why' or 'accept: ...' when a change was judged."""
        if self.probation is None:
            self.good.append((objective, tel))
            del self.good[:-self.k]
            return None
        self.probation.append((objective, tel))
        if len(self.probation) < self.k:
            return None
        new, self.probation = self.probation, None
        if not self.good:
            self.good = new
            return "accept: no windows of the previous settings to compare with"
        (j_old, p_old), j_new, p_new = self._good_summary(), self._mean([j for j, _ in new]), self._p99(new)
        worse_j = j_new > j_old + self.obj_margin * max(j_old, 0.1)
        worse_p = math.isfinite(p_old) and math.isfinite(p_new) and p_new > p_old * (1.0 + self.p99_margin)
        summary = (f"objective {j_new:.3f} vs {j_old:.3f}, p99 {p_new / 1000:.1f} vs {p_old / 1000:.1f} ms over "
                   f"{len(new)} vs {len(self.good)} windows")
        if worse_j or worse_p:
            return f"rollback: {summary}"
        self.good, self._good_cache = new, (tuple(new), j_new, p_new)
        return f"accept: {summary}"

    def on_probation(self) -> int | None:
        return None if self.probation is None else len(self.probation)

    def changed(self) -> None:
        self.probation = []


class Guards:
    def __init__(self, limits: Limits, knob_names: Sequence[str], original: Settings,
                 manifest_bounds: Mapping[str, Mapping[str, object]] | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.limits = limits
        self.names = tuple(knob_names)
        self.clock = clock or time.monotonic
        self.allowed = [self._allowed(n, (manifest_bounds or {}).get(n)) for n in self.names]
        self.space = knobs.KnobSpace(self.names)
        self.max_step = [lim.max_step if (lim := limits.knobs.get(n)) is not None and lim.max_step else limits.max_step
                         for n in self.names]
        self.original = dict(original)
        self.good: Settings = dict(original)
        self.watch = RegressionWatch(limits.rollback.windows, limits.rollback.objective_margin,
                                     limits.rollback.p99_margin)
        self.cooldown_until = -math.inf
        self.last_change = -math.inf
        self.killed = False

    def _allowed(self, name: str, bounds: Mapping[str, object] | None) -> Allowed:
        lim = self.limits.knobs.get(name)
        low, high = (lim.low, lim.high) if lim else (None, None)
        allow = lim.allow if lim else None
        b = bounds or {}  # the manifest's: never wider than what the policy was trained on
        if isinstance(b.get("low"), (int, float)):
            low = float(b["low"]) if low is None else max(low, float(b["low"]))  # type: ignore[arg-type]
        if isinstance(b.get("high"), (int, float)):
            high = float(b["high"]) if high is None else min(high, float(b["high"]))  # type: ignore[arg-type]
        return Allowed(name, low, high, allow, limited=lim is not None)

    def _settings(self, position: np.ndarray) -> Settings:
        return knobs.decode(position.astype(np.float64), self.names)

    def kill_switch(self) -> bool:
        return os.path.exists(self.limits.kill_switch)

    def decide(self, tel: Telemetry | None, objective: float | None, current: Settings, position: np.ndarray,
               proposed: np.ndarray, proposed_settings: Settings | None = None) -> Decision:
        """Guard the proposed positions (and the settings they decode to, if known), given this window's
        telemetry and the host's current settings."""
        if proposed_settings is None:
            proposed_settings = self._settings(np.asarray(proposed, dtype=np.float32))
        d = Decision()
        now = self.clock()
        held = {n: current[n] for n in self.names}
        if self.kill_switch():
            self.killed = True
            back = {n: self.original[n] for n in self.names}
            d.verdicts.append(Verdict("kill_switch", "block", f"{self.limits.kill_switch} exists: holding the "
                                      "settings found at start"))
            if back != held:
                d.target, d.position = back, self.space.encode(back).astype(np.float32)
            return d
        if self.killed:  # the switch was removed: start again from the settings found at start
            self.killed = False
            self.good, self.watch.good, self.watch.probation = dict(held), [], None
        if tel is not None and objective is not None:
            verdict = self.watch.window(objective, tel)
            if verdict and verdict.startswith("rollback"):
                self.cooldown_until = now + self.limits.rollback.cooldown_s
                d.verdicts.append(Verdict("regression", "rollback", verdict.split(": ", 1)[1] +
                                          f"; back to the last good settings, cooling down "
                                          f"{self.limits.rollback.cooldown_s:g} s"))
                d.target = {n: self.good[n] for n in self.names}
                d.position = self.space.encode(d.target).astype(np.float32)
                d.rollback = True
                return d
            if verdict:
                self.good = dict(held)
                d.verdicts.append(Verdict("regression", "pass", verdict.split(": ", 1)[1]))
        if tel is None or (tel.status is Status.DEGRADED and self.limits.hold_on_degraded):
            why = "no telemetry this window" if tel is None else "DEGRADED window: " + "; ".join(tel.notes)
            d.verdicts.append(Verdict("telemetry", "hold", why))
            return d
        if now < self.cooldown_until:
            d.verdicts.append(Verdict("cooldown", "hold", f"{self.cooldown_until - now:.0f} s left after a rollback"))
            return d
        on = self.watch.on_probation()
        if on is not None:
            d.verdicts.append(Verdict("regression", "hold", f"judging the last change: {on} of {self.watch.k} "
                                      "windows"))
            return d
        # in Python floats (float64, as numpy computes): for a few knobs each numpy call costs more than the
        # arithmetic, and the host agent decides every interval
        arr = np.asarray(proposed)
        x = arr.astype(np.float64).tolist()
        asked = x if arr.dtype == np.float32 else arr.astype(np.float32).tolist()  # what the decoding saw
        clamped = []
        for i, a in enumerate(self.allowed):
            if not a.contains(x[i]):  # only what lies outside every allowed span is clamped
                y = a.clamp(x[i])
                clamped.append(f"{self.names[i]} {a.knob.from_unit(x[i])!r} -> {a.knob.from_unit(y)!r}")
                x[i] = y
        d.verdicts.append(Verdict("bounds", "clamp" if clamped else "pass", "; ".join(clamped)))
        held_at = np.asarray(position, dtype=np.float64).tolist()
        # one loop, not four comprehensions (each a function call of its own, on a path a few % of decisions take)
        stepped, steps = [], []
        for name, v, p, m in zip(self.names, x, held_at, self.max_step, strict=True):
            w = v - p
            s = min(m, max(-m, w))
            if s != w:
                stepped.append(f"{name} by {s:+.2f} of {w:+.2f}")
            steps.append(p + s)
        moved = np.array(steps, dtype=np.float32)
        d.verdicts.append(Verdict("max_step", "clamp" if stepped else "pass", "; ".join(stepped)))
        # decode only the knobs the guards moved: the rest are as the policy's decoding already gave them
        target = dict(proposed_settings)
        for j, (v, was) in enumerate(zip(moved.tolist(), asked, strict=True)):
            if v != was:
                target[self.names[j]] = self.allowed[j].knob.from_unit(v)
        if target == held:
            d.verdicts.append(Verdict("change", "pass", "no knob changes value"))
            d.position = moved  # the continuous position moves (delta actions accumulate)
            return d
        if now - self.last_change < self.limits.min_interval_s:
            d.verdicts.append(Verdict("rate", "hold", f"last change {now - self.last_change:.0f} s ago, minimum "
                                      f"{self.limits.min_interval_s:g} s"))
            return d
        d.verdicts.append(Verdict("rate", "pass"))
        d.target, d.position = target, moved
        return d

    def applied(self, rollback: bool) -> None:
        """The decision's target is now on the host."""
        self.last_change = self.clock()
        if not rollback and not self.killed:
            self.watch.changed()
