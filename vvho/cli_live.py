"""`vvho testbed ...` and `vvho host ...`: the live testbed's lifecycle and a host readiness check."""

from __future__ import annotations

import json
import os

import typer

from vvho_env.live import testbed as tb
from vvho_env.types import BackendError

testbed_app = typer.Typer(
    help="Build, start, stop and inspect the TCG/KVM test guest driven by libvirt.", no_args_is_help=True
)
host_app = typer.Typer(help="Check what this host can do for the live backend.", no_args_is_help=True)

URI = typer.Option(tb.DEFAULT_URI, help="libvirt URI of the hypervisor")
DOMAIN = typer.Option(tb.DEFAULT_DOMAIN, help="libvirt domain name of the test guest")


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg="red", err=True)
    return typer.Exit(code=1)


@testbed_app.command()
def build(
    force: bool = typer.Option(False, help="rebuild even if the inputs did not change"),
    kernel: str = typer.Option("", help="kernel version from /boot (default: newest with modules)"),
) -> None:
    """Build the guest kernel + busybox initramfs + service into the cache folder ($VVHO_CACHE)."""
    try:
        image = tb.build_image(kernel or None, force=force)
    except BackendError as exc:
        raise _fail(exc) from None
    typer.echo(f"kernel    {image.kernel}\ninitramfs {image.initramfs}\nservice   {image.service}")


@testbed_app.command()
def up(
    uri: str = URI,
    domain: str = DOMAIN,
    port: int = typer.Option(tb.DEFAULT_PORT, help="loopback port forwarded to the guest service"),
    vcpus: int = typer.Option(1, min=1, max=4, help="guest vCPUs (keep below the host's pCPU count)"),
    accel: str = typer.Option("auto", help="auto (boot-test KVM once, else TCG), kvm or tcg"),
    timeout: float = typer.Option(120.0, help="seconds to wait for the guest service"),
) -> None:
    """Start libvirt if needed, boot the guest and wait until its service answers."""
    try:
        state = tb.up(uri, domain, port, vcpus, accel, boot_timeout_s=timeout)
    except BackendError as exc:
        raise _fail(exc) from None
    typer.echo(
        f"{domain} up ({state.domain_type}, {state.vcpus} vCPU) in {state.boot_s:.1f} s; "
        f"service on 127.0.0.1:{state.port}"
    )


@testbed_app.command()
def down(uri: str = URI, domain: str = DOMAIN) -> None:
    """Destroy and undefine the guest (libvirtd keeps running)."""
    try:
        existed = tb.down(uri, domain)
    except BackendError as exc:
        raise _fail(exc) from None
    typer.echo(f"{domain} {'destroyed' if existed else 'was not defined'}")


@testbed_app.command()
def status(uri: str = URI, domain: str = DOMAIN) -> None:
    """Show daemons, domain state and whether the guest service answers (JSON)."""
    typer.echo(json.dumps(tb.status(uri, domain), indent=2))


@host_app.command()
def check(
    uri: str = URI,
    domain: str = DOMAIN,
    seconds: float = typer.Option(3.0, help="length of the probe RTT baseline window"),
) -> None:
    """Report libvirt version, KVM usability, settable knobs, guest reachability and a probe baseline."""
    from vvho_env.live.backend import LibvirtBackend, _libvirt
    from vvho_env.live.probe import LocalEcho, run_probe

    lines: dict[str, object] = {"uri": uri, "domain": domain}
    ok = True
    try:
        lv = _libvirt()
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
        else (
            "/dev/kvm present, not boot-tested yet (vvho testbed up --accel auto)"
            if os.path.exists("/dev/kvm")
            else "no /dev/kvm; TCG"
        )
    )
    if ok:
        try:
            backend = LibvirtBackend(uri, domain)
        except BackendError as exc:
            lines["guest"] = f"not reachable: {exc}"
            ok = False
        else:
            try:
                lines["guest"] = f"reachable on 127.0.0.1:{backend.port}"
                lines["settable"] = sorted(backend.capabilities().settable)
                echo = LocalEcho(tb.cache_dir() / "vvho-service", backend.housekeeping_cpus)
                try:
                    res = run_probe(
                        "127.0.0.1",
                        backend.port,
                        200,
                        seconds,
                        local_port=echo.port,
                        probe_cpus=backend.housekeeping_cpus,
                    )
                finally:
                    echo.close()
                g, loc = res.guest, res.local
                lines["probe_rtt_us"] = {
                    "p50": round(g.percentile_us(50)),
                    "p99": round(g.percentile_us(99)),
                    "p99.9": round(g.percentile_us(99.9)),
                    "completed": g.completed,
                    "errors": g.errors + g.timeouts,
                }
                if loc is not None:
                    lines["probe_noise_p99_us"] = round(loc.percentile_us(99))
            finally:
                backend.close()
    for k, val in lines.items():
        typer.echo(f"{k:20s} {val}")
    if not ok:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.add_typer(testbed_app, name="testbed")
    app.add_typer(host_app, name="host")
