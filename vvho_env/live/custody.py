"""Custody of a domain's original settings: taken when a backend opens, persisted before its first
change, put back when it closes, after a controller died, or by `vvho host restore`.

A restore is raw (every driver puts back exactly what it saved) and then checked by reading every knob
back against the snapshot's settings; what did not come back is returned, never swallowed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from vvho_env.live.connection import LibvirtLink
from vvho_env.live.drivers import HostContext, KnobDriver
from vvho_env.live.instance import QemuInstance
from vvho_env.live.snapshot import Owner, Snapshot, SnapshotStore, now_iso
from vvho_env.live.transaction import Transaction, error_text
from vvho_env.types import BackendBusy, BackendError, BackendUnavailable, RestoreFailed

HOST_WIDE = frozenset({"halt_poll_ns"})
THREADS = "sched_setscheduler"  # the driver whose saved state belongs to one QEMU process


class Custody:
    def __init__(self, uri: str, domain: str, link: LibvirtLink, ctx: HostContext, drivers: Sequence[KnobDriver],
                 settable: Mapping[str, KnobDriver], tx: Transaction, store: SnapshotStore) -> None:
        self.uri, self.domain = uri, domain
        self.link, self.ctx, self.drivers, self.settable, self.tx, self.store = link, ctx, drivers, settable, tx, store
        self.owner = Owner.me()
        self.remarks: list[str] = []
        self.persisted = False
        self.snapshot: Snapshot | None = None

    @property
    def path(self) -> Path:
        return self.store.path(self.uri, self.domain)

    def take(self) -> Snapshot:
        """The settings now, as every driver sees them and as knobs (kept in memory until persist())."""
        try:
            raw = {d.name: d.save(self.ctx) for d in {id(d): d for d in self.settable.values()}.values()}
            settings = self.tx.read()
        except (OSError, self.link.lv.libvirtError) as exc:
            raise BackendUnavailable(f"reading the current settings of {self.domain!r} failed: "
                                     f"{error_text(exc)}") from None
        inst = self.ctx.instance
        self.snapshot = Snapshot(self.uri, self.domain, self.link.uuid or "", settings, raw, self.owner,
                                 inst.pid if inst else None, now_iso())
        return self.snapshot

    def persist(self) -> None:
        """Before the first change: write the original settings where a crash cannot lose them."""
        if not self.persisted and self.snapshot is not None:
            self.store.save(self.snapshot)
            self.persisted = True

    def drop(self) -> None:
        self.store.remove(self.uri, self.domain)
        self.persisted = False

    def left_by_dead_owner(self, restore: bool) -> tuple[Snapshot | None, Snapshot | None]:
        """A snapshot a controller left when it died: (restored, pending). With restore=False it is only
        reported (pending); a snapshot of a live controller raises BackendBusy."""
        prior = self.store.load(self.uri, self.domain)
        if prior is None:
            return None, None
        if prior.owner.alive():
            raise BackendBusy(
                f"domain {self.domain!r} at {self.uri!r} is being tuned by process {prior.owner.pid} "
                f"(snapshot {self.path}, since {prior.taken}); two controllers would undo each other: stop it first")
        if prior.uuid != self.link.uuid:
            self.remarks.append(f"dropped snapshot {self.path} of a former domain {prior.uuid} under this name")
            self.store.remove(self.uri, self.domain)
            return None, None
        if not restore:
            return None, prior
        failed = self.restore_from(prior)
        if failed:
            raise RestoreFailed(
                f"a controller (pid {prior.owner.pid}) died leaving domain {self.domain!r} changed; restoring "
                f"its snapshot {self.path} failed for: {'; '.join(failed)}. Fix the cause and run "
                f"`vvho host restore --connect {self.uri} --domain {self.domain}`")
        self.store.remove(self.uri, self.domain)
        self.remarks.append(f"restored the settings a dead controller (pid {prior.owner.pid}) left changed, "
                            f"from {self.path}")
        return prior, None

    def restore_from(self, snap: Snapshot) -> list[str]:
        """Raw restore of every driver's saved state, then a read-back against the snapshot's settings.
        Returns what could not be restored (empty: the host is back as the snapshot says)."""
        failed: list[str] = []
        same_instance = not self.ctx.local or (self.ctx.instance is not None
                                               and self.ctx.instance.pid == snap.qemu_pid)
        for d in self.drivers:
            if d.name not in snap.raw or (d.name == THREADS and not same_instance):
                continue  # (the threads and cgroups that driver saved died with the old QEMU process)
            try:
                d.restore(self.ctx, snap.raw[d.name])
            except Exception as exc:
                failed.append(f"{d.name}: {error_text(exc)}")
        try:
            now = self.tx.read(set(snap.settings) & set(self.settable))
        except Exception as exc:
            return [*failed, f"read-back: {error_text(exc)}"]
        failed += [f"{k} is {now[k]!r}, was {v!r}" for k, v in snap.settings.items() if k in now and now[k] != v]
        return failed

    def restore_at_close(self, attempts: int) -> None:
        """Put the snapshot back, retrying with backoff (libvirtd may be coming back); RestoreFailed names
        what is left, and the persisted snapshot stays for `vvho host restore`."""
        assert self.snapshot is not None
        failed: list[str] = []
        for attempt in range(attempts):
            if attempt:
                time.sleep(0.5 * 2 ** (attempt - 1))
            try:
                if self.link.call("checking the domain", lambda d: d.isActive()):
                    with contextlib.suppress(BackendUnavailable):
                        self._follow_restart()
                    failed = self.restore_from(self.snapshot)
                else:  # the live settings died with the instance; only host-wide state is left
                    failed = self._restore_host_wide()
            except BackendError as exc:
                failed = [str(exc)]
            if not failed:
                self.drop()
                return
        raise RestoreFailed(
            f"could not restore the original settings of domain {self.domain!r} at {self.uri!r} after {attempts} "
            f"attempts: {'; '.join(failed)}. They are kept in {self.path}; run `vvho host restore --connect "
            f"{self.uri} --domain {self.domain}` once the host is reachable")

    def _follow_restart(self) -> None:
        if self.ctx.local and (self.ctx.instance is None or not self.ctx.instance.alive()):
            new = QemuInstance.find(self.domain, self.ctx.topology.n_vcpu)
            for d in self.drivers:
                d.forget_instance()
            self.ctx.instance = new

    def _restore_host_wide(self) -> list[str]:
        assert self.snapshot is not None
        failed = []
        for d in self.drivers:
            d.forget_instance()
            if d.name in self.snapshot.raw and set(d.knobs) & HOST_WIDE:
                try:
                    d.restore(self.ctx, self.snapshot.raw[d.name])
                except Exception as exc:
                    failed.append(f"{d.name}: {error_text(exc)}")
        return failed
