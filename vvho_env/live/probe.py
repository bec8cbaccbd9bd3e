"""Open-loop latency probe: a fixed send schedule, latency measured from the intended send time.

Why open loop: a closed-loop client that waits for each answer sends less while the guest stalls, so the
stall hides from the percentiles (coordinated omission). Here request k is due at t0 + k / rate whatever
happened before; if the probe itself falls behind it sends late but still measures from the due time, and a
request that never answers within the timeout is recorded at the timeout (a lower bound) and counted.

The probe runs one selector loop in the calling thread over several connections to the guest, plus one
connection to a host-local echo (the same service binary on loopback, pinned with the probe). The local echo
sees everything the probe does (its scheduling, its GIL, its loop) but no guest, so its p99 is the probe's own
noise floor, measured in the same window as the guest.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vvho_env.histogram import LogHistogram

SPIN_BEFORE_DUE_S = 300e-6
PR_SET_TIMERSLACK = 29
PR_GET_TIMERSLACK = 30


@dataclass
class TargetResult:
    """What one target (guest or local echo) returned in a window."""

    offered: int = 0  # requests due in the window
    sent: int = 0
    completed: int = 0
    errors: int = 0  # connection errors, malformed answers
    timeouts: int = 0
    latencies_ns: list[float] = field(default_factory=list)

    def histogram(self) -> LogHistogram:
        h = LogHistogram()
        if self.latencies_ns:
            h.record_many_ns(np.asarray(self.latencies_ns))
        return h

    def percentile_us(self, q: float) -> float:
        return self.histogram().percentile_us(q) if self.latencies_ns else float("nan")

    @property
    def mean_us(self) -> float:
        return float(np.mean(self.latencies_ns)) / 1000.0 if self.latencies_ns else float("nan")


@dataclass
class ProbeResult:
    window_s: float
    guest: TargetResult
    local: TargetResult | None
    probe_cpus: tuple[int, ...]


class _Conn:
    """One non-blocking connection; requests on it answer in order, each tagged with its sequence number."""

    def __init__(self, host: str, port: int, sel: selectors.BaseSelector, timeout_s: float) -> None:
        self.addr = (host, port)
        self.sel = sel
        self.sock: socket.socket | None = None
        self.rbuf = b""
        self.wbuf = b""
        self.pending: dict[int, float] = {}  # seq -> due time (ns, monotonic)
        self.connect_timeout_s = timeout_s

    def connect(self) -> None:
        s = socket.create_connection(self.addr, timeout=self.connect_timeout_s)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        self.sock = s
        self.sel.register(s, selectors.EVENT_READ, self)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self.sock)
            self.sock.close()
            self.sock = None
        self.rbuf = self.wbuf = b""

    def send(self, data: bytes) -> None:
        assert self.sock is not None
        self.wbuf += data
        n = self.sock.send(self.wbuf)
        self.wbuf = self.wbuf[n:]

    def flush(self) -> None:
        if self.wbuf and self.sock is not None:
            n = self.sock.send(self.wbuf)
            self.wbuf = self.wbuf[n:]


class _Target:
    def __init__(
        self,
        host: str,
        port: int,
        rate_rps: float,
        connections: int,
        spins_us: np.ndarray,
        sel: selectors.BaseSelector,
        timeout_s: float,
    ) -> None:
        self.rate = rate_rps
        self.spins = spins_us
        self.conns = [_Conn(host, port, sel, timeout_s) for _ in range(connections)]
        self.result = TargetResult()
        self.next_seq = 0

    def due_ns(self, seq: int, t0_ns: int) -> float:
        return t0_ns + seq * 1e9 / self.rate

    def fail_conn(self, conn: _Conn) -> None:
        self.result.errors += len(conn.pending)
        conn.pending.clear()
        conn.close()

    def send_due(self, now_ns: int, t0_ns: int, end_ns: int) -> None:
        while True:
            due = self.due_ns(self.next_seq, t0_ns)
            if due > now_ns or due >= end_ns:
                return
            seq = self.next_seq
            self.next_seq += 1
            self.result.offered += 1
            conn = self.conns[seq % len(self.conns)]
            try:
                if conn.sock is None:
                    conn.connect()
                conn.send(f"{int(self.spins[seq % len(self.spins)])} {seq}\n".encode())
            except OSError:
                self.result.errors += 1
                self.fail_conn(conn)
                continue
            conn.pending[seq] = due
            self.result.sent += 1

    def on_readable(self, conn: _Conn, now_ns: int) -> None:
        assert conn.sock is not None
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self.fail_conn(conn)
            return
        if not data:
            self.fail_conn(conn)
            return
        conn.rbuf += data
        *lines, conn.rbuf = conn.rbuf.split(b"\n")
        for line in lines:
            parts = line.split()
            due = conn.pending.pop(int(parts[1]), None) if len(parts) == 2 and parts[1].isdigit() else None
            if due is None:
                self.result.errors += 1
                continue
            self.result.completed += 1
            self.result.latencies_ns.append(now_ns - due)

    def expire(self, now_ns: int, timeout_ns: float) -> None:
        for conn in self.conns:
            late = [s for s, due in conn.pending.items() if now_ns - due > timeout_ns]
            for seq in late:
                del conn.pending[seq]
                self.result.timeouts += 1
                self.result.latencies_ns.append(timeout_ns)
            if late:  # answers to expired requests would be misattributed: start the connection afresh
                self.result.errors += len(conn.pending)
                conn.pending.clear()
                conn.close()

    def outstanding(self) -> int:
        return sum(len(c.pending) for c in self.conns)


@contextlib.contextmanager
def _fine_timer_slack() -> Iterator[None]:
    """Drop this thread's timer slack (default 50 µs) to 1 ns while probing: it adds straight to latency."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        before = libc.prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0)
        libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        yield
        return
    try:
        yield
    finally:
        libc.prctl(PR_SET_TIMERSLACK, max(1, before), 0, 0, 0)


