"""The host agent's parts without a host: limits files, guards, the regression watch, the promotion gate,
the audit log, the metrics endpoint and bundle loading (the live tests run them against the testbed)."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from agents.bundle import BundleError, PolicyBundle
from agents.deploy.audit import AuditLog, read_log
from agents.deploy.gate import gate
from agents.deploy.guards import Guards, RegressionWatch
from agents.deploy.limits import Limits, LimitsError, load_limits
from agents.static_bundle import static_bundle
from vvho_env import knobs
from vvho_env.histogram import LogHistogram
from vvho_env.types import Status, Telemetry

NAMES = ("vcpu_quota", "cpu_shares", "vcpu_pinning")
START = {"vcpu_quota": -1, "cpu_shares": 1024, "vcpu_pinning": "shared"}


def _tel(p99_us: float, status: Status = Status.OK) -> Telemetry:
    h = LogHistogram()
    h.record_many_ns(np.full(200, p99_us * 1000.0))
    return Telemetry(1.0, 200, p99_us, p99_us, p99_us, p99_us, 20000.0, 0, 200.0, 200.0, 0.3, 0.0, 0.0, 0.0, 0.0,
                     0.0, status=status, notes=("injected",) if status is Status.DEGRADED else (),
                     histogram=h.counts.copy())


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _guards(limits: Limits, clock: Clock) -> Guards:
    return Guards(limits, NAMES, START, clock=clock)


def _pos(settings: dict) -> np.ndarray:
    return np.array(knobs.encode({**START, **settings}, NAMES), dtype=np.float32)


# ------------------------------------------------------------------------------------------------ limits
def test_limits_files_are_validated_with_one_line_errors(tmp_path: Path) -> None:
    cases = {
        "knobs: {vcpu_quota: {low: 500}}": r"field knobs\.vcpu_quota\.low: knob 'vcpu_quota': 500 is out of range",
        "knobs: {halt_poll_ns: {low: 1000}}": r"field knobs\.halt_poll_ns: not a knob the bundle acts on",
        "knobs: {vcpu_pinning: {allow: [isolated]}}": r"field knobs\.vcpu_pinning\.allow: 'isolated' is not accepted",
        "knobs: {vcpu_quota: {low: 90000, high: 20000}}": r"field knobs\.vcpu_quota: low 90000 is above high 20000",
        "max_step: 3": r"field max_step: Input should be less than or equal to 2",
        "rollback: {windows: 2, cooldown: 5}": r"field rollback\.cooldown: unknown field",
        "knobs: [1, 2]": r"field knobs: Input should be a valid dictionary",
    }
    for text, pattern in cases.items():
        f = tmp_path / "limits.yaml"
        f.write_text(text)
        with pytest.raises(LimitsError, match=pattern) as info:
            load_limits(f, NAMES)
        assert str(info.value).startswith(f"{f}: ") and "\n" not in str(info.value)
    ok = tmp_path / "ok.yaml"
    ok.write_text("knobs: {vcpu_quota: {low: 20000, high: 400000, allow: [-1]}}\nmin_interval_s: 0\n")
    assert load_limits(ok, NAMES).knobs["vcpu_quota"].allow == [-1]


# ------------------------------------------------------------------------------------------------ guards
def test_bounds_and_max_step_clamp_on_the_knob_scales() -> None:
    clock = Clock()
    lim = Limits.model_validate({"knobs": {"vcpu_quota": {"low": 20000, "high": 200000},
                                           "vcpu_pinning": {"allow": ["shared"]}},
                                 "max_step": 2.0, "min_interval_s": 0})
    g = _guards(lim, clock)
    here = _pos({})
    d = g.decide(_tel(5000), 0.5, dict(START), here, _pos({"vcpu_quota": 1000, "vcpu_pinning": "dedicated"}))
    assert d.target == {"vcpu_quota": 20000, "cpu_shares": 1024, "vcpu_pinning": "shared"}
    assert [(v.guard, v.verdict) for v in d.verdicts][:2] == [("bounds", "clamp"), ("max_step", "pass")]
    d = g.decide(_tel(5000), 0.5, dict(START), here, _pos({"vcpu_quota": -1}))
    assert d.target is not None and d.target["vcpu_quota"] == 200000, \
        "unlimited is not allowed once a limit names the knob without allow: [-1]: the nearest bound is"
    small = Limits.model_validate({"max_step": 0.1, "min_interval_s": 0})
    g = _guards(small, clock)
    d = g.decide(_tel(5000), 0.5, dict(START), here, _pos({"cpu_shares": 262144}))
    assert d.position is not None and abs(float(d.position[1] - here[1]) - 0.1) < 1e-6
    assert any(v.guard == "max_step" and v.verdict == "clamp" for v in d.verdicts)


def test_rate_limit_degraded_windows_and_the_kill_switch_hold(tmp_path: Path) -> None:
    clock = Clock()
    switch = tmp_path / "disable"
    lim = Limits.model_validate({"max_step": 2.0, "min_interval_s": 30, "kill_switch": str(switch),
                                 "rollback": {"windows": 1}})
    g = _guards(lim, clock)
    want = _pos({"cpu_shares": 4096})
    d = g.decide(_tel(5000, Status.DEGRADED), 0.5, dict(START), _pos({}), want)
    assert d.target is None and d.verdicts[-1].guard == "telemetry" and "injected" in d.verdicts[-1].detail
    d = g.decide(_tel(5000), 0.5, dict(START), _pos({}), want)
    assert d.target is not None
    g.applied(False)
    now = {**START, "cpu_shares": 4096}
    clock.t = 10
    d = g.decide(_tel(5000), 0.5, now, _pos(now), _pos({"cpu_shares": 8192}))  # judges the change: accepted
    assert ("regression", "pass") in [(v.guard, v.verdict) for v in d.verdicts]
    assert d.target is None and d.verdicts[-1].guard == "rate", "10 s after a change, minimum 30 s"
    switch.touch()
    d = g.decide(_tel(5000), 0.5, now, _pos(now), _pos({"cpu_shares": 8192}))
    assert d.verdicts[0].guard == "kill_switch" and d.target == START, "back to the settings found at start"


def test_a_regression_rolls_back_to_the_last_good_settings_and_cools_down() -> None:
    clock = Clock()
    lim = Limits.model_validate({"max_step": 2.0, "min_interval_s": 0,
                                 "rollback": {"windows": 2, "objective_margin": 0.25, "cooldown_s": 60}})
    g = _guards(lim, clock)
    for _ in range(2):  # windows of the good settings
        g.decide(_tel(5000), 0.4, dict(START), _pos({}), _pos({}))
    d = g.decide(_tel(5000), 0.4, dict(START), _pos({}), _pos({"vcpu_quota": 2000}))
    assert d.target is not None and d.target["vcpu_quota"] == 2000
    g.applied(False)
    bad = {**START, "vcpu_quota": 2000}
    d = g.decide(_tel(90000), 3.0, bad, _pos(bad), _pos(bad))
    assert d.target is None and d.verdicts[-1].verdict == "hold", "judging: 1 of 2 windows"
    d = g.decide(_tel(95000), 3.1, bad, _pos(bad), _pos(bad))
    assert d.rollback and d.target == START and d.verdicts[0].verdict == "rollback"
    assert "objective 3.050 vs 0.400" in d.verdicts[0].detail
    g.applied(True)
    clock.t = 30
    d = g.decide(_tel(5000), 0.4, dict(START), _pos({}), _pos({"vcpu_quota": 2000}))
    assert d.target is None and d.verdicts[-1].guard == "cooldown"
    clock.t = 61
    assert g.decide(_tel(5000), 0.4, dict(START), _pos({}), _pos({"vcpu_quota": 2000})).target is not None


# ------------------------------------------------------------------------------------------------ gate
def _decision(mode: str, j: float, p99_us: float, applied: dict | None = None, rollback: bool = False) -> dict:
    h = LogHistogram()
    h.record_many_ns(np.full(100, p99_us * 1000.0))
    hist = {int(b): int(h.counts[b]) for b in np.flatnonzero(h.counts)}
    return {"event": "decision", "mode": mode, "objective": j, "applied": applied, "rollback": rollback,
            "window": {"p99_us": p99_us, "requests": 100, "status": "ok", "histogram": hist}}


def test_the_regression_watch_judges_against_the_good_windows_it_holds_now() -> None:
    """Its figures of the good windows are kept between judgements: they must follow those windows, even
    when the same telemetry object comes back with another objective."""
    w, tel = RegressionWatch(2, 0.1, 10.0), _tel(5000)
    w.window(1.0, tel)
    w.window(1.0, tel)
    w.changed()
    w.window(1.05, tel)
    assert (w.window(1.05, tel) or "").startswith("accept: objective 1.050 vs 1.000")
    w.changed()
    w.window(2.0, tel)
    assert (w.window(2.0, tel) or "").startswith("rollback: objective 2.000 vs 1.050")
    w.window(0.5, tel)  # not on probation: the good windows slide to 1.05, 0.5
    w.changed()
    w.window(0.8, tel)
    assert (w.window(0.8, tel) or "").startswith("accept: objective 0.800 vs 0.775")


def test_the_gate_promotes_only_a_clear_measured_improvement() -> None:
    rng = np.random.default_rng(1)
    shadow = [_decision("shadow", 1.0 + 0.05 * rng.standard_normal(), 9000) for _ in range(30)]
    better = [_decision("active", 0.8, 9000, applied={"vcpu_quota": -1})] + [
        _decision("active", 0.6 + 0.05 * rng.standard_normal(), 8000) for _ in range(30)]
    res = gate(shadow + better)
    # the first active window was measured before its change: baseline; the next one straddles it: left out
    assert res.verdict == "PROMOTE" and res.canary == 29 and res.baseline == 31, res
    assert 0.3 < res.ci_low < res.improvement < res.ci_high
    same = [_decision("active", 0.8, 9000, applied={"vcpu_quota": -1})] + [
        _decision("active", 1.0 + 0.05 * rng.standard_normal(), 9000) for _ in range(30)]
    assert gate(shadow + same).verdict == "HOLD"
    worse = [_decision("active", 0.8, 9000, applied={"vcpu_quota": 2000})] + [
        _decision("active", 2.0, 90000) for _ in range(30)]
    assert gate(shadow + worse).verdict == "REJECT"
    rolled = [*better[:12], _decision("active", 2.0, 90000, applied={"vcpu_quota": -1}, rollback=True), *better[12:]]
    assert gate(shadow + rolled).verdict == "REJECT"
    assert gate(shadow[:5] + better).verdict == "HOLD", "too few baseline windows"


# ------------------------------------------------------------------------------------------------ audit, metrics
def test_the_audit_log_appends_and_survives_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.write("start", value=math.inf, arr=np.float32(1.5))
    log.close()
    with path.open("a") as f:
        f.write('{"event": "decision", "torn')  # a crash mid-write
    log = AuditLog(path)
    log.write("stop", reason="SIGTERM")
    log.close()
    records = list(read_log(path))
    assert [r["event"] for r in records] == ["start", "stop"] and records[0]["value"] is None
    assert records[0]["arr"] == 1.5


def test_the_metrics_endpoint_listens_on_loopback_only_and_is_read_only() -> None:
    from agents.deploy.metrics import Metrics

    m = Metrics(0, {"bundle_sha256": "x", "mode": "shadow", "domain": "d"})
    try:
        url = f"http://127.0.0.1:{m.port}/metrics"
        assert m.server.server_address[0] == "127.0.0.1"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        assert 'vvho_agent_info{bundle_sha256="x",domain="d",mode="shadow"} 1.0' in text
        with pytest.raises(urllib.error.HTTPError, match="405"):
            urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="POST"), timeout=5)
        other = [a for a in {i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
                 if not a.startswith("127.")]
        for addr in other:  # another address of this host does not answer
            with pytest.raises(OSError), socket.create_connection((addr, m.port), timeout=1):
                pass
    finally:
        m.close()


# ------------------------------------------------------------------------------------------------ bundles
def test_a_tampered_bundle_is_refused_before_anything_runs(tmp_path: Path) -> None:
    b = static_bundle(tmp_path / "b", {"vcpu_quota": 50000}, "testbed-echo-v0")
    assert PolicyBundle(b).act(np.zeros(PolicyBundle(b).obs_size)).shape == (1,)
    graph = b / "policy.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"policy\.onnx: sha256 [0-9a-f]{64} does not match the manifest's"):
        PolicyBundle(b)


def test_the_host_agent_process_imports_no_torch(tmp_path: Path) -> None:
    """Everything `vvho deploy` loads on a host, in a fresh interpreter: no torch, no SB3, no numba."""
    b = static_bundle(tmp_path / "b", {"vcpu_quota": 50000}, "testbed-echo-v0")
    code = (
        "import sys, json\n"
        "import vvho.cli, vvho.cli_deploy, agents.deploy.agent, agents.deploy.metrics, vvho_env.live.passive\n"
        "from agents.deploy.policy import DeployedPolicy\n"
        "from vvho_env.types import Capabilities\n"
        f"p = DeployedPolicy({str(b)!r}, Capabilities(frozenset({{'vcpu_quota'}}), frozenset(), False))\n"
        "p.start({'vcpu_quota': -1})\n"
        "print(json.dumps({m: m in sys.modules for m in ('torch', 'stable_baselines3', 'numba', 'pickle')}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    assert loaded["torch"] is False and loaded["stable_baselines3"] is False and loaded["numba"] is False, loaded
