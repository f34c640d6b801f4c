"""A worker's health: which of its threads are stuck, and when to retire it.

A sync tool runs in a thread (``asyncio.to_thread``), and a call that times
out cannot stop that thread: Python has no way to kill one. The call ends for
the session, but the thread runs on, holding one of the worker's threads,
possibly forever. Enough of them and the worker has no thread left for live
calls.

:class:`ThreadLedger` (plain, no asyncio, no Ray) keeps the books: the calls in
flight, and every piece of work a call handed to the worker's thread pool. A
thread whose call has already ended is *stuck*. When ``stuck_limit`` threads
are stuck the worker retires: it refuses new calls
(:class:`WorkerRetiring`, which sessions answer by taking another worker),
the router starts a replacement, and the process — stuck threads with it —
is killed once its calls in flight are done, or after a grace period.

:class:`TrackingExecutor` is the worker's thread pool: a
``ThreadPoolExecutor`` that tells the ledger which call each piece of work
belongs to (read from :data:`CURRENT_CALL`, which the worker sets around each
call; ``asyncio.to_thread`` submits from the calling task, so the variable is
the call's own).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = [
    "CURRENT_CALL",
    "MAX_THREADS",
    "ThreadLedger",
    "TrackingExecutor",
    "WorkerRetiring",
]

T = TypeVar("T")

MAX_THREADS = 32
"""Threads of a worker's pool. A stuck limit above half of it is lowered to
half, so a worker always keeps threads for live calls until it retires."""

CURRENT_CALL: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "ray_realtime_worker_call", default=None
)
"""The ledger's id of the call running in this task (None outside calls)."""


class WorkerRetiring(Exception):
    """The worker is retiring (its threads are stuck) and took no part of
    this call: the caller may send it to another worker."""

    def __init__(self, message: str = "this worker is retiring") -> None:
        super().__init__(message)


class ThreadLedger:
    """The books of one worker: calls in flight and the threads they started.

    Thread-safe: threads report their end from the pool's own threads.
    """

    def __init__(self, stuck_limit: int, max_threads: int = MAX_THREADS) -> None:
        self._lock = threading.Lock()
        self._max_threads = max_threads
        self._limit = 1
        self.stuck_limit = stuck_limit
        self._next_call = 0
        self._open: set[int] = set()
        self._threads: dict[object, int | None] = {}
        self.retiring = False
        self.stuck_total = 0

    @property
    def stuck_limit(self) -> int:
        """Stuck threads at which the worker retires (at most half the pool)."""
        return self._limit

    @stuck_limit.setter
    def stuck_limit(self, value: int) -> None:
        self._limit = max(1, min(int(value), self._max_threads // 2))

    # -------------------------------------------------------------- calls

    def open_call(self) -> int:
        """A call starts; its id. Raises :class:`WorkerRetiring` once retiring."""
        with self._lock:
            if self.retiring:
                raise WorkerRetiring()
            self._next_call += 1
            self._open.add(self._next_call)
            return self._next_call

    def close_call(self, call: int) -> bool:
        """A call ended (answered, failed or timed out); whether the worker
        must retire now. Its threads still running are stuck from now on."""
        with self._lock:
            self._open.discard(call)
            left = sum(1 for c in self._threads.values() if c == call)
            self.stuck_total += left
            return self._check()

    def check(self) -> bool:
        """Whether the worker must retire (and mark it retiring if so)."""
        with self._lock:
            return self._check()

    def _check(self) -> bool:
        if not self.retiring and self._stuck() >= self._limit:
            self.retiring = True
        return self.retiring

    # ------------------------------------------------------------ threads

    def thread_started(self, key: object, call: int | None) -> None:
        """Work of ``call`` (None: of no call) went to the thread pool."""
        with self._lock:
            self._threads[key] = call

    def thread_done(self, key: object) -> None:
        """That work finished (its thread is free again)."""
        with self._lock:
            self._threads.pop(key, None)

    # ----------------------------------------------------------- figures

    def _stuck(self) -> int:
        return sum(1 for c in self._threads.values() if c is not None and c not in self._open)

    @property
    def stuck(self) -> int:
        """Threads still running for calls that already ended."""
        with self._lock:
            return self._stuck()

    @property
    def busy(self) -> int:
        """Threads running (or queued) work."""
        with self._lock:
            return len(self._threads)

    @property
    def in_flight(self) -> int:
        """Calls that have not ended."""
        with self._lock:
            return len(self._open)


class TrackingExecutor(ThreadPoolExecutor):
    """A thread pool that books each piece of work under its call."""

    def __init__(self, ledger: ThreadLedger, max_workers: int = MAX_THREADS) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="ray-realtime-tool")
        self._ledger = ledger

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Submit as usual, booked under :data:`CURRENT_CALL`."""
        future = super().submit(fn, *args, **kwargs)
        self._ledger.thread_started(future, CURRENT_CALL.get())
        # Runs at once when the work already finished: the ledger stays exact.
        future.add_done_callback(self._ledger.thread_done)
        return future
