"""Train an SB3 agent on the VVHO simulator: checkpointed, resumable, reporting to a Tracker.

``train(cfg, tracker, root)`` trains from scratch into the checkpoint folder `root`; ``resume(cfg,
tracker, root)`` continues from its last checkpoint (the step count and VecNormalize statistics carry
on). Training metrics reach the tracker through SB3's logger (``TrackerOutputFormat``); evaluations on
held-out seeds of every training scenario log the metric names every method logs (``vvho_env.metrics``:
``objective/J``, ``latency/p50_us``, ``latency/p99_us``, ``latency/p999_us``, ``slo/violation_frac``,
``cpu/vm_cores``, ...) and ``budget/train_steps``. A stop request (the
caller sets `stop`, e.g. on Ctrl-C) ends training at the next env step with a checkpoint and raises
KeyboardInterrupt from there, outside any write to the tracker; a KeyboardInterrupt that arrives
anyway also writes a checkpoint first. Either way a resume loses nothing.
"""

from __future__ import annotations

import json
import math
import pickle
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from agents.algorithms import build_model, load_model
from agents.checkpoint import latest_checkpoint, save_checkpoint
from agents.config import TrainingConfig
from agents.tracker import Tracker
from agents.tracker_output import TrackerOutputFormat
from agents.vec_env import make_vec_env
from vvho_env.env import VVHOVectorEnv
from vvho_env.harness import EpisodeResult
from vvho_env.metrics import tracked
from vvho_env.scenarios import load_scenario

PROGRESS_EVERY = 256  # env steps between progress reports


