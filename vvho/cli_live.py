"""`vvho testbed ...` and `vvho host ...`: the live testbed's lifecycle, a host readiness check, and the
restore of a domain's original settings after a crash. Every command that touches a domain takes
--connect URI --domain NAME (and --port P where it talks to the guest), so it works on any guest."""

from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING, Any

import typer

from vvho import ui
from vvho_env.live import testbed as tb
from vvho_env.types import BackendError

if TYPE_CHECKING:
    from vvho_env.live.backend import LibvirtBackend

testbed_app = typer.Typer(
    help="Build, start, stop and inspect the project's TCG/KVM test guest driven by libvirt.", no_args_is_help=True
)
host_app = typer.Typer(help="Check what this host can do for the live backend; restore a domain after a crash.",
                       no_args_is_help=True)

URI = typer.Option(tb.DEFAULT_URI, "--connect", "--uri", help="libvirt URI of the hypervisor")
DOMAIN = typer.Option(tb.DEFAULT_DOMAIN, "--domain", help="libvirt domain name")
PORT = typer.Option(None, "--port", help="host port of a TCP echo service in the guest (default: the testbed's "
                    "record, else a hostfwd in the domain's XML)")
PROBE_HOST = typer.Option("127.0.0.1", "--probe-host", help="address the probe connects to")
SERVICE = typer.Option("auto", "--service", help="auto, vvho (the project's service) or echo (any TCP echo)")


def _print(data: dict[str, Any], json_out: bool) -> None:
    """A command's result: key-value lines, or JSON with --json."""
    if json_out:
        ui.emit_json(data)
        return
    ui.print_table([ui.Col("", "id"), ui.Col("", "text")],
                   [[k, v if isinstance(v, str) else json.dumps(ui.plain(v))] for k, v in data.items()])


@testbed_app.command()
def build(
    force: bool = typer.Option(False, help="rebuild even if the inputs did not change"),
    kernel: str = typer.Option("", help="kernel version from /boot (default: newest with modules)"),
    json_out: ui.JsonOpt = False,
) -> None:
    """Build the guest kernel + busybox initramfs + service into the cache folder ($VVHO_CACHE)."""
    with ui.heartbeat("building the guest image"):
        image = tb.build_image(kernel or None, force=force)
    _print({"kernel": str(image.kernel), "initramfs": str(image.initramfs), "service": str(image.service)}, json_out)


@testbed_app.command()
def up(
    uri: str = URI,
    domain: str = DOMAIN,
    port: int = typer.Option(tb.DEFAULT_PORT, help="loopback port forwarded to the guest service"),
    vcpus: int = typer.Option(1, min=1, max=4, help="guest vCPUs (keep below the host's pCPU count)"),
    accel: str = typer.Option("auto", help="auto (boot-test KVM once, else TCG), kvm or tcg"),
    timeout: float = typer.Option(120.0, help="seconds to wait for the guest service"),
    json_out: ui.JsonOpt = False,
) -> None:
    """Start libvirt if needed, boot the project's guest and wait until its service answers. Refuses a
    domain of that name that the project did not create."""
    with ui.heartbeat(f"booting {domain}"):
        state = tb.up(uri, domain, port, vcpus, accel, boot_timeout_s=timeout)
    if json_out:
        ui.emit_json({"domain": domain, "type": state.domain_type, "vcpus": state.vcpus, "boot_s": state.boot_s,
                      "port": state.port})
        return
    ui.result(f"{domain} up ({state.domain_type}, {state.vcpus} vCPU) in {state.boot_s:.1f} s; "
              f"service on 127.0.0.1:{state.port}")


@testbed_app.command()
def down(uri: str = URI, domain: str = DOMAIN) -> None:
    """Destroy and undefine the project's guest (libvirtd keeps running); never a domain it did not create."""
    existed = tb.down(uri, domain)
    ui.result(f"{domain} {'destroyed' if existed else 'was not defined'}")


@testbed_app.command()
def status(uri: str = URI, domain: str = DOMAIN) -> None:
    """Show daemons, domain state and whether the guest service answers (always JSON)."""
    ui.emit_json(tb.status(uri, domain))


