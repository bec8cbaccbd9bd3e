"""`vvho baseline` on the live testbed for the five methods a live host supports (no oracle), with a tiny
budget of 1-s windows. The module-scoped testbed fixture FAILS in CI (CI=true) when the testbed cannot
start and skips locally without root or libvirt, as in test_live_backend.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DOMAIN, URI, unavailable  # the shared live testbed fixture
from typer.testing import CliRunner

pytestmark = pytest.mark.live

@pytest.fixture(scope="module")
def testbed() -> Iterator[dict[str, object]]:
    if os.geteuid() != 0:
        unavailable("needs root to start libvirtd and set host scheduling (run as root or in CI)")
    try:
        import libvirt  # noqa: F401
    except ImportError:
        unavailable("libvirt-python missing: scripts/install-testbed-deps.sh .venv")
    from vvho_env.live import testbed as tb

    try:
        st = tb.status(URI, DOMAIN) if tb.libvirt_socket_alive() else {}
        if not (st.get("active") and st.get("service_answers")):
            tb.up(URI, DOMAIN)
    except Exception as exc:
        unavailable(f"could not start the testbed: {exc}")
    yield tb.status(URI, DOMAIN)


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
