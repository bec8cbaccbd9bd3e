"""The numba decorators every engine function uses (cached, no NRT)."""

from __future__ import annotations

from typing import Any

import numba as nb

# The engine never allocates, so it runs without NRT reference counting: 2.5x faster (measured with
# /benchmarks/sim_speed.py), because every array passed between the functions was being increfed.
jit: Any = nb.njit(cache=True, _nrt=False)  # type: ignore[call-overload]
jit_inline: Any = nb.njit(cache=True, inline="always", _nrt=False)  # type: ignore[call-overload]
