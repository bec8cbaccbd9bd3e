"""The test guest and its lifecycle: build the image, start libvirt, define/start/stop the domain.

Why a home-made guest: CI machines have no cloud images and no network beyond loopback, but every
Debian host has a kernel in /boot, its modules, busybox-static and gcc. That is enough for a guest that
boots in 10-25 s under TCG and runs a real request/response service (vvho_service.c) whose per-request
CPU work the probe controls. Build outputs live in a cache folder outside git ($VVHO_CACHE, default
~/.cache/vvho/testbed); building is idempotent (a stamp of the inputs decides whether to rebuild).

The testbed domain carries a metadata element (TESTBED_NS) that marks it as the project's own: `up` and
`down` destroy or redefine only such a domain, never one an operator defined (attach to those with
--connect/--domain/--port instead).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from vvho_env.types import BackendUnavailable

DEFAULT_URI = "qemu:///system"
DEFAULT_DOMAIN = "vvho-testbed"
DEFAULT_PORT = 17007
GUEST_METRICS_PORT = 9100  # the guest service's Prometheus histogram (the host agent's passive source)
SERVICE_SOURCE = Path(__file__).with_name("vvho_service.c")
# insmod order matters: each module needs the ones before it (no modprobe/depmod in the initramfs).
VIRTIO_NET_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
)
# libvirt's QEMU runs as libvirt-qemu and cannot read a root-owned ~/.cache: stage boot files here.
SYSTEM_STAGING = Path("/var/lib/libvirt/images/vvho")
LIBVIRT_SOCKET = Path("/var/run/libvirt/libvirt-sock")
TESTBED_NS = "https://vvho.invalid/testbed/1"  # libvirt metadata namespace marking the project's domains

INIT_SCRIPT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "vvho-guest: loading virtio-net modules"
for m in {modules}; do insmod /lib/modules/$m.ko || echo "vvho-guest: insmod $m failed"; done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "vvho-guest: eth0 up, starting the service"
while true; do {service}; echo "vvho-guest: service exited, restarting"; sleep 1; done
"""


class TestbedError(BackendUnavailable):
    """The testbed cannot be built or started; the message says what was tried and what to do."""


class ForeignDomain(TestbedError):
    """A domain of that name exists and the project did not create it: it is never destroyed or redefined."""


def cache_dir() -> Path:
    return Path(os.environ.get("VVHO_CACHE", Path.home() / ".cache" / "vvho" / "testbed"))


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initramfs: Path
    service: Path  # the same binary, run on the host as the probe's local echo
    kernel_version: str

    def exists(self) -> bool:
        return self.kernel.is_file() and self.initramfs.is_file() and self.service.is_file()


def _debian_kernel(version: str | None) -> tuple[str, Path]:
    """Pick the guest kernel: the requested version, else the newest /boot/vmlinuz with modules."""
    candidates = sorted(Path("/boot").glob("vmlinuz-*"), reverse=True)
    if version:
        candidates = [Path(f"/boot/vmlinuz-{version}")]
    for path in candidates:
        ver = path.name.removeprefix("vmlinuz-")
        if path.is_file() and Path("/lib/modules", ver).is_dir():
            return ver, path
    raise TestbedError(
        f"no bootable kernel found (looked for {', '.join(map(str, candidates)) or '/boot/vmlinuz-*'} with "
        "a matching /lib/modules/<version>); install one: apt-get install -y linux-image-amd64"
    )


def _module_file(kver: str, name: str) -> Path:
    hits = [p for p in Path("/lib/modules", kver).rglob(f"{name}.ko*") if p.name.split(".ko")[0] == name]
    if not hits:
        raise TestbedError(
            f"kernel module {name}.ko not found under /lib/modules/{kver}; the guest needs "
            f"{', '.join(VIRTIO_NET_MODULES)} as modules (reinstall linux-image-{kver})"
        )
    return hits[0]


