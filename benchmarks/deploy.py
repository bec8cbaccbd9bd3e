"""The host agent's targets: decision latency (telemetry in -> guarded action out) p99 <= 200 us, and the
RSS of a running `vvho deploy` <= 150 MB. Prints each figure, its target, and a ratio against a
reference measured in the same run:

- decision latency: agents.deploy.agent.decide (the window's features, the observation, the bundle's
  normalisation and ONNX graph, the action's decoding, every guard) over N windows of telemetry, at the
  priority HostAgent.run holds and with the guards' clock moving one interval per window as on a host,
  against the bare onnxruntime session.run of the same graph on the same observations; with the time
  of each stage (observation, graph, decode, guards, the rest) and how many decisions took each outcome
  (held by a guard, rolled back, changed), since the guards' paths differ in cost;
- RSS: the peak RSS of `vvho deploy --mode shadow` running against the testbed for a few intervals,
  against a bare interpreter that imports numpy and onnxruntime (the least a host needs to run a bundle).

    .venv/bin/python benchmarks/deploy.py                    # trains a small PPO bundle first (~30 s)
    .venv/bin/python benchmarks/deploy.py --bundle DIR       # an exported bundle
    .venv/bin/python benchmarks/deploy.py --no-live          # decision latency only (no testbed)

Training and export run in subprocesses: this process never imports torch, as on a host.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGET_P99_US = 200.0
TARGET_RSS_MB = 150.0


def vvho(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "vvho.cli", *args], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"vvho {' '.join(args)} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return r.stdout


def train_bundle(tmp: Path) -> Path:
    """A PPO bundle of the default architecture (64x64 MLP) on the testbed profile; its quality is
    irrelevant here, its graph is what a host runs."""
    out = vvho("train", "--config", "ppo_testbed", "--json", "--set", "train.total_timesteps=2048",
               "--set", "train.eval_every=1000000", "--set", "train.checkpoint_every=1000000",
               "--results-dir", str(tmp), "--tracking-uri", f"sqlite:///{tmp}/m.db")
    run_id = json.loads(out)["run_id"]
    vvho("export", run_id, "--out", str(tmp / "bundle"), "--results-dir", str(tmp),
         "--tracking-uri", f"sqlite:///{tmp}/m.db")
    return tmp / "bundle"


def telemetry_stream(n: int, seed: int = 0) -> list:
    """Windows as the testbed produces them (p99 a few ms to 100 ms, ~200 requests, some DEGRADED)."""
    from vvho_env.histogram import LogHistogram
    from vvho_env.types import Status, Telemetry

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lat = rng.lognormal(np.log(2000.0), 0.8, 200)  # us
        h = LogHistogram()
        h.record_many_ns(lat * 1000.0)
        p = np.percentile(lat, [50, 99, 99.9])
        out.append(Telemetry(1.0, 200, p[0], p[1], p[2], float(lat.mean()), 20000.0, int((lat > 20000).sum()),
                             200.0, 200.0, float(rng.uniform(0.2, 1.1)), 0.0, 0.0, float(rng.uniform(0, 0.3)),
                             float(rng.uniform(0, 1.5)), float(rng.uniform(0, 0.6)),
                             status=Status.DEGRADED if i % 17 == 0 else Status.OK,
                             notes=("3 timeouts",) if i % 17 == 0 else (), histogram=h.counts.copy()))
    return out


def _outcome(d: Any) -> str:
    """What a decision did: the guard that held or blocked it, a rollback, a judged change, or a change."""
    if d.rollback:
        return "rollback"
    held = next((v.guard for v in d.verdicts if v.verdict in ("hold", "block")), None)
    if held:
        return f"{held} hold"
    judged = any(v.guard == "regression" for v in d.verdicts)
    kind = "change" if d.target is not None else "no change"
    return f"{kind} (after judging the last)" if judged else kind


def decision_latency(bundle: Path, n: int) -> None:
    from agents.deploy.agent import decide
    from agents.deploy.guards import Guards
    from agents.deploy.limits import Limits
    from agents.deploy.policy import DeployedPolicy
    from vvho_env import knobs
    from vvho_env.live.probe import rt_section
    from vvho_env.objective import objective_for
    from vvho_env.types import Capabilities

    probe = DeployedPolicy(bundle, Capabilities(frozenset(knobs.KNOB_NAMES), frozenset(), False))
    names = probe.knob_names
    current = {k: knobs.get(k).default for k in names}
    policy = DeployedPolicy(bundle, Capabilities(frozenset(names), frozenset(), False))
    policy.start(current)
    # the guards' clock moves one interval per window, as on a host: with the wall clock of this loop (5000
    # windows in ~1 s) the first rollback's cool-down (120 s) would hold every later decision, the cheapest path
    now = [0.0]
    guards = Guards(Limits.model_validate({"min_interval_s": 0}), names, current, clock=lambda: now[0])
    objective = objective_for(policy.scenario)
    stream = telemetry_stream(n + 200)
    times, cpu, obs_seen, stages = [], [], [], []
    outcomes: Counter[str] = Counter()
    stamps: list[int] = []
    with rt_section():  # the priority HostAgent.run holds around its loop, decisions included
        for i, tel in enumerate(stream):
            now[0] = i * policy.scenario.interval_s
            j = objective(tel)
            stamps.clear()
            t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            d, _, _, obs = decide(policy, guards, tel, j, current, stamps)
            t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
            if d.target is not None:  # as if applied: the guards' state moves on as on a host
                current = d.target
                guards.applied(d.rollback)
            if d.position is not None:
                policy.moved_to(d.position)
            if i >= 200:  # warm-up: onnxruntime's first runs allocate
                times.append((t1 - t0) / 1000.0)
                cpu.append((c1 - c0) / 1000.0)
                stages.append(np.diff([t0, *stamps, t1]) / 1000.0)
                outcomes[_outcome(d)] += 1
                obs_seen.append(policy.bundle.normalise(obs))
    sess = policy.bundle.session
    ref = []
    for x in obs_seen:
        t0 = time.perf_counter_ns()
        sess.run(None, {"obs": x.reshape(1, -1)})
        ref.append((time.perf_counter_ns() - t0) / 1000.0)
    p50, p99, mx = np.percentile(times, [50, 99, 100])
    r99 = float(np.percentile(ref, 99))
    print(f"decision latency over {n} windows ({len(names)} knobs, {policy.codec.obs_size} inputs, "
          f"{policy.bundle.manifest.get('algorithm')}): p50 {p50:.0f} us, p99 {p99:.0f} us, max {mx:.0f} us; "
          f"target p99 <= {TARGET_P99_US:.0f} us: {'PASS' if p99 <= TARGET_P99_US else 'MISS'}")
    c50, c99 = np.percentile(cpu, [50, 99])
    print(f"  of which CPU time of the thread: p50 {c50:.0f} us, p99 {c99:.0f} us (the rest is waiting for a CPU)")
    st = np.array(stages)  # columns: entry, observation, graph, decode, guards, exit
    parts = {"observation (features, history, previous action, normalisation)": st[:, 1],
             "policy graph (session.run, action clip)": st[:, 2], "decode (action -> settings)": st[:, 3],
             "guards": st[:, 4], "rest (calls between the stages)": st[:, 0] + st[:, 5]}
    print(f"  {'breakdown (us)':<70}{'mean':>7}{'p50':>7}{'p99':>7}")
    for name, v in parts.items():
        m50, m99 = np.percentile(v, [50, 99])
        print(f"    {name:<68}{v.mean():7.1f}{m50:7.1f}{m99:7.1f}")
    print("  decisions by outcome: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
    print(f"reference, onnxruntime session.run alone (normal priority): p99 {r99:.0f} us; decision / session.run "
          f"p99 = {p99 / r99:.2f}")
    print("modules loaded:", json.dumps({m: m in sys.modules for m in ("torch", "stable_baselines3", "numba")}))


def child_rss_mb(cmd: list[str]) -> tuple[float, str]:
    """Peak RSS (VmHWM) of a child process, polled from /proc while it runs (wait4's ru_maxrss would count
    the pages it shared with this process between fork and exec)."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0.0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024.0)
        except OSError:
            pass
        time.sleep(0.05)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return peak, out


