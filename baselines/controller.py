"""A calibrated feedback controller: the SLO controller practitioners build, as a further baseline.

It watches each scored window's p99 against the SLO (and whether load went unserved) and the VM's CPU
headroom, and moves one knob at a time along a ladder of remedies, as the per-service CPU controllers
of Autothrottle (NSDI'24) and the rule-based autoscalers that RL-autoscaling benchmarks found hardest to
beat do. It is an online method: it keeps acting while it is evaluated, its tuning budget having chosen
its gains (baselines.hparams sweeps them on training scenarios, as for every tuner).

Pressure: p99 above the SLO, or served load below offered by more than 5%. Slack: p99 below ``slack``
times the SLO with all load served. Under pressure, the first remedy that applies, in this order:

1. quota (AIMD's multiplicative side): a limited vcpu_quota while the VM was throttled grows by ``up``
   (and becomes unlimited past the knob's range);
2. idle state: one C-state shallower (wake-up latency is the first thing a latency tuning guide cuts);
3. halt polling: halt_poll_ns doubles from ``poll_start`` to the knob's maximum (host polling only helps
   while guest haltpoll is off);
4. pinning: vCPUs move to dedicated pCPUs.

After ``hold`` windows of slack running, the remedies are undone one at a time in reverse order
(pinning back to shared pCPUs, halt polling halved and then off), and finally quota comes down, the
AIMD's gentle side: an unlimited quota starts at the per-vCPU CPU the VM used times ``1 + margin``, a
limited one shrinks by ``down``, never while the VM is being throttled, and never to a quota that was
throttled under pressure: it stops one ``down`` step above the highest such quota (the floor that stops
AIMD's sawtooth: on quota-tight-v0's
low phase, without it the quota crept down to throttling every ~12 windows, each time a p99 10x the
SLO, J 3.1x the best static setting's). The idle state is not deepened
again: it costs no CPU in the objective. Every action waits ``hold`` windows before the next one, so each
change is judged on windows measured after it (the harness's settle windows come first).

Knobs the env cannot set are skipped by every rule; everything else keeps the start settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from baselines.space import UnitSpace
from vvho_env import knobs
from vvho_env.types import Settings, Telemetry

UNSERVED_TOL = 0.05  # served below (1 - this) x offered counts as pressure


@dataclass(frozen=True)
class ControllerConfig:
    """Gains of the SLO controller (see the module docstring)."""

    up: float = 1.5  # quota multiplier under pressure
    down: float = 0.9  # quota multiplier with slack
    margin: float = 0.3  # headroom over the measured CPU when an unlimited quota is first limited
    slack: float = 0.5  # p99 below this share of the SLO is slack
    hold: int = 3  # windows between actions, and of slack running before an undo
    poll_start: int = 50_000  # ns, first halt-polling cap when it was off

    def __post_init__(self) -> None:
        if self.up <= 1 or not 0 < self.down < 1 or self.margin < 0 or not 0 < self.slack < 1:
            raise ValueError("ControllerConfig: up > 1, 0 < down < 1, margin >= 0 and 0 < slack < 1 are required")
        if self.hold < 1 or self.poll_start <= 0:
            raise ValueError("ControllerConfig: hold >= 1 and poll_start > 0 are required")


class SLOController:
    online = True

    def __init__(self, cfg: ControllerConfig | None = None) -> None:
        self.cfg = cfg or ControllerConfig()
        self.name = "controller"
        self._names: tuple[str, ...] = ()
        self._settings: Settings = {}
        self._cooldown = 0
        self._slack_run = 0
        self._floor = 0.0  # the quota is never lowered below this (one down step above a throttled quota)
        self.actions: list[tuple[str, object]] = []  # (knob, new value) in the order taken

    def start(self, space: UnitSpace, budget: int, rng: np.random.Generator) -> None:
        self._names = space.names
        self._settings = dict(space.base)
        self._cooldown, self._slack_run, self._floor = 0, 0, 0.0
        self.actions = []

    def ask(self) -> Settings:
        return dict(self._settings)

    def recommend(self) -> Settings:
        return dict(self._settings)

    def tell(self, settings: Settings, objective: float, telemetry: Telemetry | None = None) -> None:
        if telemetry is None:
            return
        self._settings = dict(settings)
        pressure = telemetry.p99_us > telemetry.slo_us or \
            telemetry.served_rps < (1.0 - UNSERVED_TOL) * telemetry.offered_rps
        slack = not pressure and telemetry.p99_us < self.cfg.slack * telemetry.slo_us
        self._slack_run = self._slack_run + 1 if slack else 0
        if self._cooldown > 0:
            self._cooldown -= 1
            return
        change = self._remedy(telemetry) if pressure else None
        if change is None and self._slack_run >= self.cfg.hold:
            change = self._undo(telemetry)
        if change is not None:
            name, value = change
            self._settings[name] = knobs.get(name).validate(value)
            self.actions.append((name, self._settings[name]))
            self._cooldown, self._slack_run = self.cfg.hold, 0

    def _can(self, name: str) -> bool:
        return name in self._names

    def _remedy(self, tel: Telemetry) -> tuple[str, object] | None:
        s = self._settings
        if self._can("vcpu_quota") and s["vcpu_quota"] != -1 and tel.throttled_frac > 0:
            quota = knobs.get("vcpu_quota")
            grown = int(float(s["vcpu_quota"]) * self.cfg.up)
            self._floor = max(self._floor, float(s["vcpu_quota"]) / self.cfg.down)
            return "vcpu_quota", -1 if grown > quota.high else grown
        if self._can("idle_state"):
            states = knobs.get("idle_state").choices
            i = states.index(s["idle_state"])
            if i > 0:
                return "idle_state", states[i - 1]
        if self._can("halt_poll_ns") and not s.get("guest_haltpoll", False):
            cap = int(knobs.get("halt_poll_ns").high)
            poll = int(s["halt_poll_ns"])
            if poll < cap:
                return "halt_poll_ns", min(cap, max(self.cfg.poll_start, 2 * poll))
        if self._can("vcpu_pinning") and s["vcpu_pinning"] != "dedicated":
            return "vcpu_pinning", "dedicated"
        return None

    def _undo(self, tel: Telemetry) -> tuple[str, object] | None:
        s = self._settings
        if self._can("vcpu_pinning") and s["vcpu_pinning"] == "dedicated":
            return "vcpu_pinning", "shared"
        if self._can("halt_poll_ns") and int(s["halt_poll_ns"]) > 0 and tel.polling_cpu > 0:
            halved = int(s["halt_poll_ns"]) // 2
            return "halt_poll_ns", halved if halved >= knobs.get("halt_poll_ns").low else 0
        if self._can("vcpu_quota") and tel.throttled_frac == 0:
            quota = knobs.get("vcpu_quota")
            period = float(s.get("vcpu_period", 100_000))
            vcpus = max(1, int(s.get("vcpu_count", 1)))
            if s["vcpu_quota"] == -1:
                target = tel.vm_cpu / vcpus * period * (1.0 + self.cfg.margin)
            else:
                target = float(s["vcpu_quota"]) * self.cfg.down
            lowered = int(max(quota.low, self._floor, target))
            if lowered < quota.high and (s["vcpu_quota"] == -1 or lowered < int(s["vcpu_quota"])):
                return "vcpu_quota", lowered
        return None
