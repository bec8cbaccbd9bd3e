"""Open-loop latency probe: a fixed send schedule, latency measured from the intended send time.

Why open loop: a closed-loop client that waits for each answer sends less while the guest stalls, so the
stall hides from the percentiles (coordinated omission). Here request k is due at t0 + k / rate whatever
happened before; if the probe itself falls behind it sends late but still measures from the due time.

Nothing is omitted. A request still unanswered `timeout_s` after its due time is recorded at its latency
so far (a lower bound) and counted as a timeout; its connection stays open, so the requests queued
behind it are recorded when they answer (or time out in turn), and a late answer to a timed-out request
is recognised, not mistaken for an error. A request whose connection fails (refused, reset) is counted
as failed. Callers count timeouts and failures as SLO violations.

The probe runs one selector loop in the calling thread over several non-blocking connections to the
guest, plus one to a host-local echo (the same service binary on loopback, pinned with the probe). The
local echo sees everything the probe does (its scheduling, its GIL, its loop) but no guest, so its RTTs
are the probe's own noise floor, measured in the same window as the guest.

The probe thread (for the window only) and the local echo run SCHED_FIFO where the kernel allows, else at
nice -20. Measured on this 2-pCPU host with two CPU hogs beside it: the echo's RTT p99 is ~5 ms at nice
-20 (EEVDF lets the running hog finish its slice before a waking task runs, however heavy its weight) and
~0.15 ms under SCHED_FIFO. A FIFO probe measures the guest as a client on another machine would, without
the host scheduler's delays of the client itself. It is bounded: it sleeps between due times, holds FIFO
only during a window (window + timeout), and RT throttling leaves other tasks 5% even if it spun; the
FIFO lease watchdog runs at a higher RT priority.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
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
from vvho_env.live.hostctl import rt_limit_in_force

SPIN_BEFORE_DUE_S = 150e-6  # FIFO wake-ups here run late by <= 90 us at p99, nice -20 ones by ~120 us at p90
PR_SET_TIMERSLACK = 29
PR_GET_TIMERSLACK = 30
PROBE_RT_PRIORITY = 5  # above FIFO vCPUs (1), below the FIFO lease watchdog (10)
PROBE_NICE = -20  # where SCHED_FIFO is not allowed


@dataclass
class TargetResult:
    """What one target (guest or local echo) returned in a window."""

    offered: int = 0  # requests due in the window
    sent: int = 0
    completed: int = 0
    errors: int = 0  # requests whose connection failed (refused, reset, malformed answer)
    timeouts: int = 0  # requests unanswered `timeout_s` after their due time
    late_answers: int = 0  # answers that came after their request had timed out (already recorded)
    latencies_ns: list[float] = field(default_factory=list)  # of the completed requests
    timed_out_ns: list[float] = field(default_factory=list)  # latency so far of the timed-out ones

    def all_ns(self) -> np.ndarray:
        return np.asarray(self.latencies_ns + self.timed_out_ns, dtype=np.float64)

    def histogram(self) -> LogHistogram:
        """Completed and timed-out requests (the latter at their latency so far)."""
        h = LogHistogram()
        if self.latencies_ns or self.timed_out_ns:
            h.record_many_ns(self.all_ns())
        return h

    def percentile_us(self, q: float) -> float:
        return self.histogram().percentile_us(q) if self.latencies_ns or self.timed_out_ns else float("nan")

    @property
    def mean_us(self) -> float:
        return float(np.mean(self.all_ns())) / 1000.0 if self.latencies_ns or self.timed_out_ns else float("nan")


@dataclass
class ProbeResult:
    window_s: float
    guest: TargetResult
    local: TargetResult | None
    probe_cpus: tuple[int, ...]
    probe_priority: str | None  # what the probe thread ran at ("SCHED_FIFO 5", "nice -20"), None: unchanged


class _Conn:
    """One non-blocking connection; requests on it answer in order, each tagged with its sequence number."""

    def __init__(self, addr: tuple[str, int], sel: selectors.BaseSelector) -> None:
        self.addr = addr
        self.sel = sel
        self.sock: socket.socket | None = None
        self.connecting = False
        self.rbuf = b""
        self.wbuf = b""
        self.pending: dict[int, float] = {}  # seq -> due time (ns, monotonic), not yet answered or expired

    def open(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rc = s.connect_ex(self.addr)
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            raise OSError(rc, os.strerror(rc))
        self.sock = s
        self.connecting = rc != 0
        self.sel.register(s, selectors.EVENT_READ | (selectors.EVENT_WRITE if self.connecting else 0), self)

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self.sock)
            self.sock.close()
            self.sock = None
        self.connecting = False
        self.rbuf = self.wbuf = b""

    def send(self, data: bytes) -> None:
        self.wbuf += data
        self.flush()

    def flush(self) -> None:
        if self.wbuf and self.sock is not None and not self.connecting:
            try:
                n = self.sock.send(self.wbuf)
            except BlockingIOError:
                return
            self.wbuf = self.wbuf[n:]

    def connected(self) -> None:
        """The non-blocking connect finished: raise its error, or start sending what queued up."""
        assert self.sock is not None
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        self.connecting = False
        self.sel.modify(self.sock, selectors.EVENT_READ, self)
        self.flush()


class _Target:
    def __init__(self, host: str, port: int, rate_rps: float, connections: int, spins_us: np.ndarray,
                 sel: selectors.BaseSelector) -> None:
        self.rate = rate_rps
        self.spins = spins_us
        self.conns = [_Conn((host, port), sel) for _ in range(connections)]
        self.result = TargetResult()
        self.next_seq = 0
        self.expired: set[int] = set()

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
                    conn.open()
                conn.send(f"{int(self.spins[seq % len(self.spins)])} {seq}\n".encode())
            except OSError:
                self.result.errors += 1
                self.fail_conn(conn)
                continue
            conn.pending[seq] = due
            self.result.sent += 1

    def on_event(self, conn: _Conn, mask: int, now_ns: int) -> None:
        if conn.sock is None:
            return
        try:
            if conn.connecting:
                if not mask & selectors.EVENT_WRITE:
                    return
                conn.connected()
                return
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
            seq = int(parts[1]) if len(parts) == 2 and parts[1].isdigit() else -1
            due = conn.pending.pop(seq, None)
            if due is not None:
                self.result.completed += 1
                self.result.latencies_ns.append(now_ns - due)
            elif seq in self.expired:
                self.expired.discard(seq)
                self.result.late_answers += 1
            else:
                self.result.errors += 1

    def expire(self, now_ns: int, timeout_ns: float) -> None:
        """Record every request older than the timeout (every one left, if timeout_ns is 0) at its latency
        so far; its connection stays open for the requests queued behind it."""
        for conn in self.conns:
            for seq in [s for s, due in conn.pending.items() if now_ns - due >= timeout_ns]:
                self.result.timeouts += 1
                self.result.timed_out_ns.append(now_ns - conn.pending.pop(seq))
                self.expired.add(seq)

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


def raise_priority(tid: int) -> str | None:
    """SCHED_FIFO PROBE_RT_PRIORITY for thread/process `tid`, else nice PROBE_NICE; says which, None if
    neither is allowed (not root)."""
    try:
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(PROBE_RT_PRIORITY))
        return f"SCHED_FIFO {PROBE_RT_PRIORITY}"
    except OSError:
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, tid, PROBE_NICE)
        return f"nice {PROBE_NICE}"
    except OSError:
        return None


@contextlib.contextmanager
def rt_section() -> Iterator[None]:
    """SCHED_FIFO PROBE_RT_PRIORITY for the calling SCHED_OTHER thread for the duration (a host agent's whole
    run), SCHED_RESET_ON_FORK so that threads and processes it starts begin at SCHED_OTHER; unchanged
    where the kernel refuses, where its RT limit is not in force (a FIFO thread could then own a CPU) or
    the thread is not SCHED_OTHER. A scheduling class belongs to the thread: a kill leaves nothing behind."""
    raised = False
    if os.sched_getscheduler(0) == os.SCHED_OTHER and rt_limit_in_force():
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(PROBE_RT_PRIORITY))
            raised = True
        except OSError:
            pass
    try:
        yield
    finally:
        if raised:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


@contextlib.contextmanager
def raised_priority() -> Iterator[str | None]:
    """Run the calling thread (Linux policies and nice values are per thread) at the probe's priority for
    the duration; yields what it ran at."""
    tid = threading.get_native_id()
    policy, param = os.sched_getscheduler(tid), os.sched_getparam(tid)
    nice = os.getpriority(os.PRIO_PROCESS, tid)
    got = raise_priority(tid)
    try:
        yield got
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(tid, policy, param)
            os.setpriority(os.PRIO_PROCESS, tid, nice)


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

    Service times are drawn exponential with mean service_us (a fixed, seeded schedule). Never raises for
    what the target does: refused connections, resets and silence are counted in the result. The window
    ends once every request has answered or timed out (at most window_s + timeout_s).
    """
    if rate_rps <= 0 or window_s <= 0:
        raise ValueError(f"rate_rps and window_s must be > 0, got {rate_rps} and {window_s}")
    rng = np.random.default_rng(seed)
    n = max(1, int(rate_rps * window_s))
    spins = rng.exponential(service_us, n) if service_us > 0 else np.zeros(n)
    sel = selectors.SelectSelector()  # select(2) takes a µs timeout; epoll rounds up to whole ms
    guest = _Target(host, port, rate_rps, connections, spins, sel)
    targets = [guest]
    local = None
    if local_port is not None:
        local = _Target("127.0.0.1", local_port, local_rate_rps or rate_rps, 1, np.zeros(1), sel)
        targets.append(local)
    timeout_ns = timeout_s * 1e9
    with pinned_thread(probe_cpus) as used, raised_priority() as priority, _fine_timer_slack():
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
            for key, mask in sel.select(timeout=wait):
                conn = key.data
                owner = guest if conn in guest.conns else local
                assert owner is not None
                owner.on_event(conn, mask, time.monotonic_ns())
            now = time.monotonic_ns()
            for t in targets:
                t.expire(now, timeout_ns)
        for t in targets:
            t.expire(time.monotonic_ns(), 0.0)
            for c in t.conns:
                c.close()
    sel.close()
    return ProbeResult(window_s, guest.result, local.result if local else None, used, priority)


class LocalEcho:
    """The service binary on host loopback: the probe's noise reference. Control lines are disabled (it
    must never touch the host's own sysctls), it dies with the thread that started it, and it runs at the
    probe's priority on the probe's pCPUs."""

    def __init__(self, binary: Path, cpus: Sequence[int] | None = None) -> None:
        if not binary.is_file():
            raise FileNotFoundError(f"{binary} not found; build it with: vvho testbed build")
        self.proc = subprocess.Popen(
            [str(binary), "0", "127.0.0.1", "--no-control", "--die-with-parent"],
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
        self.place(cpus)
        raise_priority(self.proc.pid)

    def place(self, cpus: Sequence[int] | None) -> None:
        """Run on the probe's pCPUs (they change with the vCPUs' pinning)."""
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.proc.pid, set(cpus))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
