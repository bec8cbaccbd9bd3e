"""VVHO environments: Gymnasium envs over a simulated or live hypervisor (no SB3, MLflow or Ray here)."""

from gymnasium.envs.registration import register, registry

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
