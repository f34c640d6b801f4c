"""Chaos: the history a reader materialises from deltas survives a SIGKILL.

The session's log holds history deltas; a restored session's new log starts
at the stored mark with the history from the store. The handle that was
reading, and a handle attached afterwards from the start, both resync their
replica from the new actor and yield ``history_updated`` equal to the
session's history.
"""

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
    RealtimeSessionRecovered,
    UserMessageItem,
)
from ray_realtime.local.server import LocalModelServer
from tests.conftest import UNIT, RayTestCluster
from tests.faults.util import Reader, kill_session_actor

pytestmark = [pytest.mark.ray]


async def test_history_updated_is_right_after_a_recovery(ray_cluster: RayTestCluster) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Survivor", instructions="Keep talking.")
    async with LocalModelServer() as server:
        runner = RealtimeRunner(agent, config={"execution": "actor"})
        session = await runner.run(model_config={"url": server.url})
        async with session:
            reader = Reader(session)
            for n in range(3):
                await session.send_message(f"say turn {n} is done")
                await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
            await kill_session_actor(ray_cluster.router, session.session_id)
            await reader.until(lambda e: isinstance(e, RealtimeSessionRecovered), timeout=20 * UNIT)
            await session.send_message("say after the fault")
            asked = [False]

            def answered(event: Any) -> bool:
                # The recovery may end a turn it thinks was cut (agent_end)
                # before this one starts: wait for this turn's own end.
                if isinstance(event, RealtimeHistoryAdded) and isinstance(
                    event.item, UserMessageItem
                ):
                    asked[0] = True
                return asked[0] and isinstance(event, RealtimeAgentEndEvent)

            await reader.until(answered)
            history = await asyncio.wait_for(session.get_history(), 10 * UNIT)
            ((recovered_seq, _),) = reader.of_type(RealtimeSessionRecovered)
            after = [e for seq, e in reader.of_type(RealtimeHistoryUpdated) if seq > recovered_seq]
            assert after, "no history_updated after the recovery"
            assert after[-1].history == history
            assert len(history) == 8  # 4 turns: the restored 6 items and 2 new ones
            assert session.history == history

            # A handle attached now from the oldest event it can get.
            other = await RealtimeSession.attach(session.ticket)
            try:
                late = Reader(other)

                def caught_up(event: Any) -> bool:
                    return other.last_seq >= session.last_seq

                await late.until(caught_up)
                updates = late.of_type(RealtimeHistoryUpdated)
                assert updates and updates[-1][1].history == history
            finally:
                await other.detach()