def rss(bundle: Path, intervals: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        agent, _ = child_rss_mb([sys.executable, "-m", "vvho.cli", "deploy", "--bundle", str(bundle), "--mode",
                                 "shadow", "--intervals", str(intervals), "--log", f"{tmp}/audit.jsonl"])
    ref, _ = child_rss_mb([sys.executable, "-c", "import time, numpy, onnxruntime; time.sleep(1)"])
    print(f"host agent RSS (vvho deploy --mode shadow, {intervals} intervals on the testbed, metrics on): "
          f"{agent:.0f} MB; target <= {TARGET_RSS_MB:.0f} MB: {'PASS' if agent <= TARGET_RSS_MB else 'MISS'}")
    print(f"reference, python importing numpy + onnxruntime: {ref:.0f} MB; agent / reference = {agent / ref:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, help="an exported bundle (default: train a small PPO one)")
    ap.add_argument("--decisions", type=int, default=5000, help="windows fed to the decision path")
    ap.add_argument("--intervals", type=int, default=10, help="intervals of the live RSS run")
    ap.add_argument("--no-live", action="store_true", help="skip the RSS run against the testbed")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or train_bundle(Path(tmp))
        decision_latency(bundle, args.decisions)
        if not args.no_live:
            rss(bundle, args.intervals)


if __name__ == "__main__":
    main()
