"""The open-loop probe against real TCP echo servers on loopback: it omits nothing, and the noise check's rule.

The servers are real sockets in this process: a line echo that can stall once (as a stopped guest
does), and a port nobody listens on.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from vvho_env.live.noise import MIN_SAMPLES, NoiseCheck
from vvho_env.live.probe import run_probe


class _StallingEcho(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, stall_seq: int, stall_s: float) -> None:
        self.stall_seq, self.stall_s = stall_seq, stall_s
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        srv: _StallingEcho = self.server  # type: ignore[assignment]
        for line in self.rfile:
            if line.split()[-1] == str(srv.stall_seq).encode():
                time.sleep(srv.stall_s)  # everything queued behind it on this connection waits too
            self.wfile.write(line)
            self.wfile.flush()


@pytest.fixture
def stalling_echo() -> Iterator[_StallingEcho]:
    srv = _StallingEcho(stall_seq=40, stall_s=1.0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_a_stall_is_counted_not_dropped(stalling_echo: _StallingEcho) -> None:
    port = stalling_echo.server_address[1]
    res = run_probe("127.0.0.1", port, rate_rps=200, window_s=1.0, connections=2, timeout_s=0.3)
    g = res.guest
    assert g.offered == g.sent == 200 and g.errors == 0, g
    assert g.completed + g.timeouts == g.offered, "every request is answered or timed out: none left out"
    # request 40 stalls its connection for 1 s: it and the ~100 behind it there wait; those older than
    # 0.3 s count as timeouts at their latency so far, the rest answer late but within the timeout
    assert 50 <= g.timeouts <= 100, g.timeouts
    assert min(g.timed_out_ns) >= 0.3e9 and g.late_answers > 0
    assert g.percentile_us(99) >= 0.3e6, "the stall is in the tail"


def test_a_refused_port_is_counted_as_failed_requests() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    res = run_probe("127.0.0.1", port, rate_rps=100, window_s=0.3, timeout_s=0.2)
    assert res.guest.errors == res.guest.offered == 30 and res.guest.completed == res.guest.timeouts == 0


def test_noise_check_needs_enough_samples_and_pools_the_newest_windows() -> None:
    check = NoiseCheck()
    rng = np.random.default_rng(0)
    quiet = list(rng.uniform(50e3, 100e3, 200))  # 50-100 us echo RTTs
    for _ in range(MIN_SAMPLES // 200 - 1):
        verdict = check.add(quiet, 5000.0)
        assert verdict.noise_p99_us is None and not verdict.too_noisy and "pending" in (verdict.note() or "")
    verdict = check.add(quiet, 5000.0)
    assert verdict.samples == MIN_SAMPLES and verdict.windows == 5
    assert 90 < (verdict.noise_p99_us or 0) < 110 and verdict.baseline_p99_us == 5000.0 and not verdict.too_noisy
    noisy = list(rng.uniform(600e3, 900e3, 200))  # 0.6-0.9 ms: > 10% of a 5 ms baseline once it is 2% of the pool
    for _ in range(2):
        verdict = check.add(noisy, 5000.0)
    assert verdict.windows == 5 and verdict.samples == MIN_SAMPLES, "the oldest window left the pool"
    assert verdict.too_noisy and "exceeds 10% of the guest baseline p99 5000 us" in (verdict.note() or "")


def test_the_passive_source_diffs_a_prometheus_histogram() -> None:
    import http.server

    from vvho_env.live.passive import PrometheusSource

    start = {"0.001": 10, "0.01": 10, "+Inf": 10}
    end = {"0.001": 60, "0.01": 150, "+Inf": 152}  # 50 under 1 ms, 90 in (1, 10] ms, 2 above 10 ms
    scrapes = iter([start, start, end])  # the source's check at start, then the window's two scrapes

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            counts = next(scrapes)
            body = "".join(f'app_latency_seconds_bucket{{path="/",le="{le}"}} {n}\n' for le, n in counts.items())
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        src = PrometheusSource(f"http://127.0.0.1:{srv.server_address[1]}/metrics", "app_latency_seconds")
        win = src.window(0.05, 0, 0, slo_us=5000.0, seed=0, probe_cpus=())
    finally:
        srv.shutdown()
    assert (win.offered, win.completed, win.timeouts, win.errors) == (142, 140, 2, 0)
    assert win.over_slo == 92, "buckets reaching above the 5 ms SLO: (1, 10] ms and +Inf"
    assert 9_000 <= win.histogram.percentile_us(99) <= 10_200, "recorded at the bucket's upper bound"
    assert any("latency unknown" in n for n in win.notes)
