"""MLflow tracking: a local store by default (results/mlflow.db), any tracking URI by option."""

from __future__ import annotations

import contextlib
import platform
import subprocess
import time
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path("results")
DEFAULT_URI = f"sqlite:///{RESULTS / 'mlflow.db'}"
TRACKED_PACKAGES = ("vvho", "numpy", "numba", "gymnasium", "stable-baselines3", "torch", "mlflow")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5,
                               cwd=Path(__file__).resolve().parent).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def run_name(scenario: str, method: str, seed: int) -> str:
    """Deterministic run names: scenario__method__seed__time."""
    return f"{scenario}__{method}__{seed}__{time.strftime('%Y%m%d-%H%M%S')}"


@contextlib.contextmanager
def tracked_run(experiment: str, name: str, params: Mapping[str, Any], uri: str | None = None,
                tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """Start an MLflow run with the code version, package versions and params logged."""
    import mlflow

    if uri is None:
        RESULTS.mkdir(exist_ok=True)
    mlflow.set_tracking_uri(uri or DEFAULT_URI)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=name) as run:
        mlflow.set_tags({"git_commit": git_commit(), **{f"version.{k}": v for k, v in package_versions().items()},
                         **(tags or {})})
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        yield run
