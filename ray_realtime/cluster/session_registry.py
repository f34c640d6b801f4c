"""The router's session registry: which session lives on which actor and node.

A plain class (no Ray). Besides the live sessions it keeps two things the
router needs for placement and for clear errors:

* *reservations*: sessions being placed while their actor starts. They count
  as load on their node, so placements arriving meanwhile do not all pick the
  same node;
* *lost* sessions (bounded, oldest forgotten first): ids whose actor or node
  died, with the reason, so a later lookup says "lost" rather than "not found".

A listing carries ids and placement only: the registry never holds a
session's secrets (tokens, tickets), so no listing can leak one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["SessionRecord", "SessionRegistry"]

LOST_KEPT = 1024
"""How many lost session ids the registry remembers (oldest dropped first)."""


@dataclass(frozen=True)
class SessionRecord:
    """Where one live session is placed."""

    session_id: str
    actor_name: str
    node_id: str


class SessionRegistry:
    """Live sessions by id, reservations in flight, and recently lost ids."""

    def __init__(self, lost_kept: int = LOST_KEPT) -> None:
        self._sessions: dict[str, SessionRecord] = {}
        self._reserved: dict[str, str] = {}
        self._lost: OrderedDict[str, str] = OrderedDict()
        self._lost_kept = lost_kept
        self.placements = 0
        """Sessions placed by this router (rebuilt ones not counted)."""

    # ------------------------------------------------------------- queries

    def get(self, session_id: str) -> SessionRecord | None:
        """The live session with this id, or None."""
        return self._sessions.get(session_id)

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[SessionRecord]:
        return iter(list(self._sessions.values()))

    def lost_reason(self, session_id: str) -> str | None:
        """Why a recently lost session was lost, or None."""
        return self._lost.get(session_id)

    @property
    def lost_count(self) -> int:
        """How many lost ids are remembered."""
        return len(self._lost)

    def load_by_node(self) -> dict[str, int]:
        """Sessions per node, reservations included (placement's load)."""
        counts = self.sessions_by_node()
        for node_id in self._reserved.values():
            counts[node_id] = counts.get(node_id, 0) + 1
        return counts

    def sessions_by_node(self) -> dict[str, int]:
        """Live sessions per node."""
        counts: dict[str, int] = {}
        for record in self._sessions.values():
            counts[record.node_id] = counts.get(record.node_id, 0) + 1
        return counts

    def listing(self) -> list[dict[str, str]]:
        """Every live session as plain data: ``session_id``, ``node_id``,
        ``actor_name`` (nothing secret)."""
        return [
            {"session_id": r.session_id, "node_id": r.node_id, "actor_name": r.actor_name}
            for r in self._sessions.values()
        ]

    # ------------------------------------------------------------- changes

    def place(self, session_id: str, actor_name: str, node_id: str) -> SessionRecord:
        """Record a new placement (counted); idempotent: a session already
        placed keeps its first record, which is returned."""
        record = self._sessions.get(session_id)
        if record is None:
            record = SessionRecord(session_id, actor_name, node_id)
            self._sessions[session_id] = record
            self._lost.pop(session_id, None)
            self.placements += 1
        return record

    def adopt(self, session_id: str, actor_name: str, node_id: str) -> None:
        """Record a session found on a live actor while rebuilding (not counted)."""
        self._sessions[session_id] = SessionRecord(session_id, actor_name, node_id)

    def remove(self, session_id: str) -> SessionRecord | None:
        """Forget an ended session; returns its record if it was live."""
        return self._sessions.pop(session_id, None)

    def lose(self, session_ids: Iterable[str], reason: str) -> None:
        """Forget sessions whose actor or node died, remembering why."""
        for session_id in session_ids:
            self._sessions.pop(session_id, None)
            self._lost[session_id] = reason
            self._lost.move_to_end(session_id)
        while len(self._lost) > self._lost_kept:
            self._lost.popitem(last=False)

    @contextmanager
    def reserving(self, session_id: str, node_id: str) -> Iterator[None]:
        """Count ``session_id`` as load on ``node_id`` while its actor starts."""
        self._reserved[session_id] = node_id
        try:
            yield
        finally:
            self._reserved.pop(session_id, None)

    def clear(self) -> None:
        """Forget every live session (the service is shutting down)."""
        self._sessions.clear()
