"""Golden pin of the simulator: per-window telemetry and final state of every catalogue scenario.

For each scenario x setting x seed: reset with the setting (trace on), three windows, a mid-episode
apply (one a restart-cost change, whose outage lasts 2 s), ten more windows. The digest covers every
telemetry field of every window as exact bytes (floats as IEEE-754 doubles, NaN included), the cfg vector
after reset and after the apply, and the final S, X, H, T, R arrays. Recorded before the engine was split
into one module per mechanism (issue 8, step 1); a refactor must leave every digest bit-identical. Physics
changes re-record them in the same commit: ``PYTHONPATH=$PWD python tests/test_sim_golden.py`` prints the
table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from enum import Enum

import numpy as np
import pytest

from vvho_env.knobs import KnobValue
from vvho_env.scenarios import load_scenario, scenario_ids
from vvho_env.sim.backend import BatchSim
from vvho_env.types import Telemetry

SEEDS = (3, 1_000_003)
WINDOW_S = 0.25
WINDOWS_BEFORE, WINDOWS_AFTER = 3, 10  # after: the 2-s outage of a restart, then SR-IOV windows

# name -> (settings at reset, change applied after WINDOWS_BEFORE windows; knobs the scenario's host
# profile cannot set are dropped from the change)
SETTINGS: dict[str, tuple[dict[str, KnobValue], dict[str, KnobValue]]] = {
    "default": ({}, {"vcpu_quota": 30_000, "sched_slice_us": 300}),
    # dedicated pinning, FIFO vCPUs under RT throttling, long host halt-poll, userspace backend with rx
    # coalescing, per-vCPU quota, housekeeping emulator, 3 vCPUs; then a restart to SR-IOV
    "dedicated-fifo": (
        {"vcpu_pinning": "dedicated", "vcpu_sched_policy": "fifo", "halt_poll_ns": 400_000,
         "virtio_backend": "userspace", "rx_usecs": 20, "vcpu_quota": 60_000, "emulator_placement": "housekeeping",
         "vcpu_count": 3, "idle_state": "C1E"},
        {"virtio_backend": "sriov", "cpu_shares": 4096, "vcpu_sched_policy": "other"},
    ),
    # shared pinning, tight quotas at every scope, short PLE window, C6, busy poll + guest haltpoll,
    # low weight, short slice, vhost-user PMD; then dedicated and unlimited
    "shared-tight": (
        {"vcpu_pinning": "shared", "vcpu_quota": 20_000, "vcpu_period": 50_000, "emulator_quota": 30_000,
         "global_quota": 80_000, "ple_window": 1024, "idle_state": "C6", "busy_poll_us": 50,
         "guest_haltpoll": True, "cpu_shares": 256, "sched_slice_us": 750, "virtio_backend": "vhost_user_poll"},
        {"vcpu_pinning": "dedicated", "vcpu_quota": -1, "halt_poll_ns": 0, "ple_window": 0},
    ),
}


def _telemetry_bytes(t: Telemetry) -> bytes:
    out = []
    for f in dataclasses.fields(t):
        v = getattr(t, f.name)
        if isinstance(v, np.ndarray):
            out.append(v.tobytes())
        elif isinstance(v, Enum):
            out.append(str(v.value).encode())
        elif isinstance(v, bool | int):
            out.append(struct.pack("<q", int(v)))
        elif isinstance(v, float):
            out.append(struct.pack("<d", v))
        else:
            out.append(repr(v).encode())
    return b"|".join(out)


def digest(scenario_id: str, setting: str, seed: int) -> str:
    sc = load_scenario(scenario_id)
    start, change = SETTINGS[setting]
    sim = BatchSim(1)
    sim.reset_env(0, seed, sc, start, trace=True)
    profile = sim.profiles[0]
    assert profile is not None
    h = hashlib.sha256(sim.cfg.tobytes())
    for _ in range(WINDOWS_BEFORE):
        h.update(_telemetry_bytes(sim.run(WINDOW_S)[0]))
    sim.apply_env(0, {k: v for k, v in change.items() if k in profile.settable})
    h.update(sim.cfg.tobytes())
    for _ in range(WINDOWS_AFTER):
        h.update(_telemetry_bytes(sim.run(WINDOW_S)[0]))
    for a in (sim.S, sim.X, sim.H, sim.T, sim.R):
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _key(scenario_id: str, setting: str, seed: int) -> str:
    return f"{scenario_id}/{setting}/{seed}"


GOLDEN: dict[str, str] = {
    "steady-low-v0/default/3": "545bba40165d24a1",
    "steady-low-v0/default/1000003": "689736384322987d",
    "steady-low-v0/dedicated-fifo/3": "681647e76ab60143",
    "steady-low-v0/dedicated-fifo/1000003": "0adf3cb84e7b6b80",
    "steady-low-v0/shared-tight/3": "fdb1bb12b5a428c7",
    "steady-low-v0/shared-tight/1000003": "fd9c8facc3242154",
    "diurnal-noisy-v0/default/3": "f6a2897dbffc1cda",
    "diurnal-noisy-v0/default/1000003": "58db651cfc9cac35",
    "diurnal-noisy-v0/dedicated-fifo/3": "a6e8027885d61120",
    "diurnal-noisy-v0/dedicated-fifo/1000003": "09836e726d74cbe4",
    "diurnal-noisy-v0/shared-tight/3": "f71b8b433290a539",
    "diurnal-noisy-v0/shared-tight/1000003": "562dae86ab23b5fb",
    "bursty-mmpp-v0/default/3": "6f15d2bff2b1deaf",
    "bursty-mmpp-v0/default/1000003": "f2b184b4ae9b0f46",
    "bursty-mmpp-v0/dedicated-fifo/3": "9a5c18610a09236f",
    "bursty-mmpp-v0/dedicated-fifo/1000003": "9d2b000174cedf46",
    "bursty-mmpp-v0/shared-tight/3": "028bf86ead1dcc6e",
    "bursty-mmpp-v0/shared-tight/1000003": "07cbee9f9e0db55d",
    "flash-crowd-v0/default/3": "db9d490a2a06596b",
    "flash-crowd-v0/default/1000003": "f0cb763a71113bb8",
    "flash-crowd-v0/dedicated-fifo/3": "eff23933d144b712",
    "flash-crowd-v0/dedicated-fifo/1000003": "e1d9ddba32c348a4",
    "flash-crowd-v0/shared-tight/3": "e3471e9214a168ef",
    "flash-crowd-v0/shared-tight/1000003": "29078936250cfefe",
    "overcommit-4to1-v0/default/3": "a4c85c2e67c931cb",
    "overcommit-4to1-v0/default/1000003": "45ecf063fc4ada2c",
    "overcommit-4to1-v0/dedicated-fifo/3": "1f1dfd5e7ab5fdff",
    "overcommit-4to1-v0/dedicated-fifo/1000003": "f78092084e69f00c",
    "overcommit-4to1-v0/shared-tight/3": "548eea06fdc93a39",
    "overcommit-4to1-v0/shared-tight/1000003": "9e4c602d324afca8",
    "quota-tight-v0/default/3": "fb48b8d4eff47ec9",
    "quota-tight-v0/default/1000003": "c3002d42d84bf62b",
    "quota-tight-v0/dedicated-fifo/3": "48a789aabba89f37",
    "quota-tight-v0/dedicated-fifo/1000003": "57fe36e2da26e200",
    "quota-tight-v0/shared-tight/3": "d50ef28fd18e9581",
    "quota-tight-v0/shared-tight/1000003": "0fabb17afd31ffdb",
    "neighbour-churn-v0/default/3": "0664f0aa2b33d704",
    "neighbour-churn-v0/default/1000003": "d4dc7daa3fd75aca",
    "neighbour-churn-v0/dedicated-fifo/3": "02a0015551ea1d31",
    "neighbour-churn-v0/dedicated-fifo/1000003": "1d960032d9466115",
    "neighbour-churn-v0/shared-tight/3": "c129284e9ceb3e61",
    "neighbour-churn-v0/shared-tight/1000003": "c4c960b0b13c6ac8",
    "mixed-v0/default/3": "e6e0309fc923e77e",
    "mixed-v0/default/1000003": "d09edb25526afac0",
    "mixed-v0/dedicated-fifo/3": "258b88e6609abfb9",
    "mixed-v0/dedicated-fifo/1000003": "797b845da6d802bc",
    "mixed-v0/shared-tight/3": "6deb08ef3353e7de",
    "mixed-v0/shared-tight/1000003": "217c83f417b5fcbe",
    "testbed-echo-v0/default/3": "e40afa75b188e31b",
    "testbed-echo-v0/default/1000003": "0343ee5602febed4",
    "testbed-echo-v0/dedicated-fifo/3": "f6bb7d9360a37a71",
    "testbed-echo-v0/dedicated-fifo/1000003": "743b6642747c44ed",
    "testbed-echo-v0/shared-tight/3": "68a0eef4a0faab9d",
    "testbed-echo-v0/shared-tight/1000003": "facf7b903c07a3b7",
}

CASES = [(s, name, seed) for s in scenario_ids() for name in SETTINGS for seed in SEEDS]


def test_golden_covers_every_catalogue_scenario() -> None:
    assert sorted(GOLDEN) == sorted(_key(*c) for c in CASES)


@pytest.mark.parametrize(("scenario_id", "setting", "seed"), CASES, ids=[_key(*c) for c in CASES])
def test_sim_golden(scenario_id: str, setting: str, seed: int) -> None:
    assert digest(scenario_id, setting, seed) == GOLDEN[_key(scenario_id, setting, seed)]


if __name__ == "__main__":
    for case in CASES:
        print(f'    "{_key(*case)}": "{digest(*case)}",')
