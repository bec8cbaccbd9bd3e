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

GOLDEN_OBJECTIVE = 0.197137771737661
GOLDEN_WEIGHTS = "7ff27488d1108963251ae01e9411368e6397dc136d5a32bfb877eae3d316a0e4"


def _weights_digest(model: object) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.policy.state_dict().items()):  # type: ignore[attr-defined]
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def test_tiny_ppo_training_is_pinned(tmp_path: Path) -> None:
    from agents.train import load_trained, train
    from vvho.config import CONFIG_DIR, load_config

    cfg = load_config(CONFIG_DIR / "ppo_diurnal.yaml", [
        "train.n_envs=4", "train.eval_seeds=[901]", "train.progress_bar=false", "train.total_timesteps=64",
        "train.eval_every=64", "train.checkpoint_every=64", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"tracking.checkpoint_dir={tmp_path}/ckpt", "env.max_steps=20", "agent.n_steps=8", "agent.net_arch=[32]",
        "agent.batch_size=16", "agent.n_epochs=1"])
    run_id = train(cfg, show_progress=False)
    _, model, _ = load_trained(run_id, cfg.tracking.uri)
    from agents.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(tmp_path / "ckpt" / run_id)
    objective = ckpt.state["eval_history"][-1]["objective"]
    assert objective == GOLDEN_OBJECTIVE
    assert _weights_digest(model) == GOLDEN_WEIGHTS
