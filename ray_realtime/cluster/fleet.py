"""The router's fleet: every actor it runs, as typed records.

A plain class (no Ray; actor handles are opaque values here). The router
runs four kinds of actors (:class:`ActorKind`): session actors, tool and
guardrail workers, and local model servers. Each ready actor is an
:class:`ActorRecord`; each actor being started is a :class:`StartingActor`,
so "how many are on their way" is a query over records, not a parse of
strings.

Actor *names* carry their kind as a prefix (``rr_session_...``): names are all
that a restarted router can list, so :meth:`ActorKind.of_name` reads the kind
back from a name when the fleet is rebuilt.
"""

from __future__ import annotations

import enum
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ActorKind", "ActorRecord", "Fleet", "StartingActor", "record_from_ping"]


class ActorKind(str, enum.Enum):  # noqa: UP042 - str() stays the enum name
    """What an actor of the service does."""

    SESSION = "session"
    TOOL = "tool"
    GUARDRAIL = "guardrail"
    MODEL = "model"

    @property
    def prefix(self) -> str:
        """The prefix of this kind's actor names."""
        return _PREFIXES[self]

    def new_name(self) -> str:
        """A fresh, unique actor name of this kind."""
        return f"{self.prefix}{uuid.uuid4().hex[:12]}"

    @classmethod
    def of_name(cls, name: str) -> ActorKind | None:
        """The kind of an actor of ours by its name; None for any other name."""
        for kind, prefix in _PREFIXES.items():
            if name.startswith(prefix):
                return kind
        return None


_PREFIXES: dict[ActorKind, str] = {
    ActorKind.SESSION: "rr_session_",
    ActorKind.TOOL: "rr_tool_",
    ActorKind.GUARDRAIL: "rr_guard_",
    ActorKind.MODEL: "rr_model_",
}


@dataclass(eq=False)
class ActorRecord:
    """One ready actor of the service.

    ``url`` is a session actor's data-plane address or a model server's
    WebSocket URL (an address, never a secret). ``sessions`` is what the
    router placed on a session actor.
    """

    name: str
    kind: ActorKind
    node_id: str
    handle: Any
    capacity: int = 1
    sessions: set[str] = field(default_factory=set)
    url: str = ""
    created: float = field(default_factory=time.monotonic)

    @property
    def idle(self) -> bool:
        """Whether no session is placed on it."""
        return not self.sessions

    @property
    def has_room(self) -> bool:
        """Whether a session actor can take another session."""
        return len(self.sessions) < self.capacity


@dataclass(frozen=True)
class StartingActor:
    """An actor being started. ``for_placement``: started for one waiting
    placement (so not a warm-pool member)."""

    name: str
    kind: ActorKind
    node_id: str
    capacity: int = 1
    for_placement: bool = False


class Fleet:
    """The ready actors by name, and the ones being started."""

    def __init__(self) -> None:
        self._ready: dict[str, ActorRecord] = {}
        self._starting: dict[str, StartingActor] = {}

    # ------------------------------------------------------------- changes

    def add(self, record: ActorRecord) -> None:
        """A ready actor joins the fleet."""
        self._ready[record.name] = record

    def remove(self, name: str) -> ActorRecord | None:
        """An actor leaves the fleet (retired or dead); returns its record."""
        return self._ready.pop(name, None)

    def begin_start(self, starting: StartingActor) -> None:
        """An actor is being started."""
        self._starting[starting.name] = starting

    def end_start(self, name: str) -> None:
        """A start finished (ready or failed)."""
        self._starting.pop(name, None)

    def clear(self) -> list[ActorRecord]:
        """Forget every actor; returns the ready ones (to stop them)."""
        records = list(self._ready.values())
        self._ready.clear()
        return records

    # ------------------------------------------------------------- queries

    def get(self, name: str) -> ActorRecord | None:
        """The ready actor of this name, or None."""
        return self._ready.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._ready

    def __iter__(self) -> Any:
        return iter(list(self._ready.values()))

    def __len__(self) -> int:
        return len(self._ready)

    def of_kind(self, kind: ActorKind, node_id: str | None = None) -> list[ActorRecord]:
        """Ready actors of a kind, on one node when ``node_id`` is given."""
        return [
            r
            for r in self._ready.values()
            if r.kind is kind and (node_id is None or r.node_id == node_id)
        ]

    def starting(self, kind: ActorKind, node_id: str | None = None) -> list[StartingActor]:
        """Actors of a kind being started, on one node when given."""
        return [
            s
            for s in self._starting.values()
            if s.kind is kind and (node_id is None or s.node_id == node_id)
        ]

    def workers(self, kind: ActorKind) -> list[tuple[str, str, Any]]:
        """Ready workers of a kind as ``(name, node_id, handle)`` (what a
        session actor's worker pool takes)."""
        return [(r.name, r.node_id, r.handle) for r in self.of_kind(kind)]

    def model_url(self, node_id: str) -> str:
        """The local model server's URL on a node ("" when it runs none)."""
        return next((r.url for r in self.of_kind(ActorKind.MODEL, node_id)), "")

    def hosts_with_sessions(self) -> list[ActorRecord]:
        """Session actors that host at least one session."""
        return [r for r in self.of_kind(ActorKind.SESSION) if r.sessions]

    def free_session_actor(self, node_id: str, capacity: int) -> ActorRecord | None:
        """A session actor of this size on this node with room, the fullest
        first (packing), the oldest among equals; None when there is none."""
        candidates = [r for r in self.of_kind(ActorKind.SESSION, node_id) if r.capacity == capacity]
        candidates = [r for r in candidates if r.has_room]
        if not candidates:
            return None
        return max(candidates, key=lambda r: (len(r.sessions), -r.created))

    def partly_used_nodes(self, capacity: int) -> set[str]:
        """Nodes with a session actor of this size that is neither empty nor full."""
        return {
            r.node_id
            for r in self.of_kind(ActorKind.SESSION)
            if r.capacity == capacity and r.sessions and r.has_room
        }


def record_from_ping(name: str, kind: ActorKind, handle: Any, info: Any) -> ActorRecord:
    """The record of a running actor found by name, from its ``ping`` answer:
    a dict (session actors and model servers: ``node_id``, ``capacity``,
    ``sessions``, ``data_url`` / ``url``) or a worker's bare node id."""
    if not isinstance(info, dict):
        return ActorRecord(name, kind, str(info), handle)
    return ActorRecord(
        name,
        kind,
        str(info.get("node_id", "")),
        handle,
        capacity=int(info.get("capacity", 1)),
        sessions={str(s) for s in info.get("sessions", [])},
        url=str(info.get("url", "") or info.get("data_url", "")),
    )
