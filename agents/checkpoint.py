"""Checkpoints: model, replay buffer (off-policy) and VecNormalize statistics, written together atomically.

Layout under ``<checkpoint_dir>/<run_id>/``: one ``step-<N>/`` folder per checkpoint and a ``LATEST``
file naming the newest complete one. A checkpoint is written into a temporary folder, renamed into
place, and only then does ``LATEST`` move (os.replace); a kill at any moment leaves the previous
checkpoint intact and named.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

from vvho_env.errors import VVHOError

MODEL = "model.zip"
VECNORM = "vecnormalize.pkl"
REPLAY = "replay_buffer.pkl"
STATE = "state.json"
LATEST = "LATEST"


class CheckpointError(VVHOError, RuntimeError):
    """No usable checkpoint where one was expected."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    num_timesteps: int
    state: dict[str, Any]

    @property
    def model(self) -> Path:
        return self.path / MODEL

    @property
    def vecnormalize(self) -> Path | None:
        p = self.path / VECNORM
        return p if p.exists() else None

    @property
    def replay_buffer(self) -> Path | None:
        p = self.path / REPLAY
        return p if p.exists() else None


def save_checkpoint(root: Path, model: BaseAlgorithm, vecnorm: VecNormalize | None,
                    state: dict[str, Any], keep: int = 2) -> Checkpoint:
    root.mkdir(parents=True, exist_ok=True)
    steps = int(model.num_timesteps)
    final = root / f"step-{steps:012d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        model.save(tmp / MODEL)
        if vecnorm is not None:
            vecnorm.save(str(tmp / VECNORM))
        if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
            model.save_replay_buffer(tmp / REPLAY)
        full = {**state, "num_timesteps": steps}
        (tmp / STATE).write_text(json.dumps(full))
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / LATEST)
    older = sorted(p for p in root.glob("step-*") if p != final)
    for old in older[: max(len(older) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return Checkpoint(final, steps, full)


def latest_checkpoint(root: Path) -> Checkpoint:
    pointer = root / LATEST
    if not pointer.exists():
        raise CheckpointError(f"{root}: no checkpoint was written yet (no {LATEST} file); "
                              "the run was killed before its first checkpoint")
    path = root / pointer.read_text().strip()
    try:
        state = json.loads((path / STATE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: checkpoint unreadable: {exc}") from None
    return Checkpoint(path, int(state["num_timesteps"]), state)
