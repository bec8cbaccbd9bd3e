"""`vvho baseline` on the live testbed for the five methods a live host supports (no oracle), with a tiny
budget of 1-s windows. The module-scoped testbed fixture FAILS in CI (CI=true) when the testbed cannot
start and skips locally without root or libvirt, as in test_live_backend.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DOMAIN, URI  # the shared live testbed fixture (testbed) lives there too
from typer.testing import CliRunner

pytestmark = pytest.mark.live


@pytest.mark.parametrize("method", ["static-default", "expert", "random", "gd", "bo"])
def test_vvho_baseline_on_the_live_testbed(testbed: dict[str, object], tmp_path_factory: pytest.TempPathFactory,
                                           method: str) -> None:
    from vvho.cli import app

    tmp: Path = tmp_path_factory.getbasetemp() / "live-baselines"
    r = CliRunner().invoke(app, [
        "baseline", "--method", method, "--scenario", "testbed-echo-v0", "--budget", "3", "--backend", "live",
        "--eval-steps", "2", "--eval-episodes", "1", "--no-tune-hparams", "--uri", URI, "--domain", DOMAIN,
        "--results-dir", str(tmp), "--tracking-uri", f"sqlite:///{tmp}/m.db"])
    assert r.exit_code == 0, r.output
    assert "testbed-echo-v0 on live" in r.output
    assert (tmp / "baselines" / "live-static__testbed-echo-v0.json").exists()
