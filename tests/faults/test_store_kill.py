"""Chaos: the embedded store actor is killed (and restarted by Ray); it reloads
its SQLite file, so a session whose actor dies afterwards is recovered with
every completed item. The store holds the session's secret only as a hash,
and the restored session still refuses a wrong secret."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
import ray

from ray_realtime import (
    RealtimeAgent,
    RealtimeAgentEndEvent,
    RealtimeRunner,
    RealtimeSessionRecovered,
    SessionAccessError,
)
from ray_realtime.actors.handle import parse_ticket
from ray_realtime.store.actor import STORE_ACTOR_NAME, STORE_NAMESPACE, connect_store_actor
from tests.actors.util import wait_until
from tests.conftest import UNIT, RayTestCluster
from tests.faults.util import Reader, kill_session_actor, session_actor

pytestmark = [pytest.mark.ray]


async def test_store_actor_restart_loses_nothing(ray_cluster: RayTestCluster) -> None:
    router = ray_cluster.router
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Keeper", instructions="Remember.")
    session = await RealtimeRunner(agent, config={"execution": "actor"}).run()
    async with session:
        reader = Reader(session)
        for text in ("say one", "say two"):
            await session.send_message(text)
            await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
        completed = set(reader.completed)
        assert len(completed) >= 4

        store = ray.get_actor(STORE_ACTOR_NAME, namespace=STORE_NAMESPACE)
        before = await asyncio.wait_for(store.statistics.remote(), 10 * UNIT)
        ray.kill(store, no_restart=False)  # Ray restarts it; it reloads the file

        async def restarted() -> bool:
            try:
                stats = await asyncio.wait_for(store.statistics.remote(), 5 * UNIT)
            except Exception:
                return False
            return bool(stats.get("pid") != before.get("pid"))

        await wait_until(restarted, 30 * UNIT, "the store actor to restart")

        # A turn after the restart is written to the restarted store too.
        await session.send_message("say three")
        await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
        completed = set(reader.completed)

        # The store has the secret's hash, never the secret.
        _, secret = parse_ticket(session.ticket)
        state = await (await connect_store_actor()).load(session.session_id)
        assert state.secrets.reveal() == {"sha256": hashlib.sha256(secret.encode()).hexdigest()}
        assert secret.encode() not in repr(state).encode()
        assert all(secret.encode() not in item.data for item in state.items)

        await kill_session_actor(router, session.session_id)
        event = await reader.until(
            lambda e: isinstance(e, RealtimeSessionRecovered), timeout=20 * UNIT
        )
        assert isinstance(event, RealtimeSessionRecovered)
        assert event.items_restored >= len(completed)
        history = await asyncio.wait_for(session.get_history(), 10 * UNIT)
        assert completed <= {item.item_id for item in history}

        # The restored actor checks secrets against the stored hash.
        actor, _ = await session_actor(router, session.session_id)
        with pytest.raises(SessionAccessError):
            await asyncio.wait_for(
                actor.get_history.remote(session.session_id, "x" * len(secret)), 10 * UNIT
            )
