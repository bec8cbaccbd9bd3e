"""VVHOEnv under backend faults: retries, truncation with the reason, DEGRADED windows scored and reported.

The backend is the real simulator wrapped by a fault injector that raises the typed backend errors a
live host raises, or marks windows DEGRADED, on the calls a test chooses. The live tests inject the
real faults (libvirtd killed, domain destroyed, guest stopped, port blocked) against a real guest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pytest

from vvho_env.env import VVHOEnv
from vvho_env.scenarios import Scenario
from vvho_env.sim.backend import SimBackend
from vvho_env.types import BackendUnavailable, Capabilities, KnobValue, MeasurementFailed, Settings, Status, Telemetry


class FaultInjector:
    """The simulator, with faults injected on the measure() calls whose numbers are in `fail` (raise)
    or `degrade` (a DEGRADED window), counted from 0 over the backend's life."""

    def __init__(self, fail: set[int] = frozenset(), degrade: set[int] = frozenset(),  # type: ignore[assignment]
                 fail_resets: int = 0) -> None:
        self.sim = SimBackend(profile="xeon-kvm")
        self.fail, self.degrade, self.fail_resets = fail, degrade, fail_resets
        self.calls = 0
        self.resets = 0

    def reset(self, seed: int | None, scenario: Scenario) -> None:
        self.resets += 1
        if self.resets <= self.fail_resets:
            raise BackendUnavailable(f"injected: libvirtd unreachable (reset {self.resets})")
        self.sim.reset(seed, scenario)

    def apply(self, settings: Mapping[str, KnobValue]) -> Settings:
        return self.sim.apply(settings)

    def measure(self, window_s: float) -> Telemetry:
        n = self.calls
        self.calls += 1
        if n in self.fail:
            raise MeasurementFailed(f"injected: no request reached the guest (call {n})")
        tel = self.sim.measure(window_s)
        if n in self.degrade:
            tel = dataclasses.replace(tel, status=Status.DEGRADED, notes=(f"injected: 3 timeouts (call {n})",))
        return tel

    def capabilities(self) -> Capabilities:
        return self.sim.capabilities()

    def close(self) -> None:
        self.sim.close()


def _env(backend: FaultInjector, **kw: object) -> VVHOEnv:
    return VVHOEnv("diurnal-noisy-v1", backend=backend, retries=2, backoff_s=0.001, max_steps=20, **kw)  # type: ignore[arg-type]


def test_a_transient_fault_is_retried_and_reported() -> None:
    env = _env(FaultInjector(fail={1}))  # call 0 is reset's window, call 1 the first step's
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert not truncated and not terminated and np.isfinite(reward)
    assert len(info["faults"]) == 1 and "MeasurementFailed" in info["faults"][0]
    assert info["status"] == "ok" and "telemetry" in info
    env.close()


def test_a_lasting_fault_truncates_with_the_reason_and_no_exception() -> None:
    env = _env(FaultInjector(fail={1, 2, 3}))
    obs, _ = env.reset(seed=0)
    obs2, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert truncated and not terminated and reward == 0.0
    assert "backend failed 3 times" in info["truncated_reason"] and "call 3" in info["truncated_reason"]
    assert len(info["faults"]) == 3
    assert np.array_equal(obs, obs2), "no new window: the observation does not move"
    env.close()


def test_degraded_windows_are_scored_reported_and_truncate_when_they_persist() -> None:
    backend = FaultInjector(degrade={1, 3, 4, 5})
    env = _env(backend, max_degraded=3)
    env.reset(seed=0)
    _, reward, _, truncated, info = env.step(env.action_space.sample())
    assert info["status"] == "degraded" and info["degraded"] == ["injected: 3 timeouts (call 1)"]
    assert reward == pytest.approx(-sum(info["objective_terms"].values())), "scored as measured"
    assert not truncated
    _, _, _, truncated, info = env.step(env.action_space.sample())
    assert info["status"] == "ok" and "degraded" not in info and not truncated
    for _ in range(2):
        _, _, _, truncated, info = env.step(env.action_space.sample())
        assert not truncated
    _, _, _, truncated, info = env.step(env.action_space.sample())
    assert truncated and "3 DEGRADED windows in a row" in info["truncated_reason"]
    env.close()


def test_reset_retries_then_raises_the_backend_error() -> None:
    env = _env(FaultInjector(fail_resets=1))
    _, info = env.reset(seed=0)  # first attempt fails, the retry works
    assert len(info["faults"]) == 1 and info["status"] == "ok"
    env.close()
    env = _env(FaultInjector(fail_resets=5))
    with pytest.raises(BackendUnavailable, match="libvirtd unreachable"):
        env.reset(seed=0)
    env.close()
