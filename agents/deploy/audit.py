"""The host agent's audit log: one JSON object per line, appended and flushed to disk as it happens.

Records: "start" (bundle, sha256, mode, limits, the settings found at start), one "decision" per
control interval (the window's telemetry summary and objective, the observation's last window and
previous action, the proposed settings, each guard's verdict, what was applied, the decision time),
"fault" (a window or an apply that failed), and "stop" (how the run ended, what was restored).
The file is only ever appended to: an existing log continues.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _clean(value.item())
    return value


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":  # a crash tore the last line: start afresh
            os.write(self._fd, b"\n")

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "unix": round(time.time(), 3), "event": event,
                  **_clean(fields)}
        os.write(self._fd, (json.dumps(record, sort_keys=False) + "\n").encode())
        os.fsync(self._fd)
        return record

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_log(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a log, oldest first; a torn last line (a crash mid-write) is skipped."""
    with Path(path).open() as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue
