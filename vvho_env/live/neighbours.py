"""CPU-bound noisy neighbours: one process per chosen pCPU with a duty cycle that follows the scenario.

Each neighbour dies with the thread that started it (PR_SET_PDEATHSIG), so a killed controller leaves
no CPU hog behind.

Each neighbour works in slots of SLOT_S: at the start of a slot it becomes runnable and burns demand x SLOT_S
of its own CPU time (counted with the thread CPU clock, so the amount of work is fixed whatever the
contention), then sleeps until the next slot; work it could not finish carries over and it stays runnable.
It reports, in shared memory, its cumulative runnable wall time and the CPU time it got while runnable.
Neighbour slowdown = 1 - CPU got / runnable time: the share of its runnable time spent waiting for a CPU,
which is 1 - (achieved work rate / alone rate) because alone it would run all the time it is runnable.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized, SynchronizedArray

from vvho_env.live.hostctl import die_with_parent

SLOT_S = 0.02


def _neighbour_main(cpu: int, demand: Synchronized, stats: SynchronizedArray, stop: Synchronized) -> None:
    """Entry point of one neighbour process (module level so the 'spawn' context can import it)."""
    die_with_parent()  # a CPU hog must never outlive a killed controller
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError:
        stats[2] = 1.0  # tell the parent pinning failed
    owed = 0.0  # CPU seconds of work due but not yet done
    next_slot = time.monotonic()
    while not stop.value:
        owed += max(0.0, min(1.0, float(demand.value))) * SLOT_S
        next_slot += SLOT_S
        if owed > 1e-4:
            w0, c0 = time.monotonic(), time.thread_time()
            while time.thread_time() - c0 < owed and time.monotonic() < next_slot:
                pass
            got = time.thread_time() - c0
            owed = max(0.0, owed - got)
            with stats.get_lock():
                stats[0] += time.monotonic() - w0
                stats[1] += got
        pause = next_slot - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        elif pause < -1.0:  # fell far behind (host stalled): do not try to catch up a backlog of slots
            next_slot = time.monotonic()


@dataclass(frozen=True)
class NeighbourSample:
    runnable_s: float
    cpu_s: float

    def __sub__(self, other: NeighbourSample) -> NeighbourSample:
        return NeighbourSample(self.runnable_s - other.runnable_s, self.cpu_s - other.cpu_s)

    @property
    def slowdown(self) -> float:
        if self.runnable_s <= 1e-6:
            return 0.0
        return min(1.0, max(0.0, 1.0 - self.cpu_s / self.runnable_s))


class Neighbours:
    """Neighbour processes pinned on `cpus`, demand 0 until set_demand() is called."""

    def __init__(self, cpus: Sequence[int]) -> None:
        ctx = mp.get_context("spawn")  # fork in a process with libvirt threads is unsafe
        self.cpus = tuple(cpus)
        self._stop = ctx.Value("b", 0, lock=False)
        self._demand = [ctx.Value("d", 0.0, lock=False) for _ in self.cpus]
        self._stats = [ctx.Array("d", 3) for _ in self.cpus]
        self._procs = [
            ctx.Process(
                target=_neighbour_main,
                args=(cpu, d, s, self._stop),
                daemon=True,
                name=f"vvho-neighbour-cpu{cpu}",
            )
            for cpu, d, s in zip(self.cpus, self._demand, self._stats, strict=True)
        ]
        for p in self._procs:
            p.start()

    def set_demand(self, demand: Sequence[float]) -> None:
        """Demand per neighbour (fraction of one pCPU, 0..1); missing entries mean 0."""
        for i, value in enumerate(self._demand):
            value.value = float(demand[i]) if i < len(demand) else 0.0

    def alive(self) -> bool:
        return all(p.is_alive() for p in self._procs)

    def sample(self) -> NeighbourSample:
        runnable = cpu = 0.0
        for s in self._stats:
            with s.get_lock():
                runnable += s[0]
                cpu += s[1]
        return NeighbourSample(runnable, cpu)

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def close(self) -> None:
        self._stop.value = 1
        for p in self._procs:
            p.join(timeout=2)
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
        self._procs = []
