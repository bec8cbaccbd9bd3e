"""Memory a training run will need, checked against what the machine has before anything is allocated.

A config can ask for more envs or a larger replay buffer than fits; without this check training
would start, load torch and die in the allocator (or take the machine down with it). The estimate
counts what grows with the config: the simulator's preallocated state per env (read from the engine's
own allocator), one worker process per env for ``vec_env: subproc``, SB3's rollout or replay buffer,
and the networks with their Adam state.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from agents.config import TrainingConfig, _OffPolicy, _OnPolicy
from vvho_env.env import FEATURES, acting_knobs
from vvho_env.errors import VVHOError
from vvho_env.scenarios import load_scenario
from vvho_env.sim import engine

# Measured: resident size of a process that has imported vvho_env and stepped one VVHOEnv (forkserver
# worker of vec_env: subproc); the trainer's own process with torch and SB3 loaded.
SUBPROC_WORKER_BYTES = 180 * 2**20
TRAINER_BASE_BYTES = 600 * 2**20
USABLE_SHARE = 0.8  # leave room for the rest of the machine


class ResourceError(VVHOError):
    """A config that cannot fit on this machine; ``field`` is the dotted path to change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field {field}: {message}")
        self.field = field


@dataclass(frozen=True)
class MemoryEstimate:
    per_env: int  # simulator state (and a worker process for subproc)
    per_transition: int  # one entry of the rollout or replay buffer
    transitions: int  # entries the buffer holds
    networks: int

    def total(self, n_envs: int, transitions: int | None = None) -> int:
        n = self.transitions if transitions is None else transitions
        return TRAINER_BASE_BYTES + n_envs * self.per_env + n * self.per_transition + self.networks


def sim_state_bytes() -> int:
    """Bytes of the simulator's preallocated state for one env."""
    return sum(a.nbytes for a in engine.new_state(1))


def estimate(cfg: TrainingConfig) -> MemoryEstimate:
    t, a = cfg.train, cfg.agent
    n_knobs = len(acting_knobs(load_scenario(cfg.env.scenario).host_profile, cfg.env.knob_names))
    obs = cfg.env.history * len(FEATURES) + n_knobs
    per_env = sim_state_bytes() + (SUBPROC_WORKER_BYTES if t.vec_env == "subproc" else 0)
    if isinstance(a, _OnPolicy):  # SB3's rollout buffer: obs, action, reward, return, value, log-prob...
        per_transition, transitions = 4 * (obs + n_knobs + 6), a.n_steps * t.n_envs
    else:  # replay buffer: obs and next obs, action, reward, done, timeout
        assert isinstance(a, _OffPolicy)
        per_transition, transitions = 4 * (2 * obs + n_knobs + 3), a.buffer_size
    layers = [obs, *a.net_arch]
    weights = sum(i * o for i, o in pairwise(layers)) + layers[-1] * (n_knobs + 1)
    # actor and critic; off-policy: actor, two critics and their targets (TD3 also an actor target)
    copies = 2 if isinstance(a, _OnPolicy) else 6
    networks = 4 * weights * copies * 4  # float32 weights, gradients and two Adam moments
    return MemoryEstimate(per_env, per_transition, transitions, networks)


def available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo; None where the kernel does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(cfg: TrainingConfig, available: int | None = None) -> None:
    """Raise ResourceError naming the field to lower when the run would not fit in memory."""
    avail = available_bytes() if available is None else available
    if avail is None:
        return
    budget = int(avail * USABLE_SHARE)
    est = estimate(cfg)
    need = est.total(cfg.train.n_envs)
    if need <= budget:
        return
    gib = 2**30
    have = f"this machine has {avail / gib:.1f} GiB available"
    n_envs = cfg.train.n_envs
    envs_fit = (budget - est.total(0)) // est.per_env if budget > est.total(0) else 0
    if envs_fit >= 1:
        raise ResourceError("train.n_envs", f"{n_envs} envs need about {need / gib:.1f} GiB "
                            f"({est.per_env / 2**20:.1f} MiB per env with vec_env {cfg.train.vec_env}); {have}; "
                            f"accepted here: at most {envs_fit} envs")
    room = budget - est.total(n_envs, 0)
    if isinstance(cfg.agent, _OffPolicy):
        fit = max(room // est.per_transition, 0)
        raise ResourceError("agent.buffer_size", f"a replay buffer of {cfg.agent.buffer_size:,} transitions "
                            f"needs about {need / gib:.1f} GiB in all; {have}; accepted here: at most {fit:,}")
    fit = max(room // (est.per_transition * n_envs), 0)
    raise ResourceError("agent.n_steps", f"rollouts of {est.transitions:,} transitions need about "
                        f"{need / gib:.1f} GiB in all; {have}; accepted here: at most {fit:,} steps per env")
