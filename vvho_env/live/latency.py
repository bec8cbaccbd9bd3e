"""Where a live window's latencies come from: the active probe (here) or a passive source (passive.py).

A LatencySource measures one window and returns a LatencyWindow: the offered requests, what became of
each (answered, timed out, failed) and a latency histogram of the answered and timed-out ones. The
active ProbeSource drives the open-loop probe into the guest with the host-local echo beside it and
runs the noise check; it is the only source that knows the scenario's rate and service time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from vvho_env.histogram import LogHistogram
from vvho_env.live.guest import Target
from vvho_env.live.noise import NoiseCheck, NoiseVerdict
from vvho_env.live.probe import LocalEcho, run_probe


@dataclass
class LatencyWindow:
    window_s: float
    offered: int  # requests the window was meant to carry
    completed: int
    timeouts: int  # recorded at their latency so far
    errors: int  # failed requests (no latency)
    histogram: LogHistogram  # completed + timed out
    over_slo: int  # completed or timed-out requests above the SLO, timeouts always included
    mean_us: float
    notes: list[str] = field(default_factory=list)
    noise: NoiseVerdict | None = None

    @property
    def violations(self) -> int:
        """SLO violations: requests above the SLO, timed out, or failed."""
        return self.over_slo + self.errors

    @property
    def requests(self) -> int:
        return self.completed + self.timeouts + self.errors


class LatencySource(Protocol):
    description: str
    service_time: bool  # the scenario's per-request service time is applied

    def window(self, window_s: float, rate_rps: float, service_us: float, slo_us: float, seed: int,
               probe_cpus: Sequence[int]) -> LatencyWindow: ...

    def helper_pids(self) -> list[int]: ...

    def close(self) -> None: ...


class ProbeSource:
    """The open-loop probe into `target`, with the host-local echo (from `echo_binary`) as its noise
    reference when one is given."""

    def __init__(self, target: Target, *, connections: int = 4, timeout_s: float = 1.0,
                 echo_binary: Path | None = None) -> None:
        self.target = target
        self.connections = connections
        self.timeout_s = timeout_s
        self.service_time = target.service_time
        self.description = (f"active probe into {'the project service' if target.service_time else 'a TCP echo'} "
                            f"at {target.host}:{target.port}")
        self.echo_binary = echo_binary
        self._echo: LocalEcho | None = None
        self._echo_error: str | None = None if echo_binary else "no local echo binary given: no noise check"
        self.noise = NoiseCheck()

    def _local_echo(self, cpus: Sequence[int]) -> LocalEcho | None:
        if self._echo is None and self.echo_binary is not None and self._echo_error is None:
            try:
                self._echo = LocalEcho(self.echo_binary, cpus)
            except (OSError, RuntimeError) as exc:
                self._echo_error = f"no probe noise check: {exc}"
        elif self._echo is not None:
            if self._echo.proc.poll() is not None:  # it died: start another next window
                self._echo = None
                return None
            self._echo.place(cpus)
        return self._echo

    def window(self, window_s: float, rate_rps: float, service_us: float, slo_us: float, seed: int,
               probe_cpus: Sequence[int]) -> LatencyWindow:
        echo = self._local_echo(probe_cpus)
        res = run_probe(self.target.host, self.target.port, rate_rps, window_s,
                        service_us=service_us if self.service_time else 0.0, connections=self.connections,
                        timeout_s=self.timeout_s, local_port=echo.port if echo else None,
                        probe_cpus=probe_cpus, seed=seed)
        g = res.guest
        # every timed-out request is a violation, even under a timeout shorter than the SLO
        over = int(np.count_nonzero(np.asarray(g.latencies_ns) / 1000.0 > slo_us)) + g.timeouts
        notes = []
        if self._echo_error:
            notes.append(self._echo_error)
        if g.timeouts or g.errors:
            notes.append(f"{g.timeouts} of {g.offered} requests unanswered after {self.timeout_s:g} s (counted at "
                         f"their latency so far) and {g.errors} failed; {g.late_answers} answered late")
        if res.probe_priority is None:
            notes.append("probe at normal priority (SCHED_FIFO or nice -20 needs root)")
        elif not res.probe_priority.startswith("SCHED_FIFO"):
            notes.append(f"probe at {res.probe_priority}, not SCHED_FIFO: host load adds to its noise")
        if service_us > 0 and not self.service_time:
            notes.append(f"service time {service_us:g} us not applied: the target is a plain echo service")
        win = LatencyWindow(res.window_s, g.offered, g.completed, g.timeouts, g.errors, g.histogram(), over,
                            g.mean_us, notes)
        if res.local is not None:
            p99 = win.histogram.percentile_us(99) if win.histogram.total else math.nan
            win.noise = self.noise.add(res.local.latencies_ns, p99)
        return win

    def helper_pids(self) -> list[int]:
        return [self._echo.pid] if self._echo is not None else []

    def close(self) -> None:
        if self._echo is not None:
            self._echo.close()
            self._echo = None
