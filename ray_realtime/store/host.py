"""The embedded store's host: state in memory, every batch appended to SQLite.

:class:`StoreHost` is a plain class; :mod:`ray_realtime.store.actor` makes it
the detached store actor. It keeps every session in a
:class:`~ray_realtime.store.state.StoreState` and writes each batch to a
:class:`~ray_realtime.store.sqlite.SqliteStore` *before* applying it in
memory, so whatever a reader can load is already on disk. On its first call
it loads the whole file back into memory: an actor restarted on the same file
(after a crash, SIGKILL included) has everything that was acknowledged.

Its methods take and return msgpack bytes (:func:`encode_ops`,
:func:`encode_state`), so what crosses to it is one codec's output, not
pickled objects. :class:`HostStore` is the client side of that interface over
any transport; :class:`InProcessHostStore` calls a host in this process (the
Ray-less way to run the same code, used by tests), and
:class:`~ray_realtime.store.actor.ActorStore` calls the actor.
"""

from __future__ import annotations

import abc
import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

from ray_realtime.exceptions import SessionNotFoundError
from ray_realtime.store.interface import BaseSessionStore
from ray_realtime.store.records import (
    PutSession,
    SessionState,
    StoreOp,
    decode_ops,
    decode_state,
    encode_ops,
    encode_state,
)
from ray_realtime.store.sqlite import SqliteStore
from ray_realtime.store.state import StoreState

__all__ = ["HostStore", "InProcessHostStore", "StoreHost"]


class StoreHost:
    """The embedded store: memory for reads, a SQLite file for durability."""

    def __init__(self, path: str, synchronous: Literal["NORMAL", "FULL"] = "NORMAL") -> None:
        self._path = path
        self._synchronous: Literal["NORMAL", "FULL"] = synchronous
        self._state = StoreState()
        self._sqlite: SqliteStore | None = None
        # One batch at a time: memory must apply batches in the file's order.
        self._lock = asyncio.Lock()
        self._started = time.time()
        self._batches = 0
        self._ops = 0
        self._loaded_sessions = 0

    async def _opened(self) -> SqliteStore:
        if self._sqlite is not None:
            return self._sqlite
        async with self._lock:
            if self._sqlite is None:
                sqlite = await SqliteStore.open(self._path, self._synchronous)
                try:
                    for session_id in await sqlite.list_sessions():
                        self._state.apply_one(PutSession(await sqlite.load(session_id)))
                except BaseException:
                    await sqlite.aclose()
                    raise
                self._loaded_sessions = len(self._state.session_ids())
                self._sqlite = sqlite
        return self._sqlite

    async def apply(self, batch: bytes) -> None:
        """Apply a batch of encoded ops: to the file first, then to memory."""
        ops = decode_ops(batch)
        sqlite = await self._opened()
        async with self._lock:
            await sqlite.apply(ops)
            self._state.apply(ops)
            self._batches += 1
            self._ops += len(ops)

    async def load(self, session_id: str) -> bytes | None:
        """One session's encoded state, or None when it is not stored."""
        await self._opened()
        try:
            return encode_state(self._state.load(session_id))
        except SessionNotFoundError:
            return None

    async def list_sessions(self) -> list[str]:
        """The stored session ids, sorted."""
        await self._opened()
        return self._state.session_ids()

    async def statistics(self) -> dict[str, Any]:
        """Where the host runs and what it holds (plain data)."""
        await self._opened()
        sessions, items = self._state.counts()
        return {
            "pid": os.getpid(),
            "path": self._path,
            "started_at": self._started,
            "sessions": sessions,
            "items": items,
            "batches": self._batches,
            "ops": self._ops,
            "loaded_sessions": self._loaded_sessions,
        }

    async def close(self) -> None:
        """Close the file (the host answers no further calls)."""
        async with self._lock:
            if self._sqlite is not None:
                await self._sqlite.aclose()


class HostStore(BaseSessionStore):
    """A :class:`~ray_realtime.store.interface.SessionStore` that calls a
    :class:`StoreHost` through :meth:`_call` (a transport the subclass gives)."""

    @abc.abstractmethod
    async def _call(self, method: str, *args: Any) -> Any:
        """Call ``method`` of the host with ``args``; our errors, translated."""

    async def apply(self, ops: Sequence[StoreOp]) -> None:
        """Send ``ops`` to the host as one batch."""
        if ops:
            await self._call("apply", encode_ops(ops))

    async def load(self, session_id: str) -> SessionState:
        """One session's state, from the host's memory."""
        data = await self._call("load", session_id)
        if data is None:
            raise SessionNotFoundError(f"the store holds no session {session_id!r}", session_id)
        return decode_state(data)

    async def list_sessions(self) -> list[str]:
        """The stored session ids, sorted."""
        return list(await self._call("list_sessions"))

    async def statistics(self) -> dict[str, Any]:
        """The host's :meth:`StoreHost.statistics`."""
        return dict(await self._call("statistics"))


class InProcessHostStore(HostStore):
    """Calls a :class:`StoreHost` living in this process (no Ray)."""

    def __init__(self, host: StoreHost) -> None:
        self.host = host

    async def _call(self, method: str, *args: Any) -> Any:
        return await getattr(self.host, method)(*args)

    async def aclose(self) -> None:
        """Close the host's file."""
        await self.host.close()
