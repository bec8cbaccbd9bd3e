"""The persisted snapshot of a domain's original settings: atomic files, owners that are alive or not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vvho_env.live.attach import port_from_xml
from vvho_env.live.snapshot import LIVE_TOKENS, Owner, Snapshot, SnapshotError, SnapshotStore


def _snap(owner: Owner) -> Snapshot:
    return Snapshot("qemu:///system", "vm/1", "uuid-1", {"vcpu_quota": -1, "vcpu_pinning": "shared"},
                    {"schedinfo": {"params": {"vcpu_quota": -1}}}, owner, 1234, "2026-01-01T00:00:00+0000")


def test_save_load_remove_round_trip(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    snap = _snap(Owner.me())
    path = store.save(snap)
    assert path.parent == tmp_path and "/" not in path.name.removesuffix(".json").split("@")[0]
    assert store.load(snap.uri, snap.domain) == snap
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary file left behind"
    assert store.path("qemu+ssh://other/system", snap.domain) != path, "one file per URI and domain"
    store.remove(snap.uri, snap.domain)
    assert store.load(snap.uri, snap.domain) is None


def test_a_damaged_snapshot_is_named_not_guessed(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.path("qemu:///system", "vm").write_text("{not json")
    with pytest.raises(SnapshotError, match=r"vm@.*\.json: not a snapshot of format 1"):
        store.load("qemu:///system", "vm")


def test_owner_alive_only_while_its_process_and_backend_live() -> None:
    me = Owner.me()
    assert not me.alive(), "a token of this process counts only while its backend is open"
    LIVE_TOKENS.add(me.token)
    try:
        assert me.alive()
    finally:
        LIVE_TOKENS.discard(me.token)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start = Owner.me().start_ticks  # any start time that is not the child's
        from vvho_env.live.hostctl import process_start_ticks

        alive = Owner(child.pid, process_start_ticks(child.pid) or 0, "t")
        assert alive.alive()
        assert not Owner(child.pid, start - 1, "t").alive(), "a reused pid is another process"
    finally:
        child.kill()
        child.wait()
    assert not alive.alive()


def test_the_probe_port_is_found_in_a_hostfwd() -> None:
    xml = "<qemu:arg value='user,id=n0,hostfwd=tcp:127.0.0.1:17107-:7'/>"
    assert port_from_xml(xml) == 17107
    assert port_from_xml("<domain/>") is None
