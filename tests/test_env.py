"""VVHOEnv and VVHOVectorEnv: API conformance, action handling, determinism, env k alone == batched."""

from __future__ import annotations

import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import gymnasium as gym
import numpy as np
import pytest

from vvho_env import ENV_ID, knobs
from vvho_env.env import FEATURES, ActionError, VVHOEnv, VVHOVectorEnv, acting_knobs, episode_seed, reference_rps
from vvho_env.objective import change_cost
from vvho_env.scenarios import ScenarioError, load_scenario, scenario_ids
from vvho_env.sim.backend import BatchSim
from vvho_env.sim.profiles import PROFILES
from vvho_env.types import ApplyRejected, Status, Telemetry

SIMULATED = [sid for sid in scenario_ids() if load_scenario(sid).host_profile in PROFILES]
MODES = ("absolute", "delta")


def telemetry_from_info(d: dict) -> Telemetry:
    """Rebuild the Telemetry an env step reported (as_dict turns NaN into None)."""
    fields = {k: (math.nan if v is None else v) for k, v in d.items() if k != "slo_violation_frac"}
    fields["status"] = Status(fields["status"])
    fields["notes"] = tuple(fields["notes"])
    return Telemetry(**fields)


def rollout(env: gym.Env, seed: int, actions: np.ndarray) -> list[tuple]:
    obs, info = env.reset(seed=seed)
    out: list[tuple] = [(obs.copy(), info["telemetry"])]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs.copy(), r, term, trunc, info["telemetry"], info["settings"]))
    return out


# ---------------------------------------------------------------- API conformance
# Each scenario's checks run in their own process: a simulator that hangs inside numba cannot be
# interrupted in-process, and must not hang the suite. All scenarios are checked concurrently.
CHECK_TIMEOUT_S = 60
HANG_TIMEOUT_S = 15
# scenarios whose checks hung the simulator before engine fixes: run last, with a short timeout
HANGING = ("bursty-mmpp-v0", "overcommit-4to1-v0")
CHECK_SCRIPT = """
import sys, warnings
import gymnasium as gym
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from vvho_env import ENV_ID
for mode in ("absolute", "delta"):
    env = gym.make(ENV_ID, scenario=sys.argv[1], action_mode=mode)
    env.action_space.seed(0)  # the checkers step with sampled actions: make them reproducible
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    ours = [str(w.message) for w in caught if "vvho_env" in str(w.filename)]
    assert not ours, ours
    env2 = gym.make(ENV_ID, scenario=sys.argv[1], action_mode=mode)
    env2.action_space.seed(0)
    sb3_check_env(env2, warn=True)
    env.close()
    env2.close()
print("checked", sys.argv[1])
"""


def _run_checks(sid: str, timeout_s: float) -> tuple[int | None, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHECK_SCRIPT, sid], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        text, _ = proc.communicate(timeout=timeout_s)
        return proc.returncode, text
    except subprocess.TimeoutExpired:
        proc.kill()
        text, _ = proc.communicate()
        return None, f"timed out after {timeout_s} s (simulator hang?)\n{text}"


