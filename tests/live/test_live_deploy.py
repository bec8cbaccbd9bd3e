"""`vvho deploy` against the real testbed: refusals, dry-run and shadow, guards, rollback, signals, metrics.

Bundles here are static-setting bundles (agents/static_bundle.py: a fixed setting as an ONNX graph + a
manifest, which the host agent runs like any policy) so that each test knows what the policy will ask
for; the deployment of a trained policy is test_live_deploy_policy.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import DOMAIN, URI, read_back, wait_until
from typer.testing import CliRunner

pytestmark = pytest.mark.live

STARVING = {"vcpu_quota": 2000, "vcpu_period": 100000}  # 2% of a CPU: requests queue behind throttling


def _bundle(tmp: Path, name: str, settings: dict[str, Any]) -> Path:
    from agents.static_bundle import static_bundle

    return static_bundle(tmp / name, settings, "testbed-echo-v0")


def _deploy(*args: str) -> Any:
    from vvho.cli import app

    return CliRunner().invoke(app, ["deploy", "--connect", URI, "--domain", DOMAIN, "--metrics-port", "0", *args])


def _records(log: Path, event: str = "decision") -> list[dict[str, Any]]:
    from agents.deploy.audit import read_log

    return [r for r in read_log(log) if r["event"] == event]


@pytest.fixture
def original(testbed: dict[str, object]) -> dict[str, Any]:
    return read_back(port=int(testbed["port"]))  # type: ignore[call-overload]


def test_bad_bundles_and_limits_are_refused_with_one_line_errors(testbed, original, tmp_path) -> None:  # type: ignore[no-untyped-def]
    tampered = _bundle(tmp_path, "tampered", {"vcpu_quota": 50000})
    graph = tampered / "policy.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    other = _bundle(tmp_path, "other", {"halt_poll_ns": 50000, "vcpu_quota": 50000})
    good = _bundle(tmp_path, "good", {"vcpu_quota": 50000})
    limits = tmp_path / "limits.yaml"
    limits.write_text("knobs:\n  vcpu_quota: {low: 100, high: 200000}\n")
    cases = [
        (["--bundle", str(tampered)], r"policy\.onnx: sha256 [0-9a-f]{64} does not match the manifest's"),
        (["--bundle", str(other)], r"this host cannot set halt_poll_ns \(halt_poll_ns: the domain runs under "
                                   r"'qemu', not KVM: no halt-polling\)"),
        (["--bundle", str(good), "--limits", str(limits)], r"limits\.yaml: field knobs\.vcpu_quota\.low: knob "
                                                            r"'vcpu_quota': 100 is out of range; accepted"),
    ]
    import re

    for args, pattern in cases:
        r = _deploy(*args, "--mode", "active", "--intervals", "1", "--log", str(tmp_path / "x.jsonl"))
        assert r.exit_code == 2, r.output
        error = [line for line in r.output.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and re.search(pattern, error[0]), r.output
    assert read_back(port=int(testbed["port"])) == original


def test_dry_run_and_shadow_change_nothing(testbed, original, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vvho_env.live.snapshot import SnapshotStore

    port = int(testbed["port"])
    b = _bundle(tmp_path, "starving", STARVING)
    for extra in (["--mode", "shadow"], ["--mode", "active", "--dry-run"]):
        log = tmp_path / f"{extra[1]}.jsonl"
        r = _deploy("--bundle", str(b), *extra, "--intervals", "3", "--log", str(log))
        assert r.exit_code == 0, r.output
        assert read_back(port=port) == original, "read back through libvirt: nothing changed"
        assert not SnapshotStore().path(URI, DOMAIN).exists(), "nothing changed, so nothing was persisted"
        ds = _records(log)
        assert len(ds) == 3 and all(d["applied"] is None for d in ds)
        assert all(d["target"] and d["target"]["vcpu_quota"] != -1 for d in ds), "it did propose a change"
        if "--dry-run" in extra:
            assert r.output.count("would apply: vcpu_quota -1 -> ") == 3, r.output  # max_step: not 2000 at once


def _verdicts(d: dict[str, Any]) -> list[tuple[str, str]]:
    return [(v["guard"], v["verdict"]) for v in d["guards"]]


def test_guards_block_and_log_and_a_regression_rolls_back(testbed, original, tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = int(testbed["port"])
    # 1. bounds and step size: the policy asks for a starving quota and the largest weight (the rollback
    # margins are out of reach here: one window's p99 on this shared host varies more than the default 25%)
    limits = tmp_path / "guards.yaml"
    limits.write_text("knobs:\n  vcpu_quota: {low: 50000, allow: [-1]}\n  cpu_shares: {max_step: 0.2}\n"
                      "max_step: 2.0\nmin_interval_s: 3600\n"
                      "rollback: {windows: 1, objective_margin: 10, p99_margin: 100}\n")
    b = _bundle(tmp_path, "greedy", {"vcpu_quota": 2000, "cpu_shares": 262144})
    log = tmp_path / "guards.jsonl"
    r = _deploy("--bundle", str(b), "--mode", "active", "--limits", str(limits), "--intervals", "4", "--log", str(log))
    assert r.exit_code == 0, r.output
    first, second, third, fourth = _records(log)
    assert ("bounds", "clamp") in _verdicts(first) and ("max_step", "clamp") in _verdicts(first)
    assert "vcpu_quota 2000 -> 50000" in json.dumps(first["guards"])
    assert first["applied"]["vcpu_quota"] == 50000 and 1024 < first["applied"]["cpu_shares"] < 262144
    assert ("regression", "hold") in _verdicts(second) or ("regression", "pass") in _verdicts(second)
    assert _verdicts(fourth)[-1] == ("rate", "hold") and third["applied"] is None and fourth["applied"] is None
    assert read_back(port=port) == original, "the settings found at start are back after the run"

    # 2. the kill switch: nothing is applied while it exists
    switch = tmp_path / "disable"
    switch.touch()
    limits.write_text(f"kill_switch: {switch}\n")
    log = tmp_path / "kill.jsonl"
    r = _deploy("--bundle", str(b), "--mode", "active", "--limits", str(limits), "--intervals", "2", "--log", str(log))
    assert r.exit_code == 0, r.output
    assert all(d["guards"][0]["guard"] == "kill_switch" and d["applied"] is None for d in _records(log))

    # 3. an induced regression: the policy asks for a starving quota, the guard puts the last good settings back
    limits.write_text("knobs:\n  vcpu_quota: {low: 1000, allow: [-1]}\nmax_step: 2.0\nmin_interval_s: 0\n"
                      "rollback: {windows: 2, objective_margin: 0.25, p99_margin: 0.25, cooldown_s: 600}\n")
    starving = _bundle(tmp_path, "starving", STARVING)
    log = tmp_path / "rollback.jsonl"
    r = _deploy("--bundle", str(starving), "--mode", "active", "--limits", str(limits), "--intervals", "6",
                "--log", str(log))
    assert r.exit_code == 0, r.output
    ds = _records(log)
    applied = [d for d in ds if d["applied"]]
    assert applied[0]["applied"]["vcpu_quota"] == 2000 and not applied[0]["rollback"]
    back = applied[1]
    assert back["rollback"] and back["applied"]["vcpu_quota"] == -1, "read back after the rollback: unlimited"
    assert ("regression", "rollback") in _verdicts(back)
    after = ds[ds.index(back) + 1:]
    assert after and all(("cooldown", "hold") in _verdicts(d) for d in after)
    assert read_back(port=port) == original


def _agent_process(bundle: Path, log: Path, metrics_port: int) -> subprocess.Popen[str]:
    """`vvho deploy` in a process of its own, which reports at exit which heavy modules it had loaded."""
    code = (
        "import json, sys\n"
        "from vvho.cli import app\n"
        "try:\n"
        f"    app(['deploy', '--bundle', {str(bundle)!r}, '--connect', {URI!r}, '--domain', {DOMAIN!r},\n"
        f"         '--mode', 'active', '--log', {str(log)!r}, '--metrics-port', '{metrics_port}'],\n"
        "        standalone_mode=False)\n"
        "finally:\n"
        "    print('MODULES', json.dumps({m: m in sys.modules for m in ('torch', 'stable_baselines3', 'numba')}),\n"
        "          flush=True)\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_applied(log: Path, proc: subprocess.Popen[str]) -> dict[str, Any]:
    def applied() -> bool:
        return log.exists() and any(d["applied"] for d in _records(log))

    assert wait_until(applied, 60, 0.5) is not None, proc.poll()
    return next(d for d in _records(log) if d["applied"])


def _listening(port: int) -> list[str]:
    """Local addresses of the sockets listening on `port` (IPv4 and IPv6), from /proc/net."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.rsplit(":", 1)
            if int(p, 16) == port and state == "0A":
                out.append(addr)
    return out


