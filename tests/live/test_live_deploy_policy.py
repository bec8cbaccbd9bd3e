"""A policy trained on the testbed's host profile, deployed on the testbed, against the default settings and
the best static setting a baseline found there.

The bundle is trained here, on the simulator's 'tcg-testbed' profile (scenario testbed-echo-v0, PPO,
20k steps: about 1 minute of CPU, 2 minutes of wall time on this loaded 2-core host), on the knob
subset vcpu_quota, vcpu_pinning, emulator_placement, and exported with `vvho export`. The baseline is
`vvho baseline --method random --backend live` on the same knob subset (6 windows of tuning). The
situation: the operator left a tight quota (vcpu_quota 10000 per 100000 us) and the testbed's CPU-bound
neighbour runs on the vCPU's pCPU. Each arm (the default settings, the baseline's best static setting,
the policy) runs through the same host agent for 8 intervals from that situation, arms interleaved
three times so that the host's drift (other jobs share it) falls on all of them; the first 2 windows of
each run (the move away from the start) are left out of its objective.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import DOMAIN, URI, read_back

pytestmark = pytest.mark.live

KNOBS = ("vcpu_quota", "vcpu_pinning", "emulator_placement")
TIGHT = {"vcpu_quota": 10000, "vcpu_pinning": "shared", "emulator_placement": "with_vcpus"}
INTERVALS, SETTLE, REPS = 8, 2, 3
REPO = Path(__file__).resolve().parents[2]


def _vvho(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "vvho.cli", *args], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def _train_bundle(tmp: Path) -> Path:
    out = _vvho("train", "--config", "ppo_testbed", "--json",
                "--set", f"env.knob_names=[{', '.join(KNOBS)}]", "--set", "train.total_timesteps=20000",
                "--set", "train.eval_every=1000000", "--set", "train.checkpoint_every=1000000",
                "--results-dir", str(tmp), "--tracking-uri", f"sqlite:///{tmp}/m.db")
    run_id = json.loads(out)["run_id"]
    _vvho("export", run_id, "--out", str(tmp / "policy"), "--results-dir", str(tmp),
          "--tracking-uri", f"sqlite:///{tmp}/m.db")
    return tmp / "policy"


def _best_static(tmp: Path) -> dict[str, Any]:
    args = ["baseline", "--method", "random", "--backend", "live", "--scenario", "testbed-echo-v0", "--budget", "6",
            "--eval-steps", "2", "--eval-episodes", "1", "--no-tune-hparams", "--connect", URI, "--domain", DOMAIN,
            "--results-dir", str(tmp), "--tracking-uri", f"sqlite:///{tmp}/b.db"]
    for k in KNOBS:
        args += ["--knob", k]
    _vvho(*args)
    entries = json.loads((tmp / "baselines" / "live-static__testbed-echo-v0.json").read_text())
    best = min(entries, key=lambda e: e["metrics"]["objective"])
    return {k: best["settings"][k] for k in KNOBS}


def _run(bundle: Path, log: Path) -> list[float]:
    """One arm from the situation: the tight quota on the host, the neighbour on, the agent active."""
    from agents.deploy.agent import HostAgent
    from agents.deploy.audit import AuditLog
    from agents.deploy.limits import Limits
    from agents.deploy.policy import DeployedPolicy
    from vvho_env.live import open_backend
    from vvho_env.live.backend import Workload

    backend = open_backend(URI, DOMAIN, neighbour_cpus=(backend_cpu := 1,))
    backend.apply({**TIGHT, "vcpu_period": 100000})
    policy = DeployedPolicy(bundle, backend.capabilities(), backend.unavailable)
    limits = Limits.model_validate({"max_step": 2.0, "min_interval_s": 0, "hold_on_degraded": False})
    sc = policy.scenario
    agent = HostAgent(backend, policy, limits, AuditLog(log), mode="active", echo=lambda _: None,
                      workload=Workload(sc.phases[0].rate_rps, sc.phases[0].service_mean_us, sc.slo_us, (1.0,)))
    assert backend.neighbour_cpus == (backend_cpu,)
    try:
        js = [agent.step().objective for _ in range(INTERVALS)]
    finally:
        agent.finish(False, "arm done")
    assert all(j is not None for j in js)
    return [float(j) for j in js[SETTLE:]]  # type: ignore[arg-type]


def test_a_trained_policy_beats_the_default_settings_on_the_testbed(testbed, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from agents.static_bundle import static_bundle

    port = int(testbed["port"])
    original = read_back(port=port)
    policy = _train_bundle(tmp_path)
    best = _best_static(tmp_path)
    arms = {"default": static_bundle(tmp_path / "default", TIGHT, "testbed-echo-v0"),
            "best-static": static_bundle(tmp_path / "best", best, "testbed-echo-v0"),
            "policy": policy}
    j: dict[str, list[float]] = {k: [] for k in arms}
    for rep in range(REPS):
        for name, bundle in arms.items():
            j[name] += _run(bundle, tmp_path / f"{name}-{rep}.jsonl")
    mean = {k: float(np.mean(v)) for k, v in j.items()}
    rng = np.random.default_rng(0)
    boot = {k: [float(np.mean(rng.choice(v, len(v)))) for _ in range(2000)] for k, v in j.items()}
    ci = {k: tuple(np.percentile(b, [2.5, 97.5])) for k, b in boot.items()}
    print(f"\nDEPLOY | best static found by random search: {best}")
    for k in arms:
        print(f"DEPLOY | {k:12s} mean objective {mean[k]:.3f} (95% CI {ci[k][0]:.3f} .. {ci[k][1]:.3f}) over "
              f"{len(j[k])} windows")
    print(f"DEPLOY | policy / default {mean['policy'] / mean['default']:.3f}, policy / best-static "
          f"{mean['policy'] / mean['best-static']:.3f}")
    # measured 0.105 (policy 0.66 vs default 6.32) and 0.16 (1.06 vs 6.62), 18 windows each: asserted at half.
    # Against the best static setting the policy measured 1.97x worse (0.66 vs 0.34): not asserted, reported.
    assert mean["policy"] < 0.5 * mean["default"] and ci["policy"][1] < ci["default"][0]
    assert read_back(port=port) == original
