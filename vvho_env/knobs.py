"""The knob registry: every tunable of the source article's R, C and S groups.

Each knob carries its range, default (the stock KVM/libvirt value), unit, scope, the cost of changing
it, which backends can set it and how, and one mapping between [-1, 1] and its values that every
method (RL agents, tuners, the oracle) shares.

Scales
------
- ``linear`` / ``log``: x in [-1, 1] maps onto [low, high] linearly or in log space.
- explicit points: a knob with an ``off`` value (e.g. halt_poll_ns = 0) reserves x < -1 + SPECIAL_BAND
  for it; a knob with an ``unlimited`` value (e.g. vcpu_quota = -1) reserves x > 1 - SPECIAL_BAND. The
  rest of [-1, 1] maps onto the numeric range.
- ``categorical`` / ``bool``: [-1, 1] is cut into equal bins, one per choice; to_unit gives bin centres.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from vvho_env.errors import VVHOError, did_you_mean

KnobValue = int | float | str | bool
Settings = dict[str, KnobValue]

SPECIAL_BAND = 0.1  # share of [-1, 1] reserved at an end for an explicit 'off' / 'unlimited' point


class Group(StrEnum):
    R = "R"  # resource allocation
    C = "C"  # virtualization-layer communication
    S = "S"  # context-switch strategy


class ChangeCost(StrEnum):
    LIVE = "live"  # applied while the guest runs, no outage
    RESTART = "needs guest restart"  # takes effect at reset; mid-episode it costs an outage


class KnobError(VVHOError, ValueError):
    """Unknown knob, wrong type or out-of-range value; the message says what is accepted."""


@dataclass(frozen=True)
class Knob:
    name: str
    group: Group
    kind: str  # "int" | "float" | "categorical" | "bool"
    default: KnobValue
    unit: str
    description: str
    scope: str  # "vm", "vcpu", "host" (host-wide), "guest" (inside the guest)
    change_cost: ChangeCost
    setters: Mapping[str, str]  # backend -> how it sets the knob; the live backend's entries come from its
    # knob drivers (vvho_env.live.drivers.setters(), shown by `vvho knobs`), so they cannot drift from the code
    low: float = 0.0
    high: float = 0.0
    scale: str = "linear"  # "linear" | "log" | "categorical"
    choices: tuple[KnobValue, ...] = ()
    off: KnobValue | None = None  # explicit point at x = -1
    unlimited: KnobValue | None = None  # explicit point at x = +1
    change_weight: float = 0.0  # cost in the objective of moving this knob across its whole range
    source: str = ""

    # -- validation -------------------------------------------------------------------------
    def accepted(self) -> str:
        if self.kind in ("categorical", "bool"):
            return "one of " + ", ".join(repr(c) for c in self.choices)
        extra = []
        if self.off is not None:
            extra.append(f"{self.off!r} (off)")
        if self.unlimited is not None:
            extra.append(f"{self.unlimited!r} (unlimited)")
        rng = f"{self.kind} in [{_fmt(self.low)}, {_fmt(self.high)}] {self.unit}"
        return rng + (" or " + " or ".join(extra) if extra else "")

    def validate(self, value: object) -> KnobValue:
        """Return `value` coerced to this knob's type, or raise KnobError naming the knob."""
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "on", "off"):
                return value.lower() in ("true", "1", "on")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise KnobError(f"knob {self.name!r}: {value!r} is not accepted; accepted: true or false")
        if self.kind == "categorical":
            if value in self.choices:
                return value
            raise KnobError(f"knob {self.name!r}: {value!r} is not accepted; accepted: {self.accepted()}")
        try:
            if isinstance(value, bool):
                raise TypeError
            num = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise KnobError(
                f"knob {self.name!r}: {value!r} is not a number; accepted: {self.accepted()}"
            ) from None
        if not math.isfinite(num):
            raise KnobError(f"knob {self.name!r}: {value!r} is not finite; accepted: {self.accepted()}")
        for special in (self.off, self.unlimited):
            if special is not None and num == special:
                return special
        if self.kind == "int":
            if num != int(num):
                raise KnobError(f"knob {self.name!r}: {value!r} is not an integer; accepted: {self.accepted()}")
            num = int(num)
        if not (self.low <= num <= self.high):
            raise KnobError(f"knob {self.name!r}: {value!r} is out of range; accepted: {self.accepted()}")
        return num

    # -- scale ------------------------------------------------------------------------------
    @functools.cached_property
    def _scale(self) -> tuple[float, float, float, float]:
        """(lo_x, hi_x, a, b) of the numeric part of the scale: u = (x - lo_x) / (hi_x - lo_x) maps onto
        a + u * b, in log space for a log knob; computed once (the host agent decodes every interval)."""
        lo_x = -1.0 + SPECIAL_BAND if self.off is not None else -1.0
        hi_x = 1.0 - SPECIAL_BAND if self.unlimited is not None else 1.0
        if self.scale == "log":
            return lo_x, hi_x, math.log(self.low), math.log(self.high) - math.log(self.low)
        return lo_x, hi_x, self.low, self.high - self.low

    @functools.cached_property
    def decoder(self) -> Callable[[float], KnobValue]:
        """from_unit for an x already in [-1, 1], specialised to this knob once: the host agent decodes
        every interval, and the kind, scale and special points need not be looked up again each time."""
        if self.kind in ("categorical", "bool"):
            choices, n = self.choices, len(self.choices)

            def categorical(x: float) -> KnobValue:
                return choices[min(n - 1, int((x + 1.0) / 2.0 * n))]

            return categorical
        off, unlimited, low, high = self.off, self.unlimited, self.low, self.high
        # no x in [-1, 1] is below -inf or above +inf: a knob without the special point never takes it
        off_below = -1.0 + SPECIAL_BAND if off is not None else -math.inf
        unlimited_above = 1.0 - SPECIAL_BAND if unlimited is not None else math.inf
        lo_x, hi_x, a, b = self._scale
        width, log, integer, exp = hi_x - lo_x, self.scale == "log", self.kind == "int", math.exp

        def numeric(x: float) -> KnobValue:
            if x < off_below:
                return off  # type: ignore[return-value]  # not None: off_below is -inf otherwise
            if x > unlimited_above:
                return unlimited  # type: ignore[return-value]
            u = (x - lo_x) / width
            val = exp(a + u * b) if log else a + u * b
            val = min(high, max(low, val))
            return round(val) if integer else val

        return numeric

    def __getstate__(self) -> dict[str, object]:
        """Pickled without the cached decoder (a closure; rebuilt on first use), so that knobs and the
        spaces holding them still cross process boundaries."""
        return {k: v for k, v in self.__dict__.items() if k != "decoder"}

    def from_unit(self, x: float) -> KnobValue:
        """Map x in [-1, 1] to a knob value (x is clipped; NaN is rejected)."""
        if not math.isfinite(x):
            raise KnobError(f"knob {self.name!r}: action {x!r} is not finite; accepted: a number in [-1, 1]")
        return self.decoder(min(1.0, max(-1.0, x)))

    def to_unit(self, value: KnobValue) -> float:
        """Map a knob value to [-1, 1] (the inverse of from_unit up to rounding)."""
        value = self.validate(value)
        if self.kind in ("categorical", "bool"):
            n = len(self.choices)
            return -1.0 + (2.0 * self.choices.index(value) + 1.0) / n
        if self.off is not None and value == self.off:
            return -1.0
        if self.unlimited is not None and value == self.unlimited:
            return 1.0
        lo_x, hi_x, a, b = self._scale
        num = float(value)
        u = ((math.log(num) if self.scale == "log" else num) - a) / b
        return lo_x + u * (hi_x - lo_x)

    def preimage(self, value: KnobValue) -> tuple[float, float]:
        """The interval [a, b] of x in [-1, 1] that from_unit maps to `value`, for a categorical choice or an
        explicit off/unlimited point (the flat pieces of the scale). Half-open where a neighbouring value
        takes over at the edge: a choice's bin is [a, b) (b belongs to the next bin, b = 1 for the last
        one), 'off' is [-1, b) and 'unlimited' (a, 1]."""
        value = self.validate(value)
        if self.kind in ("categorical", "bool"):
            n, i = len(self.choices), self.choices.index(value)
            return -1.0 + 2.0 * i / n, -1.0 + 2.0 * (i + 1) / n
        if self.off is not None and value == self.off:
            return -1.0, -1.0 + SPECIAL_BAND
        if self.unlimited is not None and value == self.unlimited:
            return 1.0 - SPECIAL_BAND, 1.0
        raise KnobError(f"knob {self.name!r}: {value!r} is a point of the numeric range, not a flat piece of the "
                        "scale; accepted: a choice or the off/unlimited value")


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