def test_sigterm_restores_and_the_metrics_are_loopback_only(testbed, original, tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = int(testbed["port"])
    b = _bundle(tmp_path, "mild", {"vcpu_quota": 300000, "cpu_shares": 2048})
    log = tmp_path / "term.jsonl"
    proc = _agent_process(b, log, 19477)
    try:
        applied = _wait_applied(log, proc)
        assert read_back(port=port)["cpu_shares"] == str(applied["applied"]["cpu_shares"]) == "2048"
        assert _listening(19477) == ["0100007F"], "bound to 127.0.0.1 only"
        text = urllib.request.urlopen("http://127.0.0.1:19477/metrics", timeout=5).read().decode()
        assert 'vvho_actions_total{outcome="applied"} 1.0' in text and "vvho_decision_seconds_bucket" in text
        assert 'vvho_latency_us{quantile="0.99"}' in text
        with pytest.raises(urllib.error.HTTPError, match="405"):
            urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:19477/metrics", data=b"x",
                                                          method="POST"), timeout=5)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "SIGTERM; restored the settings found at start" in out
    modules = json.loads(out.split("MODULES", 1)[1].strip().splitlines()[0])
    assert modules == {"torch": False, "stable_baselines3": False, "numba": False}, modules
    assert _records(log, "stop")[-1]["reason"] == "SIGTERM"
    assert read_back(port=port) == original


