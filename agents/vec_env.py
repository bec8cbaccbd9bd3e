"""SB3's VecEnv dialect over the VVHO envs (kept here: the rest of the project speaks Gymnasium).

``BatchedVecEnv`` adapts the batched simulator (``VVHOVectorEnv``, N envs in one numba call,
Gymnasium next-step autoreset) to SB3's same-step autoreset: when an episode ends, SB3 expects the
step to return the first observation of the next episode and the last one in
``info["terminal_observation"]``. Every env of the batch starts together and has the same length,
so they end together and the adapter resets the whole batch in that step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from vvho_env.env import VVHOEnv, VVHOVectorEnv
from vvho_env.env_config import EnvConfig


class BatchedVecEnv(VecEnv):
    """N simulated envs stepped in one numba call, in SB3's VecEnv dialect."""

    def __init__(self, venv: VVHOVectorEnv) -> None:
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None
        self._seed: int | None = None
        self._episode_return = np.zeros(self.num_envs)
        self._episode_len = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self) -> VecEnvObs:
        obs, _ = self.venv.reset(seed=self._seed)
        self._seed = None
        self._episode_return[:] = 0.0
        self._episode_len[:] = 0
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "step_async() first"
        obs, rewards, terms, truncs, info = self.venv.step(self._actions)
        self._episode_return += rewards
        self._episode_len += 1
        dones = terms | truncs
        infos: list[dict[str, Any]] = [
            {"p99_us": float(info["p99_us"][k]), "vm_cpu": float(info["vm_cpu"][k]),
             "TimeLimit.truncated": bool(truncs[k] and not terms[k])}
            for k in range(self.num_envs)
        ]
        if dones.any():
            if not dones.all():
                raise RuntimeError("envs of one batch ended at different steps; BatchedVecEnv needs episodes of "
                                   "equal length (use vec_env: subproc for ragged episodes)")
            for k in range(self.num_envs):
                infos[k]["terminal_observation"] = obs[k].copy()
                infos[k]["episode"] = {"r": float(self._episode_return[k]), "l": int(self._episode_len[k])}
            obs, _ = self.venv.reset(seed=None)  # fresh seeds from the batch's own RNG stream
            self._episode_return[:] = 0.0
            self._episode_len[:] = 0
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        self._seed = seed
        return [None if seed is None else seed + k for k in range(self.num_envs)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.venv, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        fn = getattr(self.venv, method_name)
        return [fn(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]


class _StepInfo(gym.Wrapper):
    """Lifts p99 and CPU into the flat info the batched adapter also gives (for progress and eval)."""

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        tel = info.get("telemetry", {})
        info["p99_us"] = float(tel.get("p99_us") or np.nan)
        info["vm_cpu"] = float(tel.get("vm_cpu", np.nan))
        return obs, reward, terminated, truncated, info


def _env_factory(cfg: EnvConfig) -> Callable[[], gym.Env]:
    def make() -> gym.Env:
        env = VVHOEnv(cfg.training_scenarios(cfg.randomise), knob_names=cfg.knob_names, action_mode=cfg.action_mode,
                      delta_step=cfg.delta_step, history=cfg.history, max_steps=cfg.max_steps,
                      randomise=cfg.randomise)
        return _StepInfo(env)

    return make


def make_vec_env(cfg: EnvConfig, n_envs: int, kind: str, seed: int | None,
                 randomise: bool | None = None) -> VecEnv:
    """The training VecEnv: batched simulator, or one VVHOEnv per worker process; with a mixture, each
    episode of each env draws its scenario."""
    rand = cfg.randomise if randomise is None else randomise
    if kind == "batched":
        vec: VecEnv = BatchedVecEnv(VVHOVectorEnv(
            n_envs, cfg.training_scenarios(rand), knob_names=cfg.knob_names, action_mode=cfg.action_mode,
            delta_step=cfg.delta_step, history=cfg.history, max_steps=cfg.max_steps, randomise=rand))
    else:
        one = cfg.model_copy(update={"randomise": rand})
        factories = [_env_factory(one) for _ in range(n_envs)]
        vec = (SubprocVecEnv(factories, start_method="forkserver") if kind == "subproc" and n_envs > 1
               else DummyVecEnv(factories))
    vec.seed(seed)
    return vec