SIM = "sim"
_SIM = {SIM: "host profile + simulator mechanism"}


_QUOTA_RANGE = dict(low=1000, high=1_000_000, scale="log", unlimited=-1)

KNOBS: tuple[Knob, ...] = (
    # ---------------------------------------------------------------- R: resource allocation
    Knob("vcpu_pinning", Group.R, "categorical", "shared", "",
         "vCPUs float over the shared pCPUs (libvirt default) or each owns a dedicated pCPU",
         "vm", ChangeCost.LIVE, _SIM,
         scale="categorical", choices=("shared", "dedicated"), change_weight=0.02,
         source="libvirt formatdomain 'cputune/vcpupin'; dedicated cores are counted as reserved CPU"),
    Knob("vcpu_quota", Group.R, "int", -1, "us",
         "CFS bandwidth quota per vCPU thread per period (-1 = unlimited)",
         "vcpu", ChangeCost.LIVE, _SIM,
         **_QUOTA_RANGE, change_weight=0.0,  # type: ignore[arg-type]
         source="libvirt 'cputune/quota'; Documentation/scheduler/sched-bwc.rst"),
    Knob("vcpu_period", Group.R, "int", 100_000, "us",
         "CFS bandwidth period for the VM's quotas",
         "vm", ChangeCost.LIVE, _SIM,
         low=1000, high=1_000_000, scale="log",
         source="sched-bwc.rst: default period 100 ms, accepted 1 ms .. 1 s"),
    Knob("emulator_quota", Group.R, "int", -1, "us",
         "CFS bandwidth quota of the emulator threads (QEMU main loop, I/O, vhost workers)",
         "vm", ChangeCost.LIVE, _SIM,
         **_QUOTA_RANGE,  # type: ignore[arg-type]
         source="libvirt 'cputune/emulator_quota'"),
    Knob("global_quota", Group.R, "int", -1, "us",
         "CFS bandwidth quota of the whole VM (all its threads together)",
         "vm", ChangeCost.LIVE, _SIM,
         **_QUOTA_RANGE,  # type: ignore[arg-type]
         source="libvirt 'cputune/global_quota'"),
    Knob("cpu_shares", Group.R, "int", 1024, "",
         "relative CPU weight of the VM's threads against other tasks (1024 = nice 0)",
         "vm", ChangeCost.LIVE, _SIM,
         low=2, high=262_144, scale="log",
         source="libvirt 'cputune/shares'; EEVDF weights as in kernel/sched/fair.c"),
    Knob("emulator_placement", Group.R, "categorical", "with_vcpus", "",
         "emulator and vhost threads share the vCPUs' pCPUs, or run on a housekeeping pCPU",
         "vm", ChangeCost.LIVE, _SIM,
         scale="categorical", choices=("with_vcpus", "housekeeping"), change_weight=0.01,
         source="libvirt 'cputune/emulatorpin'; Red Hat realtime-virtual-host tuning guide"),
    Knob("vcpu_count", Group.R, "int", 2, "vCPUs",
         "number of vCPUs of the latency VM",
         "vm", ChangeCost.RESTART, {SIM: _SIM[SIM]},
         low=1, high=4, scale="linear", change_weight=0.05,
         source="libvirt 'vcpu'; changing it mid-episode costs a guest restart (outage)"),
    # ---------------------------------------------------------------- C: communication
    Knob("virtio_backend", Group.C, "categorical", "vhost", "",
         "virtio-net data path: QEMU userspace, vhost-net kernel thread, vhost-user polling (PMD), SR-IOV VF",
         "vm", ChangeCost.RESTART, {SIM: _SIM[SIM]},
         scale="categorical", choices=("userspace", "vhost", "vhost_user_poll", "sriov"), change_weight=0.05,
         source="libvirt 'interface/driver name=qemu|vhost', vhost-user, hostdev; vhost is the default"),
    Knob("rx_usecs", Group.C, "int", 0, "us",
         "receive interrupt coalescing delay of the NIC feeding the VM (ethtool -C rx-usecs)",
         "host", ChangeCost.LIVE, {SIM: _SIM[SIM]},
         low=1, high=256, scale="log", off=0,
         source="ethtool(8) -C; virtio-net default 0 (no coalescing)"),
    Knob("busy_poll_us", Group.C, "int", 0, "us",
         "guest socket busy polling (net.core.busy_poll): spin on the queue before sleeping",
         "guest", ChangeCost.LIVE, {SIM: _SIM[SIM]},
         low=1, high=200, scale="log", off=0,
         source="Documentation/networking/napi.rst (busy polling); default 0"),
    # ---------------------------------------------------------------- S: context-switch strategy
    Knob("halt_poll_ns", Group.S, "int", 200_000, "ns",
         "KVM host halt-polling cap (adaptive window grows 10 us x2 up to this)",
         "host", ChangeCost.LIVE, _SIM,
         low=10_000, high=1_000_000, scale="log", off=0,
         source="Documentation/virt/kvm/halt-polling.rst: x86 default 200000"),
    Knob("guest_haltpoll", Group.S, "bool", False, "",
         "guest cpuidle-haltpoll: poll inside the guest before HLT (disables host polling for the vCPU)",
         "guest", ChangeCost.LIVE, {SIM: _SIM[SIM]},
         scale="categorical", choices=(False, True),
         source="Documentation/virt/guest-halt-polling.rst"),
    Knob("vcpu_sched_policy", Group.S, "categorical", "other", "",
         "host scheduling class of the vCPU threads (SCHED_OTHER or SCHED_FIFO under RT throttling)",
         "vm", ChangeCost.LIVE, _SIM,
         scale="categorical", choices=("other", "fifo"), change_weight=0.01,
         source="sched(7); sched-rt-group.rst: sched_rt_runtime_us 950000 per 1000000"),
    Knob("sched_slice_us", Group.S, "int", 3000, "us",
         "EEVDF base slice (request size) of fair tasks on the host",
         "host", ChangeCost.LIVE, {SIM: _SIM[SIM]},
         low=100, high=30_000, scale="log",
         source="kernel/sched/fair.c sysctl_sched_base_slice 0.75 ms x (1 + ilog2(min(ncpus, 8))) = 3 ms"),
    Knob("ple_window", Group.S, "int", 4096, "cycles",
         "pause-loop exiting window: spinning longer than this exits and yields",
         "host", ChangeCost.LIVE, {SIM: _SIM[SIM]},
         low=256, high=262_144, scale="log", off=0,
         source="arch/x86/kvm/vmx/vmx.c ple_window default 4096, 0 disables PLE"),
    Knob("idle_state", Group.S, "categorical", "C6", "",
         "deepest host C-state the idle governor may choose (cpuidle state disable)",
         "host", ChangeCost.LIVE, {SIM: _SIM[SIM]},
         scale="categorical", choices=("C1", "C1E", "C6"),
         source="drivers/idle/intel_idle.c state tables; stock hosts allow all states"),
)

