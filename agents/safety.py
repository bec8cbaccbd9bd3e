"""A safety layer for a policy: when the observed state is out of the training distribution, actions are
held inside the known-good region, the knob positions the policy itself held on its training scenarios.

A policy meets states it never saw on a scenario outside its training (another SLO, load, neighbour
pattern or quota). What it does there is extrapolation, and a network can extrapolate to extreme knob
values (a 1 ms vCPU period, an extreme PLE window) that ruin even calm phases. The layer measures how
far the newest window lies from the training distribution, the largest |z| of its features under the
policy's own observation normalisation (VecNormalize statistics in the bundle), and compares it with
the largest the policy met in its training-scenario evaluations. Beyond that threshold the action is
cut so that every knob stays within the range the policy held on its training scenarios (2nd to
98th percentile, with a margin); inside the distribution the policy acts unchanged.

``fit_region`` measures both at export time from rollouts on the training scenarios (nominal, held-out
seeds) and the bundle's manifest carries them (``safety``); ``SafetyLayer`` wraps a harness
Controller around a bundle. It needs numpy only, like the bundle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agents.bundle import BundleError, PolicyBundle

MARGIN = 0.1  # widening of the held range on the [-1, 1] scales
QUANTILES = (2.0, 98.0)


def window_score(z: np.ndarray, history: int, n_features: int) -> np.ndarray:
    """Largest |z| among the newest window's features (rows of normalised observations)."""
    newest = z[..., (history - 1) * n_features: history * n_features]
    return np.max(np.abs(newest), axis=-1)


def fit_region(normalised_obs: Sequence[np.ndarray], positions: Sequence[np.ndarray], history: int,
               n_features: int) -> dict[str, Any]:
    """The manifest's safety entry from training-scenario rollouts: normalised observations and the knob
    positions held, one row per window."""
    z = np.concatenate([np.atleast_2d(o) for o in normalised_obs])
    pos = np.concatenate([np.atleast_2d(p) for p in positions])
    lo, hi = np.percentile(pos, QUANTILES, axis=0)
    return {"threshold": float(window_score(z, history, n_features).max()),
            "low": np.clip(lo - MARGIN, -1.0, 1.0).round(4).tolist(),
            "high": np.clip(hi + MARGIN, -1.0, 1.0).round(4).tolist(),
            "windows": int(z.shape[0])}


class SafetyLayer:
    """A harness Controller: the bundle's policy, held in its known-good region out of distribution."""

    def __init__(self, inner: Any, bundle: PolicyBundle) -> None:
        entry = bundle.manifest.get("safety")
        if not entry:
            raise BundleError(f"{bundle.path}: the bundle has no safety region (exported before the safety layer); "
                              "accepted: a bundle exported by this version of `vvho export`")
        self.inner = inner
        self.bundle = bundle
        self.low = np.asarray(entry["low"], dtype=np.float64)
        self.high = np.asarray(entry["high"], dtype=np.float64)
        self.threshold = float(entry["threshold"])
        m = bundle.manifest
        self.history, self.n_features = int(m["history"]), len(m["features"])
        self.delta = m["action_mode"] == "delta"
        self.delta_step = float(m["delta_step"])
        self.n = len(bundle.knob_names)
        self.held = 0  # windows in which the layer cut the action
        self.windows = 0

    def reset(self, env: Any, seed: int | None) -> None:
        self.inner.reset(env, seed)

    def act(self, obs: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        action = np.asarray(self.inner.act(obs, info), dtype=np.float64)
        self.windows += 1
        z = self.bundle.normalise(np.asarray(obs).reshape(1, -1))[0]
        if float(window_score(z, self.history, self.n_features)) <= self.threshold:
            return action.astype(np.float32)
        self.held += 1
        position = np.asarray(obs[-self.n:], dtype=np.float64)  # the observation ends with the held position
        if not self.delta:
            return np.clip(action, self.low, self.high).astype(np.float32)
        target = np.clip(np.clip(position + action * self.delta_step, -1.0, 1.0), self.low, self.high)
        return np.clip((target - position) / self.delta_step, -1.0, 1.0).astype(np.float32)

    def observe(self, reward: float, info: Mapping[str, Any]) -> None:
        self.inner.observe(reward, info)
