"""The write-behind writer: store writes batched and off the turn's path.

:class:`WriteBehindStore` wraps any backend and implements the same
:class:`~ray_realtime.store.interface.SessionStore` protocol. A write
(:meth:`WriteBehindStore.enqueue`, or any of the protocol's async writes) only
queues the op: it costs O(1), never waits for the backend and never blocks. A
background task the writer owns sends the queue to the backend as one batch
``flush_interval_seconds`` after the first queued op, or at once when
``max_batch_ops`` are queued or someone awaits :meth:`~WriteBehindStore.flush`.
With nothing queued the task sleeps (no idle timer).

Coalescing. Writes to the same field that are still queued merge in place: a
later ``UpdateSession`` merges into the queued one, a reader's newer position
replaces its older one, and a newer version of a history item replaces the
queued one (keeping its place). The effect is that of applying every write in
order, with fewer ops. ``PutSession`` and ``DeleteSession`` are barriers: no
later write merges into an op queued before them.

Flush and the history guarantee. ``await flush()`` returns once every write
made before the call is in the backend, or raises
:class:`~ray_realtime.exceptions.StoreUnavailableError`. Concurrent flushes
share batches: callers that flush while a batch is being written are all
served by the next one, so N flushes cost about one round trip, not N. This
is how the session keeps the guarantee "an item that any reader saw in
``history_added`` is in the store": it queues the item, awaits ``flush()``,
and only then emits ``history_added`` (flush-before-emit). Audio and every
other event go out without waiting; only the emission of completed items pays
one store round trip, shared by every item completed meanwhile.

Bounds and failures. At most ``max_pending_ops`` ops wait in the queue (the
batch being written aside). When it is full, a write that would add an op
raises :class:`~ray_realtime.exceptions.StoreOverflowError` and queues
nothing; a write that merges into a queued op still succeeds. A failed or
timed-out batch is kept and retried with exponential backoff (writes are
idempotent, so a retry cannot duplicate); meanwhile every pending ``flush()``
raises ``StoreUnavailableError`` and ``on_error`` is called with the same
error, so the failure reaches the session (and from there its readers as an
event), not only a log line. :meth:`~WriteBehindStore.aclose` flushes, then
stops the task; it does not close the wrapped backend, which may be shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ray_realtime.exceptions import (
    ConfigError,
    StoreError,
    StoreOverflowError,
    StoreUnavailableError,
    UserError,
)
from ray_realtime.store.interface import BaseSessionStore, SessionStore
from ray_realtime.store.records import (
    DeleteItem,
    DeleteSession,
    PutItem,
    PutSession,
    RemoveReader,
    SessionState,
    SetReader,
    StoreOp,
    UpdateSession,
)

__all__ = ["WriteBehindStore", "WriterStatistics"]

logger = logging.getLogger(__name__)

_OP_TYPES = (PutSession, UpdateSession, DeleteSession, PutItem, DeleteItem, SetReader, RemoveReader)

_Key = tuple[str, str, str]
"""A coalescing key: (field kind, session id, item or reader id)."""


def _key_of(op: StoreOp) -> _Key | None:
    """The key of the field ``op`` overwrites, when later writes may merge into it."""
    if isinstance(op, UpdateSession):
        return ("u", op.session_id, "")
    if isinstance(op, (SetReader, RemoveReader)):
        return ("r", op.session_id, op.reader_id)
    if isinstance(op, PutItem):
        return ("i", op.session_id, op.item.item_id)
    return None


@dataclass(frozen=True)
class WriterStatistics:
    """A snapshot of a writer's counters."""

    pending_ops: int
    """Ops queued and not yet being written."""
    inflight_ops: int
    """Ops of the batch being written (or retried)."""
    enqueued: int
    """Writes accepted since the start."""
    coalesced: int
    """Writes that merged into a queued op instead of adding one."""
    written_ops: int
    """Ops the backend acknowledged."""
    batches: int
    """Backend calls that succeeded."""
    failures: int
    """Backend calls that failed or timed out."""
    overflows: int
    """Writes refused because the queue was full."""
    last_error: str
    """The last failure, as text ("" if none)."""


