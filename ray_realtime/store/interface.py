"""The session store seam: the :class:`SessionStore` protocol and a base class.

A backend implements four methods - :meth:`~SessionStore.apply` (a batch of
ops, atomically where the backend can), :meth:`~SessionStore.load`,
:meth:`~SessionStore.list_sessions` and :meth:`~SessionStore.aclose` - and
inherits the rest from :class:`BaseSessionStore`, whose named writes are each
one op. The write rules are those of :mod:`ray_realtime.store.state`.

Direct backends (memory, SQLite, the store actor, Redis) are write-through:
when a write returns, it is durable as far as the backend goes, so their
:meth:`~SessionStore.flush` returns at once. The write-behind writer
(:class:`~ray_realtime.store.writer.WriteBehindStore`) implements the same
protocol over any of them; there, writes are queued and ``flush`` is what
makes them durable.

Errors: a backend that fails or cannot be reached raises
:class:`~ray_realtime.exceptions.StoreUnavailableError`; ``load`` of an unknown
session raises :class:`~ray_realtime.exceptions.SessionNotFoundError`;
malformed stored data raises :class:`~ray_realtime.exceptions.StoreError`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ray_realtime.store.records import (
    AgentRecord,
    DeleteItem,
    DeleteSession,
    PutItem,
    PutSession,
    RemoveReader,
    Secrets,
    SessionState,
    SetReader,
    StoredItem,
    StoreOp,
    UpdateSession,
)

__all__ = ["BaseSessionStore", "SessionStore"]


@runtime_checkable
class SessionStore(Protocol):
    """Where sessions' durable state lives (see the module docstring)."""

    async def apply(self, ops: Sequence[StoreOp]) -> None:
        """Apply ``ops`` in order, as one batch."""
        ...

    async def put_session(self, state: SessionState) -> None:
        """Write a session's whole state, replacing what was stored."""
        ...

    async def update_session(
        self,
        session_id: str,
        *,
        agent: AgentRecord | None = None,
        settings: Mapping[str, Any] | None = None,
        seq: int | None = None,
        secrets: Secrets | Mapping[str, str] | None = None,
    ) -> None:
        """Set the given fields of a session; ``None`` keeps a field."""
        ...

    async def delete_session(self, session_id: str) -> None:
        """Forget a session (a no-op when it is not stored)."""
        ...

    async def append_items(self, session_id: str, items: Sequence[StoredItem]) -> None:
        """Append history items (an id already stored is replaced in place)."""
        ...

    async def replace_item(self, session_id: str, item: StoredItem) -> None:
        """Replace in place the item with ``item.item_id`` (appended if unknown)."""
        ...

    async def delete_item(self, session_id: str, item_id: str) -> None:
        """Remove a history item (a no-op when it is not stored)."""
        ...

    async def set_reader(self, session_id: str, reader_id: str, seq: int) -> None:
        """Record the last sequence number a reader received."""
        ...

    async def remove_reader(self, session_id: str, reader_id: str) -> None:
        """Forget a reader's position."""
        ...

    async def load(self, session_id: str) -> SessionState:
        """The session's whole state; ``SessionNotFoundError`` if unknown."""
        ...

    async def list_sessions(self) -> list[str]:
        """The ids of every stored session, sorted."""
        ...

    async def flush(self) -> None:
        """Return once every write made before the call is durable."""
        ...

    async def aclose(self) -> None:
        """Release the backend's resources (queued writes are flushed first)."""
        ...


class BaseSessionStore(abc.ABC):
    """The named writes of :class:`SessionStore`, each as a one-op :meth:`apply`."""

    @abc.abstractmethod
    async def apply(self, ops: Sequence[StoreOp]) -> None:
        """Apply ``ops`` in order, as one batch."""

    @abc.abstractmethod
    async def load(self, session_id: str) -> SessionState:
        """The session's whole state; ``SessionNotFoundError`` if unknown."""

    @abc.abstractmethod
    async def list_sessions(self) -> list[str]:
        """The ids of every stored session, sorted."""

    async def flush(self) -> None:
        """Direct backends write through: nothing is pending."""
        return None

    async def aclose(self) -> None:
        """Nothing to release by default."""
        return None

    async def put_session(self, state: SessionState) -> None:
        """Write a session's whole state, replacing what was stored."""
        await self.apply([PutSession(state)])

    async def update_session(
        self,
        session_id: str,
        *,
        agent: AgentRecord | None = None,
        settings: Mapping[str, Any] | None = None,
        seq: int | None = None,
        secrets: Secrets | Mapping[str, str] | None = None,
    ) -> None:
        """Set the given fields of a session; ``None`` keeps a field."""
        await self.apply([_update(session_id, agent, settings, seq, secrets)])

    async def delete_session(self, session_id: str) -> None:
        """Forget a session (a no-op when it is not stored)."""
        await self.apply([DeleteSession(session_id)])

    async def append_items(self, session_id: str, items: Sequence[StoredItem]) -> None:
        """Append history items (an id already stored is replaced in place)."""
        await self.apply([PutItem(session_id, item) for item in items])

    async def replace_item(self, session_id: str, item: StoredItem) -> None:
        """Replace in place the item with ``item.item_id`` (appended if unknown)."""
        await self.apply([PutItem(session_id, item)])

    async def delete_item(self, session_id: str, item_id: str) -> None:
        """Remove a history item (a no-op when it is not stored)."""
        await self.apply([DeleteItem(session_id, item_id)])

    async def set_reader(self, session_id: str, reader_id: str, seq: int) -> None:
        """Record the last sequence number a reader received."""
        await self.apply([SetReader(session_id, reader_id, seq)])

    async def remove_reader(self, session_id: str, reader_id: str) -> None:
        """Forget a reader's position."""
        await self.apply([RemoveReader(session_id, reader_id)])


def _update(
    session_id: str,
    agent: AgentRecord | None,
    settings: Mapping[str, Any] | None,
    seq: int | None,
    secrets: Secrets | Mapping[str, str] | None,
) -> UpdateSession:
    if secrets is not None and not isinstance(secrets, Secrets):
        secrets = Secrets(secrets)
    return UpdateSession(session_id, agent, settings, seq, secrets)
