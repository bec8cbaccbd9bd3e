"""A passive latency source: the guest application's own Prometheus histogram, so production traffic
need not be probed.

Each window scrapes the application's metrics URL at its start and its end and takes the difference
of the histogram's cumulative bucket counts (`NAME_bucket{le="..."}`, summed over other labels). A
Prometheus histogram only says how many requests fell in each bucket, so each is recorded at its
bucket's upper bound (never better than the truth) and a request is an SLO violation when its bucket
reaches above the SLO; requests in the +Inf bucket are recorded at the largest finite bound and make
the window DEGRADED (their latency is unknown). What it measures is what the application measures,
usually server-side time: no network, no queueing before the application sees the request.
"""

from __future__ import annotations

import math
import re
import time
import urllib.request
from collections.abc import Sequence

import numpy as np

from vvho_env.histogram import LogHistogram
from vvho_env.live.latency import LatencyWindow

SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')
LE = re.compile(r'le="(?P<le>[^"]+)"')
UNITS = {"seconds": 1e9, "milliseconds": 1e6, "microseconds": 1e3}


def parse_histogram(text: str, metric: str) -> dict[float, float]:
    """Cumulative count per upper bound (seconds or the metric's unit) of histogram `metric`."""
    out: dict[float, float] = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if not m or m.group("name") != f"{metric}_bucket":
            continue
        le = LE.search(m.group("labels") or "")
        if le:
            bound = math.inf if le.group("le") in ("+Inf", "Inf") else float(le.group("le"))
            out[bound] = out.get(bound, 0.0) + float(m.group("value"))
    return out


class PrometheusSource:
    """Latency of the guest application's requests from its Prometheus histogram `metric` at `url`."""

    service_time = False  # the backend applies no service time: the traffic is the application's

    def __init__(self, url: str, metric: str, timeout_s: float = 2.0) -> None:
        self.url, self.metric, self.timeout_s = url, metric, timeout_s
        self.scale_ns = next((f for unit, f in UNITS.items() if metric.endswith(unit)), 1e9)
        self.description = f"passive: histogram {metric} at {url}"
        self.scrape()  # fail at start, with the reason, if the URL or the metric is wrong

    def scrape(self) -> dict[float, float]:
        with urllib.request.urlopen(self.url, timeout=self.timeout_s) as resp:
            text = resp.read().decode(errors="replace")
        buckets = parse_histogram(text, self.metric)
        if not buckets:
            raise OSError(f"{self.url} has no histogram {self.metric!r} ({self.metric}_bucket{{le=...}} samples)")
        return buckets

    def window(self, window_s: float, rate_rps: float, service_us: float, slo_us: float, seed: int,
               probe_cpus: Sequence[int]) -> LatencyWindow:
        t0 = time.monotonic()
        a = self.scrape()
        time.sleep(max(0.0, window_s - (time.monotonic() - t0)))
        b = self.scrape()
        bounds = sorted(b)
        finite = [x for x in bounds if math.isfinite(x)]
        values, counts, over, prev, inf = [], [], 0, 0.0, 0
        for ub in bounds:
            n = max(0.0, (b[ub] - a.get(ub, 0.0)) - prev)  # cumulative -> per bucket
            prev += n
            if n <= 0:
                continue
            ns = (ub if math.isfinite(ub) else (finite[-1] if finite else 0.0)) * self.scale_ns
            values.append(ns)
            counts.append(round(n))
            if not math.isfinite(ub):
                inf += round(n)
            if ub * self.scale_ns / 1000.0 > slo_us:
                over += round(n)
        h = LogHistogram()
        if values:
            h.record_many_ns(np.repeat(np.asarray(values), counts))
        total = int(sum(counts))
        notes = [f"passive source: {total} requests from {self.metric} (bucket upper bounds)"]
        mean_us = float(np.average(values, weights=counts)) / 1000.0 if total else math.nan
        win = LatencyWindow(window_s, total, total - inf, inf, 0, h, over, mean_us, notes)
        if inf:
            notes.append(f"{inf} requests above the largest bucket ({finite[-1] if finite else 0:g}): latency unknown")
        return win

    def helper_pids(self) -> list[int]:
        return []

    def close(self) -> None:
        pass
