"""The operator's limits file (YAML or JSON), validated before the agent touches anything.

    knobs:                      # per knob, in the knob's units (see `vvho knobs`); knobs not listed keep
      vcpu_quota:               # the bundle's bounds (the knob registry's range)
        low: 20000
        high: 400000
        allow: [-1]             # special values also allowed (here: unlimited)
        max_step: 0.5           # largest move per decision on the knob's [-1, 1] scale
      vcpu_pinning:
        allow: [shared, dedicated]
    max_step: 0.25              # default largest move per decision, [-1, 1] units
    min_interval_s: 10          # minimum time between two changes
    rollback: {windows: 3, objective_margin: 0.25, p99_margin: 0.25, cooldown_s: 120}
    kill_switch: /run/vvho/disable
    hold_on_degraded: true

Every error names the file and the field, on one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vvho_env import knobs
from vvho_env.errors import VVHOError
from vvho_env.types import KnobValue


class LimitsError(VVHOError, ValueError):
    """A limits file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KnobLimit(_Strict):
    low: int | float | None = Field(None, description="lowest value the agent may set (numeric knobs, knob units)")
    high: int | float | None = Field(None, description="highest value the agent may set (numeric knobs, knob units)")
    allow: list[KnobValue] | None = Field(None, description="categorical/bool: the choices allowed; numeric: "
                                          "special values allowed besides [low, high] (e.g. -1 unlimited)")
    max_step: float | None = Field(None, gt=0, le=2, description="largest move per decision, [-1, 1] units")


class RollbackLimits(_Strict):
    windows: int = Field(3, ge=1, le=100, description="windows measured after a change before it is judged")
    objective_margin: float = Field(0.25, ge=0, description="roll back if the mean objective over those windows "
                                    "is worse than under the last good settings by more than this share")
    p99_margin: float = Field(0.25, ge=0, description="... or their pooled p99 is worse by more than this share")
    cooldown_s: float = Field(120.0, ge=0, description="after a rollback, hold the last good settings this long")


class Limits(_Strict):
    knobs: dict[str, KnobLimit] = Field(default_factory=dict, description="per-knob bounds, by knob name")
    max_step: float = Field(0.25, gt=0, le=2, description="default largest move per decision, [-1, 1] units")
    min_interval_s: float = Field(10.0, ge=0, description="minimum seconds between two applied changes")
    rollback: RollbackLimits = RollbackLimits()
    kill_switch: str = Field("/run/vvho/disable", description="while this file exists the agent restores the "
                             "settings it found at start and changes nothing")
    hold_on_degraded: bool = Field(True, description="hold the current settings after a DEGRADED window")


def _fail(source: str, field: str, msg: str) -> LimitsError:
    return LimitsError(f"{source}: field {field}: {msg}")


def load_limits(path: Path | None, bundle_knobs: Sequence[str]) -> Limits:
    """Read and validate a limits file against the knob registry and the bundle's knobs; None: defaults."""
    source = str(path) if path else "<default limits>"
    raw: Any = {}
    if path is not None:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise LimitsError(f"{path}: cannot read the limits file: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise LimitsError(f"{path}: not valid YAML/JSON: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise LimitsError(f"{source}: expected a mapping (knobs, max_step, ...), got {type(raw).__name__}")
    try:
        limits = Limits.model_validate(raw)
    except ValidationError as exc:
        errs = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "<top level>"
            msg = "unknown field (not accepted here)" if err["type"] == "extra_forbidden" else err["msg"]
            errs.append(f"{source}: field {field}: {msg}")
        raise LimitsError("; ".join(errs)) from None
    for name, lim in limits.knobs.items():
        _check_knob(source, name, lim, bundle_knobs)
    return limits


def _check_knob(source: str, name: str, lim: KnobLimit, bundle_knobs: Sequence[str]) -> None:
    field = f"knobs.{name}"
    if name not in bundle_knobs:
        raise _fail(source, field, f"not a knob the bundle acts on; accepted: {', '.join(bundle_knobs)}")
    knob = knobs.get(name)
    numeric = knob.kind in ("int", "float")
    for attr in ("low", "high"):
        value = getattr(lim, attr)
        if value is None:
            continue
        if not numeric:
            raise _fail(source, f"{field}.{attr}", f"{knob.kind} knob: use allow: [choices]; accepted: "
                        f"{knob.accepted()}")
        if value in (knob.off, knob.unlimited):
            raise _fail(source, f"{field}.{attr}", f"{value!r} is a special value: put it in allow, not {attr}")
        try:
            knob.validate(value)
        except knobs.KnobError as exc:
            raise _fail(source, f"{field}.{attr}", str(exc)) from None
    if lim.low is not None and lim.high is not None and lim.low > lim.high:
        raise _fail(source, field, f"low {lim.low:g} is above high {lim.high:g}")
    for value in lim.allow or []:
        specials = [v for v in (knob.off, knob.unlimited) if v is not None]
        ok = value in knob.choices if not numeric else value in specials
        if not ok:
            accepted = ", ".join(map(repr, knob.choices if not numeric else specials)) or "none (no special values)"
            raise _fail(source, f"{field}.allow", f"{value!r} is not accepted; accepted: {accepted}")
    if not numeric and lim.allow == []:
        raise _fail(source, f"{field}.allow", "empty: the knob would have no value left")