REGISTRY: dict[str, Knob] = {k.name: k for k in KNOBS}
KNOB_NAMES: tuple[str, ...] = tuple(REGISTRY)


def get(name: str) -> Knob:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KnobError(f"unknown knob {name!r}{did_you_mean(name, KNOB_NAMES)}; known knobs: "
                       f"{', '.join(KNOB_NAMES)}") from None


def defaults() -> Settings:
    return {k.name: k.default for k in KNOBS}


def scales_digest() -> str:
    """Digest of every knob's scale (kind, range, scale, choices, special points, SPECIAL_BAND): caches of
    values measured through the scales (hyperparameter sweeps) key on it, so a changed scale recomputes."""
    blob = [SPECIAL_BAND] + [[k.name, k.kind, k.default, k.low, k.high, k.scale, list(k.choices), k.off, k.unlimited,
                              k.change_weight] for k in KNOBS]
    return hashlib.sha256(json.dumps(blob, default=str).encode()).hexdigest()[:16]


def validate_settings(settings: Mapping[str, object]) -> Settings:
    """Validate every entry; raises KnobError naming the first bad knob."""
    return {name: get(name).validate(value) for name, value in settings.items()}


def parse_assignment(text: str) -> tuple[str, KnobValue]:
    """Parse 'name=value' from the command line into a validated (name, value)."""
    if "=" not in text:
        raise KnobError(f"expected name=value, got {text!r}; known knobs: {', '.join(KNOB_NAMES)}")
    name, raw = text.split("=", 1)
    knob = get(name.strip())
    raw = raw.strip()
    value: object = raw
    if knob.kind in ("int", "float"):
        value = raw.replace("_", "")
    elif knob.kind == "categorical" and raw not in knob.choices:
        raise KnobError(f"knob {knob.name!r}: {raw!r} is not accepted; accepted: {knob.accepted()}")
    return knob.name, knob.validate(value)