@pytest.fixture(scope="module")
def checker_results() -> dict[str, tuple[int | None, str]]:
    """Two scenarios at a time (2 cores); the ones known to hang last, with a short timeout."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        ok = {sid: pool.submit(_run_checks, sid, CHECK_TIMEOUT_S) for sid in SIMULATED if sid not in HANGING}
        results = {sid: f.result() for sid, f in ok.items()}
        hung = {sid: pool.submit(_run_checks, sid, HANG_TIMEOUT_S) for sid in SIMULATED if sid in HANGING}
        results.update({sid: f.result() for sid, f in hung.items()})
    return results


@pytest.mark.parametrize("sid", SIMULATED)
def test_env_checkers_pass_for_every_simulated_scenario(
    sid: str, checker_results: dict[str, tuple[int | None, str]]
) -> None:
    assert scenario_ids() == SIMULATED, "every catalogue scenario has a simulated host profile"
    rc, text = checker_results[sid]
    assert rc == 0, text[-3000:]
    assert f"checked {sid}" in text


def test_spaces_match_the_docstring() -> None:
    env = VVHOEnv("steady-low-v0", history=3)
    n = len(env.knob_names)
    assert env.action_space.shape == (n,) and env.action_space.low.min() == -1 and env.action_space.high.max() == 1
    assert env.observation_space.shape == (3 * len(FEATURES) + n,)
    obs, _ = env.reset(seed=1)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    # the previous action at reset is the start settings on the unit scale
    np.testing.assert_allclose(obs[-n:], knobs.encode(env.scenario.settings_at_start(), env.knob_names), atol=1e-6)
    env.close()


def test_default_knobs_are_the_live_settable_ones_in_registry_order() -> None:
    names = acting_knobs("xeon-kvm", None)
    assert list(names) == [k.name for k in knobs.KNOBS if k.change_cost is knobs.ChangeCost.LIVE]
    assert "vcpu_count" not in names and "virtio_backend" not in names
    tb = acting_knobs("tcg-testbed", None)
    assert set(tb) <= PROFILES["tcg-testbed"].settable and "halt_poll_ns" not in tb


# ---------------------------------------------------------------- actions
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("mode", MODES)
def test_non_finite_action_raises_naming_the_knobs(mode: str, bad: float) -> None:
    env = VVHOEnv("steady-low-v0", action_mode=mode)
    env.reset(seed=0)
    a = np.zeros(len(env.knob_names), dtype=np.float32)
    a[[1, 4]] = bad
    with pytest.raises(ActionError) as exc:
        env.step(a)
    msg = str(exc.value)
    assert env.knob_names[1] in msg and env.knob_names[4] in msg
    assert env.knob_names[0] not in msg.split("knob(s)")[1].split(";")[0]
    with pytest.raises(ActionError, match="shape"):
        env.step(np.zeros(len(env.knob_names) + 1, dtype=np.float32))
    env.close()


def test_absolute_action_sets_the_decoded_values() -> None:
    env = VVHOEnv("steady-low-v0", action_mode="absolute")
    env.reset(seed=0)
    a = np.random.default_rng(5).uniform(-1, 1, len(env.knob_names)).astype(np.float32)
    _, _, _, _, info = env.step(a)
    assert info["settings"] == {**env.scenario.settings_at_start(), **knobs.decode(a, env.knob_names)}
    env.close()


def test_delta_mode_moves_each_knob_at_most_delta_step() -> None:
    """Each step moves the position on every knob's [-1, 1] scale by at most delta_step, the
    position is the last part of the observation, and each knob takes the value of its position."""
    step = 0.2
    env = VVHOEnv("steady-low-v0", action_mode="delta", delta_step=step)
    obs, _ = env.reset(seed=3)
    n = len(env.knob_names)
    pos = obs[-n:].astype(np.float64)
    assert np.allclose(pos, [knobs.get(k).to_unit(env.settings[k]) for k in env.knob_names], atol=1e-6)
    rng = np.random.default_rng(3)
    moved_any = False
    for _ in range(12):
        a = rng.uniform(-1.5, 1.5, n).astype(np.float32)
        prev = dict(env.settings)
        obs, *_ = env.step(a)
        new_pos = obs[-n:].astype(np.float64)
        expected = np.clip(pos + np.clip(a, -1, 1) * step, -1, 1)
        assert np.allclose(new_pos, expected, atol=1e-6)
        assert np.all(np.abs(new_pos - pos) <= step + 1e-6)
        for name, x in zip(env.knob_names, new_pos, strict=True):
            assert env.settings[name] == knobs.get(name).from_unit(float(x)), (name, x, env.settings[name])
        moved_any |= env.settings != prev
        pos = new_pos
    assert moved_any
    env.close()


def test_delta_mode_zero_action_changes_nothing() -> None:
    env = VVHOEnv("steady-low-v0", action_mode="delta")
    env.reset(seed=3)
    start = dict(env.settings)
    for _ in range(3):
        _, _, _, _, info = env.step(np.zeros(len(env.knob_names), dtype=np.float32))
        assert info.get("change_cost", 0.0) == 0.0
    assert env.settings == start
    env.close()


def test_delta_mode_can_reach_every_categorical_choice() -> None:
    """The env keeps the continuous position, so small steps accumulate across bin boundaries."""
    env = VVHOEnv("steady-low-v0", action_mode="delta", delta_step=0.25)
    env.reset(seed=0)
    for _ in range(10):
        env.step(np.ones(len(env.knob_names), dtype=np.float32))
    stuck = [
        n
        for n in env.knob_names
        if knobs.get(n).kind in ("categorical", "bool") and env.settings[n] != knobs.get(n).choices[-1]
    ]
    assert not stuck, f"ten +1 delta steps never changed {stuck}"


# ---------------------------------------------------------------- determinism and the reward
@pytest.fixture(scope="module")
def action_seq() -> np.ndarray:
    n = len(acting_knobs("xeon-kvm", None))
    return np.random.default_rng(99).uniform(-1, 1, (6, n)).astype(np.float32)


def test_reset_seed_determinism(action_seq: np.ndarray) -> None:
    env = VVHOEnv("bursty-mmpp-v0")
    a = rollout(env, 42, action_seq)
    b = rollout(env, 42, action_seq)
    c = rollout(env, 43, action_seq)
    env.close()
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:] == y[1:]
    assert [x[1:] for x in a] != [x[1:] for x in c]


def test_reward_is_minus_the_objective_of_the_telemetry(action_seq: np.ndarray) -> None:
    env = VVHOEnv("neighbour-churn-v0")
    env.reset(seed=8)
    prev = dict(env.settings)
    for a in action_seq:
        _, r, term, _, info = env.step(a)
        assert term is False
        tel = telemetry_from_info(info["telemetry"])
        cost = change_cost(prev, info["settings"])
        assert info.get("change_cost", 0.0) == pytest.approx(cost)
        assert r == pytest.approx(-env.objective(tel, cost))
        assert r == pytest.approx(-sum(info["objective_terms"].values()))
        prev = dict(info["settings"])
    env.close()


def test_episode_truncates_at_max_steps_and_reports_phase() -> None:
    env = VVHOEnv("steady-low-v0", max_steps=5)
    env.reset(seed=0)
    a = env.codec.encode(env.settings)
    flags = []
    for _ in range(5):
        _, _, term, trunc, info = env.step(a)
        flags.append((term, trunc))
        assert info["phase"] == "steady-a"
    assert flags == [(False, False)] * 4 + [(False, True)]
    env.close()


def test_observation_has_no_scenario_phase_or_neighbour_demand() -> None:
    banned = ("phase", "demand", "rate", "scenario", "step", "interval")
    assert not [f for f in FEATURES if any(b in f for b in banned)]
    assert "neighbour_cpu" in FEATURES  # what a host measures: CPU the neighbours got
    env = VVHOEnv("steady-low-v0", history=2)
    assert env.observation_space.shape == (2 * len(FEATURES) + len(env.knob_names),)
    env.close()


def test_close_is_idempotent() -> None:
    env = VVHOEnv("steady-low-v0")
    env.reset(seed=0)
    env.close()
    env.close()
    venv = VVHOVectorEnv(2, "steady-low-v0")
    venv.close()
    venv.close()


def test_unknown_scenario_error() -> None:
    with pytest.raises(ScenarioError, match="accepted: a catalogue id"):
        VVHOEnv("no-such-scenario-v0")
    with pytest.raises(ScenarioError, match="no-such-scenario-v0"):
        gym.make(ENV_ID, scenario="no-such-scenario-v0")


def test_knob_the_profile_cannot_set_is_a_clear_error() -> None:
    with pytest.raises(ApplyRejected) as exc:
        VVHOEnv("testbed-echo-v0", knob_names=["halt_poll_ns"])
    msg = str(exc.value)
    assert "halt_poll_ns" in msg and "tcg-testbed" in msg and "vcpu_quota" in msg  # lists what is settable
    with pytest.raises(ApplyRejected, match="halt_poll_ns"):
        VVHOVectorEnv(2, "testbed-echo-v0", knob_names=["halt_poll_ns"])
    with pytest.raises(knobs.KnobError, match="known knobs"):
        VVHOEnv("steady-low-v0", knob_names=["turbo"])


def test_bad_env_arguments_say_what_is_accepted() -> None:
    with pytest.raises(ValueError, match="'absolute', 'delta'"):
        VVHOEnv("steady-low-v0", action_mode="relative")
    with pytest.raises(ValueError, match=r"\(0, 2\]"):
        VVHOEnv("steady-low-v0", action_mode="delta", delta_step=0.0)
    with pytest.raises(ValueError, match=">= 1"):
        VVHOEnv("steady-low-v0", history=0)


# ---------------------------------------------------------------- env k alone == env k batched
SEEDS = [11, 202, 3003, 40004, 5, 66, 777, 8888]


def _batch_run(sim: BatchSim, envs: list[int], seeds: list[int], sid: str, acts: np.ndarray) -> list[list[dict]]:
    sc = load_scenario(sid)
    for i, k in enumerate(envs):
        sim.reset_env(k, seeds[i], sc)
    out: list[list[dict]] = [[] for _ in envs]
    for t in range(acts.shape[1]):
        for i, k in enumerate(envs):
            sim.apply_env(k, knobs.decode(acts[i, t], acting_knobs(sc.host_profile, None)))
        for i, tel in enumerate(sim.run(sc.interval_s)):
            out[i].append(tel.as_dict())
    return out


@pytest.mark.parametrize("sid", ["diurnal-noisy-v1", "overcommit-4to1-v0"])
def test_env_k_alone_equals_env_k_batched(sid: str) -> None:
    n_knobs = len(acting_knobs(load_scenario(sid).host_profile, None))
    acts = np.random.default_rng(1).uniform(-1, 1, (len(SEEDS), 5, n_knobs))
    batched = _batch_run(BatchSim(len(SEEDS)), list(range(len(SEEDS))), SEEDS, sid, acts)
    for k, s in enumerate(SEEDS):
        alone = _batch_run(BatchSim(1), [0], [s], sid, acts[k : k + 1])[0]
        assert alone == batched[k], f"env {k} (seed {s}) differs alone vs batched"
    assert batched[0] != batched[1]  # the envs really are different streams


def test_vector_env_k_alone_equals_env_k_batched() -> None:
    venv = VVHOVectorEnv(len(SEEDS), "mixed-v1")
    obs, _ = venv.reset(seed=SEEDS)
    acts = np.random.default_rng(2).uniform(-1, 1, (5, *venv.action_space.shape)).astype(np.float32)
    trace = [obs]
    for a in acts:
        o, r, _, _, info = venv.step(a)
        trace.append((o, r, info["p99_us"], info["vm_cpu"]))
    venv.close()
    for k in (0, 3, 7):
        solo = VVHOVectorEnv(1, "mixed-v1")
        o1, _ = solo.reset(seed=[SEEDS[k]])
        np.testing.assert_array_equal(o1[0], trace[0][k])
        for t, a in enumerate(acts):
            o, r, _, _, info = solo.step(a[k : k + 1])
            bo, br, bp99, bcpu = trace[t + 1]
            np.testing.assert_array_equal(o[0], bo[k])
            assert r[0] == br[k]
            np.testing.assert_array_equal(info["p99_us"][0], bp99[k])
            assert info["vm_cpu"][0] == bcpu[k]


# ---------------------------------------------------------------- vector env
def test_vector_env_shapes_and_autoreset() -> None:
    venv = VVHOVectorEnv(3, "steady-low-v0", max_steps=3)
    n = len(venv.knob_names)
    assert venv.single_action_space.shape == (n,)
    assert venv.action_space.shape == (3, n)
    assert venv.observation_space.shape == (3, venv.single_observation_space.shape[0])
    obs, _ = venv.reset(seed=0)
    assert obs.shape == venv.observation_space.shape and obs.dtype == np.float32
    a = np.zeros((3, n), dtype=np.float32)
    truncs = []
    for _ in range(3):
        obs, r, term, trunc, _ = venv.step(a)
        assert r.shape == (3,) and term.shape == (3,) and trunc.shape == (3,)
        assert not term.any() and np.isfinite(r).all() and (r < 0).all()
        assert venv.observation_space.contains(obs)
        truncs.append(trunc.copy())
    assert [t.tolist() for t in truncs] == [[False] * 3, [False] * 3, [True] * 3]
    # next step: autoreset (reset observation, zero reward, not truncated), then a fresh episode
    obs, r, term, trunc, _ = venv.step(a)
    assert (r == 0).all() and not trunc.any() and not term.any()
    assert (venv._steps == 0).all()
    np.testing.assert_allclose(obs[:, -n:], np.tile(venv.codec.encode(venv.scenario.settings_at_start()), (3, 1)))
    _, r, _, trunc, _ = venv.step(a)
    assert (r < 0).all() and not trunc.any()
    venv.close()


def test_vector_env_int_seed_is_reproducible() -> None:
    def run() -> list[np.ndarray]:
        venv = VVHOVectorEnv(2, "flash-crowd-v0", max_steps=2)
        out = [venv.reset(seed=123)[0]]
        a = np.full((2, len(venv.knob_names)), 0.3, dtype=np.float32)
        for _ in range(4):  # crosses an autoreset, which draws its seed from the seeded generator
            out.append(venv.step(a)[0])
        venv.close()
        return out

    for x, y in zip(run(), run(), strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_seed_names_the_same_episode_in_the_single_and_the_batched_env() -> None:
    """reset(seed=s) of VVHOEnv and env k of VVHOVectorEnv reset with seed s run the same episode."""
    seeds = [10_001, 10_002]
    venv = VVHOVectorEnv(2, "bursty-mmpp-v0", max_steps=4)
    vobs, _ = venv.reset(seed=seeds)
    hold = np.tile(venv.codec.encode(venv.scenario.settings_at_start()), (2, 1))
    vrewards = np.array([venv.step(hold)[1] for _ in range(4)])
    for k, s in enumerate(seeds):
        env = VVHOEnv("bursty-mmpp-v0", max_steps=4)
        obs, _ = env.reset(seed=s)
        np.testing.assert_array_equal(obs, vobs[k])
        rewards = [env.step(hold[k])[1] for _ in range(4)]
        env.close()
        assert rewards == vrewards[:, k].tolist()
    assert vrewards[0, 0] != vrewards[0, 1]


def test_mixture_draws_a_scenario_per_episode_from_its_seed() -> None:
    from vvho_env.mixture import ScenarioMixture

    mix = ScenarioMixture.of(["steady-low-v0", "flash-crowd-v0", "bursty-mmpp-v0"], randomise=False)
    drawn = {mix.draw(s).id for s in range(40)}
    assert drawn == {"steady-low-v0", "flash-crowd-v0", "bursty-mmpp-v0"}
    assert all(mix.draw(s) == mix.draw(s) for s in range(10))
    venv = VVHOVectorEnv(4, mix)
    assert venv.max_steps == 80  # the longest scenario; the others cycle through their phases
    venv.reset(seed=[1, 2, 3, 4])
    expect = [mix.draw(episode_seed(s)).id for s in (1, 2, 3, 4)]
    assert [sc.id for sc in venv.scenarios] == expect
    single = VVHOEnv(mix)
    single.reset(seed=3)
    assert single.scenario.id == expect[2] and single.max_steps == 80
    # observations are relative to each env's own scenario
    assert venv._ref.tolist() == [reference_rps(load_scenario(i)) for i in expect]
    with pytest.raises(ScenarioError, match="different knobs"):
        ScenarioMixture.of(["steady-low-v0", "testbed-echo-v0"])


def test_vector_env_with_one_scenario_per_env_ends_each_at_its_own_length() -> None:
    venv = VVHOVectorEnv(2, ["flash-crowd-v0", "steady-low-v0"])
    assert venv.episode_steps.tolist() == [50, 80] and venv.max_steps == 80
    venv.reset(seed=0)
    zeros = np.zeros((2, len(venv.knob_names)), dtype=np.float32)
    ends = [venv.step(zeros)[3].tolist() for _ in range(50)]
    assert ends[-1] == [True, False] and not any(e[1] for e in ends)
