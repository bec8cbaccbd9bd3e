"""The probe target in the guest: any TCP echo service, or the project's own service with control lines.

The probe's request line "<spin_us> <seq>" comes back unchanged from any echo service, so any TCP echo
works as a target. The project's service (vvho_service.c) also spins spin_us of guest CPU per request
(the scenario's service time) and answers control lines ('!get NAME', '!set NAME VALUE') that set
guest-side knobs through their /proc files. Which one listens is found by asking a control line: the
project's service answers "ok ...", a plain echo sends the line back.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

SERVICE_KINDS = ("auto", "vvho", "echo")


class GuestControl:
    """The project's service's control lines over the forwarded port."""

    def __init__(self, host: str, port: int, timeout_s: float = 2.0) -> None:
        self.addr = (host, port)
        self.timeout_s = timeout_s

    def ask(self, line: str) -> str:
        """Send one line, return the reply line (OSError when the service does not answer in time)."""
        with socket.create_connection(self.addr, timeout=self.timeout_s) as s:
            s.settimeout(self.timeout_s)
            s.sendall(line.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        return buf.decode(errors="replace").strip()

    def _ok(self, line: str) -> int:
        """The value in an 'ok NAME VALUE' reply; ValueError when the service refuses (an 'err' reply)."""
        reply = self.ask(line)
        if not reply.startswith("ok "):
            raise ValueError(f"guest service answered {reply!r} to {line!r}")
        return int(reply.split()[-1])

    def get(self, name: str) -> int:
        return self._ok(f"!get {name}")

    def set(self, name: str, value: int) -> int:
        return self._ok(f"!set {name} {value}")


@dataclass(frozen=True)
class Target:
    """Where the probe sends requests and what answers there."""

    host: str
    port: int
    kind: str  # "vvho" (the project's service) or "echo" (any TCP echo service)

    @property
    def service_time(self) -> bool:
        return self.kind == "vvho"

    def control(self, timeout_s: float = 2.0) -> GuestControl | None:
        return GuestControl(self.host, self.port, timeout_s) if self.kind == "vvho" else None


def detect(host: str, port: int, kind: str = "auto", timeout_s: float = 5.0) -> Target:
    """Check that something echoes on host:port and tell the project's service from a plain echo.

    kind "echo" treats even the project's service as a plain echo (no service time, no guest knobs).
    Raises OSError naming what was sent and what came back when neither answers as expected."""
    if kind not in SERVICE_KINDS:
        raise ValueError(f"service kind {kind!r} not accepted; accepted: {', '.join(SERVICE_KINDS)}")
    ctl = GuestControl(host, port, timeout_s)
    probe_line = "!get busy_poll"
    reply = ctl.ask(probe_line)
    if reply.startswith("ok busy_poll "):
        found = "vvho"
    elif reply == probe_line:
        found = "echo"
    else:
        echo = ctl.ask("0 vvho-echo-check")
        if echo != "0 vvho-echo-check":
            raise OSError(f"{host}:{port} is not a TCP echo service: sent '0 vvho-echo-check', got {echo!r}")
        found = "echo"
    if kind == "vvho" and found != "vvho":
        raise OSError(f"{host}:{port} is a plain echo service ({reply!r} to {probe_line!r}), not the project's "
                      "service that --service vvho asks for; use --service echo or auto")
    return Target(host, port, "echo" if kind == "echo" else found)  # the project's service echoes too
