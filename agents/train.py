"""Train an SB3 agent on the VVHO simulator, tracked in MLflow, checkpointed, resumable.

``train(cfg) -> run_id`` starts a run; ``resume(run_id) -> run_id`` continues one after a kill from
its last checkpoint, in the same MLflow run (the step count and VecNormalize statistics carry on).
Training metrics reach MLflow through SB3's logger (``MLflowOutputFormat``); evaluations on
held-out seeds log ``eval/objective``, ``latency/p99_us`` and ``cpu/vm_cores``.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from agents.algorithms import build_model, load_model
from agents.checkpoint import latest_checkpoint, save_checkpoint
from agents.mlflow_output import MLflowOutputFormat
from agents.vec_env import make_vec_env
from vvho.config import ConfigError, ExperimentConfig, dump_config, parse_config
from vvho.tracking import DEFAULT_URI, RESULTS, git_commit, package_versions, run_name
from vvho_env.env import VVHOVectorEnv
from vvho_env.scenarios import load_scenario

CONFIG_ARTIFACT = "config.yaml"


class RunNotFound(LookupError):
    """No MLflow run with that id in the tracking store."""


@dataclass
class EvalRecord:
    """One evaluation on the held-out seeds: per-step objective and p99 of every seed."""

    num_timesteps: int
    objective: float
    p99_us: float
    vm_cpu: float
    p99_timeline: list[list[float]] = field(default_factory=list)


def evaluate_model(model: BaseAlgorithm, vecnorm: VecNormalize | None, cfg: ExperimentConfig,
                   seeds: list[int]) -> EvalRecord:
    """Deterministic policy on the nominal scenario, one episode per seed, all seeds in one batch."""
    env = VVHOVectorEnv(len(seeds), cfg.env.scenario, knob_names=cfg.env.knob_names,
                        action_mode=cfg.env.action_mode, delta_step=cfg.env.delta_step,
                        history=cfg.env.history, max_steps=cfg.env.max_steps)
    obs, _ = env.reset(seed=list(seeds))
    state = None
    starts = np.ones(len(seeds), dtype=bool)
    objective, p99, cpu = [], [], []
    for _ in range(env.max_steps):
        x = vecnorm.normalize_obs(obs) if vecnorm is not None else obs
        action, state = model.predict(x, state=state, episode_start=starts, deterministic=True)
        starts[:] = False
        obs, rewards, _, _, info = env.step(action)
        objective.append(-rewards)
        p99.append(info["p99_us"])
        cpu.append(info["vm_cpu"])
    p99s = np.array(p99)
    return EvalRecord(int(model.num_timesteps), float(np.mean(objective)), float(np.nanmean(p99s)),
                      float(np.mean(cpu)), p99s.T.tolist())


class EvalAndCheckpoint(BaseCallback):
    """Every `eval_every` steps: evaluate on held-out seeds; every `checkpoint_every`: checkpoint."""

    def __init__(self, cfg: ExperimentConfig, root: Path, vecnorm: VecNormalize | None,
                 history: list[EvalRecord]) -> None:
        super().__init__()
        self.cfg = cfg
        self.root = root
        self.vecnorm = vecnorm
        self.history = history
        self._next_eval = 0
        self._next_ckpt = 0

    def _init_callback(self) -> None:
        t = self.cfg.train
        self._next_eval = (self.model.num_timesteps // t.eval_every + 1) * t.eval_every
        self._next_ckpt = (self.model.num_timesteps // t.checkpoint_every + 1) * t.checkpoint_every

    def _on_step(self) -> bool:
        n = self.model.num_timesteps
        if n >= self._next_eval:
            self._next_eval += self.cfg.train.eval_every
            self.evaluate()
        if n >= self._next_ckpt:
            self._next_ckpt += self.cfg.train.checkpoint_every
            self.checkpoint()
        return True

    def evaluate(self) -> EvalRecord:
        rec = evaluate_model(self.model, self.vecnorm, self.cfg, list(self.cfg.train.eval_seeds))
        self.history.append(rec)
        self.logger.record("eval/objective", rec.objective)
        self.logger.record("latency/p99_us", rec.p99_us)
        self.logger.record("cpu/vm_cores", rec.vm_cpu)
        self.logger.dump(self.model.num_timesteps)
        return rec

    def checkpoint(self) -> None:
        save_checkpoint(self.root, self.model, self.vecnorm,
                        {"eval_history": [_rec_dict(r) for r in self.history]})


class ProgressBar(BaseCallback):
    """tqdm bar over env steps with live steps/s, p99 and CPU of the last steps, last eval objective."""

    def __init__(self, total: int, history: list[EvalRecord]) -> None:
        super().__init__()
        self.total = total
        self.history = history
        self._bar: Any = None
        self._p99: list[float] = []
        self._cpu: list[float] = []
        self._last = 0
        self._t0 = 0.0
        self._n0 = 0

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=self.total, initial=self.model.num_timesteps, unit="step", dynamic_ncols=True)
        self._last = self.model.num_timesteps
        self._n0 = self._last
        self._t0 = time.perf_counter()

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            self._p99.append(info.get("p99_us", math.nan))
            self._cpu.append(info.get("vm_cpu", math.nan))
        n = self.model.num_timesteps
        if n - self._last >= 256 or n >= self.total:
            p99 = np.nanmean(self._p99[-256:]) if self._p99 else math.nan
            cpu = np.nanmean(self._cpu[-256:]) if self._cpu else math.nan
            sps = (n - self._n0) / max(time.perf_counter() - self._t0, 1e-9)
            post = {"SPS": f"{sps:,.0f}", "p99_us": f"{p99:,.0f}", "cpu": f"{cpu:.2f}"}
            if self.history:
                post["eval_J"] = f"{self.history[-1].objective:.3f}"
            self._bar.set_postfix(post, refresh=False)
            self._bar.update(n - self._last)
            self._last = n
            self._p99 = self._p99[-256:]
            self._cpu = self._cpu[-256:]
        return True

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _rec_dict(r: EvalRecord) -> dict[str, Any]:
    return {"num_timesteps": r.num_timesteps, "objective": r.objective, "p99_us": r.p99_us, "vm_cpu": r.vm_cpu}


def _flat_params(cfg: ExperimentConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = node

    walk("", cfg.model_dump(mode="json"))
    return out


def _make_envs(cfg: ExperimentConfig, vecnorm_path: Path | None) -> tuple[VecEnv, VecNormalize]:
    t = cfg.train
    venv = make_vec_env(cfg.env, t.n_envs, t.vec_env, t.seed)
    if vecnorm_path is not None:
        vecnorm = VecNormalize.load(str(vecnorm_path), venv)
        vecnorm.training = True
    else:
        vn = t.vec_normalize
        vecnorm = VecNormalize(venv, norm_obs=vn.norm_obs, norm_reward=vn.norm_reward, clip_obs=vn.clip_obs,
                               clip_reward=vn.clip_reward, gamma=cfg.agent.gamma)
    return venv, vecnorm


def _set_tracking(uri: str | None) -> str:
    if uri is None:
        RESULTS.mkdir(exist_ok=True)
    resolved = uri or DEFAULT_URI
    mlflow.set_tracking_uri(resolved)
    return resolved


def _plots(history: list[EvalRecord], slo_us: float, out: Path) -> list[Path]:
    """Learning curve (eval objective over steps) and latency timeline of the last evaluation."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r.num_timesteps for r in history], [r.objective for r in history], marker="o")
    ax.set_xlabel("env steps")
    ax.set_ylabel("mean objective J (held-out seeds, lower is better)")
    ax.set_title("learning curve")
    fig.tight_layout()
    paths.append(out / "learning_curve.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    if history and history[-1].p99_timeline:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k, line in enumerate(history[-1].p99_timeline):
            ax.plot(line, label=f"seed #{k}", lw=1)
        ax.axhline(slo_us, color="red", ls="--", label="SLO")
        ax.set_yscale("log")
        ax.set_xlabel("control interval")
        ax.set_ylabel("p99 latency (us)")
        ax.set_title(f"latency timeline at {history[-1].num_timesteps} steps")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / "latency_timeline.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def _learn(cfg: ExperimentConfig, model: BaseAlgorithm, vecnorm: VecNormalize, root: Path,
           history: list[EvalRecord], show_progress: bool) -> None:
    model.set_logger(Logger(folder=None, output_formats=[MLflowOutputFormat()]))
    evals = EvalAndCheckpoint(cfg, root, vecnorm, history)
    callbacks: list[BaseCallback] = [evals]
    if show_progress:
        callbacks.append(ProgressBar(cfg.train.total_timesteps, history))
    remaining = cfg.train.total_timesteps - model.num_timesteps
    t0 = time.perf_counter()
    n0 = model.num_timesteps
    if remaining > 0:
        # on-policy algorithms log every rollout; off-policy ones every episode (all envs end together)
        model.learn(remaining, callback=CallbackList(callbacks), reset_num_timesteps=n0 == 0, log_interval=1)
    wall = time.perf_counter() - t0
    evals.init_callback(model)
    if not history or history[-1].num_timesteps != model.num_timesteps:
        evals.evaluate()
    evals.checkpoint()
    mlflow.log_metrics({"train/wall_s": wall, "SPS": (model.num_timesteps - n0) / max(wall, 1e-9),
                        "eval/final_objective": history[-1].objective}, step=int(model.num_timesteps))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for p in _plots(history, load_scenario(cfg.env.scenario).slo_us, out):
            mlflow.log_artifact(str(p), "plots")
        (out / "eval_history.json").write_text(json.dumps([_rec_dict(r) for r in history], indent=1))
        mlflow.log_artifact(str(out / "eval_history.json"))
        model.save(out / "model.zip")
        vecnorm.save(str(out / "vecnormalize.pkl"))
        mlflow.log_artifact(str(out / "model.zip"), "model")
        mlflow.log_artifact(str(out / "vecnormalize.pkl"), "model")
    mlflow.set_tag("training_state", "finished")