def encode(settings: Mapping[str, KnobValue], names: Iterable[str]) -> list[float]:
    """Shorthand for ``KnobSpace(names).encode(settings)`` as a list."""
    return KnobSpace(tuple(names)).encode(settings).tolist()


def decode(x: Iterable[float], names: Iterable[str]) -> Settings:
    """Shorthand for ``KnobSpace(names).decode(x)``."""
    return KnobSpace(tuple(names)).decode(list(x))


@dataclass(frozen=True)
class KnobSpace:
    """The one encoder between knob settings and points of [-1, 1]^d over an ordered subset of knobs.

    Every map between settings and vectors goes through it: the env's action codec, the tuners' search
    space, the harness's settings-to-action encoding and the best-known search. Coordinate i is knob
    ``names[i]`` on its own scale (``Knob.to_unit`` / ``Knob.from_unit``): decoding rounds to the values
    a backend can apply (integers, categorical bins, the explicit off/unlimited points).
    """

    names: tuple[str, ...] = field(default_factory=lambda: KNOB_NAMES)

    def __post_init__(self) -> None:
        for n in self.names:
            get(n)
        dup = sorted({n for n in self.names if self.names.count(n) > 1})
        if dup:
            raise KnobError(f"knob(s) {', '.join(dup)} listed twice; accepted: each knob at most once")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def knobs(self) -> tuple[Knob, ...]:
        return tuple(get(n) for n in self.names)

    @property
    def discrete(self) -> np.ndarray:
        """True for categorical and boolean knobs (constant inside each bin of their scale)."""
        return np.array([k.kind in ("categorical", "bool") for k in self.knobs], dtype=bool)

    def encode(self, settings: Mapping[str, KnobValue]) -> np.ndarray:
        """The point of `settings` (which must name every knob of the space)."""
        return np.array([get(n).to_unit(settings[n]) for n in self.names], dtype=np.float64)

    @functools.cached_property
    def _decoders(self) -> tuple[Callable[[float], KnobValue], ...]:
        return tuple(k.decoder for k in self.knobs)

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "_decoders"}  # as Knob: closures are rebuilt

    def decode(self, x: Sequence[float] | np.ndarray) -> Settings:
        """The applied settings of a point (each coordinate clipped to [-1, 1] and rounded)."""
        xs = x.tolist() if isinstance(x, np.ndarray) and x.dtype.kind == "f" else [float(v) for v in x]
        if len(xs) != len(self.names):
            raise KnobError(f"a point of {len(xs)} coordinates for the {len(self.names)} knobs {self.names}; "
                            "accepted: one coordinate per knob")
        if not all(map(math.isfinite, xs)):
            for n, v in zip(self.names, xs, strict=True):
                get(n).from_unit(v)  # raises, naming the first knob whose coordinate is not finite
        return self.decode_checked([min(1.0, max(-1.0, v)) for v in xs])

    def decode_checked(self, xs: Sequence[float]) -> Settings:
        """decode() of a point its caller has checked and clipped: one float in [-1, 1] per knob."""
        return {n: f(v) for n, f, v in zip(self.names, self._decoders, xs, strict=True)}

    def round(self, x: Sequence[float] | np.ndarray) -> np.ndarray:
        """The point of the settings that `x` applies (idempotent)."""
        return self.encode(self.decode(x))
