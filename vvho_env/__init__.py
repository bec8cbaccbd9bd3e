"""VVHO environments: Gymnasium envs over a simulated or live hypervisor (no SB3, MLflow or Ray here)."""

import hashlib
import os
from pathlib import Path

import numba
from gymnasium.envs.registration import register, registry

# numba's on-disk cache does not notice when a callee changes, so a stale compiled caller could run
# old code. Key the cache folder on the source of every numba module instead.
_NUMBA_SOURCES = ("histogram.py", "sim/engine.py", "sim/profiles.py")
SIM_HASH = hashlib.sha256(
    b"".join((Path(__file__).parent / f).read_bytes() for f in _NUMBA_SOURCES)
).hexdigest()[:16]
if "NUMBA_CACHE_DIR" not in os.environ:
    numba.config.CACHE_DIR = str(  # type: ignore[attr-defined]
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vvho" / "numba" / SIM_HASH
    )

__version__ = "0.1.0"

ENV_ID = "VVHO-v0"
LIVE_ENV_ID = "VVHO-Live-v0"

if ENV_ID not in registry:
    register(
        id=ENV_ID,
        entry_point="vvho_env.env:VVHOEnv",
        vector_entry_point="vvho_env.env:VVHOVectorEnv",
    )
if LIVE_ENV_ID not in registry:
    register(id=LIVE_ENV_ID, entry_point="vvho_env.live:make_live_env", nondeterministic=True)
