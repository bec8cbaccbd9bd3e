"""Evaluate a policy bundle (or a trained run, exported on the fly) through the shared harness.

``BundleController`` wraps a bundle as a ``vvho_env.harness.Controller``, so agents are measured by
``run_episode`` exactly like the baselines and report the same ``EpisodeResult.metrics()``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.bundle import BundleError, PolicyBundle
from vvho_env.env import VVHOEnv
from vvho_env.harness import EpisodeResult, run_episode


class BundleController:
    """A policy bundle as a harness Controller (recurrent state reset at each episode)."""

    def __init__(self, bundle: PolicyBundle) -> None:
        self.bundle = bundle

    def reset(self, env: VVHOEnv, seed: int | None) -> None:
        self.bundle.check_knobs(env.knob_names)
        m = self.bundle.manifest
        if env.codec.mode != m["action_mode"] or env.codec.history != m["history"]:
            raise BundleError(f"{self.bundle.path}: trained for action_mode={m['action_mode']}, "
                              f"history={m['history']}; the env has {env.codec.mode}, {env.codec.history}")
        self.bundle.reset()

    def act(self, obs: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        return self.bundle.act(obs)

    def observe(self, reward: float, info: Mapping[str, Any]) -> None:
        pass


def env_for_bundle(bundle: PolicyBundle, scenario: str | None = None, **env_kwargs: Any) -> VVHOEnv:
    """A simulator env acting on the bundle's knobs, in its action mode and history."""
    m = bundle.manifest
    return VVHOEnv(scenario or m["scenario"], knob_names=m["knob_names"], action_mode=m["action_mode"],
                   delta_step=m["delta_step"], history=m["history"], **env_kwargs)


def evaluate_bundle(bundle: PolicyBundle | str | Path, scenario: str | None, seeds: Sequence[int],
                    on_episode: Callable[[EpisodeResult], None] | None = None) -> list[EpisodeResult]:
    """One episode per seed of `scenario` (default: the bundle's) driven by the bundle; `on_episode`
    sees each result as it completes."""
    b = bundle if isinstance(bundle, PolicyBundle) else PolicyBundle(bundle)
    controller = BundleController(b)
    results = []
    for seed in seeds:
        env = env_for_bundle(b, scenario)
        try:
            results.append(run_episode(env, controller, seed))
        finally:
            env.close()
        if on_episode is not None:
            on_episode(results[-1])
    return results


def training_seed_overlap(bundle: PolicyBundle, scenario: str | None, seeds: Sequence[int]) -> list[int]:
    """Evaluation seeds that also seeded the bundle's training envs on the same scenario (so the
    evaluation is not held out)."""
    m = bundle.manifest
    if scenario not in (None, m["scenario"]):
        return []
    trained = set(m.get("training_seeds") or ())
    return sorted(s for s in seeds if s in trained)


def summarise(results: Sequence[EpisodeResult]) -> dict[str, float]:
    """Mean over episodes of each pooled metric."""
    rows = [r.metrics() for r in results]
    return {k: float(np.nanmean([m[k] for m in rows])) for k in rows[0]} if rows else {}