def _read_module(path: Path) -> bytes:
    """Busybox insmod cannot decompress: hand it a plain .ko whatever the distro ships."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        import lzma

        return lzma.decompress(data)
    if path.suffix == ".zst":
        out = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True)
        return out.stdout
    if path.suffix == ".gz":
        return gzip.decompress(data)
    return data


def _newc_cpio(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive (what the kernel unpacks as an initramfs); entries are (path, mode, data).

    Written here rather than shelling out to cpio(1) so the builder needs only Python and gcc.
    """
    buf = io.BytesIO()

    def put(name: str, mode: int, data: bytes, ino: int) -> None:
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(
            f"{v:08X}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0)
        )
        buf.write(hdr.encode() + nb)
        buf.write(b"\0" * (-(110 + len(nb)) % 4))
        buf.write(data)
        buf.write(b"\0" * (-len(data) % 4))

    for ino, (name, mode, data) in enumerate(entries, start=1):
        put(name, mode, data, ino)
    put("TRAILER!!!", 0, b"", 0)
    return buf.getvalue()


def _compile_service(out: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise TestbedError("gcc not found; the guest service is compiled on the host: apt-get install -y gcc")
    cmd = [gcc, "-O2", "-static", "-Wall", "-o", str(out), str(SERVICE_SOURCE)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise TestbedError(
            f"compiling the guest service failed ({' '.join(cmd)}):\n{res.stderr.strip()}\n"
            "a static build needs the C library's static archive: apt-get install -y libc6-dev"
        )


def service_binary() -> Path:
    """The guest service binary (also the probe's host-local echo), compiled on first use."""
    out = cache_dir() / "vvho-service"
    stamp = cache_dir() / "service.stamp"
    digest = hashlib.sha256(SERVICE_SOURCE.read_bytes()).hexdigest()
    if not (out.is_file() and stamp.is_file() and stamp.read_text() == digest):
        cache_dir().mkdir(parents=True, exist_ok=True)
        _compile_service(out)
        stamp.write_text(digest)
    return out


def write_initramfs(path: Path, init: str, files: list[tuple[str, int, bytes]], kver: str) -> None:
    """A gzipped newc initramfs: busybox, the virtio-net modules of kernel `kver`, `init` and `files`
    (path, mode, data). The testbed's image is one; a test guest with another service is another."""
    busybox = Path("/bin/busybox")
    entries: list[tuple[str, int, bytes]] = [
        (d, 0o040755, b"") for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules", "tmp")
    ]
    entries += [
        ("init", 0o100755, init.encode()),
        ("bin/busybox", 0o100755, busybox.read_bytes()),
        ("bin/sh", 0o120777, b"busybox"),
        *files,
    ]
    entries += [(f"lib/modules/{m}.ko", 0o100644, _read_module(_module_file(kver, m))) for m in VIRTIO_NET_MODULES]
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(_newc_cpio(entries), compresslevel=6))
    tmp.replace(path)


def guest_init(service_command: str) -> str:
    """The guest's /init: mount, load virtio-net, bring eth0 up, run `service_command` for ever."""
    return INIT_SCRIPT.format(modules=" ".join(VIRTIO_NET_MODULES), service=service_command)


def build_image(kernel_version: str | None = None, force: bool = False) -> GuestImage:
    """Build (or reuse) the guest kernel + initramfs + service in cache_dir(). Idempotent."""
    kver, kernel_src = _debian_kernel(kernel_version)
    busybox = Path("/bin/busybox")
    if not busybox.is_file():
        raise TestbedError(
            "/bin/busybox not found; install the static build: apt-get install -y busybox-static"
        )
    if b"/lib64/ld-linux" in busybox.read_bytes()[:4096]:
        raise TestbedError(
            f"{busybox} is dynamically linked and cannot run in the initramfs; "
            "apt-get install -y busybox-static"
        )
    modules = {m: _module_file(kver, m) for m in VIRTIO_NET_MODULES}
    init = guest_init(f"/bin/vvho-service 7 0.0.0.0 --metrics-port {GUEST_METRICS_PORT}")
    stamp_src = json.dumps(
        {
            "kernel": str(kernel_src),
            "kernel_mtime": kernel_src.stat().st_mtime,
            "busybox_mtime": busybox.stat().st_mtime,
            "init": init,
            "service": hashlib.sha256(SERVICE_SOURCE.read_bytes()).hexdigest(),
            "modules": {m: str(p) for m, p in modules.items()},
        },
        sort_keys=True,
    )
    out = cache_dir()
    if force:
        (out / "service.stamp").unlink(missing_ok=True)
    image = GuestImage(out / f"vmlinuz-{kver}", out / "initramfs.cpio.gz", service_binary(), kver)
    stamp = out / "build.stamp"
    if not force and image.exists() and stamp.is_file() and stamp.read_text() == stamp_src:
        return image
    out.mkdir(parents=True, exist_ok=True)
    write_initramfs(image.initramfs, init, [("bin/vvho-service", 0o100755, image.service.read_bytes())], kver)
    shutil.copyfile(kernel_src, image.kernel)
    stamp.write_text(stamp_src)
    return image


# --------------------------------------------------------------------------- libvirt daemons
def libvirt_socket_alive(path: Path = LIBVIRT_SOCKET) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(str(path))
        return True
    except OSError:
        return False


def ensure_libvirtd(timeout_s: float = 20.0) -> list[str]:
    """Start virtlogd and libvirtd if they are not running (no systemd here); returns what was started."""
    started: list[str] = []
    if libvirt_socket_alive():
        return started
    if os.geteuid() != 0:
        raise TestbedError(
            f"libvirtd is not running ({LIBVIRT_SOCKET} does not answer) and starting it needs root; "
            "run: sudo scripts/start-libvirt.sh"
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if libvirt_socket_alive():
            return started
        # Checked every round: a libvirtd that was just killed may still be exiting when we first look.
        for daemon in ("virtlogd", "libvirtd"):
            if subprocess.run(["pgrep", "-x", daemon], capture_output=True).returncode != 0:
                exe = shutil.which(daemon) or f"/usr/sbin/{daemon}"
                try:
                    subprocess.run([exe, "-d"], check=True, capture_output=True, timeout=30)
                except (OSError, subprocess.SubprocessError) as exc:
                    raise TestbedError(
                        f"could not start {daemon} ({exe} -d): {exc}; install libvirt-daemon-system "
                        "(scripts/install-testbed-deps.sh) and check /var/log/libvirt"
                    ) from exc
                started.append(daemon)
        time.sleep(0.2)
    raise TestbedError(
        f"libvirtd started but {LIBVIRT_SOCKET} did not answer within {timeout_s:.0f} s; "
        "look at /var/log/libvirt/libvirtd.log"
    )


# --------------------------------------------------------------------------- domain
def _stage(image: GuestImage, uri: str) -> tuple[Path, Path]:
    """For a system URI, copy boot files where libvirt's unprivileged QEMU can read them."""
    if not uri.endswith("/system") or not os.access("/var/lib/libvirt/images", os.W_OK):
        return image.kernel, image.initramfs
    SYSTEM_STAGING.mkdir(parents=True, exist_ok=True)
    staged = []
    for src in (image.kernel, image.initramfs):
        dst = SYSTEM_STAGING / src.name
        if (
            not dst.exists()
            or dst.stat().st_size != src.stat().st_size
            or dst.stat().st_mtime < src.stat().st_mtime
        ):
            shutil.copyfile(src, dst)
        staged.append(dst)
    return staged[0], staged[1]


def console_log_path(domain: str) -> Path:
    return Path("/var/log/libvirt/qemu") / f"{domain}-console.log"


def domain_xml(
    name: str,
    kernel: Path,
    initramfs: Path,
    port: int,
    vcpus: int = 1,
    memory_mib: int = 256,
    domain_type: str = "qemu",
) -> str:
    """The testbed domain. Port forwarding goes through qemu:commandline (see module docstring): `port` to the
    guest service, port + 1 to its metrics endpoint."""
    cmdline = "console=ttyS0 panic=-1 loglevel=4"
    console = escape(str(console_log_path(name)))
    forwards = f"hostfwd=tcp:127.0.0.1:{port}-:7,hostfwd=tcp:127.0.0.1:{port + 1}-:{GUEST_METRICS_PORT}"
    return f"""<domain type='{domain_type}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{escape(name)}</name>
  <metadata><vvho:testbed xmlns:vvho='{TESTBED_NS}' port='{port}'/></metadata>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu placement='static'>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(kernel))}</kernel>
    <initrd>{escape(str(initramfs))}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
    <console type='file'><source path='{console}'/><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-netdev'/>
    <qemu:arg value='user,id=n0,{forwards}'/>
    <qemu:arg value='-device'/>
    <qemu:arg value='virtio-net-pci,netdev=n0,addr=0x9'/>
  </qemu:commandline>
</domain>
"""


def service_answers(port: int, host: str = "127.0.0.1", timeout_s: float = 2.0) -> bool:
    """True if a request line comes back: the guest booted, eth0 is up, the forward works."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            s.sendall(b"0 ping\n")
            return s.recv(64).startswith(b"0 ping")
    except OSError:
        return False


def wait_for_service(port: int, timeout_s: float) -> float:
    """Poll until the guest service answers; returns seconds waited, raises TestbedError on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if service_answers(port):
            return time.monotonic() - t0
        time.sleep(0.5)
    raise TestbedError(f"guest service on 127.0.0.1:{port} did not answer within {timeout_s:.0f} s")


@dataclass
class TestbedState:
    uri: str
    domain: str
    port: int
    domain_type: str
    vcpus: int
    boot_s: float

    @property
    def metrics_url(self) -> str:
        """The guest service's Prometheus endpoint, forwarded to the host at port + 1."""
        return f"http://127.0.0.1:{self.port + 1}/metrics"

    def save(self) -> None:
        cache_dir().mkdir(parents=True, exist_ok=True)
        (cache_dir() / f"{self.domain}.json").write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, domain: str) -> TestbedState | None:
        path = cache_dir() / f"{domain}.json"
        return cls(**json.loads(path.read_text())) if path.is_file() else None


def _kvm_verdict_path() -> Path:
    return cache_dir() / f"kvm-{platform.release()}.json"


def _open(uri: str):
    from vvho_env.live.connection import libvirt_module

    try:
        libvirt = libvirt_module()
    except BackendUnavailable as exc:
        raise TestbedError(str(exc)) from None
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise TestbedError(
            f"cannot connect to libvirt at {uri!r}: {exc}; check the URI and that libvirtd runs "
            "(scripts/start-libvirt.sh)"
        ) from exc


def is_project_domain(dom) -> bool:
    """True if the domain carries the testbed's metadata element (the project defined it)."""
    import libvirt

    try:
        dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, TESTBED_NS)
    except libvirt.libvirtError:
        return False
    return True


