"""A non-editable install works: the wheel built from the tracked files carries the shipped configs,
the scenario catalogue and the MLflow policy model, and the CLI runs from it outside the repository."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in tracked.splitlines():
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", ".", "-w",
                    str(tmp_path / "dist")], cwd=src, check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("vvho-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(site)
    assert {"vvho/configs/ppo_diurnal.yaml", "vvho/configs/schema.json", "vvho_env/scenarios.yaml",
            "vvho_env/sim/calibration_points.yaml",
            "vvho/policy_model.py"} <= names
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "80"}
    probe = ("import vvho, vvho_env, agents, baselines\n"
             "print(vvho.__file__, vvho_env.__file__, agents.__file__, baselines.__file__)\n"
             "from vvho.config import load_config\nprint(load_config('ppo_diurnal').algorithm)\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    files, algorithm = out.stdout.split("\n")[:2]
    assert all(f.startswith(str(site)) for f in files.split()), files  # not the checkout
    assert algorithm == "ppo"
    for args in (["configs", "--json"], ["scenarios", "--json"]):
        res = subprocess.run([sys.executable, "-m", "vvho.cli", *args], cwd=work, env=env, capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)
    assert not (work / "results").exists() and not (work / "mlruns").exists()
