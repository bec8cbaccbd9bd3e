"""An SB3 logger output format that writes to a Tracker (training metrics go through SB3's logger)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from stable_baselines3.common.logger import KVWriter

from agents.tracker import Tracker


class TrackerOutputFormat(KVWriter):
    """Writes every finite numeric key of each logger dump as a metric at the dump's step."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]],
              step: int = 0) -> None:
        metrics: dict[str, float] = {}
        for key, value in key_values.items():
            excluded = key_excluded.get(key)
            if excluded is not None and "mlflow" in excluded:
                continue
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                v = float(value)
                if math.isfinite(v):
                    metrics[key] = v
        if metrics:
            self.tracker.log_metrics(metrics, step=int(step))

    def close(self) -> None:
        pass
