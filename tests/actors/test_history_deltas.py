"""History deltas over the wire (issue 12, long calls), in actor mode: the
session's log holds and sends deltas, so what a transcript delta costs does
not grow with the history; the handle still yields the SDK's full-list
``history_updated``, equal to the session's history, also to a handle that
attaches at some ``after_seq``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ray_realtime import (
    RealtimeAgent,
    RealtimeAgentEndEvent,
    RealtimeHistoryAdded,
    RealtimeHistoryUpdated,
    RealtimeRunner,
    RealtimeSession,
    wire,
)
from ray_realtime.core.history_log import HistoryDelta
from tests.actors.util import ACTOR, TURN_TIMEOUT
from tests.conftest import UNIT, RayTestCluster

pytestmark = [pytest.mark.ray]

TURNS = 24
REPLY = "say " + "words of a reply " * 3


async def _turn(session: RealtimeSession, seen: list[tuple[int, Any]], text: str) -> None:
    """One turn, every event read kept as ``(seq, event)``."""

    async def run() -> None:
        async for event in session:
            seen.append((session.last_seq, event))
            if isinstance(event, RealtimeAgentEndEvent):
                return

    await session.send_message(text)
    await asyncio.wait_for(run(), TURN_TIMEOUT)


async def _raw(session: RealtimeSession, after: int, upto: int) -> list[Any]:
    """The events ``after`` < seq <= ``upto`` as the actor sends them (over a
    Ray call: the same encoding as the data plane), not materialised."""
    backend: Any = session._backend
    events: list[Any] = []
    while after < upto:
        data = await backend._call("read_events", after, 512, 0.0)
        batch, last_seq, _, _ = wire.decode_batch(data)
        events += batch[: max(0, len(batch) - (last_seq - upto))]
        after = last_seq
    return events


def _delta_sizes(events: list[Any]) -> list[int]:
    """Encoded size of each one-set history delta (a transcript delta)."""
    return [
        len(wire.encode_events([e]))
        for e in events
        if isinstance(e, HistoryDelta) and len(e.ops) == 1 and e.ops[0][0] == "set"
    ]


async def test_a_long_sessions_history_travels_as_deltas(ray_cluster: RayTestCluster) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Assistant", instructions="Talk.")
    # The log keeps every turn (the test reads the early ones again at the end).
    config = {**ACTOR, "event_log_bytes": 16 << 20}
    async with await RealtimeRunner(agent, config=config).run() as session:  # type: ignore[arg-type]
        seen: list[tuple[int, Any]] = []
        marks = [0]
        for n in range(TURNS):
            await _turn(session, seen, f"{REPLY}{n}")
            marks.append(session.last_seq)
        history = await asyncio.wait_for(session.get_history(), 10 * UNIT)
        assert len(history) == 2 * TURNS

        # On the wire: deltas only, and a transcript delta late in the
        # session costs what one early did.
        early = await _raw(session, marks[1], marks[2])
        late = await _raw(session, marks[-2], marks[-1])
        for events in (early, late):
            assert not any(isinstance(e, RealtimeHistoryUpdated) for e in events)
            assert _delta_sizes(events), "no transcript delta in the turn"
        assert max(_delta_sizes(late)) <= max(_delta_sizes(early)) + 16
        full = len(wire.encode_events([RealtimeHistoryUpdated(history)]))
        assert max(_delta_sizes(late)) * 20 < full, "a delta is far smaller than the history"

        # At the handle: the SDK's events, the last one equal to the history.
        updates = [(s, e) for s, e in seen if isinstance(e, RealtimeHistoryUpdated)]
        assert updates and all(isinstance(e.history, list) for _, e in updates)
        assert updates[-1][1].history == history
        assert session.history == history
        assert any(isinstance(e, RealtimeHistoryAdded) for _, e in seen)

        # A handle attached from the middle materialises the same events.
        mid = marks[TURNS // 2] + 3
        other = await RealtimeSession.attach(session.ticket, after_seq=mid)
        try:
            theirs: list[tuple[int, Any]] = []

            async def catch_up() -> None:
                async for event in other:
                    theirs.append((other.last_seq, event))
                    if other.last_seq >= marks[-1]:
                        return

            await asyncio.wait_for(catch_up(), TURN_TIMEOUT)
        finally:
            await other.detach()
        mine = dict(seen)
        compared = 0
        for seq, event in theirs:
            if isinstance(event, RealtimeHistoryUpdated):
                assert event.history == mine[seq].history, f"history_updated at {seq}"
                compared += 1
        assert compared > 10
        assert theirs[0][0] == mid + 1
