"""The safety layer (agents/safety.py) on a real exported bundle: inside the training distribution the
policy acts unchanged; out of it, the knob targets stay inside the region the policy held in training."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("onnxruntime")

from agents.bundle import BundleError, PolicyBundle
from agents.evaluate import BundleController
from agents.safety import SafetyLayer, fit_region, window_score
from vvho.config import load_config
from vvho_env.paths import Paths


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> PolicyBundle:
    from agents.export import export_bundle
    from agents.train import load_trained
    from vvho.experiments import train_run

    tmp = tmp_path_factory.mktemp("safety")
    cfg = load_config("ppo_core", ["train.n_envs=4", "train.eval_seeds=[901]", "train.progress_bar=false",
                                   "train.total_timesteps=64", "train.eval_every=64", "train.checkpoint_every=64",
                                   "env.max_steps=20", "agent.n_steps=8", "agent.batch_size=16", "agent.n_epochs=1",
                                   "agent.net_arch=[32]", "env.mixture=[diurnal-noisy-v1,bursty-mmpp-v0]"])
    paths = Paths.at(tmp)
    run_id = train_run(cfg, paths).run_id
    model, vecnorm = load_trained(cfg, paths.checkpoints / run_id)
    return PolicyBundle(export_bundle(model, vecnorm, cfg, tmp / "bundle"))


def test_fit_region_bounds_the_held_positions_and_the_newest_window() -> None:
    # two features, history 2: the newest window is columns 2..3
    z = np.array([[9.0, 9.0, 0.5, -1.5], [0.0, 0.0, 1.0, 0.2]])
    pos = np.array([[-0.5, 0.0], [0.5, 0.2]])
    r = fit_region([z], [pos], history=2, n_features=2)
    assert r["threshold"] == 1.5  # the older window's 9.0 is not the newest's
    assert np.all(np.asarray(r["low"]) <= pos.min(axis=0)) and np.all(np.asarray(r["high"]) >= pos.max(axis=0))
    assert window_score(z, 2, 2).tolist() == [1.5, 1.0]


def test_bundle_carries_a_region_and_the_layer_holds_targets_inside_it(bundle: PolicyBundle) -> None:
    m = bundle.manifest
    s = m["safety"]
    low, high = np.asarray(s["low"]), np.asarray(s["high"])
    assert s["windows"] > 0 and np.all(low <= high) and s["threshold"] > 0
    assert m["trained_on"] and all("@" in k for k in m["trained_on"])  # scenario keys: id@content hash
    n, nf, h = len(bundle.knob_names), len(m["features"]), int(m["history"])
    layer = SafetyLayer(BundleController(bundle), bundle)
    mean = np.asarray(m["obs_normalisation"]["mean"], dtype=np.float64)
    std = np.sqrt(np.asarray(m["obs_normalisation"]["var"], dtype=np.float64) + 1e-8)
    # in distribution (the normalisation's mean): the policy's own action
    bundle.reset()
    inside = layer.act(mean.astype(np.float32), {})
    bundle.reset()
    assert np.allclose(inside, bundle.act(mean.astype(np.float32))) and layer.held == 0
    # far out of distribution in the newest window, the held position in the region's middle
    obs = mean.copy()
    obs[(h - 1) * nf: h * nf] += 50 * std[(h - 1) * nf: h * nf]
    obs[-n:] = (low + high) / 2
    action = layer.act(obs.astype(np.float32), {})
    assert layer.held == 1 and layer.windows == 2
    target = obs[-n:] + action * float(m["delta_step"])
    assert np.all(target >= low - 1e-5) and np.all(target <= high + 1e-5)


def test_a_bundle_without_a_region_is_refused_with_one_line(bundle: PolicyBundle) -> None:
    old = dict(bundle.manifest)
    try:
        bundle.manifest.pop("safety")
        with pytest.raises(BundleError, match="no safety region") as exc:
            SafetyLayer(BundleController(bundle), bundle)
        assert "\n" not in str(exc.value)
    finally:
        bundle.manifest.clear()
        bundle.manifest.update(old)