class WriteBehindStore(BaseSessionStore):
    """Queue, coalesce and batch writes to ``backend`` (see the module docstring).

    ``on_error`` is called (on the event loop) with the
    :class:`~ray_realtime.exceptions.StoreUnavailableError` of each failed batch.
    """

    def __init__(
        self,
        backend: SessionStore,
        flush_interval_seconds: float = 0.01,
        max_batch_ops: int = 512,
        max_pending_ops: int = 10_000,
        write_timeout_seconds: float = 5.0,
        retry_max_seconds: float = 2.0,
        on_error: Callable[[StoreUnavailableError], None] | None = None,
    ) -> None:
        for name, value in (
            ("flush_interval_seconds", flush_interval_seconds),
            ("write_timeout_seconds", write_timeout_seconds),
            ("retry_max_seconds", retry_max_seconds),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a number > 0, got {value!r}")
        for name, count in (("max_batch_ops", max_batch_ops), ("max_pending_ops", max_pending_ops)):
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {count!r}")
        self.backend = backend
        self._interval = float(flush_interval_seconds)
        self._max_batch = max_batch_ops
        self._max_pending = max_pending_ops
        self._write_timeout = float(write_timeout_seconds)
        self._retry_max = float(retry_max_seconds)
        self._on_error = on_error

        # The queue: ops in order; None marks an op dropped by a later delete.
        self._pending: list[StoreOp | None] = []
        self._slots: dict[_Key, int] = {}
        self._keys_of_session: dict[str, set[_Key]] = {}
        self._inflight: list[StoreOp] | None = None
        self._inflight_done = 0
        self._inflight_gen = 0
        # Generations: every accepted write bumps _gen; _durable_gen is the
        # _gen whose writes are all in the backend.
        self._gen = 0
        self._durable_gen = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

        self._work = asyncio.Event()
        self._urgent = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._broken: StoreError | None = None

        self._coalesced = 0
        self._written = 0
        self._batches = 0
        self._failures = 0
        self._overflows = 0
        self._last_error = ""

    # ------------------------------------------------------------- writing

    def enqueue(self, op: StoreOp) -> None:
        """Queue one write (O(1), never waits); see the module docstring."""
        self._check_usable()
        if not isinstance(op, _OP_TYPES):
            raise UserError(f"not a store op: {type(op).__name__}")
        key = _key_of(op)
        index = self._slots.get(key) if key is not None else None
        if index is not None:
            previous = self._pending[index]
            if isinstance(op, UpdateSession) and isinstance(previous, UpdateSession):
                op = previous.merged(op)
            self._pending[index] = op
            self._coalesced += 1
            self._accepted()
            return
        if len(self._pending) >= self._max_pending:
            self._overflows += 1
            raise StoreOverflowError(
                f"the session store's write queue is full ({self._max_pending} ops): "
                f"the backend is not keeping up; the write was not queued"
            )
        if isinstance(op, (PutSession, DeleteSession)):
            for stale in self._keys_of_session.pop(op.session_id, ()):
                del self._slots[stale]
        elif isinstance(op, DeleteItem):
            item_key: _Key = ("i", op.session_id, op.item_id)
            dropped = self._slots.pop(item_key, None)
            if dropped is not None:
                # The queued put never needs to reach the backend; a later put of
                # the same id must land after this delete, at the end.
                self._pending[dropped] = None
                self._keys_of_session[op.session_id].discard(item_key)
        self._pending.append(op)
        if key is not None:
            self._slots[key] = len(self._pending) - 1
            self._keys_of_session.setdefault(op.session_id, set()).add(key)
        self._accepted()

    async def apply(self, ops: Sequence[StoreOp]) -> None:
        """Queue ``ops`` (all of them, or none when the queue cannot take them)."""
        self._check_usable()
        growth = sum(1 for op in ops if (key := _key_of(op)) is None or key not in self._slots)
        if growth and len(self._pending) + growth > self._max_pending:
            self._overflows += 1
            raise StoreOverflowError(
                f"the session store's write queue cannot take {growth} more ops "
                f"({len(self._pending)} of {self._max_pending} queued); nothing was queued"
            )
        for op in ops:
            self.enqueue(op)

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise self._broken
        if self._closed:
            raise StoreError("the session store writer is closed")

    def _accepted(self) -> None:
        self._gen += 1
        self._work.set()
        if len(self._pending) >= self._max_batch:
            self._urgent.set()
        self._ensure_task()

    # --------------------------------------------------------------- flush

    async def flush(self) -> None:
        """Return once every write queued before the call is in the backend."""
        self._check_usable()
        if self._durable_gen >= self._gen:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._gen, future))
        self._urgent.set()
        self._work.set()
        self._ensure_task()
        await future

    async def load(self, session_id: str) -> SessionState:
        """The session's state, after flushing (a read sees every earlier write)."""
        await self.flush()
        return await self.backend.load(session_id)

    async def list_sessions(self) -> list[str]:
        """The stored session ids, after flushing."""
        await self.flush()
        return await self.backend.list_sessions()

    async def aclose(self) -> None:
        """Flush (bounded by the write timeout and one retry), then stop.

        Raises :class:`~ray_realtime.exceptions.StoreUnavailableError` naming
        how many writes were not stored when the flush fails.
        """
        if self._closed:
            return
        error: StoreError | None = None
        if self._broken is None:
            try:
                await asyncio.wait_for(self.flush(), 2 * self._write_timeout + self._retry_max)
            except (TimeoutError, StoreError) as exc:
                lost = self.statistics()
                count = lost.pending_ops + lost.inflight_ops
                error = StoreUnavailableError(
                    f"the session store writer closed with {count} writes not stored: {exc}"
                )
        self._closed = True
        await self._stop_task()
        self._fail_waiters(StoreError("the session store writer is closed"))
        if error is not None:
            raise error

    def statistics(self) -> WriterStatistics:
        """A snapshot of the writer's counters."""
        return WriterStatistics(
            pending_ops=sum(1 for op in self._pending if op is not None),
            inflight_ops=0 if self._inflight is None else len(self._inflight) - self._inflight_done,
            enqueued=self._gen,
            coalesced=self._coalesced,
            written_ops=self._written,
            batches=self._batches,
            failures=self._failures,
            overflows=self._overflows,
            last_error=self._last_error,
        )

    # ------------------------------------------------------ the flush task

    def _ensure_task(self) -> None:
        if self._task is not None or self._closed:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # queued from sync code: the task starts with the next async call
        self._task = asyncio.create_task(self._run(), name="ray-realtime-store-writer")
        self._task.add_done_callback(self._task_done)

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._closed:
            return
        exc = task.exception()
        # A bug in the loop below: make every later call fail loudly, not hang.
        self._broken = StoreError(f"the session store writer stopped: {exc!r}")
        logger.error("the session store writer stopped", exc_info=exc)
        self._fail_waiters(self._broken)

    async def _run(self) -> None:
        retry_delay = self._interval
        while True:
            await self._work.wait()
            if self._inflight is None and not self._urgent.is_set():
                # Let writes gather for one interval unless someone is waiting.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self._interval)
            self._urgent.clear()
            if self._inflight is None and not self._take_batch():
                self._work.clear()
                continue
            error = await self._write_inflight()
            if error is None:
                retry_delay = self._interval
                self._durable_gen = self._inflight_gen
                self._inflight = None
                self._resolve_waiters()
                if not self._pending:
                    self._work.clear()
                continue
            self._report(error)
            await asyncio.sleep(retry_delay)
            retry_delay = min(2 * retry_delay, self._retry_max)

    def _take_batch(self) -> bool:
        """Move the queue into the in-flight batch; False when it was empty."""
        ops = [op for op in self._pending if op is not None]
        gen = self._gen
        self._pending = []
        self._slots.clear()
        self._keys_of_session.clear()
        if not ops:
            self._durable_gen = gen
            self._resolve_waiters()
            return False
        self._inflight = ops
        self._inflight_done = 0
        self._inflight_gen = gen
        return True

    async def _write_inflight(self) -> StoreUnavailableError | None:
        """Send the in-flight batch in chunks; the error of a failed chunk, or None."""
        assert self._inflight is not None
        ops = self._inflight
        while self._inflight_done < len(ops):
            chunk = ops[self._inflight_done : self._inflight_done + self._max_batch]
            try:
                await asyncio.wait_for(self.backend.apply(chunk), self._write_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = (
                    f"timed out after {self._write_timeout:g} s"
                    if isinstance(exc, asyncio.TimeoutError)
                    else f"{type(exc).__name__}: {exc}"
                )
                error = StoreUnavailableError(
                    f"the session store failed a batch of {len(chunk)} writes "
                    f"({len(ops) - self._inflight_done} waiting to be retried): {reason}"
                )
                error.__cause__ = exc
                return error
            self._inflight_done += len(chunk)
            self._written += len(chunk)
            self._batches += 1
        return None

    def _report(self, error: StoreUnavailableError) -> None:
        self._failures += 1
        self._last_error = str(error)
        logger.warning("%s; retrying", error)
        self._fail_waiters(error)
        if self._on_error is not None:
            try:
                self._on_error(error)
            except Exception:
                logger.exception("the session store's on_error callback failed")

    def _resolve_waiters(self) -> None:
        waiting: list[tuple[int, asyncio.Future[None]]] = []
        for target, future in self._waiters:
            if target <= self._durable_gen:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((target, future))
        self._waiters = waiting

    def _fail_waiters(self, error: StoreError) -> None:
        waiters, self._waiters = self._waiters, []
        for _, future in waiters:
            if not future.done():
                future.set_exception(error)
