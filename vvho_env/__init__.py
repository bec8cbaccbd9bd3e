"""VVHO environments: Gymnasium envs over a simulated or live hypervisor (no SB3, MLflow or Ray here)."""

import hashlib
import os
import sys
from pathlib import Path

from gymnasium.envs.registration import register, registry

# Every file whose content can change a simulated result: the simulator package (numba's on-disk
# cache does not notice when a callee in another module changes) and what it reads or what scores its
# output. SIM_HASH keys the numba cache folder and every on-disk cache of simulated results
# (baselines/search.py, baselines/hparams.py, vvho/compare.py); tests/test_engine_structure.py checks
# that the list covers every module the simulator imports.
SIM_INPUTS = ("config_base.py", "errors.py", "histogram.py", "knobs.py", "objective.py", "scenarios.py",
              "scenarios.yaml", "types.py")
_ROOT = Path(__file__).parent


def sim_sources(root: Path = _ROOT) -> list[Path]:
    """The files SIM_HASH covers, under the vvho_env folder root: all of sim/ (recursively) + SIM_INPUTS."""
    return sorted(root.joinpath("sim").rglob("*.py")) + [root / f for f in SIM_INPUTS]


def sim_hash(root: Path = _ROOT) -> str:
    """Digest of the names and contents of sim_sources(root)."""
    h = hashlib.sha256()
    for p in sim_sources(root):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


SIM_HASH = sim_hash()
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
