"""Golden pin of the host agent's decision path: what agents.deploy.agent.decide computes from a stream of
telemetry (the observation, its normalisation, the proposed positions and the settings they decode to,
every guard's verdict, the target and its positions), and the knob decoder on every knob's edge points.

Recorded before the decision path was made cheaper (issue 12: decision latency); a refactor for speed
must leave these digests bit-identical. The bundle's graph selects and halves observation entries
(products by 0.5 and sums with zeros are exact), so its actions do not depend on onnxruntime's kernels.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agents.bundle import FORMAT_VERSION, GRAPH, MANIFEST, knob_bounds, sha256_file
from agents.deploy.agent import decide
from agents.deploy.guards import Guards
from agents.deploy.limits import Limits
from agents.deploy.policy import DeployedPolicy
from vvho_env import knobs
from vvho_env.env import FEATURES, Codec
from vvho_env.histogram import LogHistogram
from vvho_env.objective import objective_for
from vvho_env.scenarios import load_scenario
from vvho_env.types import Capabilities, Status, Telemetry

SCENARIO = "testbed-echo-v0"
NAMES = ("vcpu_pinning", "vcpu_quota", "vcpu_period", "emulator_quota", "global_quota", "cpu_shares",
         "emulator_placement", "busy_poll_us", "vcpu_sched_policy")
GOLDEN_DECISIONS = {"absolute": "3fdd6843d82152ad", "delta": "6321ea8dc4b3e5ad"}  # re-recorded for the unserved term
GOLDEN_DECODE = "66813ba8a2491171"


def _bundle(out: Path, mode: str, history: int = 4) -> Path:
    """A bundle whose action i is half a normalised feature of the last window plus half knob i's
    normalised previous action, plus an offset; with VecNormalize statistics."""
    sc = load_scenario(SCENARIO)
    codec = Codec.for_scenario(sc, NAMES, mode, 0.25, history)
    n, k = len(NAMES), len(FEATURES)
    w = np.zeros((codec.obs_size, n), dtype=np.float32)
    for i in range(n):
        w[(history - 1) * k + i % k, i] = 0.5
        w[history * k + i, i] = 0.5
    b = np.linspace(-0.4, 0.4, n).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["action"])],
        "golden_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", codec.obs_size])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", n])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out / GRAPH)
    rng = np.random.default_rng(7)
    manifest = {
        "format_version": FORMAT_VERSION, "graph": GRAPH, "graph_sha256": sha256_file(out / GRAPH),
        "algorithm": "golden", "run_id": None, "scenario": sc.id, "host_profile": sc.host_profile,
        "knob_names": list(NAMES), "action_mode": mode, "delta_step": 0.25,
        "action_low": [-1.0] * n, "action_high": [1.0] * n, "history": history, "features": list(FEATURES),
        "obs_size": codec.obs_size,
        "obs_normalisation": {"mean": rng.normal(0.0, 0.5, codec.obs_size).tolist(),
                              "var": rng.uniform(0.05, 3.0, codec.obs_size).tolist(), "clip_obs": 5.0,
                              "epsilon": 1e-8},
        "recurrent": None, "interval_s": sc.interval_s, "knob_bounds": knob_bounds(NAMES),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _stream(n: int) -> list[Telemetry | None]:
    """Windows as a testbed gives them, with DEGRADED ones, missing ones (None), one without a completed
    request (NaN percentiles) and regressions (a neighbour, a starving quota) that the guards roll back."""
    rng = np.random.default_rng(11)
    out: list[Telemetry | None] = []
    for i in range(n):
        if i % 23 == 5:
            out.append(None)
            continue
        scale = 30000.0 if 40 <= i % 60 < 48 else 2000.0
        lat = rng.lognormal(np.log(scale), 0.8, 200)
        h = LogHistogram()
        h.record_many_ns(lat * 1000.0)
        p = np.percentile(lat, [50, 99, 99.9])
        requests = 200
        if i == 17:
            requests, p, lat = 0, np.full(3, math.nan), np.full(1, math.nan)
        out.append(Telemetry(1.0, requests, float(p[0]), float(p[1]), float(p[2]), float(lat.mean()), 20000.0,
                             int((lat > 20000).sum()), 200.0, float(rng.uniform(150, 210)),
                             float(rng.uniform(0.2, 1.1)), float(rng.uniform(0, 0.2)), 0.0,
                             float(rng.uniform(0, 0.3)), float(rng.uniform(0, 1.5)), float(rng.uniform(0, 0.6)),
                             status=Status.DEGRADED if i % 17 == 0 else Status.OK,
                             notes=("3 timeouts",) if i % 17 == 0 else (),
                             histogram=h.counts.copy() if requests else None))
    return out


def _decisions_digest(tmp_path: Path, mode: str) -> str:
    bundle = _bundle(tmp_path / mode, mode)
    policy = DeployedPolicy(bundle, Capabilities(frozenset(NAMES), frozenset(), False))
    current = {**{n: knobs.get(n).default for n in NAMES}, "vcpu_quota": 200000, "cpu_shares": 2048}
    policy.start(current)
    kill = tmp_path / f"{mode}.kill"
    limits = Limits.model_validate({
        "knobs": {"vcpu_quota": {"low": 20000, "high": 400000, "allow": [-1], "max_step": 0.5},
                  "vcpu_pinning": {"allow": ["shared", "dedicated"]}, "cpu_shares": {"low": 256, "high": 8192},
                  "busy_poll_us": {"allow": [0], "high": 50}, "vcpu_sched_policy": {"allow": ["other"]}},
        "max_step": 0.3, "min_interval_s": 4, "kill_switch": str(kill),
        "rollback": {"windows": 2, "objective_margin": 0.1, "p99_margin": 0.1, "cooldown_s": 5}})
    now = [0.0]  # one interval per window, as on a host
    guards = Guards(limits, NAMES, current, policy.bundle.manifest["knob_bounds"], clock=lambda: now[0])
    objective = objective_for(policy.scenario)
    out: list[str] = []
    for i, tel in enumerate(_stream(240)):
        now[0] = float(i)
        if i in (100, 160):
            kill.touch()
        if i in (104, 163):
            kill.unlink()
        j = objective(tel) if tel is not None else None
        d, position, proposed, obs = decide(policy, guards, tel, j, current)
        out.append(repr(None if obs is None else obs.tolist()))
        out.append(repr(None if obs is None else policy.bundle.normalise(obs).tolist()))
        out.append(repr(position.tolist()) + repr(sorted(proposed.items())))
        verdicts = repr([v.as_dict() for v in d.verdicts]).replace(str(kill), "KILL")  # tmp_path varies
        out.append(verdicts + repr(None if d.target is None else sorted(d.target.items()))
                   + repr(None if d.position is None else d.position.tolist()) + repr(d.rollback))
        diff = {k: v for k, v in (d.target or {}).items() if current[k] != v}
        if diff:  # as HostAgent.step in active mode, every apply succeeding
            current = {**current, **diff}
            guards.applied(d.rollback)
        if diff or (d.target is None and d.position is not None):
            policy.moved_to(d.position if d.position is not None else position)
    return hashlib.sha256("\n".join(out).encode()).hexdigest()[:16]


def _decode_digest() -> str:
    """Every knob at the edges of its bins and special bands, and on either side of them."""
    xs: list[float] = [-2.0, -1.0, 1.0, 2.0, 0.0, -0.0]
    for edge in (-1.0 + knobs.SPECIAL_BAND, 1.0 - knobs.SPECIAL_BAND, *(-1.0 + 2.0 * i / n for n in (2, 3, 4)
                                                                          for i in range(1, n))):
        xs += [edge, math.nextafter(edge, -2.0), math.nextafter(edge, 2.0)]
    xs += np.random.default_rng(3).uniform(-1.2, 1.2, 300).tolist()
    xs += np.random.default_rng(4).uniform(-1.0, 1.0, 300).astype(np.float32).astype(np.float64).tolist()
    out: list[str] = []
    for name in knobs.KNOB_NAMES:
        space = knobs.KnobSpace((name,))
        out.append(repr([space.decode([x])[name] for x in xs]))
    rng = np.random.default_rng(5)
    for mode in ("absolute", "delta"):
        codec = Codec.for_scenario(load_scenario(SCENARIO), NAMES, mode, 0.25, 4)
        pos = codec.encode({n: knobs.get(n).default for n in NAMES})
        for _ in range(300):
            s, pos = codec.decode(rng.uniform(-1.3, 1.3, len(NAMES)).astype(np.float32), pos)
            out.append(repr(sorted(s.items())) + repr(pos.tolist()))
    return hashlib.sha256("\n".join(out).encode()).hexdigest()[:16]


@pytest.mark.parametrize("mode", ["absolute", "delta"])
def test_the_decision_path_is_pinned(tmp_path: Path, mode: str) -> None:
    assert _decisions_digest(tmp_path, mode) == GOLDEN_DECISIONS[mode]


def test_the_knob_decoder_is_pinned() -> None:
    assert _decode_digest() == GOLDEN_DECODE
