"""Agents: configs, train/resume/export/evaluate through the real CLI, kill -9 resume, ONNX parity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("onnxruntime")

from typer.testing import CliRunner

from agents.bundle import BundleError, PolicyBundle
from vvho.cli import app
from vvho.config import CONFIG_DIR, ConfigError, load_config, schema
from vvho_env.paths import Paths

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
TINY = ["train.n_envs=4", "train.eval_seeds=[901]", "train.progress_bar=false"]


def _tiny(algorithm_file: str, tmp: Path, steps: int, extra: list[str] | None = None) -> list[str]:
    sets = [*TINY, f"train.total_timesteps={steps}", f"train.eval_every={steps}",
            f"train.checkpoint_every={steps}", "env.max_steps=20"]
    if "sac" in algorithm_file or "td3" in algorithm_file:
        sets += ["agent.learning_starts=16", "agent.batch_size=16", "agent.net_arch=[32]"]
    else:
        sets += ["agent.n_steps=8", "agent.net_arch=[32]"]
        if "a2c" not in algorithm_file:
            sets += ["agent.batch_size=16", "agent.n_epochs=1"]
    return [*sets, *(extra or [])]


def _cli_train(cfg_file: str, tmp: Path, steps: int) -> str:
    args = ["train", "--config", str(CONFIG_DIR / cfg_file), "--results-dir", str(tmp), "--json"]
    for s in _tiny(cfg_file, tmp, steps):
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return str(json.loads(res.stdout)["run_id"])


# -- configs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.algorithm in ("ppo", "recurrent_ppo", "a2c", "sac", "td3")


def test_schema_file_is_current() -> None:
    assert json.loads((CONFIG_DIR / "schema.json").read_text()) == schema()


@pytest.mark.parametrize(("text", "field"), [
    ("agent: {algorithm: ppo, learning_rat: 0.1}\n", "agent.learning_rat"),
    ("agent: {algorithm: dqn}\n", "agent"),
    ("train: {n_envs: 0}\n", "train.n_envs"),
    ("env: {scenario: nope-v0}\n", "env.scenario"),
    ("agent: {algorithm: ppo, learning_rate: fast}\n", "agent.learning_rate"),
])
def test_malformed_config_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(p) in str(err.value) and f"field {field}" in str(err.value)


def test_unknown_algorithm_lists_accepted(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("agent: {algorithm: dqn}\n")
    with pytest.raises(ConfigError, match=r"field agent.algorithm: 'dqn' not accepted; accepted: one of ppo"):
        load_config(p)


def test_invalid_yaml_and_cli_error(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("agent: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    res = runner.invoke(app, ["train", "--config", str(p), "--results-dir", str(tmp_path / "r")])
    assert res.exit_code == 2 and "broken.yaml" in res.output
    assert not (tmp_path / "r").exists()


def test_set_overrides_any_field() -> None:
    cfg = load_config(CONFIG_DIR / "ppo_diurnal.yaml", ["agent.learning_rate=1e-4", "agent.net_arch=[8, 8]"])
    assert cfg.agent.learning_rate == 1e-4 and cfg.agent.net_arch == [8, 8]
    with pytest.raises(ConfigError, match=r"field agent\.nope"):
        load_config(CONFIG_DIR / "ppo_diurnal.yaml", ["agent.nope=1"])


# -- train / export / evaluate through the CLI --------------------------------------------------

def test_train_export_evaluate_cli(tmp_path: Path) -> None:
    run_id = _cli_train("ppo_diurnal.yaml", tmp_path, 64)
    res = runner.invoke(app, ["export", run_id, "--results-dir", str(tmp_path), "--out", str(tmp_path / "bundle")])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["host_profile"] == "xeon-kvm" and manifest["obs_normalisation"] is not None
    res = runner.invoke(app, ["evaluate", str(tmp_path / "bundle"), "--seeds", "5"])
    assert res.exit_code == 0, res.output
    assert "p99 us" in res.stdout and "mean" in res.stdout and "warning" not in res.stderr
    # seeds 0..3 seeded the 4 training envs: evaluating on them is flagged
    res = runner.invoke(app, ["evaluate", str(tmp_path / "bundle"), "--seeds", "2-5", "--json"])
    assert res.exit_code == 0, res.output
    assert "seeds 2, 3 also seeded this policy's training envs" in res.stderr
    assert json.loads(res.stdout)["seeds_not_held_out"] == [2, 3]
    res = runner.invoke(app, ["runs", "list", "--results-dir", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    (listed,) = json.loads(res.stdout)
    assert listed["run_id"] == run_id and listed["state"] == "finished" and listed["method"] == "ppo"
    assert listed["key_metrics"]["J"] is not None
    res = runner.invoke(app, ["runs", "compare", "--results-dir", str(tmp_path)])
    assert res.exit_code == 2 and "at least two runs; 1 found" in res.stderr
    # a run of another experiment after an export (which sets MLflow's active experiment), as the main job does
    import mlflow

    from vvho.tracking import tracked_run

    with tracked_run("vvho-mission", "summary", {"scenario": "diurnal-noisy-v1", "seed": 0}, results_dir=tmp_path):
        mlflow.log_metric("x", 1.0)
    res = runner.invoke(app, ["runs", "compare", "--results-dir", str(tmp_path), "--json"])
    assert res.exit_code == 0 and len(json.loads(res.stdout)["runs"]) == 2, res.output
    # a full-host policy on the testbed, whose backend cannot set most of its knobs: a clear refusal
    res = runner.invoke(app, ["evaluate", str(tmp_path / "bundle"), "--scenario", "testbed-echo-v0"])
    assert res.exit_code == 2 and "cannot be set on host profile 'tcg-testbed'" in res.output

    client = mlflow.MlflowClient(Paths.at(tmp_path).tracking_uri)
    run = client.get_run(run_id)
    assert run.info.run_name.startswith("ppo.s0.") and run.info.run_name.endswith(".diurnal-noisy-v1")
    assert run.data.tags["run_state"] == "finished" and run.info.status == "FINISHED"
    assert "git_commit" in run.data.tags and "version.stable-baselines3" in run.data.tags
    for key in ("objective/J", "latency/p50_us", "latency/p99_us", "latency/p999_us", "slo/violation_frac",
                "cpu/vm_cores", "budget/train_steps"):
        assert key in run.data.metrics, key
    arts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "model", "plots", "bundle"} <= arts
    # artifacts beside the database, none in the working directory
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())
    assert not (Path.cwd() / "mlruns").exists()
    # the bundle is also an MLflow model that runs the ONNX graph
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [m.name for m in models] == ["policy"] and models[0].source_run_id == run_id
    pyfunc = mlflow.pyfunc.load_model(models[0].model_uri)
    obs = np.zeros((3, manifest["obs_size"]), dtype=np.float32)
    np.testing.assert_allclose(pyfunc.predict(obs), PolicyBundle(tmp_path / "bundle").act(obs), atol=1e-6)


def test_bundle_rejects_tampering_and_wrong_knobs(tmp_path: Path) -> None:
    from agents.evaluate import evaluate_bundle

    run_id = _cli_train("ppo_testbed.yaml", tmp_path, 64)
    res = runner.invoke(app, ["export", run_id, "--results-dir", str(tmp_path), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    b = PolicyBundle(tmp_path / "b")
    assert b.manifest["host_profile"] == "tcg-testbed"
    # a testbed policy acts only on the testbed's knobs; a host acting on others is refused
    assert set(b.knob_names) < {"vcpu_pinning", "vcpu_quota", "vcpu_period", "emulator_quota", "global_quota",
                                "cpu_shares", "emulator_placement", "rx_usecs", "busy_poll_us", "halt_poll_ns",
                                "guest_haltpoll", "vcpu_sched_policy", "sched_slice_us", "ple_window",
                                "idle_state"}
    with pytest.raises(BundleError, match="acts on knobs"):
        b.check_knobs(tuple(reversed(b.knob_names)))
    assert len(evaluate_bundle(b, None, [1])) == 1
    graph = tmp_path / "b" / "policy.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="sha256"):
        PolicyBundle(tmp_path / "b")
    res = runner.invoke(app, ["evaluate", str(tmp_path / "b")])
    assert res.exit_code == 2 and "sha256" in res.output


def _train_subprocess(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vvho.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for_checkpoint(root: Path, newer_than: int = -1, timeout: float = 180) -> None:
    from agents.checkpoint import CheckpointError, latest_checkpoint

    deadline = time.time() + timeout
    while time.time() < deadline:
        for pointer in root.glob("*/LATEST"):
            try:
                if latest_checkpoint(pointer.parent).num_timesteps > newer_than:
                    return
            except CheckpointError:
                pass
        time.sleep(0.2)
    raise AssertionError("no new checkpoint written")


def test_interrupt_kill_and_resume(tmp_path: Path) -> None:
    """Real training subprocesses: Ctrl-C (SIGINT) stops at the next step, marks the run interrupted and
    prints how to resume; a
    resume killed with SIGKILL is found and shown as killed; a resume then finishes it in the same run
    with the step count and VecNormalize statistics carried on; resuming the finished run trains and
    logs nothing."""
    import mlflow

    from agents.checkpoint import latest_checkpoint
    from agents.train import load_trained
    from vvho.experiments import run_config
    from vvho.tracking import Store

    total = 1536
    sets = _tiny("ppo_diurnal.yaml", tmp_path, total, ["train.checkpoint_every=128", "train.eval_every=100000"])
    args = ["train", "--config", "ppo_diurnal", "--results-dir", str(tmp_path)]
    for s in sets:
        args += ["--set", s]
    ckroot = tmp_path / "checkpoints"
    proc = _train_subprocess(args)
    _wait_for_checkpoint(ckroot)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    root = next(ckroot.glob("*/LATEST")).parent
    run_id = root.name
    assert f"vvho train --resume {run_id} --results-dir {tmp_path}" in " ".join(out.split()), out
    assert "Traceback" not in out and "stopping training at the next step" in out
    store = Store(Paths.at(tmp_path))
    assert store.get(run_id).state == "interrupted"
    first = latest_checkpoint(root)
    assert 0 < first.num_timesteps < total

    proc = _train_subprocess(["train", "--resume", run_id[:8], "--results-dir", str(tmp_path), "--no-progress"])
    _wait_for_checkpoint(ckroot, first.num_timesteps)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = latest_checkpoint(root)
    assert before.num_timesteps < total
    res = runner.invoke(app, ["runs", "show", run_id[:8], "--results-dir", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["state"] == "killed"  # not left 'running' by the dead process
    cfg = run_config(store, run_id)
    _, vn_before = load_trained(cfg, root)
    assert vn_before is not None
    count_before = vn_before.obs_rms.count

    res = runner.invoke(app, ["train", "--resume", run_id, "--results-dir", str(tmp_path), "--no-progress"])
    assert res.exit_code == 0, res.output
    after = latest_checkpoint(root)
    assert after.num_timesteps >= total
    model, vn_after = load_trained(cfg, root)
    assert model.num_timesteps == after.num_timesteps
    assert vn_after is not None
    # statistics continued from the checkpoint rather than starting again
    assert vn_after.obs_rms.count == pytest.approx(count_before + (after.num_timesteps - before.num_timesteps),
                                                   rel=0.05)
    client = mlflow.MlflowClient(store.uri)
    run = client.get_run(run_id)
    assert run.data.tags["run_state"] == "finished" and run.info.status == "FINISHED"
    assert run.data.tags["resumed_from_step"] == str(before.num_timesteps)
    sps = client.get_metric_history(run_id, "SPS")
    assert len(sps) == 1 and sps[0].value > 0  # one training session reached the end

    res = runner.invoke(app, ["train", "--resume", run_id, "--results-dir", str(tmp_path), "--no-progress"])
    assert res.exit_code == 0 and "already finished" in res.output, res.output
    assert client.get_metric_history(run_id, "SPS") == sps  # nothing logged: no SPS=0, no wall 0


def test_resume_unknown_run_is_a_clear_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", "--resume", "0" * 32, "--results-dir", str(tmp_path)])
    assert res.exit_code == 2 and "no tracking store" in res.output
    assert not (tmp_path / "mlflow.db").exists()


# -- ONNX parity --------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg_file", ["ppo_diurnal.yaml", "a2c_diurnal.yaml", "sac_diurnal.yaml",
                                      "td3_diurnal.yaml", "recurrent_ppo_diurnal.yaml"])
def test_onnx_parity(tmp_path: Path, cfg_file: str) -> None:
    """Bundle actions equal model.predict(deterministic=True) over 50 steps of real env observations,
    the recurrent state carried across steps (max abs diff <= 1e-5)."""
    from agents.export import export_bundle
    from agents.train import load_trained
    from vvho.experiments import train_run
    from vvho_env.env import VVHOEnv

    cfg = load_config(CONFIG_DIR / cfg_file, _tiny(cfg_file, tmp_path, 64))
    paths = Paths.at(tmp_path)
    run_id = train_run(cfg, paths).run_id
    model, vecnorm = load_trained(cfg, paths.checkpoints / run_id)
    assert vecnorm is not None
    bundle = PolicyBundle(export_bundle(model, vecnorm, cfg, tmp_path / "bundle"))
    bundle.reset()
    env = VVHOEnv(cfg.env.scenario, history=cfg.env.history)
    obs, _ = env.reset(seed=3)
    state = None
    start = np.ones(1, dtype=bool)
    worst = 0.0
    for _ in range(50):
        expected, state = model.predict(vecnorm.normalize_obs(obs[None]), state=state, episode_start=start,
                                        deterministic=True)
        start[:] = False
        got = bundle.act(obs)
        worst = max(worst, float(np.max(np.abs(got - expected[0]))))
        obs, _, _, _, _ = env.step(expected[0])
    env.close()
    assert worst <= 1e-5
