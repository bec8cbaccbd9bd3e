"""One results directory for everything VVHO writes, passed down as a ``Paths`` object.

The MLflow database and its artifacts, checkpoints, policy bundles and the tuners' caches all live
under one root (``--results-dir``; default ``$VVHO_RESULTS_DIR`` or ``./results``), so that moving,
archiving or deleting a study is one directory. Nothing here creates folders: writers call
``ensure()`` first, readers never do, so that a command that only looks creates nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "VVHO_RESULTS_DIR"
DEFAULT_ROOT = "results"


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def at(cls, root: str | Path | None = None) -> Paths:
        """The given root, else $VVHO_RESULTS_DIR, else ./results (made absolute, so that a later chdir
        or a subprocess sees the same folders)."""
        chosen = root if root is not None else os.environ.get(ENV_VAR) or DEFAULT_ROOT
        return cls(Path(chosen).expanduser().absolute())

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def tracking_uri(self) -> str:
        """The local MLflow store (the default when no tracking URI is given)."""
        return f"sqlite:///{self.mlflow_db}"

    @property
    def artifacts(self) -> Path:
        """MLflow artifacts of runs in the local store (beside the database)."""
        return self.root / "mlartifacts"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def bundles(self) -> Path:
        return self.root / "bundles"

    @property
    def oracle(self) -> Path:
        """The best-known search's cache."""
        return self.root / "oracle"

    @property
    def baselines(self) -> Path:
        """Tuner studies, ledgers and hyperparameter sweeps."""
        return self.root / "baselines"

    def ensure(self) -> Paths:
        self.root.mkdir(parents=True, exist_ok=True)
        return self
