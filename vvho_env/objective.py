"""The one objective every method is judged by (lower is better; the env's reward is its negative).

    J = w_lat * clip(log(p99 / SLO), log(HEADROOM), LAT_CAP) - log(HEADROOM)   tail latency vs the SLO
      + w_viol * violations / ref_requests                 SLO violations (additive over windows)
      + w_unserved * max(0, offered - served) / ref_requests   unserved load: the backlog's growth
      + w_cpu * vm_cpu                                     CPU cost in cores (busy + polling + reserved)
      + w_nb * neighbour_slowdown                          share of neighbours' runnable time lost
      + w_chg * sum_k change_weight_k * |dx_k| / 2         cost of moving knobs (dx in [-1, 1] units)

The latency term is log(p99/SLO) clipped below at half the SLO and shifted to start at 0: a p99 of
half the SLO or better earns nothing more, so once the tail has that headroom the objective trades
only CPU and neighbour cost (as an operator would), and J stays >= 0 so that ratios of objectives
between methods mean something. p99 = SLO scores log 2 = 0.69, 10x the SLO 3.0; the cap is 100x.
The violation term divides by a fixed per-scenario reference request count, so its sum over
windows equals pooled violations / reference: it agrees with metrics pooled over an episode.

Unserved load (no trap in overload). When a VM gets less CPU than its load needs, its queue grows:
every request is eventually served late or dropped (a dropped request counts as a violation), so the
violation term is pinned near offered / ref whatever the capacity, and the latency term sits at its
cap. Without a further term only the CPU term would still move, and J would *rise* as the starved VM
gets more CPU: every local method would be pulled towards starving it. The unserved term counts the
requests offered in the window that it did not serve (offered - served, the growth of the backlog; 0
while a backlog drains), so J falls one for one as the VM serves more. Its weight is above the
violation weight: a request served late instead of left queued adds one violation and removes one
unserved request, and that move must lower J; and it is far above the CPU cost of serving one more
request (w_cpu x service time / window, ~1e-4 per request), so the sum falls monotonically as a starved
VM gets the CPU it needs (tests/test_objective.py sweeps the quota of an overloaded phase). Off
overload, served follows offered up to the few requests in flight at a window's edges.

A window that served nothing while load was offered scores the latency cap, its violations (dropped
requests) and all its offered requests as unserved: never better than any served window at the same
CPU and neighbour cost.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vvho_env import knobs
from vvho_env.types import KnobValue, Telemetry

HEADROOM = 0.5  # p99 at or below this share of the SLO earns nothing more
LAT_CAP = math.log(100.0)  # p99 at 100x the SLO or worse: no further distinction
LAT_CLIP = LAT_CAP - math.log(HEADROOM)  # the largest latency term


@functools.cache
def definition_digest() -> str:
    """Digest of the objective's definition (this module: its terms, constants and default weights), for
    caches of objective values (best-known searches, hyperparameter sweeps) to key on."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class ObjectiveWeights:
    latency: float = 1.0
    violations: float = 2.0
    unserved: float = 4.0  # > violations: see the module docstring
    cpu: float = 0.1
    neighbour: float = 1.0
    change: float = 1.0


@dataclass(frozen=True)
class Objective:
    weights: ObjectiveWeights
    ref_requests: float  # the scenario's mean requests per window

    def terms(self, tel: Telemetry, change: float = 0.0) -> dict[str, float]:
        w = self.weights
        ref = max(self.ref_requests, 1.0)
        offered = tel.offered_rps * tel.window_s
        served = tel.served_rps * tel.window_s
        if tel.requests > 0 and math.isfinite(tel.p99_us):
            ratio = max(tel.p99_us / tel.slo_us, HEADROOM)
            lat = min(math.log(ratio), LAT_CAP) - math.log(HEADROOM)
        elif offered > 0:
            lat = LAT_CLIP
        else:
            lat = 0.0
        return {
            "latency": w.latency * lat,
            "violations": w.violations * tel.slo_violations / ref,
            "unserved": w.unserved * max(0.0, offered - served) / ref,
            "cpu": w.cpu * tel.vm_cpu,
            "neighbour": w.neighbour * tel.neighbour_slowdown,
            "change": w.change * change,
        }

    def __call__(self, tel: Telemetry, change: float = 0.0) -> float:
        return sum(self.terms(tel, change).values())


def change_cost(prev: Mapping[str, KnobValue], new: Mapping[str, KnobValue]) -> float:
    """Sum over changed knobs of change_weight * |distance on the [-1, 1] scale| / 2."""
    total = 0.0
    for name, value in new.items():
        if name in prev and prev[name] != value:
            k = knobs.get(name)
            total += k.change_weight * abs(k.to_unit(value) - k.to_unit(prev[name])) / 2.0
    return total


def objective_for(scenario: object, weights: ObjectiveWeights | None = None) -> Objective:
    """The objective of a scenario: default weights, its CPU weight override, its reference load."""
    from vvho_env.scenarios import Scenario, mean_requests_per_window

    assert isinstance(scenario, Scenario)
    w = weights or ObjectiveWeights()
    if scenario.cpu_weight is not None and weights is None:
        w = ObjectiveWeights(cpu=scenario.cpu_weight)
    return Objective(weights=w, ref_requests=mean_requests_per_window(scenario))
