"""A policy bundle that always asks for the same settings, written directly as an ONNX graph.

Its graph is action = 0 * obs + c (MatMul by zeros, plus the constant), in the format `vvho export`
writes (graph + manifest with its sha256), so the host agent runs it like any trained policy. That
lets an operator roll out a fixed setting (say, the best one a tuner found) through the same guarded,
audited and gated path as a learned policy, and compare the two under the same machinery.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from agents.bundle import FORMAT_VERSION, GRAPH, MANIFEST, knob_bounds, sha256_file
from vvho_env.env import FEATURES, Codec
from vvho_env.scenarios import load_scenario
from vvho_env.types import KnobValue


def static_bundle(out: Path, settings: Mapping[str, KnobValue], scenario: str, history: int = 4) -> Path:
    """Write a bundle acting on the knobs of `settings` (in that order) that always sets them."""
    sc = load_scenario(scenario)
    names = tuple(settings)
    codec = Codec.for_scenario(sc, names, "absolute", 0.25, history)
    n = len(names)
    w = numpy_helper.from_array(np.zeros((codec.obs_size, n), dtype=np.float32), "W")
    b = numpy_helper.from_array(codec.encode(settings).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["action"])],
        "static_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", codec.obs_size])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", n])],
        [w, b],
    )
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out / GRAPH)
    manifest = {
        "format_version": FORMAT_VERSION, "graph": GRAPH, "graph_sha256": sha256_file(out / GRAPH),
        "algorithm": "static", "run_id": None, "scenario": sc.id, "host_profile": sc.host_profile,
        "knob_names": list(names), "action_mode": "absolute", "delta_step": 0.25,
        "action_low": [-1.0] * n, "action_high": [1.0] * n, "history": history, "features": list(FEATURES),
        "obs_size": codec.obs_size, "obs_normalisation": None, "recurrent": None, "interval_s": sc.interval_s,
        "knob_bounds": knob_bounds(names), "static_settings": dict(settings),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out
