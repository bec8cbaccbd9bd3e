"""VVHO environments: Gymnasium envs over a simulated or live hypervisor (no SB3, MLflow or Ray here)."""

import hashlib
import os
import sys
from pathlib import Path

from gymnasium.envs.registration import register, registry

# numba's on-disk cache does not notice when a callee changes, so a stale compiled caller could run
# old code. Key the cache folder on the source of every numba module instead.
_NUMBA_SOURCES = ("histogram.py", "sim/engine.py", "sim/profiles.py")
SIM_HASH = hashlib.sha256(
    b"".join(p.read_bytes() for p in sorted((Path(__file__).parent / "sim").rglob("*.py")))
    + b"".join((Path(__file__).parent / f).read_bytes() for f in ("histogram.py",))
).hexdigest()[:16]
if "NUMBA_CACHE_DIR" not in os.environ:
    _cache = str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vvho" / "numba" / SIM_HASH)
    if "numba" in sys.modules:
        sys.modules["numba"].config.CACHE_DIR = _cache
    else:  # numba reads it when first imported; only the simulator imports it (a host agent never does)
        os.environ["NUMBA_CACHE_DIR"] = _cache

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
