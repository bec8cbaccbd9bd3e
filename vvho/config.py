"""Experiment configs: YAML files in configs/ validated by the pydantic models below.

One file per algorithm and scenario family. Every field carries its help text; unknown fields are
rejected; errors name the file and the dotted field path. ``--set section.field=value`` overrides any
field (the value is parsed as YAML, so ``1e-4``, ``[64, 64]`` and ``true`` work).
``vvho.config.write_schema()`` exports the JSON schema that editors use (configs/schema.json).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vvho_env.scenarios import ScenarioError, load_scenario

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
SCHEMA_PATH = CONFIG_DIR / "schema.json"
ALGORITHMS = ("ppo", "recurrent_ppo", "a2c", "sac", "td3")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnvConfig(_Strict):
    """The environment the agent trains on (always the simulator; live hosts only deploy)."""

    scenario: str = Field("diurnal-noisy-v0", description="scenario id (see `vvho scenarios`); its host "
                          "profile decides which knobs the policy acts on")
    knob_names: list[str] | None = Field(None, description="knobs to act on; default: every live knob the "
                                         "scenario's host profile can set")
    action_mode: Literal["absolute", "delta"] = Field("absolute", description="set knob values, or move them")
    delta_step: float = Field(0.25, gt=0, le=2, description="delta mode: largest move per step on [-1, 1]")
    history: int = Field(4, ge=1, le=32, description="measurement windows stacked in each observation")
    max_steps: int | None = Field(None, ge=1, description="episode length; default: the scenario's")
    randomise: bool = Field(False, description="domain randomisation over the scenario's parameters")

    @model_validator(mode="after")
    def _known_scenario(self) -> EnvConfig:
        try:
            load_scenario(self.scenario)
        except ScenarioError as exc:
            raise ValueError(str(exc)) from None
        return self


class _AgentBase(_Strict):
    learning_rate: float = Field(3e-4, gt=0, description="optimiser step size")
    gamma: float = Field(0.9, gt=0, le=1, description="discount factor")
    net_arch: list[int] = Field([64, 64], min_length=1, description="hidden layer sizes of actor and critic")
    activation: Literal["tanh", "relu"] = Field("tanh", description="hidden layer activation")


class _OnPolicy(_AgentBase):
    n_steps: int = Field(128, ge=1, description="steps per env between updates")
    gae_lambda: float = Field(0.95, gt=0, le=1, description="GAE bias/variance trade-off")
    ent_coef: float = Field(0.0, ge=0, description="entropy bonus weight")
    vf_coef: float = Field(0.5, ge=0, description="value loss weight")
    max_grad_norm: float = Field(0.5, gt=0, description="gradient clipping norm")
    log_std_init: float = Field(-0.5, description="initial log std of the Gaussian policy")


class PPOConfig(_OnPolicy):
    algorithm: Literal["ppo"] = "ppo"
    batch_size: int = Field(256, ge=2, description="minibatch size")
    n_epochs: int = Field(10, ge=1, description="passes over each rollout")
    clip_range: float = Field(0.2, gt=0, description="PPO clipping range")


class RecurrentPPOConfig(PPOConfig):
    algorithm: Literal["recurrent_ppo"] = "recurrent_ppo"  # type: ignore[assignment]
    lstm_hidden_size: int = Field(64, ge=1, description="LSTM hidden units")
    n_lstm_layers: int = Field(1, ge=1, description="stacked LSTM layers")


class A2CConfig(_OnPolicy):
    algorithm: Literal["a2c"] = "a2c"
    n_steps: int = Field(16, ge=1, description="steps per env between updates")
    normalize_advantage: bool = Field(False, description="normalise advantages per update")


class _OffPolicy(_AgentBase):
    buffer_size: int = Field(100_000, ge=100, description="replay buffer capacity (transitions)")
    batch_size: int = Field(256, ge=2, description="minibatch size")
    tau: float = Field(0.005, gt=0, le=1, description="target network soft-update rate")
    learning_starts: int = Field(1000, ge=0, description="transitions collected before learning starts")
    train_freq: int = Field(1, ge=1, description="vector steps between updates")
    gradient_steps: int = Field(1, ge=-1, description="gradient steps per update (-1: as many as env steps)")
    net_arch: list[int] = Field([256, 256], min_length=1, description="hidden layer sizes of actor and critic")
    activation: Literal["tanh", "relu"] = Field("relu", description="hidden layer activation")


class SACConfig(_OffPolicy):
    algorithm: Literal["sac"] = "sac"
    ent_coef: str | float = Field("auto", description="entropy weight, or 'auto' / 'auto_0.1' to learn it")


class TD3Config(_OffPolicy):
    algorithm: Literal["td3"] = "td3"
    policy_delay: int = Field(2, ge=1, description="critic updates per actor update")
    target_policy_noise: float = Field(0.2, ge=0, description="smoothing noise on target actions")
    target_noise_clip: float = Field(0.5, ge=0, description="clip of the target smoothing noise")
    action_noise_std: float = Field(0.1, ge=0, description="Gaussian exploration noise (std, [-1, 1] units)")


AgentConfig = Annotated[
    PPOConfig | RecurrentPPOConfig | A2CConfig | SACConfig | TD3Config, Field(discriminator="algorithm")
]


class VecNormalizeConfig(_Strict):
    norm_obs: bool = Field(True, description="normalise observations with running statistics")
    norm_reward: bool = Field(True, description="scale rewards by the running return std")
    clip_obs: float = Field(10.0, gt=0, description="clip normalised observations to +-clip_obs")
    clip_reward: float = Field(10.0, gt=0, description="clip scaled rewards")


class TrainConfig(_Strict):
    total_timesteps: int = Field(200_000, ge=1, description="env steps (summed over vector envs)")
    n_envs: int = Field(16, ge=1, description="envs stepped together")
    vec_env: Literal["batched", "subproc"] = Field(
        "batched", description="batched: all envs in one numba call in this process (fastest on few cores); "
        "subproc: one VVHOEnv per worker process")
    seed: int = Field(0, description="training seed (model init and env seeds)")
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads")
    device: Literal["cpu", "auto"] = Field("cpu", description="torch device")
    vec_normalize: VecNormalizeConfig = VecNormalizeConfig()
    eval_every: int = Field(20_000, ge=1, description="env steps between evaluations on held-out seeds")
    eval_seeds: list[int] = Field([10_001, 10_002, 10_003, 10_004], min_length=1,
                                  description="held-out seeds: never used for training")
    checkpoint_every: int = Field(20_000, ge=1, description="env steps between checkpoints")
    progress_bar: bool = Field(True, description="show a progress bar with live latency figures")

    @model_validator(mode="after")
    def _held_out(self) -> TrainConfig:
        if self.seed in self.eval_seeds:
            raise ValueError(f"train.seed {self.seed} is also an eval seed; eval seeds must be held out")
        return self


class TrackingConfig(_Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default: sqlite:///results/mlflow.db")
    experiment: str = Field("vvho-agents", description="MLflow experiment name")
    checkpoint_dir: str = Field("results/checkpoints", description="where checkpoints are written")


class ExperimentConfig(_Strict):
    """One training run: environment, agent, training loop and tracking."""

    env: EnvConfig = EnvConfig()
    agent: AgentConfig = Field(default_factory=PPOConfig, description="algorithm and its hyperparameters")
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()

    @property
    def algorithm(self) -> str:
        return self.agent.algorithm


def _field_path(loc: Sequence[int | str]) -> str:
    # pydantic puts the discriminator's tag in the location (agent.ppo.learning_rate): drop it
    parts = [str(p) for p in loc if str(p) not in ALGORITHMS]
    return ".".join(parts) or "<top level>"


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        msg = err["msg"]
        if err["type"] == "union_tag_invalid":
            given = err.get("input")
            name = given.get("algorithm") if isinstance(given, dict) else given
            msg = f"unknown algorithm {name!r}; accepted: {', '.join(ALGORITHMS)}"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field (not accepted here; see configs/schema.json)"
        lines.append(f"{source}: field {_field_path(err['loc'])}: {msg}")
    return "\n".join(lines)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str], source: str = "--set") -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a raw config dict (values parsed as YAML)."""
    out = json.loads(json.dumps(raw))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source}: {item!r} is not accepted; expected section.field=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: value of {key} is not valid YAML: {exc}") from None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: field {key}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def parse_config(raw: object, source: str, overrides: Sequence[str] = ()) -> ExperimentConfig:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (env, agent, train, tracking), "
                          f"got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read and validate a YAML experiment file, then apply ``--set`` overrides."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    return parse_config(raw, str(p), overrides)


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def schema() -> dict[str, Any]:
    return ExperimentConfig.model_json_schema()


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    path.write_text(json.dumps(schema(), indent=2) + "\n")
    return path
