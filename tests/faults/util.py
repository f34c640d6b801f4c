"""Helpers of the chaos tests: read a session with each event's sequence number,
kill a session actor's process."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray_realtime import (
    RealtimeHistoryAdded,
    RealtimeHistoryUpdated,
    RealtimeSession,
    RealtimeSessionEvent,
)
from tests.conftest import UNIT

__all__ = ["Reader", "kill_session_actor", "session_actor"]


@dataclass
class Reader:
    """Reads one handle, keeping ``(seq, event)`` pairs and the history ids seen."""

    session: RealtimeSession
    seen: list[tuple[int, RealtimeSessionEvent]] = field(default_factory=list)
    completed: set[str] = field(default_factory=set)

    async def until(
        self, check: Callable[[RealtimeSessionEvent], bool], timeout: float = 30.0 * UNIT
    ) -> RealtimeSessionEvent:
        """Read until ``check(event)`` holds; that event."""

        async def run() -> RealtimeSessionEvent:
            async for event in self.session:
                self.seen.append((self.session.last_seq, event))
                self._track(event)
                if check(event):
                    return event
            raise AssertionError(f"the session ended; saw {self.types()}")

        try:
            return await asyncio.wait_for(run(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out; saw {self.types()[-40:]}") from None

    def _track(self, event: RealtimeSessionEvent) -> None:
        items: list[Any] = []
        if isinstance(event, RealtimeHistoryAdded):
            items = [event.item]
        elif isinstance(event, RealtimeHistoryUpdated):
            items = list(event.history)
        for item in items:
            # An item without a status (a user message) is complete once added.
            if getattr(item, "status", None) in (None, "completed"):
                self.completed.add(item.item_id)

    def types(self) -> list[str]:
        """The types of the events read so far."""
        return [event.type for _, event in self.seen]

    def of_type(self, kind: type[Any]) -> list[tuple[int, Any]]:
        """The ``(seq, event)`` pairs of one event class."""
        return [(seq, e) for seq, e in self.seen if isinstance(e, kind)]


async def session_actor(router: Any, session_id: str) -> tuple[Any, dict[str, Any]]:
    """The actor hosting ``session_id`` and its ping (node, pid)."""
    placement = await asyncio.wait_for(router.lookup.remote(session_id), 10 * UNIT)
    info = await asyncio.wait_for(placement["actor"].ping.remote(), 10 * UNIT)
    return placement["actor"], info


async def kill_session_actor(router: Any, session_id: str) -> dict[str, Any]:
    """SIGKILL the process of the actor hosting ``session_id``; its ping."""
    _, info = await session_actor(router, session_id)
    os.kill(int(info["pid"]), signal.SIGKILL)
    return info