def train(cfg: ExperimentConfig, show_progress: bool | None = None) -> str:
    """Train per `cfg`, tracked in MLflow; returns the run id."""
    torch.set_num_threads(cfg.train.torch_threads)
    _set_tracking(cfg.tracking.uri)
    mlflow.set_experiment(cfg.tracking.experiment)
    sc = load_scenario(cfg.env.scenario)
    name = run_name(sc.id, cfg.algorithm, cfg.train.seed)
    _, vecnorm = _make_envs(cfg, None)
    try:
        model = build_model(cfg, vecnorm)
        with mlflow.start_run(run_name=name) as run:
            root = Path(cfg.tracking.checkpoint_dir) / run.info.run_id
            mlflow.set_tags({
                "git_commit": git_commit(), "scenario": sc.id, "host_profile": sc.host_profile,
                "method": cfg.algorithm, "seed": str(cfg.train.seed),
                "eval_seeds": ",".join(map(str, cfg.train.eval_seeds)),
                "checkpoint_dir": str(root.resolve()), "training_state": "running",
                **{f"version.{k}": v for k, v in package_versions().items()},
            })
            mlflow.log_params({k: str(v)[:500] for k, v in _flat_params(cfg).items()})
            mlflow.log_text(dump_config(cfg), CONFIG_ARTIFACT)
            _learn(cfg, model, vecnorm, root, [], cfg.train.progress_bar if show_progress is None else show_progress)
            return str(run.info.run_id)
    finally:
        vecnorm.close()


