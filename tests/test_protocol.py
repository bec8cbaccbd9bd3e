"""The harness's measurement protocol: settle windows are counted in the budget and never told to a
tuner, a backlog makes a change settle, and the context covariate removes a phase change's effect."""

from __future__ import annotations

import numpy as np

from baselines.methods import MethodSpec
from baselines.run import build_space, eval_seeds, run_tuner
from vvho_env.env import VVHOEnv
from vvho_env.harness import ContextAdjustment, MeasuredController, MeasurementProtocol, neighbour_demand, run_episode
from vvho_env.scenarios import load_scenario
from vvho_env.types import Settings, Telemetry

STEADY = load_scenario("steady-low-v0")
QUOTA = load_scenario("quota-tight-v0")
HIGH = QUOTA.model_copy(update={"id": "quota-high-test-v0", "phases": (QUOTA.phases[1],)})


class Alternating:
    """Asks two settings in turn, one told window each; records what it is told."""

    def __init__(self, a: Settings, b: Settings) -> None:
        self.options = (a, b)
        self.told: list[tuple[Settings, float]] = []

    def ask(self) -> Settings:
        return dict(self.options[len(self.told) % 2])

    def tell(self, settings: Settings, objective: float, telemetry: Telemetry | None = None) -> None:
        self.told.append((settings, objective))


def test_settle_windows_are_counted_and_not_scored() -> None:
    env = VVHOEnv(STEADY)
    base = STEADY.settings_at_start()
    tuner = Alternating(dict(base, idle_state="C1"), dict(base, idle_state="C6"))
    ctl = MeasuredController(tuner, MeasurementProtocol(settle=1, always_settle=True, covariate=False))
    ep = run_episode(env, ctl, seed=3, steps=20)
    assert ep.steps == ctl.windows == 20  # every window is spent from the budget...
    assert ctl.settle_windows == 10 and len(tuner.told) == 10  # ...but each change's first one is not scored
    told = [j for _, j in tuner.told]
    scored = [j for j, s, prev in zip(ep.objective, ep.settings, [None, *ep.settings], strict=False)
              if s == prev]  # windows that followed a window with the same settings
    assert told == scored


def test_a_change_after_a_backlog_settles_and_a_clean_one_does_not() -> None:
    env = VVHOEnv(HIGH)
    base = HIGH.settings_at_start()
    starved, free = dict(base, vcpu_quota=5000), dict(base, vcpu_quota=-1)
    tuner = Alternating(starved, free)  # 14000 rps under 5 ms per 100 ms: throttled, load unserved
    ctl = MeasuredController(tuner, MeasurementProtocol(settle=1, covariate=False))
    run_episode(env, ctl, seed=5, steps=12)
    assert ctl.settle_windows >= 3  # the changes away from the starved setting settle
    clean = Alternating(dict(base, vcpu_quota=-1, idle_state="C1"), dict(base, vcpu_quota=-1))
    ctl2 = MeasuredController(clean, MeasurementProtocol(settle=1, covariate=False))
    run_episode(VVHOEnv(STEADY.model_copy(update={"base_settings": {"vcpu_quota": -1}})), ctl2, seed=5, steps=12)
    assert ctl2.settle_windows == 0 and len(clean.told) == 12


def test_run_tuner_counts_settle_windows_in_its_budget() -> None:
    env = VVHOEnv(HIGH)
    out = run_tuner(MethodSpec.parse("random"), env, build_space(env), 30, 1, eval_seeds(1, 1), 4)
    assert out.windows == 30 and 0 < out.settle_windows < 30
    assert out.tuning is not None and out.tuning.steps == 30


def test_context_covariate_removes_a_phase_change() -> None:
    # two settings, the second 0.1 better; halfway the load doubles and J rises by 0.04 per 100 rps for
    # both; setting B is measured mostly in the busy phase, so its raw mean looks worse
    rng = np.random.default_rng(0)
    adj = ContextAdjustment(min_dof=8)
    raw: dict[str, list[float]] = {"a": [], "b": []}
    told: dict[str, list[float]] = {"a": [], "b": []}
    for k in range(80):
        busy = k >= 40
        key = "a" if (k % 4 == 0) == busy else "b"  # a: 3 in 4 windows when calm, 1 in 4 when busy
        rate = 2000.0 if busy else 1000.0
        ctx = np.array([rate + rng.normal(0, 30), 0.3])
        j = (0.0 if key == "a" else -0.1) + 4e-4 * ctx[0] + rng.normal(0, 0.01)
        raw[key].append(j)
        told[key].append(adj.adjust({"knob": key}, j, ctx))
    late = slice(20, None)  # after beta has been fitted
    assert np.mean(raw["b"]) > np.mean(raw["a"])  # measured as is, the better setting looks worse
    assert np.mean(told["b"][late]) < np.mean(told["a"][late]) - 0.05


def test_neighbour_demand_is_what_they_asked_for() -> None:
    tel = Telemetry(window_s=1.0, requests=0, p50_us=0, p99_us=0, p999_us=0, mean_us=0, slo_us=1, slo_violations=0,
                    offered_rps=0, served_rps=0, vm_cpu=0, polling_cpu=0, reserved_cores=0, throttled_frac=0,
                    neighbour_cpu=0.6, neighbour_slowdown=0.4)
    assert np.isclose(neighbour_demand(tel), 1.0)
