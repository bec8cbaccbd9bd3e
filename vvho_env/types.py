"""Shared types: telemetry, the Backend protocol and the typed errors every backend raises.

The Backend protocol is the one seam between the simulator and a live hypervisor: the env, the
tuners and the agents talk only to it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from vvho_env.errors import VVHOError
from vvho_env.knobs import KnobValue, Settings  # defined with the knobs; re-exported for backends and env

if TYPE_CHECKING:
    from vvho_env.scenarios import Scenario


class Status(enum.Enum):
    """How far a window's telemetry can be trusted.

    OK: measured as designed. DEGRADED: measured, and every request the window offered is in it
    (timed-out requests at their latency so far, failed ones as violations), but something was off
    and ``Telemetry.notes`` says what: requests timed out or failed, the probe's own noise was above
    its budget, an accounting source was missing. Consumers score a DEGRADED window as measured
    (hiding a stall would be coordinated omission) and may act on it: the env reports it in info and
    truncates after a run of them, a host agent's guards hold the current settings.
    FAILED: nothing usable was measured (backends raise MeasurementFailed instead of returning it).
    """

    OK = "ok"
    DEGRADED = "degraded"
    FAILED = "failed"


class BackendError(VVHOError, RuntimeError):
    """Base class of all backend faults."""


class BackendUnavailable(BackendError):
    """The backend (libvirtd, the domain, the probe target) cannot be reached."""


class ApplyRejected(BackendError):
    """An apply failed and was rolled back; the message names the knob and the reason."""


class MeasurementFailed(BackendError):
    """A measurement window produced no usable telemetry."""


class BackendBusy(BackendUnavailable):
    """Another live controller holds the host or domain; two controllers would undo each other."""


class RestoreFailed(BackendError):
    """Original settings could not all be put back; the message lists them and how to finish."""


@dataclass(frozen=True)
class Telemetry:
    """One measurement window, the same fields for the simulator and a live host.

    Latencies are in microseconds and come from a log-bucketed histogram of the window's requests.
    CPU figures are in cores (CPU-seconds per second of wall time).
    """

    window_s: float
    requests: int  # requests completed in the window
    p50_us: float
    p99_us: float
    p999_us: float
    mean_us: float
    slo_us: float
    slo_violations: int  # completed requests whose latency exceeded the SLO
    offered_rps: float
    served_rps: float
    vm_cpu: float  # latency VM: busy + polling burn + reserved dedicated cores
    polling_cpu: float  # of which spent polling (host halt-poll, guest haltpoll, busy poll, PMD)
    reserved_cores: float  # of which reserved dedicated cores not otherwise counted
    throttled_frac: float  # share of the window the VM's threads spent throttled by CPU bandwidth
    neighbour_cpu: float  # CPU the neighbour load actually got
    neighbour_slowdown: float  # share of the neighbours' runnable time spent waiting, 0..1
    errors: int = 0  # probe errors / timeouts (live); 0 in the simulator
    status: Status = Status.OK
    notes: tuple[str, ...] = field(default_factory=tuple)
    # latency histogram of the window (vvho_env.histogram buckets), so that episodes pool exactly
    histogram: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def slo_violation_frac(self) -> float:
        return self.slo_violations / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("histogram")
        for k, v in d.items():
            if isinstance(v, float) and math.isnan(v):
                d[k] = None  # no request completed in the window: no percentile
        d["status"] = self.status.value
        d["slo_violation_frac"] = self.slo_violation_frac
        return d


@dataclass(frozen=True)
class Capabilities:
    """What a backend can set. Knobs not listed are held at their current value (action masking)."""

    settable: frozenset[str]
    host_wide: frozenset[str]  # settable knobs whose change affects the whole host, not just the VM
    deterministic: bool  # the simulator is; a live host is not
    service_time: bool = True  # the workload's per-request service time is applied (a plain echo has none)


@runtime_checkable
class Backend(Protocol):
    """The interface every backend implements (simulator, libvirt)."""

    def reset(self, seed: int | None, scenario: Scenario) -> None:
        """Start a new episode of `scenario` (restart-cost knobs take effect here)."""

    def apply(self, settings: Mapping[str, KnobValue]) -> Settings:
        """Apply knob settings transactionally; returns what was actually applied (read back)."""

    def measure(self, window_s: float) -> Telemetry:
        """Run one control interval and return its telemetry."""

    def capabilities(self) -> Capabilities: ...

    def close(self) -> None:
        """Release resources and restore what apply() changed. Idempotent."""
