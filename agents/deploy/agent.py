"""The host agent's control loop: measure, observe, ask the policy, guard, apply, record.

One iteration per control interval: the live backend measures one window of `interval_s` under a fixed
probe workload (the bundle's scenario's rate, service time and SLO unless the operator says otherwise);
the window becomes the policy's observation exactly as in training; the proposed settings pass the
guards; in active mode the result is applied transactionally (read back, rolled back on failure); the
audit log and the metrics get every step. Modes: "active" applies; "shadow" runs the same decisions and
applies nothing (its previous action is what the host really holds). dry_run (either mode) also prints
each knob diff it would apply.

A fault never stops the loop: a window that fails is a missing window (the guards hold), an apply that
fails is logged and held. The loop ends when asked (SIGTERM/SIGINT or a `stop` event) or after a number
of intervals; then the settings found at start are restored, unless the operator keeps them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.deploy.audit import AuditLog
from agents.deploy.guards import Decision, Guards
from agents.deploy.limits import Limits
from agents.deploy.metrics import Metrics
from agents.deploy.policy import DeployedPolicy
from vvho_env.env import FEATURES
from vvho_env.live.backend import LibvirtBackend, Workload
from vvho_env.live.probe import rt_section
from vvho_env.objective import change_cost, objective_for
from vvho_env.types import ApplyRejected, BackendError, Settings, Telemetry

MODES = ("shadow", "active")


@dataclass
class StepResult:
    telemetry: Telemetry | None
    objective: float | None
    decision: Decision
    applied: Settings | None
    decision_s: float


def decide(policy: DeployedPolicy, guards: Guards, tel: Telemetry | None, objective: float | None,
           current: Settings, stamps: list[int] | None = None
           ) -> tuple[Decision, np.ndarray, Settings, np.ndarray | None]:
    """Telemetry in, guarded action out: (decision, proposed position, proposed settings, observation).
    What the decision latency target (benchmarks/deploy.py) times. It runs at its caller's priority:
    HostAgent.run holds the probe's (SCHED_FIFO where allowed) for the whole run, so that a control step
    of ~0.1 ms does not wait for the load it is managing, without two system calls per decision.
    The observation is the policy's buffer: valid until its next observe().

    With `stamps`, time.perf_counter_ns() is appended at the start and after each stage (observation with
    its normalisation, the policy's graph, the decoding, the guards): the benchmark's breakdown."""

    def mark() -> None:
        if stamps is not None:
            stamps.append(time.perf_counter_ns())

    mark()
    if tel is not None:
        obs = policy.observe(tel)
        x = policy.normalised(obs)
        mark()
        action = policy.bundle.run(x)
        mark()
        position, proposed = policy.decode(action)
        mark()
    else:  # nothing to observe: the proposal is what the host holds
        obs, position, proposed = None, policy.position, {n: current[n] for n in policy.knob_names}
        for _ in range(3):  # the stages it skipped, so that every call leaves as many stamps
            mark()
    d = guards.decide(tel, objective, current, policy.position, position, proposed)
    mark()
    return d, position, proposed, obs


class HostAgent:
    def __init__(self, backend: LibvirtBackend, policy: DeployedPolicy, limits: Limits, audit: AuditLog, *,
                 mode: str = "shadow", dry_run: bool = False, interval_s: float | None = None,
                 workload: Workload | None = None, metrics: Metrics | None = None,
                 echo: Callable[[str], None] = print) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} not accepted; accepted: {', '.join(MODES)}")
        self.backend, self.policy, self.limits, self.audit = backend, policy, limits, audit
        self.mode, self.dry_run, self.metrics, self.echo = mode, dry_run, metrics, echo
        sc = policy.scenario
        self.interval_s = interval_s or sc.interval_s
        phase = sc.phases[0]
        self.workload = workload or Workload(phase.rate_rps, phase.service_mean_us, float(sc.slo_us))
        self.objective = objective_for(sc)
        self.original = backend.read()
        self.current = dict(self.original)
        self.guards = Guards(limits, policy.knob_names, self.original, policy.bundle.manifest.get("knob_bounds"))
        self.stop = threading.Event()
        backend.set_workload(self.workload)
        policy.start(self.original)
        self.applies = mode == "active" and not dry_run

    def _record_start(self, bundle: str) -> None:
        self.audit.write("start", bundle=bundle, sha256=self.policy.sha256, mode=self.mode, dry_run=self.dry_run,
                         domain=self.backend.domain_name, uri=self.backend.uri, interval_s=self.interval_s,
                         workload=self.workload.__dict__, knobs=list(self.policy.knob_names),
                         limits=self.limits.model_dump(mode="json"), settings=self.original,
                         snapshot=str(self.backend.snapshot_path))


    def step(self) -> StepResult:
        try:
            tel: Telemetry | None = self.backend.measure(self.interval_s)
        except BackendError as exc:
            tel = None
            self.audit.write("fault", during="measure", error=f"{type(exc).__name__}: {exc}")
        objective = self.objective(tel) if tel is not None else None
        t0 = time.perf_counter()
        d, position, proposed, obs = decide(self.policy, self.guards, tel, objective, self.current)
        decision_s = time.perf_counter() - t0
        applied = None
        held = {n: self.current[n] for n in self.policy.knob_names}
        diff = {k: (held[k], v) for k, v in (d.target or {}).items() if held[k] != v}
        if diff and self.dry_run:
            self.echo("would apply: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items()))
        if d.target is not None and diff and self.applies:
            try:
                applied = self.backend.apply({k: v for k, (_, v) in diff.items()})
            except (ApplyRejected, BackendError) as exc:
                self.audit.write("fault", during="apply", error=f"{type(exc).__name__}: {exc}", wanted=d.target)
            else:
                self.current.update(applied)
                self.guards.applied(d.rollback)
        if applied is not None or (d.target is None and d.position is not None and self.applies):
            self.policy.moved_to(d.position if d.position is not None else position)
        self._record(tel, objective, obs, proposed, d, applied, decision_s)
        if self.metrics is not None:
            if tel is not None and objective is not None:
                self.metrics.window(tel, objective)
            changed = any(self.current[k] != v for k, v in proposed.items())
            self.metrics.decided(d, changed, applied is not None, decision_s)
        return StepResult(tel, objective, d, applied, decision_s)

    def _record(self, tel: Telemetry | None, objective: float | None, obs: np.ndarray | None,
                proposed: Settings, d: Decision, applied: Settings | None, decision_s: float) -> None:
        window: dict[str, Any] | None = None
        if tel is not None:
            window = {k: getattr(tel, k) for k in ("requests", "p50_us", "p99_us", "p999_us", "slo_violations",
                                                   "served_rps", "vm_cpu", "throttled_frac", "neighbour_cpu",
                                                   "neighbour_slowdown", "errors")}
            window.update(status=tel.status.value, notes=list(tel.notes))
            if tel.histogram is not None:  # sparse, so that windows pool exactly later (promote, status)
                window["histogram"] = {int(b): int(tel.histogram[b]) for b in np.flatnonzero(tel.histogram)}
        last = None
        if obs is not None:
            k = len(FEATURES)
            hist = obs[: self.policy.codec.history * k]
            last = dict(zip(FEATURES, hist[-k:].round(4).tolist(), strict=True))
        self.audit.write("decision", mode=self.mode, window=window, objective=objective,
                         observation={"last_window": last,
                                      "previous_action": self.policy.position.round(4).tolist()},
                         proposed=proposed, guards=[v.as_dict() for v in d.verdicts], target=d.target,
                         applied=applied, rollback=d.rollback, settings=dict(self.current),
                         change_cost=change_cost(self.original, self.current), decision_us=decision_s * 1e6)

    def run(self, bundle: str, intervals: int | None = None) -> int:
        """Run until stopped or for `intervals` windows; returns the windows run. The loop holds the probe's
        priority (rt_section: SCHED_FIFO where the kernel's RT limit is in force), which the probe's windows
        hold anyway, so that decisions need no system calls of their own; it ends with the loop (or the
        thread: a kill leaves no scheduling class behind), and threads started meanwhile do not inherit it."""
        self._record_start(bundle)
        n = 0
        with rt_section():
            while not self.stop.is_set() and (intervals is None or n < intervals):
                self.step()
                n += 1
        return n

    def finish(self, keep: bool, reason: str) -> None:
        """Restore the settings found at start (or keep the current ones) and record how the run ended."""
        error = None
        try:
            self.backend.close(restore=not keep)
        except BackendError as exc:
            error = str(exc)
        restored = None
        if not keep and error is None:
            restored = self.original
        self.audit.write("stop", reason=reason, kept=keep, restored=restored, error=error,
                         settings=self.current if keep else self.original)
        if self.metrics is not None:
            self.metrics.close()
        self.audit.close()
        if error:
            raise BackendError(error)
