"""Each environment's own random stream: xoroshiro128+ in two uint64 words."""

from __future__ import annotations

import math

import numpy as np

from vvho_env.sim.engine.jit import jit, jit_inline


@jit_inline
def _rotl(x: np.uint64, k: int) -> np.uint64:
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@jit
def rand_u(R: np.ndarray) -> float:
    s0 = R[0]
    s1 = R[1]
    result = s0 + s1
    s1 ^= s0
    R[0] = _rotl(s0, 24) ^ s1 ^ (s1 << np.uint64(16))
    R[1] = _rotl(s1, 37)
    return (result >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@jit
def rand_exp(R: np.ndarray, mean: float) -> float:
    return -mean * math.log(1.0 - rand_u(R))


@jit
def rand_normal(R: np.ndarray) -> float:
    u1 = 1.0 - rand_u(R)
    u2 = rand_u(R)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def seed_rng(seed: int) -> np.ndarray:
    """Two non-zero 64-bit words from a seed via numpy's SeedSequence (independent streams)."""
    words = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
    words[words == 0] = 1
    return words