@dataclass
class EvalRecord:
    """One evaluation on the held-out seeds of every training scenario: the mean over those episodes of
    each episode's metrics, the same per scenario, and the per-step p99 of every episode."""

    num_timesteps: int
    objective: float
    p99_us: float
    vm_cpu: float
    p99_timeline: list[list[float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    per_scenario: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainProgress:
    """What a progress display shows while training runs."""

    steps: int
    total: int
    steps_per_s: float
    p99_us: float  # mean over the last steps of the training envs
    vm_cpu: float
    eval_objective: float | None  # of the last evaluation on the held-out seeds


@dataclass(frozen=True)
class TrainResult:
    num_timesteps: int
    steps_this_session: int
    wall_s: float  # of all training sessions of the run
    final_objective: float


ProgressFn = Callable[[TrainProgress], None]


def _mean_metrics(results: list[EpisodeResult]) -> dict[str, float]:
    rows = [r.metrics() for r in results]
    return {k: float(np.nanmean([m[k] for m in rows])) for k in rows[0]}


def evaluate_model(model: BaseAlgorithm, vecnorm: VecNormalize | None, cfg: TrainingConfig,
                   seeds: list[int], trace: list[tuple[np.ndarray, np.ndarray]] | None = None) -> EvalRecord:
    """Deterministic policy on each training scenario (nominal, not randomised), one episode per seed
    and scenario, all in one batch; each episode measured as the harness measures it. `trace`, if
    given, receives per step the normalised observations the policy saw and the knob positions held."""
    scenarios = cfg.env.scenario_list()
    jobs = [(sc, s) for sc in scenarios for s in seeds]
    env = VVHOVectorEnv(len(jobs), [sc for sc, _ in jobs], knob_names=cfg.env.knob_names,
                        action_mode=cfg.env.action_mode, delta_step=cfg.env.delta_step,
                        history=cfg.env.history, max_steps=cfg.env.max_steps)
    obs, _ = env.reset(seed=[s for _, s in jobs])
    state = None
    starts = np.ones(len(jobs), dtype=bool)
    results = [EpisodeResult(seed=s) for _, s in jobs]
    done = np.zeros(len(jobs), dtype=bool)
    p99: list[np.ndarray] = []
    for _ in range(env.max_steps):
        x = np.asarray(vecnorm.normalize_obs(obs) if vecnorm is not None else obs)
        if trace is not None:
            trace.append((x[~done], obs[~done, -len(env.knob_names):]))
        action, state = model.predict(x, state=state, episode_start=starts, deterministic=True)
        starts[:] = False
        obs, rewards, _, truncs, info = env.step(action)
        p99.append(np.where(done, np.nan, info["p99_us"]))
        for k in np.flatnonzero(~done):
            results[k].objective.append(-float(rewards[k]))
            results[k].telemetry.append(env.last_telemetry[k])
        done |= truncs
    overall = _mean_metrics(results)
    per_scenario = {sc.key: _mean_metrics([r for (s, _), r in zip(jobs, results, strict=True) if s is sc])
                    for sc in scenarios}
    return EvalRecord(int(model.num_timesteps), overall["objective"], overall["p99_us"], overall["vm_cpu"],
                      np.array(p99).T.tolist(), overall, per_scenario)


class EvalAndCheckpoint(BaseCallback):
    """Every `eval_every` steps: evaluate on held-out seeds; every `checkpoint_every`: checkpoint."""

    def __init__(self, cfg: TrainingConfig, root: Path, vecnorm: VecNormalize | None,
                 history: list[EvalRecord], wall_before: float) -> None:
        super().__init__()
        self.cfg = cfg
        self.root = root
        self.vecnorm = vecnorm
        self.history = history
        self.wall_before = wall_before  # training wall time of earlier sessions of this run
        self.t0 = time.perf_counter()
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
        for key, value in tracked(rec.metrics).items():
            self.logger.record(key, value)
        self.logger.record("budget/train_steps", self.model.num_timesteps)
        self.logger.dump(self.model.num_timesteps)
        return rec

    @property
    def wall_s(self) -> float:
        return self.wall_before + time.perf_counter() - self.t0

    def checkpoint(self) -> None:
        save_checkpoint(self.root, self.model, self.vecnorm,
                        {"eval_history": [_rec_dict(r) for r in self.history], "train_wall_s": self.wall_s})


class StopWhenAsked(BaseCallback):
    """Ends model.learn() at the next step once `stop` is set."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self.stop = stop

    def _on_step(self) -> bool:
        return not self.stop.is_set()


class ProgressReport(BaseCallback):
    """Reports steps, steps/s, p99 and CPU of the last steps and the last eval objective to `report`."""

    def __init__(self, total: int, history: list[EvalRecord], report: ProgressFn) -> None:
        super().__init__()
        self.total = total
        self.history = history
        self.report = report
        self._p99: list[float] = []
        self._cpu: list[float] = []
        self._last = 0
        self._t0 = 0.0
        self._n0 = 0

    def _on_training_start(self) -> None:
        self._last = self._n0 = self.model.num_timesteps
        self._t0 = time.perf_counter()
        self._emit(self._n0)

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            self._p99.append(info.get("p99_us", math.nan))
            self._cpu.append(info.get("vm_cpu", math.nan))
        n = self.model.num_timesteps
        if n - self._last >= PROGRESS_EVERY or n >= self.total:
            self._emit(n)
            self._last = n
            self._p99 = self._p99[-PROGRESS_EVERY:]
            self._cpu = self._cpu[-PROGRESS_EVERY:]
        return True

    def _emit(self, n: int) -> None:
        recent_p99 = [v for v in self._p99[-PROGRESS_EVERY:] if math.isfinite(v)]
        recent_cpu = [v for v in self._cpu[-PROGRESS_EVERY:] if math.isfinite(v)]
        sps = (n - self._n0) / max(time.perf_counter() - self._t0, 1e-9)
        self.report(TrainProgress(n, self.total, sps, float(np.mean(recent_p99)) if recent_p99 else math.nan,
                                  float(np.mean(recent_cpu)) if recent_cpu else math.nan,
                                  self.history[-1].objective if self.history else None))


def _rec_dict(r: EvalRecord) -> dict[str, Any]:
    return {"num_timesteps": r.num_timesteps, "objective": r.objective, "p99_us": r.p99_us, "vm_cpu": r.vm_cpu,
            "metrics": r.metrics, "per_scenario": r.per_scenario}


def _make_envs(cfg: TrainingConfig, vecnorm_path: Path | None) -> tuple[VecEnv, VecNormalize]:
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


def _learn(cfg: TrainingConfig, model: BaseAlgorithm, vecnorm: VecNormalize, root: Path, tracker: Tracker,
           history: list[EvalRecord], wall_before: float, progress: ProgressFn | None,
           stop: threading.Event | None) -> TrainResult:
    model.set_logger(Logger(folder=None, output_formats=[TrackerOutputFormat(tracker)]))
    evals = EvalAndCheckpoint(cfg, root, vecnorm, history, wall_before)
    callbacks: list[BaseCallback] = [evals]
    if stop is not None:
        callbacks.append(StopWhenAsked(stop))
    if progress is not None:
        callbacks.append(ProgressReport(cfg.train.total_timesteps, history, progress))
    remaining = cfg.train.total_timesteps - model.num_timesteps
    n0 = model.num_timesteps
    t0 = time.perf_counter()
    if remaining > 0:
        try:
            # on-policy algorithms log every rollout; off-policy ones every episode (all envs end together)
            model.learn(remaining, callback=CallbackList(callbacks), reset_num_timesteps=n0 == 0, log_interval=1)
        except KeyboardInterrupt:
            evals.checkpoint()
            raise
        if stop is not None and stop.is_set() and model.num_timesteps < cfg.train.total_timesteps:
            evals.checkpoint()
            raise KeyboardInterrupt
    session = time.perf_counter() - t0
    steps = int(model.num_timesteps) - n0
    evals.init_callback(model)
    if not history or history[-1].num_timesteps != model.num_timesteps:
        evals.evaluate()
    evals.checkpoint()
    metrics = {"objective/final_J": history[-1].objective, "train/wall_s": evals.wall_s,
               "budget/train_steps": float(model.num_timesteps)}
    if steps > 0:  # a session that trained nothing has no speed to report
        metrics["SPS"] = steps / max(session, 1e-9)
    tracker.log_metrics(metrics, step=int(model.num_timesteps))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for p in _plots(history, load_scenario(cfg.env.scenario).slo_us, out):
            tracker.log_artifact(p, "plots")
        (out / "eval_history.json").write_text(json.dumps([_rec_dict(r) for r in history], indent=1))
        tracker.log_artifact(out / "eval_history.json")
        model.save(out / "model.zip")
        vecnorm.save(str(out / "vecnormalize.pkl"))
        tracker.log_artifact(out / "model.zip", "model")
        tracker.log_artifact(out / "vecnormalize.pkl", "model")
    return TrainResult(int(model.num_timesteps), steps, evals.wall_s, history[-1].objective)


def train(cfg: TrainingConfig, tracker: Tracker, root: Path, progress: ProgressFn | None = None,
          stop: threading.Event | None = None) -> TrainResult:
    """Train per `cfg` from scratch, checkpointing into `root` and reporting to `tracker`."""
    torch.set_num_threads(cfg.train.torch_threads)
    _, vecnorm = _make_envs(cfg, None)
    try:
        model = build_model(cfg, vecnorm)
        return _learn(cfg, model, vecnorm, root, tracker, [], 0.0, progress, stop)
    finally:
        vecnorm.close()


def resume(cfg: TrainingConfig, tracker: Tracker, root: Path, progress: ProgressFn | None = None,
           stop: threading.Event | None = None) -> TrainResult:
    """Continue training from the last checkpoint in `root`."""
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    torch.set_num_threads(cfg.train.torch_threads)
    ckpt = latest_checkpoint(root)
    _, vecnorm = _make_envs(cfg, ckpt.vecnormalize)
    try:
        model = load_model(cfg.algorithm, str(ckpt.model), vecnorm, cfg.train.device)
        if isinstance(model, OffPolicyAlgorithm) and ckpt.replay_buffer is not None:
            model.load_replay_buffer(ckpt.replay_buffer)
        # the envs restart: begin from a fresh observation rather than the pickled one
        model._last_obs = None
        history = [EvalRecord(r["num_timesteps"], r["objective"], r["p99_us"], r["vm_cpu"],
                              metrics=r.get("metrics", {}), per_scenario=r.get("per_scenario", {}))
                   for r in ckpt.state.get("eval_history", [])]
        return _learn(cfg, model, vecnorm, root, tracker, history, float(ckpt.state.get("train_wall_s", 0.0)),
                      progress, stop)
    finally:
        vecnorm.close()


def load_trained(cfg: TrainingConfig, root: Path,
                 env: VecEnv | None = None) -> tuple[BaseAlgorithm, VecNormalize | None]:
    """Model and VecNormalize statistics of the latest checkpoint in `root` (no env attached)."""
    ckpt = latest_checkpoint(root)
    model = load_model(cfg.algorithm, str(ckpt.model), env, cfg.train.device)
    vecnorm = None
    if ckpt.vecnormalize is not None:
        with ckpt.vecnormalize.open("rb") as f:
            vecnorm = pickle.load(f)
        assert isinstance(vecnorm, VecNormalize)
        vecnorm.training = False
    return model, vecnorm
