"""The command line with bad input of every kind: exit code 2, one line per problem naming the file,
field or option and what is accepted, never a traceback, nothing created as a side effect, and the
error found before torch or MLflow load. Property-based where the input space is large."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_config_fuzz import LEAVES, _document, bad_values
from typer.testing import CliRunner

from vvho.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
CLI = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])


def _refused(args: list[str], *expect: str) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (args, res.output)
    assert "Traceback" not in res.output and res.stdout == "", res.output
    lines = res.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), res.stderr
    for e in expect:
        assert e in res.stderr, res.stderr
    return res.stderr


@CLI
@given(data=st.data())
def test_train_refuses_every_bad_config_in_one_line_per_field(tmp_path: Path, data: st.DataObject) -> None:
    leaf = data.draw(st.sampled_from(LEAVES))
    value = data.draw(bad_values(leaf))
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(_document(leaf, value)))
    results = tmp_path / "results"
    err = _refused(["train", "--config", str(cfg), "--results-dir", str(results)], str(cfg),
                   f"field {'.'.join(leaf.path)}", "accepted")
    assert not results.exists(), err


@CLI
@given(data=st.data())
def test_train_refuses_every_bad_set(tmp_path: Path, data: st.DataObject) -> None:
    leaf = data.draw(st.sampled_from([lf for lf in LEAVES if lf.algorithm in (None, "ppo")]))
    value = data.draw(bad_values(leaf))
    text = json.dumps(value, allow_nan=True).replace("NaN", ".nan").replace("-Infinity", "-.inf") \
        .replace("Infinity", ".inf")
    key = ".".join(leaf.path)
    _refused(["train", "--config", "ppo_diurnal", "--set", f"{key}={text}", "--results-dir", str(tmp_path / "r")],
             f"--set {key}=", f"field {key}", "accepted")


@CLI
@given(seeds=st.text(alphabet=st.sampled_from("0123456789-, x"), max_size=14))
def test_evaluate_of_a_missing_path_or_bad_seeds(tmp_path: Path, seeds: str) -> None:
    results = tmp_path / "results"
    err = _refused(["evaluate", str(tmp_path / "no" / "bundle"), "--seeds", seeds, "--results-dir", str(results)])
    assert ("--seeds" in err and "accepted" in err) or "no such file or directory" in err, err
    assert not results.exists()


@CLI
@given(run_id=st.text(alphabet=st.sampled_from("0123456789abcdef"), min_size=1, max_size=32))
def test_run_ids_that_do_not_exist(tmp_path: Path, run_id: str) -> None:
    results = tmp_path / "results"
    for args in (["runs", "show", run_id], ["export", run_id], ["train", "--resume", run_id],
                 ["evaluate", run_id]):
        _refused([*args, "--results-dir", str(results)], "accepted")
    assert not results.exists()  # no database created by looking


@CLI
@given(tag=st.text(max_size=12).filter(lambda s: "=" not in s or s.startswith("=") or s.split("=")[0].strip()
                                       in ("scenario", "method", "seed", "run_state", "")))
def test_bad_tags(tmp_path: Path, tag: str) -> None:
    _refused(["train", "--config", "ppo_diurnal", "--tag", tag, "--results-dir", str(tmp_path)], "--tag")


@pytest.mark.parametrize(("args", "expect"), [
    (["train"], "--config"),
    (["train", "--config", "ppo_diurnal", "--resume", "abcd"], "--resume"),
    (["train", "--config", "nope"], "no such file"),
    (["train", "--config", "ppo_diurna"], "did you mean 'ppo_diurnal'"),
    (["train", "--config", "ppo_diurnal", "--tracking-uri", "ftp://x"], "field tracking.uri"),
    (["train", "--config", "ppo_diurnal", "--set", "train.n_envs=4000", "--set", "train.vec_env=subproc"],
     "field train.n_envs"),
    (["train", "--config", "ppo_diurnal", "--set", "nonsense"], "section.field=value"),
    (["train", "--config", "ppo_diurnal", "--set", "agent.algorithm=sac", "--set", "agent.clip_range=0.1"],
     "does not apply to sac"),
    (["run", "--tracking-uri", "ftp://x"], "--tracking-uri"),
    (["run", "--steps", "abc"], "--steps"),
    (["run", "--seed", "-1"], "--seed"),
    (["runs", "list", "--limit", "0"], "--limit"),
    (["runs", "compare"], "no tracking store"),
    (["evaluate", "x", "--seeds", "5-1"], "--seeds"),
    (["evaluate", "x", "--scenario", "diurnal-noisy-v9"], "did you mean 'diurnal-noisy-v1'"),
    (["scenarios", "--nope"], "--nope"),
])
def test_bad_options(tmp_path: Path, args: list[str], expect: str) -> None:
    _refused([*args, "--results-dir", str(tmp_path / "r")] if args[0] != "scenarios" else args, expect)
    assert not (tmp_path / "r" / "mlflow.db").exists()


def _fake_bundle(path: Path, graph: bytes) -> Path:
    path.mkdir(parents=True)
    (path / "policy.onnx").write_bytes(graph)
    manifest = {"format_version": 1, "graph": "policy.onnx", "graph_sha256": hashlib.sha256(graph).hexdigest(),
                "knob_names": ["vcpu_quota"], "action_low": [-1], "action_high": [1], "obs_size": 45,
                "action_mode": "absolute", "history": 4, "scenario": "diurnal-noisy-v1", "host_profile": "xeon-kvm"}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_a_bundle_whose_graph_is_not_onnx(tmp_path: Path) -> None:
    bundle = _fake_bundle(tmp_path / "b", b"this is not a protobuf")
    _refused(["evaluate", str(bundle), "--results-dir", str(tmp_path / "r")], "not a loadable ONNX graph")
    _refused(["evaluate", str(bundle / "policy.onnx")], "not a loadable ONNX graph")
    (bundle / "manifest.json").write_text("{not json")
    _refused(["evaluate", str(bundle)], "not valid JSON")
    _refused(["evaluate", str(tmp_path)], "manifest")
    assert not (tmp_path / "r").exists()


def test_config_errors_come_before_torch_and_mlflow_load(tmp_path: Path) -> None:
    """In a fresh interpreter: a config typo is reported without importing torch, SB3 or MLflow."""
    bad = tmp_path / "typo.yaml"
    bad.write_text("agent: {learning_rat: 0.1}\n")
    code = ("import sys\nimport typer\nfrom vvho.cli import app\n"
            f"code = typer.main.get_command(app).main(['train', '--config', {str(bad)!r}], standalone_mode=False)\n"
            "heavy = sorted(m for m in ('torch', 'stable_baselines3', 'mlflow') if m in sys.modules)\n"
            "print('RESULT', code, heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "RESULT 2 []" in out.stdout, out.stdout + out.stderr
    assert "field agent.learning_rat: unknown field (did you mean 'learning_rate'?)" in out.stderr


def test_every_command_with_json_prints_json_only(tmp_path: Path) -> None:
    for args in (["scenarios"], ["knobs"], ["configs"], ["runs", "list", "--results-dir", str(tmp_path)],
                 ["simulate", "--steps", "2"]):
        res = runner.invoke(app, [*args, "--json"])
        assert res.exit_code == 0, res.output
        json.loads(res.stdout)
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("command", ["scenarios", "knobs", "configs"])
def test_tables_fit_80_columns_without_cutting_values(command: str) -> None:
    res = runner.invoke(app, [command], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.stdout.splitlines()) <= 80
    wide = runner.invoke(app, [command, "--json"]).stdout
    names = [row.get("id") or row.get("name") for row in json.loads(wide)]
    for name in names:  # ids and names are never wrapped or cut
        assert name in res.stdout, name


def test_calibrate_prints_every_point_with_source_and_role_at_80_columns() -> None:
    from vvho_env.sim.calibration import load_points

    res = runner.invoke(app, ["calibrate"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.stdout.splitlines()) <= 80
    rows = json.loads(runner.invoke(app, ["calibrate", "--json"]).stdout)
    points = load_points()
    assert [p["id"] for p in points] == list(dict.fromkeys(r["point"] for r in rows))
    for p in points:
        assert p["id"] in res.stdout
    assert {r["role"].split(":")[0] for r in rows} == {"fit", "check", "fixture"}
    assert all(r["source"] for r in rows)


def test_simulate_fits_80_columns_and_refuses_bad_counts() -> None:
    """Every figure of every step is printed whole at 80 columns (split into tables); a step count or
    seed out of range is one line, not an endless run or a traceback."""
    res = runner.invoke(app, ["simulate", "--steps", "3", "--scenario", "quota-tight-v0"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.stdout.splitlines()) <= 80
    steps = json.loads(runner.invoke(app, ["simulate", "--steps", "3", "--scenario", "quota-tight-v0",
                                           "--json"]).stdout)["steps"]
    for s in steps:
        assert f"{s['requests']:,}" in res.stdout and f"{s['p99_us']:,.1f}" in res.stdout
    for args, expect in ((["--steps", "1e20"], "--steps"), (["--seed", "-1"], "--seed"),
                         (["--knob", "vcpu_quota=abc"], "vcpu_quota")):
        bad = runner.invoke(app, ["simulate", *args])
        assert bad.exit_code == 2 and expect in bad.output and "Traceback" not in bad.output, bad.output


def test_simulate_applies_restart_cost_knobs_at_reset() -> None:
    """`vvho simulate -k` sets knobs from the start, as a guest booted with them: a knob whose change
    costs a guest restart mid-episode (virtio_backend, vcpu_count) costs no outage here. Before, it was
    applied after reset: the first window served nothing and p99 was undefined."""
    out = runner.invoke(app, ["simulate", "--steps", "2", "--scenario", "steady-low-v0", "-k", "virtio_backend=sriov",
                              "-k", "vcpu_count=4", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["settings"] == {"virtio_backend": "sriov", "vcpu_count": 4}
    for s in doc["steps"]:
        assert s["requests"] > 0 and s["p99_us"] is not None and s["p99_us"] < 10_000
