"""Evaluate a policy bundle (or a trained run, exported on the fly) through the shared harness.

``BundleController`` wraps a bundle as a ``vvho_env.harness.Controller``, so agents are measured by
``run_episode`` exactly like the baselines and report the same ``EpisodeResult.metrics()``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.bundle import MANIFEST, BundleError, PolicyBundle
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


def evaluate_bundle(bundle: PolicyBundle | str | Path, scenario: str | None,
                    seeds: Sequence[int]) -> list[EpisodeResult]:
    """One episode per seed of `scenario` (default: the bundle's) driven by the bundle."""
    b = bundle if isinstance(bundle, PolicyBundle) else PolicyBundle(bundle)
    controller = BundleController(b)
    results = []
    for seed in seeds:
        env = env_for_bundle(b, scenario)
        try:
            results.append(run_episode(env, controller, seed))
        finally:
            env.close()
    return results


def export_run(run_id: str, out_dir: str | Path | None = None, tracking_uri: str | None = None) -> Path:
    """Export a run's latest checkpoint as a bundle (default: results/bundles/<run_id>); logs it to MLflow."""
    import mlflow

    from agents.export import export_bundle
    from agents.train import load_trained

    cfg, model, vecnorm = load_trained(run_id, tracking_uri)
    out = Path(out_dir) if out_dir is not None else Path("results") / "bundles" / run_id
    export_bundle(model, vecnorm, cfg, out, run_id=run_id)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_artifacts(str(out), "bundle")
    return out


def resolve_policy(bundle_or_run: str, tracking_uri: str | None = None) -> PolicyBundle:
    """A bundle directory, or a run id (its exported bundle, exported now if there is none)."""
    path = Path(bundle_or_run)
    if (path / MANIFEST).exists():
        return PolicyBundle(path)
    if path.exists():
        raise BundleError(f"{path}: not a policy bundle (no {MANIFEST})")
    default = Path("results") / "bundles" / bundle_or_run
    if (default / MANIFEST).exists():
        return PolicyBundle(default)
    out = Path(tempfile.mkdtemp(prefix="vvho-bundle-")) / bundle_or_run
    return PolicyBundle(export_run(bundle_or_run, out, tracking_uri))


def summarise(results: Sequence[EpisodeResult]) -> dict[str, float]:
    """Mean over episodes of each pooled metric."""
    rows = [r.metrics() for r in results]
    return {k: float(np.nanmean([m[k] for m in rows])) for k in rows[0]} if rows else {}