def _lookup(conn, name: str):
    import libvirt

    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError:
        return None


def refuse_foreign(conn, name: str) -> None:
    """Raise ForeignDomain if a domain `name` exists that the project did not create."""
    dom = _lookup(conn, name)
    if dom is not None and not is_project_domain(dom):
        raise ForeignDomain(
            f"domain {name!r} at {conn.getURI()!r} was not created by `vvho testbed up` (it has no vvho "
            f"testbed metadata), so vvho will not destroy or redefine it (UUID {dom.UUIDString()} stays). "
            f"To tune it, attach to it: --connect {conn.getURI()} --domain {name} --port P (the host port of "
            "its TCP echo service); for a testbed, pick another --domain"
        )


def _destroy_and_undefine(conn, name: str) -> bool:
    """Remove the project's testbed domain `name`; refuses (ForeignDomain) a domain it did not define."""
    refuse_foreign(conn, name)
    dom = _lookup(conn, name)
    if dom is None:
        return False
    if dom.isActive():
        dom.destroy()
    dom.undefine()
    return True


def _boot(conn, name: str, xml: str, port: int, timeout_s: float) -> float:
    import libvirt

    _destroy_and_undefine(conn, name)
    try:
        dom = conn.defineXML(xml)
        dom.create()
    except libvirt.libvirtError as exc:
        with contextlib.suppress(TestbedError):
            _destroy_and_undefine(conn, name)
        raise TestbedError(f"libvirt could not start domain {name!r}: {exc}") from exc
    try:
        return wait_for_service(port, timeout_s)
    except TestbedError:
        _destroy_and_undefine(conn, name)
        raise


