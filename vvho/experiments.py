"""Training runs as tracked experiments: train, resume, export and find the policy to evaluate.

This is where the agents meet MLflow: each function opens the run in the store (``vvho.tracking``),
hands agents/ a ``Tracker`` and the checkpoint folder under the results directory, and records the
outcome. The CLI adds only argument parsing and output.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from agents.bundle import MANIFEST, BundleError, PolicyBundle
from vvho.config import ExperimentConfig, dump_config, parse_config
from vvho.tracking import RunInfo, RunNotFound, Store, owner_alive, run_name
from vvho_env.errors import VVHOError
from vvho_env.paths import Paths
from vvho_env.scenarios import load_scenario

if TYPE_CHECKING:
    from agents.train import ProgressFn, TrainResult

CONFIG_ARTIFACT = "config.yaml"


class RunStateError(VVHOError):
    """A run in a state that does not allow what was asked (resuming a run that still trains)."""


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str
    result: TrainResult | None  # None: the run had nothing left to train
    store: Store


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


def train_run(cfg: ExperimentConfig, paths: Paths, name: str | None = None, tags: Mapping[str, str] | None = None,
              progress: ProgressFn | None = None, on_start: Callable[[str, str], None] | None = None,
              stop: threading.Event | None = None) -> TrainOutcome:
    """Train `cfg` as a new run; `on_start(run_id, name)` is called once the run exists; setting `stop`
    ends it at the next step (checkpointed, marked interrupted)."""
    from agents.train import train

    store = Store(paths, cfg.tracking.uri)
    sc = load_scenario(cfg.env.scenario)
    name = name or run_name(sc.id, cfg.algorithm, cfg.train.seed)
    standard = {"scenario": sc.id, "host_profile": sc.host_profile, "method": cfg.algorithm,
                "seed": str(cfg.train.seed), "budget": f"{cfg.train.total_timesteps} train_steps",
                "eval_seeds": ",".join(map(str, cfg.train.eval_seeds)),
                "train_scenarios": ",".join(s.id for s in cfg.env.scenario_list()), "command": "train"}
    with store.start(cfg.tracking.experiment, name, {**standard, **(tags or {})}, _flat_params(cfg)) as tracker:
        root = paths.checkpoints / tracker.run_id
        tracker.set_tags({"checkpoint_dir": str(root)})
        tracker.log_text(dump_config(cfg), CONFIG_ARTIFACT)
        if on_start is not None:
            on_start(tracker.run_id, name)
        result = train(cfg, tracker, root, progress, stop)
    return TrainOutcome(tracker.run_id, result, store)


def run_config(store: Store, run_id: str) -> ExperimentConfig:
    """The config a run was trained with (its config.yaml artifact)."""
    text = store.read_text(run_id, CONFIG_ARTIFACT)
    raw = yaml.safe_load(text)
    if isinstance(raw, dict) and isinstance(raw.get("tracking"), dict):
        raw["tracking"].pop("checkpoint_dir", None)  # runs from before one results directory held it here
    return parse_config(raw, f"run {run_id}/{CONFIG_ARTIFACT}")


def checkpoint_root(info: RunInfo, paths: Paths) -> Path:
    """The run's checkpoint folder: its tag, else where this results directory keeps it."""
    tagged = info.tags.get("checkpoint_dir")
    if tagged and Path(tagged).is_dir():
        return Path(tagged)
    local = paths.checkpoints / info.run_id
    if local.is_dir():
        return local
    if not tagged:
        raise RunNotFound(f"run {info.run_id} has no checkpoints: it is not a `vvho train` run")
    raise RunNotFound(f"run {info.run_id}: its checkpoints are not at {tagged} nor {local}; accepted: the "
                      "--results-dir the run was trained under")


def resume_run(run_id: str, paths: Paths, uri: str | None = None, progress: ProgressFn | None = None,
               on_start: Callable[[str, str], None] | None = None, stop: threading.Event | None = None) -> TrainOutcome:
    """Continue a run from its last checkpoint, in the same MLflow run."""
    from agents.checkpoint import latest_checkpoint
    from agents.train import resume

    store = Store(paths, uri)
    info = store.get(run_id)
    if info.state == "running" and owner_alive(info.tags):
        raise RunStateError(f"run {info.run_id} is still training (pid {info.tags.get('vvho.pid')}); "
                            "accepted: resume it once that process has stopped")
    cfg = run_config(store, info.run_id)
    root = checkpoint_root(info, paths)
    ckpt = latest_checkpoint(root)
    if info.state == "finished" and ckpt.num_timesteps >= cfg.train.total_timesteps:
        return TrainOutcome(info.run_id, None, store)
    with store.reopen(info.run_id, {"resumed_from_step": str(ckpt.num_timesteps)}) as tracker:
        if on_start is not None:
            on_start(info.run_id, info.name)
        result = resume(cfg, tracker, root, progress, stop)
    return TrainOutcome(info.run_id, result, store)


@dataclass(frozen=True)
class Export:
    bundle: Path
    model_uri: str
    run_id: str


def export_run(run_id: str, paths: Paths, uri: str | None = None, out: Path | None = None) -> Export:
    """Export a run's latest checkpoint as a bundle (default: <results>/bundles/<run id>), log the
    bundle and its MLflow model into the run."""
    from agents.export import export_bundle
    from agents.train import load_trained

    store = Store(paths, uri)
    info = store.get(run_id)
    cfg = run_config(store, info.run_id)
    model, vecnorm = load_trained(cfg, checkpoint_root(info, paths))
    target = out if out is not None else paths.bundles / info.run_id
    export_bundle(model, vecnorm, cfg, target, run_id=info.run_id)
    tracker = store.attach(info.run_id)
    tracker.log_artifact(target, "bundle")
    return Export(target, tracker.log_policy_model(target), info.run_id)


def looks_like_path(text: str) -> bool:
    """A policy argument meant as a path (not a run id)."""
    return (os.sep in text or text.startswith((".", "~")) or text.endswith((".onnx", ".json"))
            or Path(text).exists())


def resolve_policy(text: str, paths: Paths, uri: str | None = None,
                   on_export: Callable[[str], None] | None = None) -> PolicyBundle:
    """A bundle directory (or a file in one), or a run id: its exported bundle, exported now if there is
    none yet (`on_export(run_id)` is told first)."""
    path = Path(text).expanduser()
    if path.is_file() and path.name in (MANIFEST, "policy.onnx"):
        path = path.parent
    if path.is_dir():
        return PolicyBundle(path)
    if path.exists():
        raise BundleError(f"{path}: a file, not a bundle; accepted: a bundle directory from `vvho export` or a "
                          "run id")
    if looks_like_path(text):
        raise BundleError(f"{path}: no such file or directory; accepted: a bundle directory from `vvho export` or "
                          "a run id (see `vvho runs list`)")
    store = Store(paths, uri).require()
    info = store.get(text)
    existing = paths.bundles / info.run_id
    if (existing / MANIFEST).is_file():
        return PolicyBundle(existing)
    if on_export is not None:
        on_export(info.run_id)
    return PolicyBundle(export_run(info.run_id, paths, uri).bundle)
