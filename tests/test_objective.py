"""The one objective: documented terms, additive violations, the clip for dead windows, change cost, and
no trap in overload (J falls monotonically as a starved VM gets the CPU it needs)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from vvho_env import knobs
from vvho_env.objective import HEADROOM, LAT_CAP, LAT_CLIP, Objective, ObjectiveWeights, change_cost, objective_for
from vvho_env.scenarios import load_scenario, mean_requests_per_window
from vvho_env.types import Telemetry

W = ObjectiveWeights(latency=1.5, violations=2.5, unserved=4.5, cpu=0.3, neighbour=0.7, change=1.2)


def tel(**kw: object) -> Telemetry:
    base: dict[str, object] = dict(
        window_s=0.25,
        requests=1000,
        p50_us=100.0,
        p99_us=400.0,
        p999_us=900.0,
        mean_us=120.0,
        slo_us=1000.0,
        slo_violations=5,
        offered_rps=4000.0,
        served_rps=4000.0,
        vm_cpu=1.2,
        polling_cpu=0.1,
        reserved_cores=0.0,
        throttled_frac=0.0,
        neighbour_cpu=1.5,
        neighbour_slowdown=0.2,
    )
    base.update(kw)
    return Telemetry(**base)  # type: ignore[arg-type]


def test_terms_follow_the_docstring_formula() -> None:
    obj = Objective(weights=W, ref_requests=800.0)
    t = tel()
    terms = obj.terms(t, change=0.05)
    assert terms["latency"] == 0.0  # p99 400 us is within half the 1000 us SLO: no latency cost
    slow = obj.terms(tel(p99_us=3000.0))
    assert slow["latency"] == pytest.approx(1.5 * (math.log(3000.0 / 1000.0) - math.log(HEADROOM)))
    assert terms["violations"] == pytest.approx(2.5 * 5 / 800.0)
    assert terms["unserved"] == 0.0  # served everything offered
    behind = obj.terms(tel(served_rps=3000.0))
    assert behind["unserved"] == pytest.approx(4.5 * (4000.0 - 3000.0) * 0.25 / 800.0)
    assert obj.terms(tel(served_rps=5000.0))["unserved"] == 0.0  # a draining backlog earns nothing
    assert terms["cpu"] == pytest.approx(0.3 * 1.2)
    assert terms["neighbour"] == pytest.approx(0.7 * 0.2)
    assert terms["change"] == pytest.approx(1.2 * 0.05)
    assert obj(t, 0.05) == pytest.approx(sum(terms.values()))


def test_latency_term_is_shifted_log_between_headroom_and_cap() -> None:
    obj = Objective(weights=ObjectiveWeights(), ref_requests=1000.0)
    assert HEADROOM == 0.5
    assert math.log(100.0) - math.log(0.5) == pytest.approx(LAT_CLIP)
    assert obj.terms(tel(p99_us=1000.0))["latency"] == pytest.approx(math.log(2.0))  # p99 = SLO: log 2
    assert obj.terms(tel(p99_us=10_000.0))["latency"] == pytest.approx(math.log(20.0))  # 10x: 3.0
    assert obj.terms(tel(p99_us=100_000.0))["latency"] == pytest.approx(LAT_CLIP)  # the cap
    assert obj.terms(tel(p99_us=1e9))["latency"] == pytest.approx(LAT_CAP - math.log(HEADROOM))
    for p in (10.0, 250.0, 500.0):  # at or below half the SLO: nothing
        assert obj.terms(tel(p99_us=p))["latency"] == 0.0


def test_latency_term_is_monotone_in_p99_and_strict_between_headroom_and_cap() -> None:
    obj = Objective(weights=ObjectiveWeights(), ref_requests=1000.0)
    vals = [obj(tel(p99_us=p)) for p in (10.0, 500.0, 600.0, 1000.0, 10_000.0, 50_000.0, 200_000.0)]
    assert vals == sorted(vals)
    assert vals[0] == vals[1] and vals[-2] < vals[-1]
    strict = vals[1:6]
    assert len(set(strict)) == len(strict)


def test_violation_term_is_additive_over_windows() -> None:
    ref = 2500.0
    obj = Objective(weights=W, ref_requests=ref)
    windows = [tel(requests=n, slo_violations=v) for n, v in [(2400, 0), (2600, 13), (3100, 250), (900, 7)]]
    summed = sum(obj.terms(t)["violations"] for t in windows)
    pooled = sum(t.slo_violations for t in windows) / ref
    assert summed == pytest.approx(W.violations * pooled)


def test_empty_window_with_offered_load_scores_the_clip() -> None:
    obj = Objective(weights=W, ref_requests=1000.0)
    dead = tel(
        requests=0,
        p50_us=math.nan,
        p99_us=math.nan,
        p999_us=math.nan,
        mean_us=math.nan,
        slo_violations=0,
        offered_rps=4000.0,
        served_rps=0.0,
    )
    terms = obj.terms(dead)
    assert terms["latency"] == pytest.approx(W.latency * LAT_CLIP)
    assert terms["violations"] == 0.0
    assert terms["unserved"] == pytest.approx(W.unserved * 4000.0 * 0.25 / 1000.0)
    # a dead window never scores better than any served window at the same offered load, CPU and
    # neighbour cost, however late and partial its service
    for served, viol in ((4000.0, 1000), (2000.0, 500), (400.0, 100)):
        worst = tel(p99_us=1e9, requests=int(served * 0.25), served_rps=served, slo_violations=viol)
        assert obj(dead) >= obj(worst)


def test_idle_window_without_load_scores_only_costs() -> None:
    obj = Objective(weights=W, ref_requests=1000.0)
    idle = tel(requests=0, p99_us=math.nan, offered_rps=0.0, served_rps=0.0, slo_violations=0)
    terms = obj.terms(idle)
    assert terms["latency"] == 0.0 and terms["violations"] == 0.0 and terms["unserved"] == 0.0
    assert obj(idle) == pytest.approx(W.cpu * 1.2 + W.neighbour * 0.2)


def test_change_cost_zero_without_change() -> None:
    d = knobs.defaults()
    assert change_cost(d, dict(d)) == 0.0
    assert change_cost(d, {}) == 0.0


def test_change_cost_of_pinning_is_its_weight_times_half_the_distance() -> None:
    d = knobs.defaults()
    pin = knobs.REGISTRY["vcpu_pinning"]
    cost = change_cost(d, {**d, "vcpu_pinning": "dedicated"})
    assert cost > 0.0
    dist = abs(pin.to_unit("dedicated") - pin.to_unit("shared"))
    assert cost == pytest.approx(pin.change_weight * dist / 2.0)
    assert change_cost({**d, "vcpu_pinning": "dedicated"}, d) == pytest.approx(cost)  # symmetric


def test_change_cost_adds_over_knobs_and_ignores_free_knobs() -> None:
    d = knobs.defaults()
    both = change_cost(d, {"vcpu_pinning": "dedicated", "emulator_placement": "housekeeping"})
    one = change_cost(d, {"vcpu_pinning": "dedicated"})
    other = change_cost(d, {"emulator_placement": "housekeeping"})
    assert both == pytest.approx(one + other)
    assert knobs.REGISTRY["vcpu_quota"].change_weight == 0.0
    assert change_cost(d, {"vcpu_quota": 20000}) == 0.0


def test_objective_for_uses_the_scenario_reference_and_cpu_weight() -> None:
    sc = load_scenario("quota-tight-v0")
    obj = objective_for(sc)
    assert obj.ref_requests == pytest.approx(mean_requests_per_window(sc))
    assert sc.cpu_weight is not None and obj.weights.cpu == sc.cpu_weight
    assert objective_for(load_scenario("steady-low-v0")).weights == ObjectiveWeights()
    explicit = ObjectiveWeights(cpu=0.01)
    assert objective_for(sc, explicit).weights == explicit  # explicit weights win over the scenario's


def test_more_cpu_or_more_slowdown_costs_more() -> None:
    obj = Objective(weights=ObjectiveWeights(), ref_requests=1000.0)
    t = tel()
    assert obj(replace(t, vm_cpu=2.0)) > obj(t)
    assert obj(replace(t, neighbour_slowdown=0.5)) > obj(t)
    assert obj(t, change=0.1) > obj(t)


def test_default_unserved_weight_exceeds_the_violation_weight() -> None:
    """Serving a request late instead of leaving it queued must lower J (module docstring)."""
    w = ObjectiveWeights()
    assert w.unserved > w.violations


QUOTAS_US = (5_000, 10_000, 20_000, 30_000, 40_000, 50_000, 55_000, 60_000, 70_000, 80_000, 100_000, -1)


def test_objective_falls_monotonically_as_a_starved_vm_gets_quota() -> None:
    """quota-tight-v0's high phase needs ~55% of each vCPU: sweep the per-vCPU quota from starving
    (5 ms per 100 ms) to unlimited on common seeds. J must fall strictly while the VM is starved (served
    clearly below offered), and must not rise with quota beyond the seeds' paired noise.

    Once the quota barely binds, a step changes J by less than the trajectory noise a few throttled
    milliseconds cause: 80 ms per 100 ms throttles 3.8 ms/s and, with wake-up preemption (EEVDF), the
    perturbed run's tail differs seed by seed. Measured on seeds 1-11 (12 windows): J 134.2 at 80 ms
    against 136.7 unlimited, paired per-seed difference -0.23 +- 0.23 (s.e.), lower on 7 of 11 seeds:
    noise, not a trap (seeds 1-3: 36.52 against 37.16). A rise is a failure when it exceeds twice the
    standard error of the summed paired differences; while starved the strict fall is exact."""
    from vvho_env.sim.backend import BatchSim

    sc = load_scenario("quota-tight-v0")
    high = sc.model_copy(update={"phases": (sc.phases[1].model_copy(update={"intervals": 20}),)})
    obj = objective_for(sc)
    seeds = (1, 2, 3)
    sim = BatchSim(len(QUOTAS_US) * len(seeds))
    for i, q in enumerate(QUOTAS_US):
        for j, s in enumerate(seeds):
            sim.reset_env(i * len(seeds) + j, s, high, settings={"vcpu_quota": q})
    for _ in range(2):
        sim.run(high.interval_s)
    total = [0.0] * sim.n
    offered = [0.0] * sim.n
    served = [0.0] * sim.n
    for _ in range(12):
        for k, t in enumerate(sim.run(high.interval_s)):
            total[k] += obj(t)
            offered[k] += t.offered_rps
            served[k] += t.served_rps
    n = len(seeds)
    per = [sum(total[i * n:(i + 1) * n]) for i in range(len(QUOTAS_US))]
    starved = [sum(served[i * n:(i + 1) * n]) < 0.98 * sum(offered[i * n:(i + 1) * n]) for i in range(len(QUOTAS_US))]
    assert starved[0] and not starved[-1], "the sweep must span starved to sufficient"
    for i in range(len(QUOTAS_US) - 1):
        d = np.subtract(total[(i + 1) * n:(i + 2) * n], total[i * n:(i + 1) * n])
        noise = 2.0 * float(np.std(d, ddof=1)) * np.sqrt(n)  # 2 s.e. of the summed paired differences
        assert per[i + 1] <= per[i] + noise + 1e-9, (QUOTAS_US[i], QUOTAS_US[i + 1], per, d.tolist())
        if starved[i]:
            assert per[i + 1] < per[i], (QUOTAS_US[i], QUOTAS_US[i + 1], per)
