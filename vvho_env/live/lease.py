"""The SCHED_FIFO lease: a watchdog process that reverts FIFO vCPUs when its controller stops renewing.

Why a process and not a thread: a FIFO vCPU spinning under TCG can starve the host, so FIFO is only
ever granted on a lease, and a lease enforced inside the controller dies with it (SIGKILL, OOM, a
hang). The watchdog is started in its own session and holds the read end of a pipe whose write end
only the controller has. It reverts every vCPU thread to SCHED_OTHER and puts the RT runtime of
their cgroups back, then exits, as soon as one of these happens:

- the pipe reaches EOF: the controller died, whatever killed it (the kernel closes its fds);
- no renewal byte arrived for ``lease_s`` seconds: the controller hangs;
- its own wake-ups come ``late_s`` later than asked: RT tasks are starving the host.

The controller ends a lease it no longer needs with a release byte (it reverts by itself first).
The watchdog runs at an RT priority above the vCPUs' where the kernel allows, so FIFO vCPUs cannot
starve it. It imports nothing from vvho: run as a script, it starts in ~50 ms.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

RENEW = b"r"
RELEASE = b"q"
WATCHDOG_PRIORITY = 10  # above the vCPUs' FIFO priority 1
TICK_S = 0.05


def revert(tids: list[int], rt_runtime: dict[str, int]) -> list[str]:
    """SCHED_OTHER for every thread still alive, then each cgroup directory's cpu.rt_runtime_us back
    (children before parents).
    Returns what could not be reverted (a thread that is gone needs nothing)."""
    failed = []
    for tid in tids:
        try:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        except ProcessLookupError:
            pass
        except OSError as exc:
            failed.append(f"thread {tid}: {exc}")
    for path in sorted(rt_runtime, key=lambda p: -len(Path(p).parts)):
        try:
            (Path(path) / "cpu.rt_runtime_us").write_text(str(rt_runtime[path]))
        except FileNotFoundError:
            pass  # the cgroup left with its domain
        except OSError as exc:
            failed.append(f"{path}: {exc}")
    return failed


def _watch(cfg: dict) -> str:
    """The watchdog loop; returns why it ended."""
    lease_s, late_s = float(cfg["lease_s"]), float(cfg["late_s"])
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(WATCHDOG_PRIORITY))
    fd = sys.stdin.fileno()
    expires = time.monotonic() + lease_s
    last = time.monotonic()
    while True:
        ready, _, _ = select.select([fd], [], [], TICK_S)
        now = time.monotonic()
        if ready:
            data = os.read(fd, 4096)
            if not data:
                return "controller died (lease pipe closed)"
            if RELEASE in data:
                return ""
            expires = now + lease_s
        if now > expires:
            return f"lease of {lease_s:g} s not renewed"
        if now - last > TICK_S + late_s:
            return f"watchdog woke {1000 * (now - last - TICK_S):.0f} ms late (host starved by RT tasks)"
        last = now


def main() -> None:
    cfg = json.loads(sys.stdin.readline())
    os.write(sys.stdout.fileno(), b"armed\n")
    reason = _watch(cfg)
    if reason:
        failed = revert(cfg["tids"], cfg["rt_runtime"])
        msg = f"reverted: {reason}" + (f"; could not revert {', '.join(failed)}" if failed else "")
        with contextlib.suppress(OSError):
            os.write(sys.stdout.fileno(), msg.encode() + b"\n")


class Lease:
    """The controller's side: start the watchdog, renew, release; say whether it has fired."""

    def __init__(self, tids: list[int], rt_runtime: dict[str, int], lease_s: float, late_s: float = 0.5) -> None:
        self.tids = list(tids)
        self.lease_s = lease_s
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(Path(__file__).resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C to the controller's process group must not kill it first
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        cfg = {"tids": self.tids, "rt_runtime": rt_runtime, "lease_s": lease_s, "late_s": late_s}
        self.proc.stdin.write(json.dumps(cfg).encode() + b"\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline() != b"armed\n":
            self.proc.kill()
            raise OSError(f"the FIFO lease watchdog did not start ({sys.executable} {__file__})")
        self.fired: str | None = None

    def active(self) -> bool:
        """False once the watchdog has reverted (self.fired says why) or was released."""
        if self.proc.poll() is None:
            return True
        if self.fired is None and self.proc.stdout is not None:
            self.fired = self.proc.stdout.read().decode().strip() or "released"
        return False

    def renew(self) -> None:
        if self.active():
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.write(RENEW)
                self.proc.stdin.flush()

    def release(self) -> None:
        """End the lease without a revert (the controller has reverted or handed FIFO back)."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.write(RELEASE)
                self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


if __name__ == "__main__":
    main()