def run_config(run_id: str, tracking_uri: str | None = None) -> ExperimentConfig:
    """The config a run was trained with (from its MLflow artifact)."""
    _set_tracking(tracking_uri)
    client = mlflow.MlflowClient()
    try:
        client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise RunNotFound(f"no MLflow run {run_id!r} in {mlflow.get_tracking_uri()}") from None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
        except (mlflow.exceptions.MlflowException, OSError):
            raise RunNotFound(f"run {run_id} has no {CONFIG_ARTIFACT}: not a `vvho train` run") from None
        import yaml

        return parse_config(yaml.safe_load(Path(path).read_text()), f"run {run_id}/{CONFIG_ARTIFACT}")


def checkpoint_root(run_id: str, tracking_uri: str | None = None) -> Path:
    _set_tracking(tracking_uri)
    run = mlflow.MlflowClient().get_run(run_id)
    tag = run.data.tags.get("checkpoint_dir")
    if not tag:
        raise RunNotFound(f"run {run_id} has no checkpoint_dir tag: not a `vvho train` run")
    return Path(tag)


def load_trained(run_id: str, tracking_uri: str | None = None,
                 env: VecEnv | None = None) -> tuple[ExperimentConfig, BaseAlgorithm, VecNormalize | None]:
    """Config, model and VecNormalize statistics of a run's latest checkpoint (no env attached)."""
    cfg = run_config(run_id, tracking_uri)
    ckpt = latest_checkpoint(checkpoint_root(run_id, tracking_uri))
    model = load_model(cfg.algorithm, str(ckpt.model), env, cfg.train.device)
    vecnorm = None
    if ckpt.vecnormalize is not None:
        import pickle

        with ckpt.vecnormalize.open("rb") as f:
            vecnorm = pickle.load(f)
        assert isinstance(vecnorm, VecNormalize)
        vecnorm.training = False
    return cfg, model, vecnorm


def resume(run_id: str, tracking_uri: str | None = None, show_progress: bool | None = None) -> str:
    """Continue a run from its last checkpoint in the same MLflow run; returns the run id."""
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    cfg = run_config(run_id, tracking_uri)
    if tracking_uri is not None and cfg.tracking.uri != tracking_uri:
        cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"uri": tracking_uri})})
    torch.set_num_threads(cfg.train.torch_threads)
    root = checkpoint_root(run_id, tracking_uri)
    ckpt = latest_checkpoint(root)
    _, vecnorm = _make_envs(cfg, ckpt.vecnormalize)
    try:
        model = load_model(cfg.algorithm, str(ckpt.model), vecnorm, cfg.train.device)
        if isinstance(model, OffPolicyAlgorithm) and ckpt.replay_buffer is not None:
            model.load_replay_buffer(ckpt.replay_buffer)
        # the envs restart: begin from a fresh observation rather than the pickled one
        model._last_obs = None
        history = [EvalRecord(r["num_timesteps"], r["objective"], r["p99_us"], r["vm_cpu"])
                   for r in ckpt.state.get("eval_history", [])]
        _set_tracking(cfg.tracking.uri)
        with mlflow.start_run(run_id=run_id):
            mlflow.set_tags({"training_state": "running", "resumed_from_step": str(ckpt.num_timesteps)})
            _learn(cfg, model, vecnorm, root, history,
                   cfg.train.progress_bar if show_progress is None else show_progress)
        return run_id
    finally:
        vecnorm.close()


__all__ = ["ConfigError", "EvalRecord", "RunNotFound", "evaluate_model", "load_trained", "resume", "train"]
