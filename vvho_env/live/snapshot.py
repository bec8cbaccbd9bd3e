"""The original settings of a domain, persisted before the first change so that a crash never loses them.

One JSON file per (libvirt URI, domain) in the state directory ($VVHO_STATE_DIR, else /var/lib/vvho as
root, else ~/.local/state/vvho), written atomically (temporary file, fsync, rename, fsync of the
directory). It holds what every knob driver saved (exact cpumaps, every scheduler parameter, thread
policies by vCPU, RT runtimes, guest sysctls), the knob values read back at the same time, and its
owner (pid, process start time, a token per backend). The file is removed once the owner restored
everything; if the owner died first, the next backend on that domain, or `vvho host restore`, puts the
settings back from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vvho_env.live import hostctl
from vvho_env.types import BackendError, Settings

STATE_ENV = "VVHO_STATE_DIR"
FORMAT = 1
LIVE_TOKENS: set[str] = set()  # owner tokens of the backends open in this process


def state_dir() -> Path:
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    if os.geteuid() == 0:
        return Path("/var/lib/vvho")
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "vvho"


@dataclass(frozen=True)
class Owner:
    pid: int
    start_ticks: int
    token: str

    @classmethod
    def me(cls) -> Owner:
        return cls(os.getpid(), hostctl.process_start_ticks(os.getpid()) or 0, secrets.token_hex(8))

    def alive(self) -> bool:
        """The owner still runs: its process (not a reused pid), and in this process an open backend."""
        if self.pid == os.getpid():
            return self.token in LIVE_TOKENS
        return hostctl.process_start_ticks(self.pid) == self.start_ticks


@dataclass(frozen=True)
class Snapshot:
    uri: str
    domain: str
    uuid: str
    settings: Settings  # knob values read back when the snapshot was taken
    raw: dict[str, dict[str, Any]]  # driver name -> what the driver saved
    owner: Owner
    qemu_pid: int | None  # the instance the thread-level state belongs to
    taken: str

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        d = json.loads(text)
        if d.pop("format", None) != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
        d["owner"] = Owner(**d["owner"])
        return cls(**d)


class SnapshotError(BackendError):
    """A persisted snapshot that cannot be read; the message names the file."""


class SnapshotStore:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or state_dir()

    def path(self, uri: str, domain: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in domain)
        return self.directory / f"{safe}@{hashlib.sha256(uri.encode()).hexdigest()[:12]}.json"

    def load(self, uri: str, domain: str) -> Snapshot | None:
        path = self.path(uri, domain)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SnapshotError(f"{path}: cannot read the persisted snapshot: {exc}") from None
        try:
            return Snapshot.from_json(text)
        except (ValueError, TypeError, KeyError) as exc:
            raise SnapshotError(f"{path}: not a snapshot of format {FORMAT} ({exc}); restore the domain by hand "
                                "and delete the file") from None

    def save(self, snap: Snapshot) -> Path:
        path = self.path(snap.uri, snap.domain)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=self.directory)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(snap.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dfd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return path

    def remove(self, uri: str, domain: str) -> None:
        self.path(uri, domain).unlink(missing_ok=True)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
