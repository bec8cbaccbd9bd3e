"""Export a trained model as a policy bundle (ONNX graph of the deterministic actor + JSON manifest).

The graph maps a normalised observation to the deterministic action before clipping; the loader
(agents/bundle.py) normalises with the manifest's VecNormalize statistics and clips afterwards, as
``model.predict`` does. Recurrent policies take ``state_h``, ``state_c`` and ``episode_start`` as
inputs and return the next state. Written atomically: a bundle directory appears complete or not at all.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

from agents.bundle import FORMAT_VERSION, GRAPH, MANIFEST, knob_bounds, sha256_file
from agents.config import TrainingConfig
from agents.safety import fit_region
from vvho_env.env import FEATURES, acting_knobs
from vvho_env.provenance import package_versions
from vvho_env.scenarios import load_scenario


class _OnPolicyActor(nn.Module):
    """PPO/A2C: features -> actor latent -> Gaussian mean (the deterministic action)."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        features = self.policy.extract_features(obs, self.policy.pi_features_extractor)
        latent = self.policy.mlp_extractor.forward_actor(features)
        return self.policy.action_net(latent)


class _OffPolicyActor(nn.Module):
    """SAC/TD3: the actor network (tanh-squashed deterministic action)."""

    def __init__(self, actor: nn.Module, deterministic_kwarg: bool) -> None:
        super().__init__()
        self.actor = actor
        self.deterministic_kwarg = deterministic_kwarg

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs, deterministic=True) if self.deterministic_kwarg else self.actor(obs)


class _RecurrentActor(nn.Module):
    """RecurrentPPO: one step of the actor LSTM, state reset where an episode starts."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor, state_h: torch.Tensor, state_c: torch.Tensor,
                episode_start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = self.policy
        features = p.extract_features(obs, p.pi_features_extractor)
        keep = (1.0 - episode_start).view(1, -1, 1)
        out, (h, c) = p.lstm_actor(features.unsqueeze(0), (keep * state_h, keep * state_c))
        latent = p.mlp_extractor.forward_actor(out.squeeze(0))
        return p.action_net(latent), h, c


def _actor_module(model: BaseAlgorithm) -> tuple[nn.Module, dict[str, Any] | None]:
    from sb3_contrib import RecurrentPPO
    from stable_baselines3 import SAC, TD3

    policy: Any = model.policy
    if isinstance(model, RecurrentPPO):
        lstm = policy.lstm_actor
        return _RecurrentActor(policy), {"n_layers": lstm.num_layers, "hidden_size": lstm.hidden_size}
    if isinstance(model, SAC):
        return _OffPolicyActor(policy.actor, True), None
    if isinstance(model, TD3):
        return _OffPolicyActor(policy.actor, False), None
    return _OnPolicyActor(policy), None


def _export_onnx(module: nn.Module, recurrent: dict[str, Any] | None, obs_size: int, path: Path) -> None:
    module = module.eval()
    obs = torch.zeros(1, obs_size, dtype=torch.float32)
    batch = {0: "batch"}
    if recurrent is None:
        args: tuple[torch.Tensor, ...] = (obs,)
        names_in, names_out = ["obs"], ["action"]
        axes: dict[str, dict[int, str]] = {"obs": batch, "action": batch}
    else:
        state = torch.zeros(recurrent["n_layers"], 1, recurrent["hidden_size"])
        args = (obs, state, state.clone(), torch.ones(1))
        names_in = ["obs", "state_h", "state_c", "episode_start"]
        names_out = ["action", "state_h_out", "state_c_out"]
        state_axes = {1: "batch"}
        axes = {"obs": batch, "action": batch, "episode_start": batch, "state_h": state_axes,
                "state_c": state_axes, "state_h_out": state_axes, "state_c_out": state_axes}
    # SB3's recipe with the TorchScript exporter: the dynamo exporter fails on SB3 policies in torch 2.13
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=names_in, output_names=names_out,
                          dynamic_axes=axes, opset_version=17, dynamo=False)


def export_bundle(model: BaseAlgorithm, vecnorm: VecNormalize | None, cfg: TrainingConfig, out_dir: Path,
                  run_id: str | None = None, knob_names: tuple[str, ...] | None = None) -> Path:
    """Write the bundle for `model` into `out_dir` (replaced atomically if it exists)."""
    sc = load_scenario(cfg.env.scenario)
    names = knob_names or acting_knobs(sc.host_profile, cfg.env.knob_names)
    obs_space = model.observation_space
    assert obs_space.shape is not None
    obs_size = int(obs_space.shape[0])
    module, recurrent = _actor_module(model)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        graph = tmp / GRAPH
        _export_onnx(module, recurrent, obs_size, graph)
        norm = None
        if vecnorm is not None and vecnorm.norm_obs:
            rms: Any = vecnorm.obs_rms
            norm = {"mean": rms.mean.tolist(), "var": rms.var.tolist(), "clip_obs": float(vecnorm.clip_obs),
                    "epsilon": float(vecnorm.epsilon)}
        space: Any = model.action_space
        from agents.train import evaluate_model  # the training rollouts measure the known-good region

        trace: list[tuple[np.ndarray, np.ndarray]] = []
        evaluate_model(model, vecnorm, cfg, list(cfg.train.eval_seeds), trace)
        safety = fit_region([o for o, _ in trace], [p for _, p in trace], cfg.env.history, len(FEATURES))
        manifest = {
            "format_version": FORMAT_VERSION,
            "graph": GRAPH,
            "graph_sha256": sha256_file(graph),
            "algorithm": cfg.algorithm,
            "run_id": run_id,
            "scenario": sc.id,
            "scenario_key": sc.key,
            "trained_on": [s.key for s in cfg.env.scenario_list()],
            "host_profile": sc.host_profile,
            "knob_names": list(names),
            "action_mode": cfg.env.action_mode,
            "delta_step": cfg.env.delta_step,
            "action_low": np.asarray(space.low, dtype=float).tolist(),
            "action_high": np.asarray(space.high, dtype=float).tolist(),
            "history": cfg.env.history,
            "training_seeds": list(cfg.train.training_seeds),
            "features": list(FEATURES),
            "obs_size": obs_size,
            "obs_layout": f"{cfg.env.history} windows x {len(FEATURES)} features (oldest first), "
                          f"then the previous action over knob_names",
            "obs_normalisation": norm,
            "recurrent": recurrent,
            "interval_s": sc.interval_s,
            "knob_bounds": knob_bounds(names),
            "safety": safety,
            "versions": package_versions(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