def up(
    uri: str = DEFAULT_URI,
    domain: str = DEFAULT_DOMAIN,
    port: int = DEFAULT_PORT,
    vcpus: int = 1,
    accel: str = "auto",
    boot_timeout_s: float = 120.0,
    kvm_trial_s: float = 40.0,
) -> TestbedState:
    """Build if needed, start the daemons, boot the domain and wait until its service answers.

    accel='auto' decides KVM vs TCG by actually booting under KVM once (per host kernel; the verdict is
    cached): /dev/kvm can exist and still hang the guest, as on the machines this was written on.
    """
    if accel not in ("auto", "kvm", "tcg"):
        raise TestbedError(f"accel {accel!r} is not accepted; accepted: auto, kvm, tcg")
    if service_answers(port) and TestbedState.load(domain) is None:
        raise TestbedError(
            f"127.0.0.1:{port} already answers but no testbed {domain!r} is recorded; "
            "something else owns the port: pick another with --port"
        )
    ensure_libvirtd()
    conn = _open(uri)
    try:
        refuse_foreign(conn, domain)
    except ForeignDomain:
        conn.close()
        raise
    image = build_image()
    try:
        kernel, initrd = _stage(image, uri)
        tried = []
        use_kvm = accel == "kvm"
        if accel == "auto" and os.path.exists("/dev/kvm"):
            verdict = _kvm_verdict_path()
            if verdict.is_file():
                use_kvm = json.loads(verdict.read_text())["kvm_usable"]
            else:
                try:
                    _boot(
                        conn,
                        domain,
                        domain_xml(domain, kernel, initrd, port, vcpus, domain_type="kvm"),
                        port,
                        kvm_trial_s,
                    )
                    use_kvm = True
                except TestbedError as exc:
                    tried.append(f"kvm: {exc}")
                verdict.write_text(json.dumps({"kvm_usable": use_kvm}))
                if use_kvm:
                    state = TestbedState(uri, domain, port, "kvm", vcpus, 0.0)
                    state.save()
                    return state
        dtype = "kvm" if use_kvm else "qemu"
        t = _boot(
            conn,
            domain,
            domain_xml(domain, kernel, initrd, port, vcpus, domain_type=dtype),
            port,
            boot_timeout_s,
        )
    except TestbedError as exc:
        raise TestbedError(
            f"{exc}; tried: {'; '.join(tried) or accel}. Guest console: {console_log_path(domain)}"
        ) from exc
    finally:
        conn.close()
    state = TestbedState(uri, domain, port, dtype, vcpus, t)
    state.save()
    return state


