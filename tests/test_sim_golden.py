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
    "steady-low-v0/default/3": "aad25f7b28e1e755",
    "steady-low-v0/default/1000003": "47a78d1974fa49dd",
    "steady-low-v0/dedicated-fifo/3": "06d1e88da6f7df6f",
    "steady-low-v0/dedicated-fifo/1000003": "44a8d697d0dbfb76",
    "steady-low-v0/shared-tight/3": "b545c170e3cb964a",
    "steady-low-v0/shared-tight/1000003": "b6d1e6c0d9d99dbc",
    "diurnal-noisy-v0/default/3": "324cc0ad3f87535b",
    "diurnal-noisy-v0/default/1000003": "9010a42fb59df111",
    "diurnal-noisy-v0/dedicated-fifo/3": "aedeed4892135781",
    "diurnal-noisy-v0/dedicated-fifo/1000003": "d429167528def525",
    "diurnal-noisy-v0/shared-tight/3": "232aee0132c06517",
    "diurnal-noisy-v0/shared-tight/1000003": "8dae7e58b6d3563e",
    "bursty-mmpp-v0/default/3": "ebabcb20ab3039a2",
    "bursty-mmpp-v0/default/1000003": "264d15d7ee94a785",
    "bursty-mmpp-v0/dedicated-fifo/3": "f2c59e742a056e6f",
    "bursty-mmpp-v0/dedicated-fifo/1000003": "7c202e49de6c10ea",
    "bursty-mmpp-v0/shared-tight/3": "14d263c30f66a8c5",
    "bursty-mmpp-v0/shared-tight/1000003": "0a67030171525bff",
    "flash-crowd-v0/default/3": "d0a6f7ab8715f33b",
    "flash-crowd-v0/default/1000003": "3e29d1673410e34d",
    "flash-crowd-v0/dedicated-fifo/3": "591e63e472ff7954",
    "flash-crowd-v0/dedicated-fifo/1000003": "f938000be683636c",
    "flash-crowd-v0/shared-tight/3": "1819b71667b00a7f",
    "flash-crowd-v0/shared-tight/1000003": "575c18ac08f9e09b",
    "overcommit-4to1-v0/default/3": "699f6750d4e64656",
    "overcommit-4to1-v0/default/1000003": "5d6ceae51f5b3f0a",
    "overcommit-4to1-v0/dedicated-fifo/3": "4a2cadb6a1ea7e74",
    "overcommit-4to1-v0/dedicated-fifo/1000003": "ccd5de693a94371c",
    "overcommit-4to1-v0/shared-tight/3": "1c058969a0240f0a",
    "overcommit-4to1-v0/shared-tight/1000003": "935cc818e2493c7c",
    "quota-tight-v0/default/3": "0b44bc7ef3684c8b",
    "quota-tight-v0/default/1000003": "230f35f8121396d3",
    "quota-tight-v0/dedicated-fifo/3": "0cc046b5dd28923a",
    "quota-tight-v0/dedicated-fifo/1000003": "049413f42f66e7ba",
    "quota-tight-v0/shared-tight/3": "cf811df6b4222d80",
    "quota-tight-v0/shared-tight/1000003": "9d4142e6d6a44ce5",
    "neighbour-churn-v0/default/3": "fb9269ec7c8ddcfa",
    "neighbour-churn-v0/default/1000003": "e8031c04d2229959",
    "neighbour-churn-v0/dedicated-fifo/3": "8835da66a69df50d",
    "neighbour-churn-v0/dedicated-fifo/1000003": "b525df362683cb66",
    "neighbour-churn-v0/shared-tight/3": "54942ec06092b911",
    "neighbour-churn-v0/shared-tight/1000003": "62715b64177c312c",
    "mixed-v0/default/3": "d1650b09d45edf36",
    "mixed-v0/default/1000003": "21fef3aed733f3be",
    "mixed-v0/dedicated-fifo/3": "7f56c64d380f1648",
    "mixed-v0/dedicated-fifo/1000003": "d8118ee36d674376",
    "mixed-v0/shared-tight/3": "e654000d15a08d60",
    "mixed-v0/shared-tight/1000003": "da546e7f3c099bc8",
    "testbed-echo-v0/default/3": "17c49ec63e0810c1",
    "testbed-echo-v0/default/1000003": "75bff4f5fd7472c5",
    "testbed-echo-v0/dedicated-fifo/3": "cb166c98f0183b6c",
    "testbed-echo-v0/dedicated-fifo/1000003": "347323e82667e8f1",
    "testbed-echo-v0/shared-tight/3": "3b012be94b428179",
    "testbed-echo-v0/shared-tight/1000003": "93e5636ad6f156b8",
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