@host_app.command()
def check(
    uri: str = URI,
    domain: str = DOMAIN,
    port: int | None = PORT,
    probe_host: str = PROBE_HOST,
    service: str = SERVICE,
    seconds: float = typer.Option(5.0, help="length of the probe RTT baseline window (5 s at 200/s gives the "
                                  "1000 local-echo samples the noise check needs)"),
    rate: float = typer.Option(200.0, help="probe requests per second in the baseline window"),
    json_out: ui.JsonOpt = False,
) -> None:
    """Report libvirt version, KVM usability, which knobs this host can set (and why not), the probe
    target and an RTT baseline. Changes nothing on the domain."""
    from vvho_env.live import open_backend
    from vvho_env.live.connection import libvirt_module

    lines: dict[str, object] = {"uri": uri, "domain": domain}
    ok = True
    try:
        lv = libvirt_module()
        conn = lv.open(uri)
        v = conn.getLibVersion()
        lines["libvirt"] = f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"
        conn.close()
    except Exception as exc:
        lines["libvirt"] = f"unreachable: {exc} (run scripts/start-libvirt.sh)"
        ok = False
    verdict = tb.cache_dir() / f"kvm-{os.uname().release}.json"
    lines["kvm"] = (
        ("usable" if json.loads(verdict.read_text())["kvm_usable"] else "not usable (boot test hung); TCG")
        if verdict.is_file()
        else ("/dev/kvm present, not boot-tested yet (vvho testbed up --accel auto)" if os.path.exists("/dev/kvm")
              else "no /dev/kvm; TCG")
    )
    if ok:
        try:
            backend = open_backend(uri, domain, port, probe_host=probe_host, service=service,
                                   recover_dead_owner=False)
        except BackendError as exc:
            lines["guest"] = f"not reachable: {exc}"
            ok = False
        else:
            try:
                with ui.heartbeat(f"probing {domain} for {seconds:g} s"):
                    _check_backend(backend, lines, seconds, rate)
            except BackendError as exc:
                lines["probe"] = f"failed: {exc}"
                ok = False
            finally:
                backend.close()
    _print(lines | {"ok": ok}, json_out)
    if not ok:
        raise typer.Exit(code=1)


def _check_backend(backend: LibvirtBackend, lines: dict[str, object], seconds: float, rate: float) -> None:
    assert backend.target is not None and backend.latency is not None
    t = backend.target
    lines["guest"] = (f"{t.host}:{t.port} answers as "
                      + ("the project's service (service time, guest-side knobs)" if t.kind == "vvho"
                         else "a plain TCP echo service (no service time, no guest-side knobs)"))
    lines["settable"] = sorted(backend.capabilities().settable)
    for knob, why in sorted(backend.unavailable.items()):
        lines[f"  not {knob}"] = why
    if backend.pending_restore is not None:
        lines["pending restore"] = (f"a controller (pid {backend.pending_restore.owner.pid}) died leaving changes: "
                                    f"run vvho host restore --connect {backend.uri} --domain {backend.domain_name}")
    win = backend.latency.window(seconds, rate, 0.0, math.inf, 0, backend.probe_cpus())
    h = win.histogram
    lines["probe_rtt_us"] = {"p50": round(h.percentile_us(50)), "p99": round(h.percentile_us(99)),
                             "p99.9": round(h.percentile_us(99.9)), "completed": win.completed,
                             "timeouts": win.timeouts, "failed": win.errors}
    lines["probe_cpus"] = list(backend.probe_cpus())
    if win.noise is not None:
        lines["probe_noise"] = (win.noise.note() or f"p99 {win.noise.noise_p99_us:.0f} us, within 10% of the "
                                f"guest's p99 {win.noise.baseline_p99_us:.0f} us")


@host_app.command()
def restore(
    uri: str = URI,
    domain: str = DOMAIN,
    port: int | None = PORT,
    probe_host: str = PROBE_HOST,
    json_out: ui.JsonOpt = False,
) -> None:
    """Put back the original settings a crashed controller left changed (its persisted snapshot), check
    them by read-back and remove the snapshot. Does nothing if there is none; refuses while its owner runs."""
    from vvho_env.live import open_backend
    from vvho_env.live.snapshot import SnapshotStore

    path = SnapshotStore().path(uri, domain)
    if not path.exists():
        _restored(json_out, f"nothing to restore: no snapshot for domain {domain!r} at {uri!r} ({path})", {})
        return
    backend = open_backend(uri, domain, port, require_port=False, probe_host=probe_host)
    try:
        snap = backend.recovered
        now = backend.read()
    finally:
        backend.close()
    if snap is None:
        _restored(json_out, f"the snapshot {path} belonged to another domain under this name; removed", {})
        return
    _restored(json_out, f"restored domain {domain!r} at {uri!r} to the settings of {snap.taken} (left by pid "
              f"{snap.owner.pid}):", {k: now.get(k, snap.settings[k]) for k in sorted(snap.settings)})


def _restored(json_out: bool, message: str, settings: dict[str, Any]) -> None:
    if json_out:
        ui.emit_json({"message": message, "settings": settings})
        return
    ui.result(message)
    if settings:
        ui.print_table([ui.Col("knob", "id"), ui.Col("value", "id")], [[k, repr(v)] for k, v in settings.items()])


def register(app: typer.Typer) -> None:
    app.add_typer(testbed_app, name="testbed")
    app.add_typer(host_app, name="host")
