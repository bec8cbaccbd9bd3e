"""A policy bundle as an MLflow model: MLflow's pyfunc interface over the bundle's onnxruntime session.

Logged as a model from code (this file is stored with the model and nothing is pickled), with the
bundle directory as its artifact. ``mlflow.pyfunc.load_model(uri).predict(obs)`` takes raw
observations of shape (n, obs_size), as the env gives them, and returns actions in [-1, 1] over the
manifest's ``knob_names``; the bundle normalises them with its own VecNormalize statistics.
``vvho.tracking`` logs it; this file holds only what MLflow loads. Loading needs vvho installed (for
``agents.bundle``), numpy and onnxruntime; no torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from agents.bundle import PolicyBundle


class BundlePolicy(PythonModel):
    def load_context(self, context: Any) -> None:
        self.bundle = PolicyBundle(context.artifacts["bundle"])

    # np.ndarray is a hint MLflow accepts without deriving a schema from it: the signature is explicit
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        return self.bundle.act(np.asarray(model_input, dtype=np.float32))


set_model(BundlePolicy())
