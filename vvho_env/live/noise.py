"""The probe's noise check: is the probe's own latency small next to what it measures?

The rule (stated once, here):

- The probe's noise is the RTT of a host-local echo driven by the same probe loop, pinned with it, in
  the same windows as the guest: everything the probe adds (its scheduling, its loop) and no guest.
- Its p99 is reported only from enough samples: the recent windows are pooled until they hold at
  least MIN_SAMPLES = 1000 echo RTTs (ten beyond the 99th percentile); before that there is no verdict,
  and the window's note says how many samples there are so far.
- The guest baseline is the median of the per-window guest p99 over the same pooled windows (several
  windows, not one).
- A window is DEGRADED for noise when pooled noise p99 > NOISE_BUDGET (10%) x guest baseline p99.

The pool keeps the newest windows only (a window that falls out of the pool takes its samples with it),
so a host that gets noisier shows it within a few windows.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

import numpy as np

from vvho_env.histogram import LogHistogram

NOISE_BUDGET = 0.10
MIN_SAMPLES = 1000
PERCENTILE = 99.0


@dataclass(frozen=True)
class NoiseVerdict:
    noise_p99_us: float | None  # None: not enough samples yet
    baseline_p99_us: float | None
    samples: int
    windows: int

    @property
    def too_noisy(self) -> bool:
        return (self.noise_p99_us is not None and self.baseline_p99_us is not None
                and self.noise_p99_us > NOISE_BUDGET * self.baseline_p99_us)

    def note(self) -> str | None:
        if self.noise_p99_us is None:
            return f"probe noise check pending: {self.samples} of {MIN_SAMPLES} local-echo samples so far"
        if self.too_noisy:
            return (f"probe noise p99 {self.noise_p99_us:.0f} us exceeds {NOISE_BUDGET:.0%} of the guest "
                    f"baseline p99 {self.baseline_p99_us:.0f} us ({self.samples} samples over "
                    f"{self.windows} windows)")
        return None


class NoiseCheck:
    """Pools local-echo RTTs and guest p99s over the most recent windows (see the module's rule)."""

    def __init__(self, min_samples: int = MIN_SAMPLES) -> None:
        self.min_samples = min_samples
        self._windows: deque[tuple[np.ndarray, float]] = deque()

    def add(self, local_latencies_ns: list[float], guest_p99_us: float) -> NoiseVerdict:
        self._windows.append((np.asarray(local_latencies_ns, dtype=np.float64), guest_p99_us))
        while len(self._windows) > 1 and sum(len(w[0]) for w in list(self._windows)[1:]) >= self.min_samples:
            self._windows.popleft()
        samples = sum(len(w[0]) for w in self._windows)
        guest = [g for _, g in self._windows if np.isfinite(g)]
        baseline = statistics.median(guest) if guest else None
        if samples < self.min_samples:
            return NoiseVerdict(None, baseline, samples, len(self._windows))
        h = LogHistogram()
        h.record_many_ns(np.concatenate([w[0] for w in self._windows]))
        return NoiseVerdict(h.percentile_us(PERCENTILE), baseline, samples, len(self._windows))
