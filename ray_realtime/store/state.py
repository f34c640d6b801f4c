"""The store's rules, as a pure in-memory state that applies ops.

Every backend implements the same rules; this module is their reference
(:class:`MemoryStore` and the store actor's memory use it, and the conformance
suite checks the SQLite and Redis backends against the same expectations):

* Every op is an **upsert**: an op on a session the store does not have
  creates its record (no agent, empty settings, sequence 0) first.
  ``DeleteSession`` of an unknown session does nothing.
* ``PutSession`` replaces the session's whole state, items and readers included.
* ``UpdateSession`` sets the fields it carries and keeps the others.
* ``PutItem`` replaces in place the item with the same id, keeping its
  position; an unknown id is appended at the end. Writing the same item twice
  is therefore harmless, which is what makes a retried batch safe.
* ``DeleteItem`` removes the item; a later ``PutItem`` of the same id appends
  it at the end again.
* ``SetReader`` / ``RemoveReader`` set or forget one reader's position.

No I/O and no asyncio here: applying a batch costs time linear in its size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ray_realtime.exceptions import SessionNotFoundError
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
    assert_never,
)

__all__ = ["StoreState"]


@dataclass
class _Session:
    """One session's mutable record (items keep their first-insertion order)."""

    agent: AgentRecord | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    secrets: Secrets = field(default_factory=Secrets)
    readers: dict[str, int] = field(default_factory=dict)
    items: dict[str, bytes] = field(default_factory=dict)


class StoreState:
    """Every stored session, in memory, changed only by :meth:`apply`."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}

    def _session(self, session_id: str) -> _Session:
        record = self._sessions.get(session_id)
        if record is None:
            record = self._sessions[session_id] = _Session()
        return record

    def apply(self, ops: Iterable[StoreOp]) -> None:
        """Apply ``ops`` in order (see the module docstring for the rules)."""
        for op in ops:
            self.apply_one(op)

    def apply_one(self, op: StoreOp) -> None:
        """Apply one op."""
        if isinstance(op, PutSession):
            state = op.state
            self._sessions[state.session_id] = _Session(
                state.agent,
                dict(state.settings),
                state.seq,
                state.secrets,
                dict(state.readers),
                {item.item_id: item.data for item in state.items},
            )
        elif isinstance(op, UpdateSession):
            record = self._session(op.session_id)
            if op.agent is not None:
                record.agent = op.agent
            if op.settings is not None:
                record.settings = dict(op.settings)
            if op.seq is not None:
                record.seq = op.seq
            if op.secrets is not None:
                record.secrets = op.secrets
        elif isinstance(op, DeleteSession):
            self._sessions.pop(op.session_id, None)
        elif isinstance(op, PutItem):
            # dict assignment keeps an existing key's position: replace in place.
            self._session(op.session_id).items[op.item.item_id] = op.item.data
        elif isinstance(op, DeleteItem):
            self._session(op.session_id).items.pop(op.item_id, None)
        elif isinstance(op, SetReader):
            self._session(op.session_id).readers[op.reader_id] = op.seq
        elif isinstance(op, RemoveReader):
            self._session(op.session_id).readers.pop(op.reader_id, None)
        else:
            assert_never(op)

    def load(self, session_id: str) -> SessionState:
        """A snapshot of one session; :class:`SessionNotFoundError` if unknown."""
        record = self._sessions.get(session_id)
        if record is None:
            raise SessionNotFoundError(f"the store holds no session {session_id!r}", session_id)
        return SessionState(
            session_id,
            record.agent,
            dict(record.settings),
            record.seq,
            record.secrets,
            dict(record.readers),
            tuple(StoredItem(item_id, data) for item_id, data in record.items.items()),
        )

    def session_ids(self) -> list[str]:
        """The ids of every stored session, sorted."""
        return sorted(self._sessions)

    def counts(self) -> tuple[int, int]:
        """(sessions, items) stored."""
        return len(self._sessions), sum(len(s.items) for s in self._sessions.values())
