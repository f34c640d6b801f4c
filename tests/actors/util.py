"""Helpers shared by the Ray integration tests of ``tests/actors``.

Every wait is bounded (``asyncio.wait_for`` / a deadline) and scaled by
``UNIT`` from ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ray

from ray_realtime import (
    AssistantMessageItem,
    RealtimeAgentEndEvent,
    RealtimeItem,
    RealtimeSession,
    RealtimeSessionEvent,
    function_tool,
)
from tests.conftest import UNIT

__all__ = [
    "ACTOR",
    "TURN_TIMEOUT",
    "assistant_texts",
    "collect",
    "collect_turns",
    "last_reply",
    "placement_of",
    "session_host",
    "wait_until",
    "where_am_i",
]

ACTOR: dict[str, Any] = {"execution": "actor"}
"""The run config of every test here (plus what a test adds)."""

TURN_TIMEOUT = 30.0 * UNIT
"""Upper bound for one turn (a reply, or a tool call and its reply)."""


async def collect(
    session: RealtimeSession,
    until: Callable[[RealtimeSessionEvent], bool],
    timeout: float = TURN_TIMEOUT,
) -> list[RealtimeSessionEvent]:
    """Iterate ``session`` until ``until(event)`` holds (that event included)."""
    events: list[RealtimeSessionEvent] = []

    async def run() -> None:
        async for event in session:
            events.append(event)
            if until(event):
                return
        raise AssertionError(f"session ended before the condition; saw {_types(events)}")

    try:
        await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s; saw {_types(events)}") from None
    return events


async def collect_turns(
    session: RealtimeSession, turns: int = 1, timeout: float = TURN_TIMEOUT
) -> list[RealtimeSessionEvent]:
    """Events up to and including the ``turns``-th ``agent_end``."""
    seen = [0]

    def until(event: RealtimeSessionEvent) -> bool:
        if isinstance(event, RealtimeAgentEndEvent):
            seen[0] += 1
        return seen[0] >= turns

    return await collect(session, until, timeout)


def _types(events: list[RealtimeSessionEvent]) -> list[str]:
    return [e.type for e in events]


def assistant_texts(history: list[RealtimeItem]) -> list[str]:
    """The transcript (or text) of every assistant message, in order."""
    texts = []
    for item in history:
        if isinstance(item, AssistantMessageItem):
            for part in item.content:
                text = getattr(part, "transcript", None) or getattr(part, "text", None)
                if text:
                    texts.append(text)
    return texts


async def last_reply(session: RealtimeSession) -> str:
    """The newest assistant text in the session's history (fetched from the actor)."""
    texts = assistant_texts(await session.get_history())
    assert texts, "no assistant message in the history"
    return texts[-1]


async def wait_until(
    check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last {last!r}")
        await asyncio.sleep(interval)


async def placement_of(router: Any, session_id: str) -> dict[str, Any]:
    """The router's placement of a live session (actor handle, node, workers)."""
    placement: dict[str, Any] = await asyncio.wait_for(router.lookup.remote(session_id), 10 * UNIT)
    return placement


async def session_host(router: Any, session_id: str) -> Any:
    """The handle of the session actor hosting ``session_id``."""
    return (await placement_of(router, session_id))["actor"]


@function_tool
def where_am_i() -> str:
    """Report the node and process this tool runs in."""
    return json.dumps({"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()})
