"""The small protocol through which training reports to a tracking store.

Agents never import the tracking backend: the caller (``vvho``, which owns MLflow) opens a run and
passes an object with these methods in, so that agents/ stays below vvho/ and any store (or none)
can record a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tracker(Protocol):
    """One open run of a tracking store."""

    @property
    def run_id(self) -> str: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Numeric metrics at a step (env steps for training)."""

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_text(self, text: str, name: str) -> None:
        """A text artifact (e.g. the resolved config) under `name`."""

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        """A file or a directory's files as artifacts, under `folder`."""
