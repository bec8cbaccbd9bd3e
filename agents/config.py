"""Agent and training configs: the algorithm with its hyperparameters, the training loop, VecNormalize.

``TrainingConfig`` (env + agent + train) is everything training needs; the experiment file adds its
tracking section on top (``vvho.config.ExperimentConfig``). Every field states its bounds, so a bad
value is refused with what is accepted before any model is built. Bounds beyond the algorithm's own
(an upper limit on a learning rate, a layer size) are there to catch typos such as ``1e308``; each is
far outside what a working configuration uses.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from vvho_env.config_base import StrictModel
from vvho_env.env_config import EnvConfig

ALGORITHMS = ("ppo", "recurrent_ppo", "a2c", "sac", "td3")
DEFAULT_ALGORITHM = "ppo"
SEED_MAX = 2**32 - 1  # SB3 seeds numpy's legacy generator, which takes 0 .. 2**32 - 1
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
LayerSize = Annotated[int, Field(ge=1, le=4096)]


class _AgentBase(StrictModel):
    learning_rate: float = Field(3e-4, gt=0, le=1, description="optimiser step size")
    gamma: float = Field(0.9, gt=0, le=1, description="discount factor")
    net_arch: list[LayerSize] = Field([64, 64], min_length=1, max_length=8,
                                      description="hidden layer sizes of actor and critic")
    activation: Literal["tanh", "relu"] = Field("tanh", description="hidden layer activation")


class _OnPolicy(_AgentBase):
    n_steps: int = Field(128, ge=1, le=100_000, description="steps per env between updates")
    gae_lambda: float = Field(0.95, gt=0, le=1, description="GAE bias/variance trade-off")
    ent_coef: float = Field(0.0, ge=0, le=1, description="entropy bonus weight")
    vf_coef: float = Field(0.5, ge=0, le=10, description="value loss weight")
    max_grad_norm: float = Field(0.5, gt=0, le=1000, description="gradient clipping norm")
    log_std_init: float = Field(-0.5, ge=-10, le=2, description="initial log std of the Gaussian policy")


class PPOConfig(_OnPolicy):
    algorithm: Literal["ppo"] = "ppo"
    batch_size: int = Field(256, ge=2, le=1_000_000, description="minibatch size")
    n_epochs: int = Field(10, ge=1, le=100, description="passes over each rollout")
    clip_range: float = Field(0.2, gt=0, le=1, description="PPO clipping range")


class RecurrentPPOConfig(PPOConfig):
    algorithm: Literal["recurrent_ppo"] = "recurrent_ppo"  # type: ignore[assignment]
    lstm_hidden_size: LayerSize = Field(64, description="LSTM hidden units")
    n_lstm_layers: int = Field(1, ge=1, le=8, description="stacked LSTM layers")


class A2CConfig(_OnPolicy):
    algorithm: Literal["a2c"] = "a2c"
    n_steps: int = Field(16, ge=1, le=100_000, description="steps per env between updates")
    normalize_advantage: bool = Field(False, description="normalise advantages per update")


class _OffPolicy(_AgentBase):
    buffer_size: int = Field(100_000, ge=100, le=100_000_000, description="replay buffer capacity (transitions)")
    batch_size: int = Field(256, ge=2, le=1_000_000, description="minibatch size")
    tau: float = Field(0.005, gt=0, le=1, description="target network soft-update rate")
    learning_starts: int = Field(1000, ge=0, le=10**10, description="transitions collected before learning starts")
    train_freq: int = Field(1, ge=1, le=1_000_000, description="vector steps between updates")
    gradient_steps: int = Field(1, ge=-1, le=10_000, description="gradient steps per update (-1: as many as env "
                                "steps)", json_schema_extra={"accepted": "-1 (as many as env steps) or an integer "
                                                             "in 1 .. 10_000"})
    net_arch: list[LayerSize] = Field([256, 256], min_length=1, max_length=8,
                                      description="hidden layer sizes of actor and critic")
    activation: Literal["tanh", "relu"] = Field("relu", description="hidden layer activation")

    @field_validator("gradient_steps")
    @classmethod
    def _some_gradient_steps(cls, value: int) -> int:
        if value == 0:
            raise ValueError("0 gradient steps would never update the networks")
        return value


_SAC_ENT = ("'auto' (learned, starting at 1), 'auto_<start>' (learned, e.g. 'auto_0.1'), or a fixed finite "
            "number > 0")


class SACConfig(_OffPolicy):
    algorithm: Literal["sac"] = "sac"
    ent_coef: float | str = Field("auto", description="entropy weight, or 'auto' / 'auto_0.1' to learn it",
                                  json_schema_extra={"accepted": _SAC_ENT})

    @field_validator("ent_coef", mode="before")
    @classmethod
    def _ent_coef(cls, value: Any) -> float | str:
        if isinstance(value, str) and value.strip().startswith("auto"):
            text = value.strip()
            start = text[len("auto_"):] if text.startswith("auto_") else "1" if text == "auto" else ""
            if _positive(start) is not None:
                return text
            raise ValueError(f"{value!r} is not 'auto' or 'auto_<finite number > 0>'")
        number = None if isinstance(value, bool) else _positive(value)
        if number is None:
            raise ValueError("not a learned or fixed entropy weight")
        return number


def _positive(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


class TD3Config(_OffPolicy):
    algorithm: Literal["td3"] = "td3"
    policy_delay: int = Field(2, ge=1, le=1000, description="critic updates per actor update")
    target_policy_noise: float = Field(0.2, ge=0, le=2, description="smoothing noise on target actions")
    target_noise_clip: float = Field(0.5, ge=0, le=2, description="clip of the target smoothing noise")
    action_noise_std: float = Field(0.1, ge=0, le=2, description="Gaussian exploration noise (std, [-1, 1] units)")


AgentConfig = Annotated[
    PPOConfig | RecurrentPPOConfig | A2CConfig | SACConfig | TD3Config, Field(discriminator="algorithm")
]
AGENT_MODELS: dict[str, type[_AgentBase]] = {
    "ppo": PPOConfig, "recurrent_ppo": RecurrentPPOConfig, "a2c": A2CConfig, "sac": SACConfig, "td3": TD3Config,
}


class VecNormalizeConfig(StrictModel):
    norm_obs: bool = Field(True, description="normalise observations with running statistics")
    norm_reward: bool = Field(True, description="scale rewards by the running return std")
    clip_obs: float = Field(10.0, gt=0, le=1e6, description="clip normalised observations to +-clip_obs")
    clip_reward: float = Field(10.0, gt=0, le=1e6, description="clip scaled rewards")


class TrainConfig(StrictModel):
    total_timesteps: int = Field(200_000, ge=1, le=10**10, description="env steps (summed over vector envs)")
    n_envs: int = Field(16, ge=1, le=4096, description="envs stepped together (memory is checked before training)")
    vec_env: Literal["batched", "subproc"] = Field(
        "batched", description="batched: all envs in one numba call in this process (fastest on few cores); "
        "subproc: one VVHOEnv per worker process")
    seed: Seed = Field(0, description="training seed (model init; env k of the first episodes gets seed + k)")
    torch_threads: int = Field(1, ge=1, le=256, description="torch intra-op threads")
    device: Literal["cpu", "auto"] = Field("cpu", description="torch device")
    vec_normalize: VecNormalizeConfig = VecNormalizeConfig()
    eval_every: int = Field(20_000, ge=1, le=10**10, description="env steps between evaluations on held-out seeds")
    eval_seeds: list[Seed] = Field([10_001, 10_002, 10_003, 10_004], min_length=1, max_length=1000,
                                   description="held-out seeds: never used for training")
    checkpoint_every: int = Field(20_000, ge=1, le=10**10, description="env steps between checkpoints")
    progress_bar: bool = Field(True, description="show training progress with live latency figures")

    @field_validator("eval_seeds")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        twice = sorted({s for s in value if value.count(s) > 1})
        if twice:
            raise ValueError(f"seed(s) {', '.join(map(str, twice))} listed twice")
        return value

    @property
    def training_seeds(self) -> range:
        """The env seeds of the first training episodes (later ones come from the batch's own stream)."""
        return range(self.seed, self.seed + self.n_envs)


class TrainingConfig(StrictModel):
    """Everything training needs: the environment, the agent and the training loop."""

    env: EnvConfig = EnvConfig()
    agent: AgentConfig = Field(default_factory=PPOConfig, description="algorithm and its hyperparameters")
    train: TrainConfig = TrainConfig()

    @property
    def algorithm(self) -> str:
        return self.agent.algorithm

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, raw: Any) -> Any:
        """Empty sections mean defaults (a field whose default is null, e.g. suite, keeps its null); an
        agent section without an algorithm is PPO's."""
        if not isinstance(raw, dict):
            return raw
        out = {k: ({} if v is None and k in cls.model_fields and cls.model_fields[k].default is not None else v)
               for k, v in raw.items()}
        agent = out.get("agent")
        if isinstance(agent, dict) and "algorithm" not in agent:
            out["agent"] = {"algorithm": DEFAULT_ALGORITHM, **agent}
        return out

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        t, a = self.train, self.agent
        overlap = sorted(set(t.eval_seeds) & set(t.training_seeds))
        if overlap:
            raise ValueError(f"train.eval_seeds: {', '.join(map(str, overlap[:5]))} also seed training envs "
                             f"(train.seed {t.seed} .. train.seed + train.n_envs - 1 = {t.training_seeds[-1]}); "
                             "held-out seeds must not")
        if isinstance(a, PPOConfig) and a.batch_size > a.n_steps * t.n_envs:
            raise ValueError(f"agent.batch_size: {a.batch_size} exceeds the rollout of agent.n_steps x train.n_envs "
                             f"= {a.n_steps * t.n_envs} transitions (lower it, or raise agent.n_steps or "
                             "train.n_envs)")
        if isinstance(a, _OffPolicy) and a.learning_starts >= t.total_timesteps:
            raise ValueError(f"agent.learning_starts: {a.learning_starts} >= train.total_timesteps "
                             f"{t.total_timesteps}, so the agent would never learn")
        return self


def carried_over(before: str, after: str) -> frozenset[str]:
    """Agent fields whose value keeps its meaning when the algorithm changes from `before` to `after`:
    those both have, except the entropy coefficient between on- and off-policy algorithms (a bonus
    weight in [0, 1] for PPO/A2C, SAC's learned or fixed temperature)."""
    shared = set(AGENT_MODELS[after].model_fields) & set(AGENT_MODELS.get(before, _AgentBase).model_fields)
    if issubclass(AGENT_MODELS[after], _OnPolicy) != issubclass(AGENT_MODELS.get(before, _AgentBase), _OnPolicy):
        shared.discard("ent_coef")
    return frozenset(shared)
