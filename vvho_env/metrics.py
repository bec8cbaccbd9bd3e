"""The one set of metric names every method logs, in training and in evaluation alike.

``EpisodeResult.metrics()`` (vvho_env.harness) measures an episode; ``tracked`` names its figures as the
tracking store shows them, so that a tuner's run, an agent's training run and a ``vvho compare`` trial
can be put side by side under the same keys. Budgets are logged under ``budget/`` by whoever spends
them (training steps, tuning windows, hyperparameter windows).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# EpisodeResult.metrics() key -> tracked metric name
NAMES: dict[str, str] = {
    "objective": "objective/J",
    "p50_us": "latency/p50_us",
    "p99_us": "latency/p99_us",
    "p999_us": "latency/p999_us",
    "slo_violation_frac": "slo/violation_frac",
    "vm_cpu": "cpu/vm_cores",
    "polling_cpu": "cpu/polling_cores",
    "neighbour_cpu": "neighbour/cpu",
    "neighbour_slowdown": "neighbour/slowdown",
}


def tracked(metrics: Mapping[str, float], prefix: str = "") -> dict[str, float]:
    """The finite figures of `metrics` under their tracked names (a figure without a value, e.g. the p99
    of an episode that served nothing, is left out rather than logged as a number)."""
    return {prefix + name: float(metrics[key]) for key, name in NAMES.items()
            if key in metrics and math.isfinite(float(metrics[key]))}
