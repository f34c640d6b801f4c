"""Chaos: the router is killed during a recovery.

A session actor is SIGKILLed and the router killed right after it, while it
re-places the session. No router watches the session any more; a new one is
deployed, rebuilds its state from the named actors and finds the session in
the store with no live actor hosting it: it recovers it. The same handle,
whose calls meanwhile waited for a router (bounded by
``recovery_timeout_seconds``), goes on: one ``session_recovered``, every
completed item still there, the next turn answered.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import ray

from ray_realtime import (
    RealtimeAgent,
    RealtimeAgentEndEvent,
    RealtimeRunner,
    RealtimeSessionRecovered,
)
from ray_realtime.actors import raylib
from ray_realtime.cluster.service import ensure_service, forget_router
from ray_realtime.types.items import item_to_dict
from tests.actors.util import wait_until
from tests.conftest import SERVICE_CONFIG, UNIT, RayTestCluster
from tests.faults.util import Reader, kill_session_actor, session_actor

pytestmark = [pytest.mark.ray]


async def _router_gone() -> bool:
    return raylib.get_named_actor(raylib.ROUTER_NAME) is None


async def test_router_killed_during_a_recovery_the_new_router_recovers_the_session(
    ray_cluster: RayTestCluster,
) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Survivor", instructions="Keep talking.")
    # The handle's calls wait for the router's successor (bounded).
    config = {"execution": "actor", "recovery_timeout_seconds": 60 * UNIT}
    session = await RealtimeRunner(agent, config=config).run()  # type: ignore[arg-type]
    async with session:
        reader = Reader(session)
        await session.send_message("say before the faults")
        await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
        completed = set(reader.completed)
        assert len(completed) >= 2

        old_router = ray_cluster.router
        dead = await kill_session_actor(old_router, session.session_id)
        ray.kill(old_router, no_restart=True)  # while it re-places the session
        forget_router()
        try:
            await wait_until(_router_gone, 15 * UNIT, "the old router to go")
            # The handle's next call finds its actor dead and no router: it
            # waits for one instead of failing.
            sending = asyncio.ensure_future(session.send_message("say after both faults"))
            await asyncio.sleep(0.5)
            assert not sending.done() or sending.exception() is None
        finally:
            # A new router: it rebuilds from the named actors (and the store).
            ray_cluster.router = await asyncio.wait_for(ensure_service(SERVICE_CONFIG), 60 * UNIT)
        await asyncio.wait_for(sending, 60 * UNIT)

        recovered = await reader.until(
            lambda e: isinstance(e, RealtimeSessionRecovered), timeout=30 * UNIT
        )
        assert isinstance(recovered, RealtimeSessionRecovered)
        assert recovered.reason == "actor_died"
        assert recovered.items_restored >= len(completed)

        async def answered() -> bool:
            # The reply to the call sent while no router ran.
            history = await asyncio.wait_for(session.get_history(), 10 * UNIT)
            return any(
                getattr(i, "role", "") == "assistant"
                and getattr(i, "status", "") == "completed"
                and "after both faults" in str(item_to_dict(i))
                for i in history
            )

        await wait_until(answered, 30 * UNIT, "the reply to the call sent meanwhile")
        _, info = await session_actor(ray_cluster.router, session.session_id)
        assert info["pid"] != dead["pid"]
        history = await asyncio.wait_for(session.get_history(), 10 * UNIT)
        ids = {item.item_id for item in history}
        assert completed <= ids, f"lost completed items: {completed - ids}"
        await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
        assert len(reader.of_type(RealtimeSessionRecovered)) == 1
