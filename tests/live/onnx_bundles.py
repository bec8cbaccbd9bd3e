"""Policy bundles written directly as ONNX graphs, for the host agent's tests of loading and guarding.

A constant policy (action = c whatever the observation: MatMul by zeros, plus c) is a real bundle in the
format `vvho export` writes (ONNX + manifest with the graph's sha256): the host agent cannot tell it
from a trained one, which is the point when testing refusals, guards and rollbacks. The deployment test
of a trained policy uses `vvho train` + `vvho export` instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from agents.bundle import FORMAT_VERSION, GRAPH, MANIFEST, sha256_file
from vvho_env.env import FEATURES, Codec
from vvho_env.scenarios import load_scenario


def constant_bundle(out: Path, action: Sequence[float], knob_names: Sequence[str],
                    scenario: str = "testbed-echo-v0", history: int = 4, mode: str = "absolute") -> Path:
    sc = load_scenario(scenario)
    codec = Codec.for_scenario(sc, tuple(knob_names), mode, 0.25, history)
    n = len(knob_names)
    w = numpy_helper.from_array(np.zeros((codec.obs_size, n), dtype=np.float32), "W")
    b = numpy_helper.from_array(np.asarray(action, dtype=np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["action"])],
        "constant_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", codec.obs_size])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["batch", n])],
        [w, b],
    )
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), out / GRAPH)
    manifest = {
        "format_version": FORMAT_VERSION, "graph": GRAPH, "graph_sha256": sha256_file(out / GRAPH),
        "algorithm": "constant", "run_id": None, "scenario": sc.id, "host_profile": sc.host_profile,
        "knob_names": list(knob_names), "action_mode": mode, "delta_step": 0.25,
        "action_low": [-1.0] * n, "action_high": [1.0] * n, "history": history, "features": list(FEATURES),
        "obs_size": codec.obs_size, "obs_normalisation": None, "recurrent": None, "interval_s": sc.interval_s,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out
