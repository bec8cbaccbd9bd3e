"""A domain the project did not create, running a plain TCP echo service: attach to it, never redefine it.

The fixture plays the operator: it defines a second domain with `virsh define` from its own XML (no vvho
metadata) whose guest runs busybox `nc -ll -p 7 -e cat` (a plain echo: no service time, no control
lines) behind a hostfwd on another port. `vvho host check`, a live episode and `vvho host restore` work
against it; `vvho testbed up/down` refuse it; its persistent XML and UUID stay as they were.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import URI, make_env, read_back, virsh, wait_for_echo, wait_until
from test_live_faults import alive, start_holder
from typer.testing import CliRunner

pytestmark = pytest.mark.live

NAME = "vvho-foreign-echo"
PORT = 17107
IMAGES = Path("/var/lib/libvirt/images/vvho-foreign")
XML = """<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <memory unit='MiB'>160</memory>
  <vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{kernel}</kernel><initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 panic=-1 loglevel=4</cmdline></os>
  <on_poweroff>destroy</on_poweroff>
  <devices><memballoon model='none'/></devices>
  <qemu:commandline>
    <qemu:arg value='-netdev'/><qemu:arg value='user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:7'/>
    <qemu:arg value='-device'/><qemu:arg value='virtio-net-pci,netdev=n0,addr=0x9'/>
  </qemu:commandline>
</domain>
"""


def _remove() -> None:
    for cmd in (("destroy", NAME), ("undefine", NAME)):
        subprocess.run(["virsh", "-c", URI, *cmd], capture_output=True)


@pytest.fixture(scope="module")
def foreign(testbed: dict[str, object]) -> Iterator[dict[str, Any]]:
    from vvho_env.live import testbed as tb

    image = tb.build_image()
    _remove()  # a leftover of an interrupted run of this module
    IMAGES.mkdir(parents=True, exist_ok=True)
    kernel, initrd = IMAGES / image.kernel.name, IMAGES / "initramfs-echo.cpio.gz"
    shutil.copyfile(image.kernel, kernel)
    tb.write_initramfs(initrd, tb.guest_init("nc -ll -p 7 -e cat"), [], image.kernel_version)
    xml_file = IMAGES / f"{NAME}.xml"
    xml_file.write_text(XML.format(name=NAME, kernel=kernel, initrd=initrd, port=PORT))
    virsh("define", str(xml_file))
    virsh("start", NAME)
    try:
        boot = wait_for_echo(PORT)
        yield {"uuid": virsh("domuuid", NAME).strip(), "xml": virsh("dumpxml", "--inactive", NAME), "boot_s": boot}
    finally:
        _remove()
        shutil.rmtree(IMAGES, ignore_errors=True)


def _unchanged(foreign: dict[str, Any]) -> None:
    assert virsh("domuuid", NAME).strip() == foreign["uuid"]
    assert virsh("dumpxml", "--inactive", NAME) == foreign["xml"], "the persistent definition is untouched"


def test_host_check_attaches_to_a_plain_echo(foreign: dict[str, Any]) -> None:
    from vvho.cli import app

    r = CliRunner().invoke(app, ["host", "check", "--connect", URI, "--domain", NAME, "--port", str(PORT),
                                 "--seconds", "1", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert "a plain TCP echo service (no service time, no guest-side knobs)" in report["guest"]
    assert "vcpu_quota" in report["settable"] and "busy_poll_us" not in report["settable"]
    assert "plain echo" in report["  not busy_poll_us"] and report["ok"] is True
    table = CliRunner().invoke(app, ["host", "check", "--connect", URI, "--domain", NAME, "--port", str(PORT),
                                     "--seconds", "1"], env={"COLUMNS": "80"})
    assert table.exit_code == 0 and "plain TCP echo" in table.stdout, table.output
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    _unchanged(foreign)


def test_testbed_commands_refuse_a_domain_they_did_not_create(foreign: dict[str, Any]) -> None:
    from vvho.cli import app

    for cmd in (["testbed", "up", "--domain", NAME, "--port", "17207"], ["testbed", "down", "--domain", NAME]):
        r = CliRunner().invoke(app, cmd)
        assert r.exit_code == 2, r.output  # a VVHOError: one line, exit 2, like every refused input
        assert "was not created by `vvho testbed up`" in r.output and "will not destroy or redefine" in r.output
        assert f"--domain {NAME} --port P" in r.output
    assert virsh("domstate", NAME).strip() == "running"
    _unchanged(foreign)


def test_a_live_episode_on_the_foreign_domain(foreign: dict[str, Any]) -> None:
    before = read_back(NAME)
    env = make_env(domain=NAME, port=PORT, max_steps=3)
    try:
        backend = env.unwrapped.backend
        assert not backend.capabilities().service_time and "busy_poll_us" not in env.unwrapped.knob_names
        env.reset(seed=0)
        env.action_space.seed(0)
        for _ in range(3):
            _, reward, _, _, info = env.step(env.action_space.sample())
            assert np.isfinite(reward)
            assert "truncated_reason" not in info, info
            assert info["telemetry"]["served_rps"] > 50
            assert any("not applied: the target is a plain echo" in n for n in info["telemetry"]["notes"])
    finally:
        env.close()
    assert read_back(NAME) == before
    _unchanged(foreign)


def test_host_restore_after_a_crash_on_the_foreign_domain(foreign: dict[str, Any]) -> None:
    from vvho.cli import app

    before = read_back(NAME)
    proc, held = start_holder(5.0, NAME, PORT)
    assert held["applied"]["vcpu_quota"] == 40000 and "busy_poll_us" not in held["applied"]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_back(NAME) != before, "the killed controller left its settings behind"
    r = CliRunner().invoke(app, ["host", "restore", "--connect", URI, "--domain", NAME, "--port", str(PORT)])
    assert r.exit_code == 0, r.output
    assert read_back(NAME) == before
    assert wait_until(lambda: not any(alive(p) for p in held["children"]), 5.0) is not None
    _unchanged(foreign)