def down(uri: str = DEFAULT_URI, domain: str = DEFAULT_DOMAIN) -> bool:
    """Destroy and undefine the domain; True if there was one. Leaves the daemons running."""
    if not libvirt_socket_alive() and uri == DEFAULT_URI:
        return False
    conn = _open(uri)
    try:
        existed = _destroy_and_undefine(conn, domain)
    finally:
        conn.close()
    (cache_dir() / f"{domain}.json").unlink(missing_ok=True)
    return existed


def status(uri: str = DEFAULT_URI, domain: str = DEFAULT_DOMAIN) -> dict[str, object]:
    """What is up: daemons, domain state, whether the service answers."""
    import libvirt

    state = TestbedState.load(domain)
    out: dict[str, object] = {
        "libvirtd": libvirt_socket_alive(),
        "domain": domain,
        "uri": uri,
        "image_built": build_cached_image_exists(),
    }
    if state:
        out.update(port=state.port, metrics_url=state.metrics_url, domain_type=state.domain_type, vcpus=state.vcpus)
    if out["libvirtd"] or uri != DEFAULT_URI:
        try:
            conn = _open(uri)
        except TestbedError as exc:
            out["error"] = str(exc)
            return out
        try:
            dom = conn.lookupByName(domain)
            out["active"] = bool(dom.isActive())
        except libvirt.libvirtError:
            out["active"] = False
        finally:
            conn.close()
    out["service_answers"] = bool(state and service_answers(state.port))
    return out


def build_cached_image_exists() -> bool:
    out = cache_dir()
    return (out / "initramfs.cpio.gz").is_file() and (out / "vvho-service").is_file()