def test_host_restore_after_sigkill_of_the_agent(testbed, original, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vvho.cli import app

    port = int(testbed["port"])
    b = _bundle(tmp_path, "mild", {"vcpu_quota": 300000, "cpu_shares": 2048})
    proc = _agent_process(b, tmp_path / "kill.jsonl", 0)
    try:
        _wait_applied(tmp_path / "kill.jsonl", proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert read_back(port=port) != original, "a killed agent restores nothing by itself"
    time.sleep(0.5)
    r = CliRunner().invoke(app, ["host", "restore", "--connect", URI, "--domain", DOMAIN])
    assert r.exit_code == 0, r.output
    assert read_back(port=port) == original


def test_a_passive_latency_source_replaces_the_probe(testbed, original, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The guest service's own Prometheus histogram as the latency source, under traffic the agent does not
    send (a client thread stands for production traffic); the same guards hold a DEGRADED window."""
    import threading

    from vvho_env.live.probe import run_probe
    from vvho_env.live.testbed import TestbedState

    state = TestbedState.load(DOMAIN)
    assert state is not None
    stop = threading.Event()
    sent = {"n": 0}

    def traffic() -> None:
        while not stop.is_set():
            sent["n"] += run_probe("127.0.0.1", state.port, 150, 1.0, service_us=400).guest.completed

    client = threading.Thread(target=traffic, daemon=True)
    client.start()
    try:
        b = _bundle(tmp_path, "mild", {"vcpu_quota": 300000})
        log = tmp_path / "passive.jsonl"
        r = _deploy("--bundle", str(b), "--mode", "shadow", "--intervals", "4", "--log", str(log),
                    "--latency-url", state.metrics_url)
        assert r.exit_code == 0, r.output
    finally:
        stop.set()
        client.join()
    ds = _records(log)
    assert len(ds) == 4 and all(d["window"] is not None for d in ds), ds
    counts = [d["window"]["requests"] for d in ds]
    assert all(100 <= n <= 200 for n in counts), f"the client sends 150/s; the histogram counted {counts}"
    assert all(any("passive source" in n for n in d["window"]["notes"]) for d in ds)
    assert all(0 < d["window"]["p99_us"] < 1e6 for d in ds)
    assert read_back(port=int(testbed["port"])) == original
