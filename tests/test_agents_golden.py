"""Golden pin of a tiny PPO training run: the eval objective and a hash of the trained weights.

Training is deterministic on one CPU thread with a fixed seed, so a refactor of the training code
(tracking, configs, progress) must leave these figures bit-identical; a change to what training
computes must say why in its commit and update them there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")

GOLDEN_OBJECTIVE = 0.09090312848799148
GOLDEN_WEIGHTS = "9617c7e0437c108069e672e1394ee1493ba6078a2a04c1fef86ba0f2f1b05d38"


def _weights_digest(model: object) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.policy.state_dict().items()):  # type: ignore[attr-defined]
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def test_tiny_ppo_training_is_pinned(tmp_path: Path) -> None:
    from agents.checkpoint import latest_checkpoint
    from agents.train import load_trained
    from vvho.config import load_config
    from vvho.experiments import train_run
    from vvho_env.paths import Paths

    cfg = load_config("ppo_diurnal", [
        "train.n_envs=4", "train.eval_seeds=[901]", "train.progress_bar=false", "train.total_timesteps=64",
        "train.eval_every=64", "train.checkpoint_every=64", "env.max_steps=20", "agent.n_steps=8",
        "agent.net_arch=[32]", "agent.batch_size=16", "agent.n_epochs=1"])
    paths = Paths.at(tmp_path)
    run_id = train_run(cfg, paths).run_id
    model, _ = load_trained(cfg, paths.checkpoints / run_id)
    ckpt = latest_checkpoint(paths.checkpoints / run_id)
    objective = ckpt.state["eval_history"][-1]["objective"]
    assert objective == GOLDEN_OBJECTIVE
    assert _weights_digest(model) == GOLDEN_WEIGHTS
