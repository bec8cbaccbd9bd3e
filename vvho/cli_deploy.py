"""`vvho deploy`: run a policy bundle on a live host (shadow or active), and judge and summarise its logs.

    vvho deploy --bundle DIR --connect URI --domain NAME [--port P] [--mode shadow|active] [--interval S]
                [--limits FILE] [--dry-run] [--keep] [--log FILE] [--metrics-port N] [--intervals N]
    vvho deploy promote LOG          the promotion gate on a shadow + active (canary) log
    vvho deploy status LOG [--plot]  what changed, how often guards fired, latency before and after

Nothing here imports torch or unpickles anything: the host loads ONNX + JSON only.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from vvho import ui
from vvho.options import OptionError
from vvho_env.live import testbed as tb

deploy_app = typer.Typer(help="Run a trained policy on a live host under guards (shadow, then active).",
                         no_args_is_help=False)


def _default_log(domain: str) -> Path:
    from vvho_env.live.snapshot import state_dir

    return state_dir() / f"deploy-{domain}.jsonl"


@deploy_app.callback(invoke_without_command=True)
def deploy(
    ctx: typer.Context,
    bundle: Annotated[Path | None, typer.Option(help="policy bundle directory (policy.onnx + manifest.json)")] = None,
    uri: Annotated[str, typer.Option("--connect", "--uri", help="libvirt URI")] = tb.DEFAULT_URI,
    domain: Annotated[str, typer.Option(help="libvirt domain to tune")] = tb.DEFAULT_DOMAIN,
    port: Annotated[int | None, typer.Option(help="host port of a TCP echo service in the guest (the probe's "
                                             "target; default: the testbed's, else a hostfwd in the XML)")] = None,
    probe_host: Annotated[str, typer.Option(help="address the probe connects to")] = "127.0.0.1",
    mode: Annotated[str, typer.Option(help="shadow (propose and log, apply nothing) or active")] = "shadow",
    interval: Annotated[float | None, typer.Option(help="control interval in seconds (default: the bundle's)")] = None,
    limits: Annotated[Path | None, typer.Option(help="operator limits file (YAML/JSON, see docs/deploy.md)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print and log the knob diffs, change nothing")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="on exit keep the current settings (default: restore "
                                       "the settings found at start)")] = False,
    log: Annotated[Path | None, typer.Option(help="audit log, JSONL, appended (default: the state directory)")]
    = None,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics on 127.0.0.1:PORT (0: off)")] = 9477,
    intervals: Annotated[int | None, typer.Option(min=1, help="stop after this many intervals (default: run "
                                                 "until SIGTERM/SIGINT)")] = None,
    probe_rate: Annotated[float | None, typer.Option(help="probe requests/s (default: the bundle scenario's)")]
    = None,
    latency_url: Annotated[str | None, typer.Option(help="passive latency: the guest application's Prometheus "
                                                    "metrics URL (replaces the probe)")] = None,
    latency_metric: Annotated[str, typer.Option(help="passive latency: its histogram's name")]
    = "vvho_request_duration_seconds",
) -> None:
    """Run the host agent: measure, observe as in training, ask the policy, guard, apply, record."""
    if ctx.invoked_subcommand is not None:
        return
    if bundle is None:
        raise OptionError("give --bundle DIR (a bundle from `vvho export`), or a subcommand: promote, status")
    from agents.bundle import BundleError
    from agents.deploy.agent import MODES, HostAgent
    from agents.deploy.audit import AuditLog
    from agents.deploy.limits import load_limits
    from agents.deploy.metrics import Metrics
    from agents.deploy.policy import DeployedPolicy
    from vvho_env.live import open_backend
    from vvho_env.live.backend import Workload
    from vvho_env.live.passive import PrometheusSource
    from vvho_env.types import BackendError

    if mode not in MODES:
        raise OptionError(f"--mode {mode!r} not accepted; accepted: {', '.join(MODES)}")
    from agents.bundle import PolicyBundle

    knob_names = PolicyBundle(bundle).knob_names  # the checksum first: nothing touches the host before
    lim = load_limits(limits, knob_names)
    try:
        latency = PrometheusSource(latency_url, latency_metric) if latency_url else None
    except OSError as exc:
        raise OptionError(f"--latency-url {latency_url}: {exc}") from None
    backend = open_backend(uri, domain, port, probe_host=probe_host, latency=latency, neighbour_cpus=())
    metrics = None
    try:
        policy = DeployedPolicy(bundle, backend.capabilities(), backend.unavailable)
        sc = policy.scenario
        workload = Workload(probe_rate or sc.phases[0].rate_rps, sc.phases[0].service_mean_us, float(sc.slo_us))
        audit = AuditLog(log or _default_log(domain))
        if metrics_port:
            metrics = Metrics(metrics_port, {"bundle_sha256": policy.sha256, "mode": mode, "domain": domain})
        agent = HostAgent(backend, policy, lim, audit, mode=mode, dry_run=dry_run, interval_s=interval,
                          workload=workload, metrics=metrics, echo=ui.info)
    except (BundleError, BackendError, OSError) as exc:
        backend.close()
        if metrics is not None:
            metrics.close()
        if isinstance(exc, OSError):
            raise OptionError(f"vvho deploy: {exc}") from None
        raise
    reason = {"why": f"ran {intervals} intervals" if intervals else "stopped"}

    def on_signal(signum: int, _frame: object) -> None:
        reason["why"] = signal.Signals(signum).name
        agent.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ui.info(f"vvho deploy: {mode}{' (dry run)' if dry_run else ''} on {domain} at {uri}, bundle {bundle} "
               f"(sha256 {policy.sha256[:12]}), knobs {', '.join(policy.knob_names)}, every {agent.interval_s:g} s; "
               f"log {audit.path}" + (f"; metrics http://127.0.0.1:{metrics.port}/metrics" if metrics else ""))
    sys.stderr.flush()
    try:
        agent.run(str(bundle), intervals)
    finally:
        agent.finish(keep, reason["why"])
    ui.info(f"vvho deploy: {reason['why']}; " + ("kept the current settings" if keep else
                                                    "restored the settings found at start"))


def register(app: typer.Typer) -> None:
    app.add_typer(deploy_app, name="deploy")


def _records(log: Path) -> list[dict[str, Any]]:
    from agents.deploy.audit import read_log

    try:
        return list(read_log(log))
    except OSError as exc:
        raise OptionError(f"{log}: cannot read the audit log: {exc.strerror or exc}") from None


@deploy_app.command("promote")
def promote_cmd(
    logs: Annotated[list[Path], typer.Argument(help="audit log(s): a shadow run and an active (canary) run, "
                                               "or one log holding both, oldest first")],
    json_out: ui.JsonOpt = False,
) -> None:
    """The promotion gate: compare the canary's measured windows with the settings it replaced (exit 0
    PROMOTE, 1 HOLD, 2 REJECT). The rule is in docs/deploy.md."""
    from agents.deploy.gate import gate

    records = [r for log in logs for r in _records(log)]
    res = gate(records)
    code = {"PROMOTE": 0, "HOLD": 1, "REJECT": 2}[res.verdict]
    if json_out:
        ui.emit_json(dataclasses.asdict(res))
        raise typer.Exit(code=code)
    ui.result(f"{res.verdict}: baseline {res.baseline} windows, canary {res.canary} windows; mean objective "
              f"improvement {res.improvement:.3f} (95% CI {res.ci_low:.3f} .. {res.ci_high:.3f}); p99 "
              f"{res.p99_baseline_us / 1000:.1f} -> {res.p99_canary_us / 1000:.1f} ms; rollbacks {res.rollbacks}")
    for why in res.reasons:
        ui.result(f"  {why}")
    raise typer.Exit(code=code)


@deploy_app.command("status")
def status_cmd(
    log: Annotated[Path, typer.Argument(help="audit log of `vvho deploy`")],
    plot: Annotated[Path | None, typer.Option(help="also write a plot of p99 and objective (PNG)")] = None,
    json_out: ui.JsonOpt = False,
    wide: ui.WideOpt = False,
) -> None:
    """Summarise a host agent's log: runs, changes, rollbacks, guard verdicts, before/after latency."""
    from agents.deploy import report

    records = _records(log)
    s = report.summarise(records)
    if plot is not None:
        s["plot"] = str(report.plot(records, plot))
    if json_out:
        ui.emit_json(s)
        return
    for run in s["runs"]:
        ui.result(f"run {run['time']}: {run['mode']}{' (dry run)' if run['dry_run'] else ''}, bundle "
                  f"{run['bundle']} ({run['sha256']})")
    for stop in s["stops"]:
        ui.result(f"stop {stop['time']}: {stop['reason']}, {'kept' if stop['kept'] else 'restored'} settings"
                  + (f", error: {stop['error']}" if stop["error"] else ""))
    ui.print_table([ui.Col("", "id"), ui.Col("windows"), ui.Col("mean J"), ui.Col("pooled p99 ms"),
                    ui.Col("degraded")],
                   [[f"{name} the first change", ui.fmt(s[name]["windows"], ".0f"), ui.fmt(s[name]["objective"]),
                     ui.fmt(s[name]["p99_us"] / 1000, ".1f"), ui.fmt(s[name]["degraded"], ".0f")]
                    for name in ("before", "after")], wide=wide)
    ui.print_table([ui.Col("guard verdict", "id"), ui.Col("times")], [[k, str(n)] for k, n in s["guards"].items()],
                   wide=wide)
    ui.result(f"{s['decisions']} decisions, {len(s['changes'])} changes applied, {s['rollbacks']} rollbacks, "
              f"{s['faults']} faults")
    for c in s["changes"]:
        ui.result(f"  {c['time']} {'ROLLBACK ' if c['rollback'] else ''}{c['applied']}")
    if plot is not None:
        ui.result(f"plot: {s['plot']}")