@contextlib.contextmanager
def pinned_thread(cpus: Sequence[int] | None) -> Iterator[tuple[int, ...]]:
    """Pin the calling thread (not the whole process) to `cpus` for the duration; yields the CPUs used."""
    tid = threading.get_native_id()
    before = os.sched_getaffinity(tid)
    target = set(cpus or ()) & before if cpus else set()
    if target:
        os.sched_setaffinity(tid, target)
    try:
        yield tuple(sorted(target or before))
    finally:
        os.sched_setaffinity(tid, before)


def run_probe(
    host: str,
    port: int,
    rate_rps: float,
    window_s: float,
    *,
    service_us: float = 0.0,
    connections: int = 4,
    timeout_s: float = 1.0,
    local_port: int | None = None,
    local_rate_rps: float | None = None,
    probe_cpus: Sequence[int] | None = None,
    seed: int = 0,
) -> ProbeResult:
    """Drive `rate_rps` requests for `window_s` seconds; each asks the service to spin ~service_us.

    Service times are drawn exponential with mean service_us (a fixed, seeded schedule). Raises OSError only
    if no connection to the guest can be opened at all; other faults are counted in the result.
    """
    if rate_rps <= 0 or window_s <= 0:
        raise ValueError(f"rate_rps and window_s must be > 0, got {rate_rps} and {window_s}")
    rng = np.random.default_rng(seed)
    n = max(1, int(rate_rps * window_s))
    spins = rng.exponential(service_us, n) if service_us > 0 else np.zeros(n)
    sel = selectors.SelectSelector()  # select(2) takes a µs timeout; epoll rounds up to whole ms
    guest = _Target(host, port, rate_rps, connections, spins, sel, timeout_s)
    targets = [guest]
    local = None
    if local_port is not None:
        lrate = local_rate_rps or max(20.0, rate_rps / 4)
        local = _Target("127.0.0.1", local_port, lrate, 1, np.zeros(1), sel, timeout_s)
        targets.append(local)
    guest.conns[0].connect()  # fail fast with the OS error if nothing listens
    timeout_ns = timeout_s * 1e9
    with pinned_thread(probe_cpus) as used, _fine_timer_slack():
        t0 = time.monotonic_ns()
        end = t0 + int(window_s * 1e9)
        deadline = end + int(timeout_ns)
        while True:
            now = time.monotonic_ns()
            for t in targets:
                t.send_due(now, t0, end)
            if now >= end and not any(t.outstanding() for t in targets):
                break
            if now >= deadline:
                break
            next_due = min(
                [t.due_ns(t.next_seq, t0) for t in targets if t.due_ns(t.next_seq, t0) < end],
                default=float(deadline),
            )
            wait = max(0.0, min(next_due, float(deadline)) - now) / 1e9
            # Timer wake-ups in a VM host run late by 100+ µs: sleep to just before the due time and
            # poll the rest, so the send schedule (and so every latency) is not skewed by the probe.
            wait = 0.0 if wait < SPIN_BEFORE_DUE_S else min(wait - SPIN_BEFORE_DUE_S, 0.05)
            for key, _ in sel.select(timeout=wait):
                conn = key.data
                owner = guest if conn in guest.conns else local
                assert owner is not None
                owner.on_readable(conn, time.monotonic_ns())
            now = time.monotonic_ns()
            for t in targets:
                t.expire(now, timeout_ns)
        for t in targets:
            t.expire(time.monotonic_ns() + int(timeout_ns) + 1, timeout_ns)
            for c in t.conns:
                c.close()
    sel.close()
    return ProbeResult(window_s, guest.result, local.result if local else None, used)


class LocalEcho:
    """The service binary on host loopback (control lines disabled): the probe's noise reference."""

    def __init__(self, binary: Path, cpus: Sequence[int] | None = None) -> None:
        if not binary.is_file():
            raise FileNotFoundError(f"{binary} not found; build it with: vvho testbed build")
        self.proc = subprocess.Popen(
            [str(binary), "0", "127.0.0.1", "--no-control"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "ready on" not in line:
            self.close()
            raise RuntimeError(f"local echo {binary} did not start: {line.strip()!r}")
        self.port = int(line.rsplit(":", 1)[1])
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.proc.pid, set(cpus))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
