"""The one small interface through which ``vvho compare`` runs its jobs, and the local engine behind it.

A ``Runner`` takes a picklable top-level function and its picklable argument and returns a
``concurrent.futures.Future``; the compare engine only submits, waits and reads results. The local
runner uses worker processes started with ``spawn`` (a fresh interpreter each: no forked torch,
numba or MLflow state, and safe from any thread), or runs jobs inline with one worker. A distributed
engine (e.g. Ray, whose object references convert to concurrent futures) implements the same two
methods.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Runner(Protocol):
    def submit(self, fn: Callable[[Any], T], arg: Any) -> Future[T]: ...

    def close(self) -> None: ...


class ProcessRunner:
    """Jobs in `workers` spawned processes."""

    def __init__(self, workers: int) -> None:
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, fn: Callable[[Any], T], arg: Any) -> Future[T]:
        return self._pool.submit(fn, arg)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def local_runner(workers: int) -> Runner:
    return ProcessRunner(workers)
