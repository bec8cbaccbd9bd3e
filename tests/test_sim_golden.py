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
    "steady-low-v0/default/3": "43ae5a7308ae4f25",
    "steady-low-v0/default/1000003": "878238090bc4fac1",
    "steady-low-v0/dedicated-fifo/3": "9c0a6b4f588cf20f",
    "steady-low-v0/dedicated-fifo/1000003": "706d7a5c7954b33d",
    "steady-low-v0/shared-tight/3": "17abae2077c25166",
    "steady-low-v0/shared-tight/1000003": "78ecb55379f7ba55",
    "diurnal-noisy-v1/default/3": "670c8f6d5ffb338c",
    "diurnal-noisy-v1/default/1000003": "79bc5eba4bedff4b",
    "diurnal-noisy-v1/dedicated-fifo/3": "e6a14b51cd394632",
    "diurnal-noisy-v1/dedicated-fifo/1000003": "de3814360791bf02",
    "diurnal-noisy-v1/shared-tight/3": "54c61897940cd179",
    "diurnal-noisy-v1/shared-tight/1000003": "d99c58d6e983a993",
    "bursty-mmpp-v0/default/3": "587ed35b41a64a06",
    "bursty-mmpp-v0/default/1000003": "baf4df32acf9cec8",
    "bursty-mmpp-v0/dedicated-fifo/3": "e5bce9c302dea235",
    "bursty-mmpp-v0/dedicated-fifo/1000003": "acdf01468b719a57",
    "bursty-mmpp-v0/shared-tight/3": "8a97c239fcb7d996",
    "bursty-mmpp-v0/shared-tight/1000003": "73093475ea199d30",
    "flash-crowd-v0/default/3": "a206fb2125d9974b",
    "flash-crowd-v0/default/1000003": "f6f41f572d2a5fb2",
    "flash-crowd-v0/dedicated-fifo/3": "db204a1ed23d56d1",
    "flash-crowd-v0/dedicated-fifo/1000003": "cc23587fb12eaa52",
    "flash-crowd-v0/shared-tight/3": "fe42d0e232a3c6be",
    "flash-crowd-v0/shared-tight/1000003": "6c95e1bbc8335685",
    "overcommit-4to1-v0/default/3": "35bba816e94658ed",
    "overcommit-4to1-v0/default/1000003": "60f061b54f0cead1",
    "overcommit-4to1-v0/dedicated-fifo/3": "6fe59e923371b85f",
    "overcommit-4to1-v0/dedicated-fifo/1000003": "373ded565f7134cc",
    "overcommit-4to1-v0/shared-tight/3": "35e558e40622cf51",
    "overcommit-4to1-v0/shared-tight/1000003": "7de03a0856988b46",
    "quota-tight-v0/default/3": "e0f56e00d428015a",
    "quota-tight-v0/default/1000003": "25a5cf88876e6e63",
    "quota-tight-v0/dedicated-fifo/3": "e6f5e0c37732cf88",
    "quota-tight-v0/dedicated-fifo/1000003": "215eb1f15a2ba579",
    "quota-tight-v0/shared-tight/3": "14cfb1c401d31f27",
    "quota-tight-v0/shared-tight/1000003": "4f0a1b7d5f8ee95a",
    "neighbour-churn-v0/default/3": "d9b2baa69d53800e",
    "neighbour-churn-v0/default/1000003": "17cf6b502116c3d2",
    "neighbour-churn-v0/dedicated-fifo/3": "45f69d1bbc012ed4",
    "neighbour-churn-v0/dedicated-fifo/1000003": "26df93531c6f0230",
    "neighbour-churn-v0/shared-tight/3": "6e15f89e9ce7e011",
    "neighbour-churn-v0/shared-tight/1000003": "641406fe1090c0c1",
    "mixed-v1/default/3": "39f5efa997f75509",
    "mixed-v1/default/1000003": "7f68a5cef5080c45",
    "mixed-v1/dedicated-fifo/3": "62cb8dac62356797",
    "mixed-v1/dedicated-fifo/1000003": "7f87022323205c22",
    "mixed-v1/shared-tight/3": "5d55a90aa014df96",
    "mixed-v1/shared-tight/1000003": "b276a2afc1a06de6",
    "testbed-echo-v0/default/3": "7ec2cbe468c58efa",
    "testbed-echo-v0/default/1000003": "a13334914e76dbbb",
    "testbed-echo-v0/dedicated-fifo/3": "2e9c37afb01bbe7e",
    "testbed-echo-v0/dedicated-fifo/1000003": "3a88f69c0bdada66",
    "testbed-echo-v0/shared-tight/3": "cef5f461180ce42b",
    "testbed-echo-v0/shared-tight/1000003": "0e395f0ffe87bc8e",
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
