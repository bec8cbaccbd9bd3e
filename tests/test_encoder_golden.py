"""Golden pin of the knob-space encoder: every map between settings and [-1, 1] vectors (the env's
action codec, the tuners' search space, the harness's settings-to-action encoding) gives exactly the
values it gave before they were unified on one encoder (vvho_env.knobs.KnobSpace)."""

from __future__ import annotations

import hashlib

import numpy as np

from baselines.space import UnitSpace
from vvho_env import knobs
from vvho_env.env import VVHOEnv
from vvho_env.harness import encode_settings

GOLDEN = "9b13ae4f7a7ce216"  # recorded before the unification


def _digest() -> str:
    rng = np.random.default_rng(20240601)
    names = knobs.KNOB_NAMES
    xs = [rng.uniform(-1.3, 1.3, len(names)) for _ in range(200)]
    xs += [np.full(len(names), v) for v in (-1.0, -0.95, -0.9, 0.0, 0.9, 0.95, 1.0)]
    out: list[str] = []
    space = UnitSpace(names, knobs.defaults())
    for x in xs:
        s = space.decode(x)
        out.append(repr(sorted(s.items())))
        out.append(repr(space.encode(s).round(12).tolist()))
        out.append(repr(space.round(x).round(12).tolist()))
    out.append(repr(space.min_probe.round(12).tolist()))
    for mode in ("absolute", "delta"):
        env = VVHOEnv("steady-low-v0", action_mode=mode, delta_step=0.3)
        pos = env.codec.encode(env.settings)
        for x in xs[:50]:
            a = x[: len(env.knob_names)].astype(np.float32)
            s, pos = env.codec.decode(a, pos)
            out.append(repr(sorted(s.items())) + repr(pos.tolist()))
            out.append(repr(env.codec.encode(s).tolist()))
        if mode == "absolute":
            for x in xs[:50]:
                out.append(repr(encode_settings(env, space.decode(x)).tolist()))
        env.close()
    return hashlib.sha256("\n".join(out).encode()).hexdigest()[:16]


def test_encoder_outputs_are_pinned() -> None:
    assert _digest() == GOLDEN
