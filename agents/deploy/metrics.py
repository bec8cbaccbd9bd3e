"""The host agent's Prometheus metrics, served read-only on 127.0.0.1 only.

    vvho_latency_us{quantile="0.5"|"0.99"|"0.999"}   the last window's latency percentiles
    vvho_objective                                    the last window's objective (lower is better)
    vvho_window_degraded                              1 if the last window was DEGRADED
    vvho_actions_total{outcome}                       proposed | applied | blocked | rolled_back
    vvho_guard_verdicts_total{guard,verdict}          how often each guard fired, and how
    vvho_decision_seconds                             telemetry in -> guarded action out
    vvho_agent_info{bundle_sha256,mode,domain}        what is running

prometheus_client's server answers GET with the exposition text, OPTIONS with "Allow: OPTIONS,GET" and
every other method with 405: nothing can be written through it. It binds the loopback address only,
so only local scrapers (or a forwarder the operator runs) can reach it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from agents.deploy.guards import Decision
from vvho_env.types import Status, Telemetry

LOOPBACK = "127.0.0.1"


class Metrics:
    def __init__(self, port: int, info: dict[str, str]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.latency = Gauge("vvho_latency_us", "latency percentiles of the last window (us)", ["quantile"],
                             registry=r)
        self.objective = Gauge("vvho_objective", "objective of the last window (lower is better)", registry=r)
        self.degraded = Gauge("vvho_window_degraded", "1 if the last window was DEGRADED", registry=r)
        self.actions = Counter("vvho_actions", "actions by outcome", ["outcome"], registry=r)
        self.guards = Counter("vvho_guard_verdicts", "guard verdicts", ["guard", "verdict"], registry=r)
        self.decision = Histogram("vvho_decision_seconds", "telemetry in -> guarded action out", registry=r,
                                  buckets=(25e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 5e-3, 0.05))
        Info("vvho_agent", "the running host agent", registry=r).info(info)
        self.server, self.thread = start_http_server(port, addr=LOOPBACK, registry=r)
        self.port = self.server.server_port

    def window(self, tel: Telemetry, objective: float) -> None:
        for q, v in (("0.5", tel.p50_us), ("0.99", tel.p99_us), ("0.999", tel.p999_us)):
            self.latency.labels(q).set(v)
        self.objective.set(objective)
        self.degraded.set(1.0 if tel.status is Status.DEGRADED else 0.0)

    def decided(self, d: Decision, proposed_change: bool, applied: bool, seconds: float) -> None:
        self.decision.observe(seconds)
        for v in d.verdicts:
            self.guards.labels(v.guard, v.verdict).inc()
        if proposed_change:
            self.actions.labels("proposed").inc()
            if d.blocked:
                self.actions.labels("blocked").inc()
        if applied:
            self.actions.labels("rolled_back" if d.rollback else "applied").inc()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
