"""Build SB3 / sb3-contrib models from an agent config (one place maps config fields to SB3 kwargs)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sb3_contrib import RecurrentPPO
from stable_baselines3 import A2C, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from agents.config import A2CConfig, PPOConfig, RecurrentPPOConfig, SACConfig, TD3Config, TrainingConfig

ALGORITHM_CLASSES: dict[str, type[BaseAlgorithm]] = {
    "ppo": PPO, "recurrent_ppo": RecurrentPPO, "a2c": A2C, "sac": SAC, "td3": TD3,
}
OFF_POLICY = ("sac", "td3")


def build_model(cfg: TrainingConfig, env: VecEnv) -> BaseAlgorithm:
    a = cfg.agent
    act = nn.Tanh if a.activation == "tanh" else nn.ReLU
    common: dict[str, Any] = {"learning_rate": a.learning_rate, "gamma": a.gamma,
                              "seed": cfg.train.seed, "device": cfg.train.device, "verbose": 0}
    if isinstance(a, (PPOConfig, A2CConfig)):
        policy_kwargs: dict[str, Any] = {"net_arch": {"pi": list(a.net_arch), "vf": list(a.net_arch)},
                                         "activation_fn": act, "log_std_init": a.log_std_init}
        on: dict[str, Any] = {"n_steps": a.n_steps, "gae_lambda": a.gae_lambda, "ent_coef": a.ent_coef,
                              "vf_coef": a.vf_coef, "max_grad_norm": a.max_grad_norm}
        if isinstance(a, RecurrentPPOConfig):
            policy_kwargs.update(lstm_hidden_size=a.lstm_hidden_size, n_lstm_layers=a.n_lstm_layers)
            return RecurrentPPO("MlpLstmPolicy", env, batch_size=a.batch_size, n_epochs=a.n_epochs,
                                clip_range=a.clip_range, policy_kwargs=policy_kwargs, **on, **common)
        if isinstance(a, PPOConfig):
            return PPO("MlpPolicy", env, batch_size=a.batch_size, n_epochs=a.n_epochs, clip_range=a.clip_range,
                       policy_kwargs=policy_kwargs, **on, **common)
        return A2C("MlpPolicy", env, normalize_advantage=a.normalize_advantage, policy_kwargs=policy_kwargs,
                   **on, **common)
    off: dict[str, Any] = {"buffer_size": a.buffer_size, "batch_size": a.batch_size, "tau": a.tau,
                           "learning_starts": a.learning_starts, "train_freq": a.train_freq,
                           "gradient_steps": a.gradient_steps,
                           "policy_kwargs": {"net_arch": list(a.net_arch), "activation_fn": act}}
    if isinstance(a, SACConfig):
        return SAC("MlpPolicy", env, ent_coef=a.ent_coef, **off, **common)
    assert isinstance(a, TD3Config)
    n = env.action_space.shape[0] if env.action_space.shape else 1
    noise = NormalActionNoise(np.zeros(n), a.action_noise_std * np.ones(n)) if a.action_noise_std > 0 else None
    return TD3("MlpPolicy", env, policy_delay=a.policy_delay, target_policy_noise=a.target_policy_noise,
               target_noise_clip=a.target_noise_clip, action_noise=noise, **off, **common)


def load_model(algorithm: str, path: str, env: VecEnv | None, device: str = "cpu") -> BaseAlgorithm:
    return ALGORITHM_CLASSES[algorithm].load(path, env=env, device=device)
