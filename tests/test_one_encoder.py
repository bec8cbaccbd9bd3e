"""One knob-space encoder: the env's action codec, the tuners' UnitSpace, the harness's encode_settings and
the host agent's guards all go through ``knobs.KnobSpace`` / ``Knob`` (outputs pinned by
tests/test_encoder_golden.py); here, that they agree with it on random settings and points, and that no
other module carries the scale's arithmetic."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.deploy.guards import Allowed
from baselines.space import UnitSpace
from vvho_env import knobs
from vvho_env.env import VVHOEnv
from vvho_env.harness import encode_settings

ROOT = Path(__file__).resolve().parent.parent
NAMES = knobs.KNOB_NAMES
unit = st.floats(-1.0, 1.0, allow_nan=False)
points = st.lists(unit, min_size=len(NAMES), max_size=len(NAMES))


@functools.cache
def _env() -> VVHOEnv:
    return VVHOEnv("steady-low-v0")


@st.composite
def any_settings(draw: st.DrawFn) -> knobs.Settings:
    """Full settings, each knob's value drawn from its own scale (choices, off/unlimited, the range)."""
    return {n: knobs.get(n).from_unit(draw(unit)) for n in NAMES}


@settings(max_examples=200, deadline=None)
@given(any_settings())
def test_every_encoder_is_the_knob_space(s: knobs.Settings) -> None:
    space = knobs.KnobSpace(NAMES)
    ref = space.encode(s)
    assert np.array_equal(UnitSpace(NAMES, knobs.defaults()).encode(s), ref)
    env = _env()
    acting = knobs.KnobSpace(env.knob_names).encode(s).astype(np.float32)
    assert np.array_equal(env.codec.encode(s), acting)
    assert np.array_equal(encode_settings(env, s), acting)
    assert knobs.encode(s, NAMES) == ref.tolist()


@settings(max_examples=200, deadline=None)
@given(points)
def test_every_decoder_is_the_knob_space(x: list[float]) -> None:
    space = knobs.KnobSpace(NAMES)
    ref = space.decode(x)
    assert UnitSpace(NAMES, knobs.defaults()).decode(x) == ref
    assert knobs.decode(x, NAMES) == ref
    env = _env()
    a = np.array([x[NAMES.index(n)] for n in env.knob_names], dtype=np.float32)
    decoded, _ = env.codec.decode(a, env.codec.encode(env.settings))
    assert decoded == knobs.KnobSpace(env.knob_names).decode(a.tolist())


def test_preimages_are_the_flat_pieces_from_unit_decodes() -> None:
    for k in knobs.KNOBS:
        flat = list(k.choices) if k.kind in ("categorical", "bool") else [v for v in (k.off, k.unlimited)
                                                                          if v is not None]
        for v in flat:
            a, b = k.preimage(v)
            assert k.from_unit((a + b) / 2) == v, (k.name, v)
            if v == k.unlimited:  # (a, 1]
                assert k.from_unit(a + 1e-9) == v and k.from_unit(b) == v and k.from_unit(a) != v, (k.name, v)
            else:  # [a, b), b in the next piece unless it is +1
                assert k.from_unit(a) == v and k.from_unit(b - 1e-9) == v, (k.name, v)
                assert b == 1.0 or k.from_unit(b) != v, (k.name, v)
            if a > -1.0 and v != k.unlimited:
                assert k.from_unit(a - 1e-9) != v, (k.name, v)


def test_guard_spans_hold_exactly_the_allowed_values() -> None:
    """The host agent's bounds guard allows x exactly where from_unit gives an allowed value (away from
    the edges of the flat pieces, which its spans stop short of by INSIDE)."""
    xs = np.linspace(-1.0, 1.0, 4001).tolist()
    for k in knobs.KNOBS:
        flat = list(k.choices) if k.kind in ("categorical", "bool") else [v for v in (k.off, k.unlimited)
                                                                          if v is not None]
        edges = [-1.0, 1.0, *(e for v in flat for e in k.preimage(v))]
        for keep in flat:
            allowed = Allowed(k.name, None, None, [keep], limited=True)
            for x in xs:
                if min((abs(x - e) for e in edges), default=1.0) < 1e-5:
                    continue
                v = k.from_unit(x)
                in_flat = v in flat and (k.kind in ("categorical", "bool") or v in (k.off, k.unlimited))
                expected = v == keep or not in_flat  # a numeric knob keeps its whole range
                assert allowed.contains(x) == expected, (k.name, keep, x, v)


def test_no_second_implementation_of_the_scales() -> None:
    """The scale's arithmetic (special bands, bin edges, to_unit / from_unit) lives in vvho_env/knobs.py only."""
    pattern = re.compile(r"SPECIAL_BAND|def (to_unit|from_unit)\b|2\.0 \* i / n")
    offenders = [str(p.relative_to(ROOT)) for d in ("vvho_env", "baselines", "agents", "vvho", "benchmarks")
                 for p in (ROOT / d).rglob("*.py") if p.name != "knobs.py" and pattern.search(p.read_text())]
    assert offenders == []
