"""Chaos: a node hosting sessions leaves the cluster; its sessions go on elsewhere.

The shared cluster's nodes stay: the test adds a node of its own (labelled
``zone_x``), places two sessions there, removes the node, and checks that both
sessions continue on other nodes with their history, each reader seeing one
``session_recovered``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ray_realtime import (
    RealtimeAgent,
    RealtimeAgentEndEvent,
    RealtimeRunner,
    RealtimeSession,
    RealtimeSessionRecovered,
)
from ray_realtime.cluster.service import service_status
from tests.actors.util import wait_until
from tests.conftest import UNIT, RayTestCluster, collect_ray_leaks
from tests.faults.util import Reader, session_actor

pytestmark = [pytest.mark.ray, pytest.mark.cluster]


async def test_removed_node_sessions_continue_on_other_nodes(
    ray_cluster: RayTestCluster,
) -> None:
    router = ray_cluster.router
    cluster = ray_cluster.cluster
    # Ray starts and stops nodes from the main thread only (signals): blocking here.
    node = cluster.add_node(num_cpus=1, resources={"zone_x": 1})
    removed = False
    try:
        cluster.wait_for_nodes()
        collect_ray_leaks()
        node_id = node.node_id

        async def router_sees_it() -> bool:
            status = await service_status()
            return any(n["node_id"] == node_id and n["alive"] for n in status["nodes"])

        await wait_until(router_sees_it, 30 * UNIT, "the router to see the new node")
        agent: RealtimeAgent[Any] = RealtimeAgent(name="Nomad", instructions="Move.")
        runner = RealtimeRunner(
            agent, config={"execution": "actor", "placement": {"resources": {"zone_x": 1}}}
        )
        sessions: list[RealtimeSession] = [await runner.run() for _ in range(2)]
        await asyncio.wait_for(asyncio.gather(*(s.enter() for s in sessions)), 60 * UNIT)
        try:
            readers = [Reader(s) for s in sessions]
            for session, reader in zip(sessions, readers, strict=True):
                await session.send_message(f"say hello from {session.session_id[-6:]}")
                await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
                _, info = await session_actor(router, session.session_id)
                assert info["node_id"] == node_id
            completed = [set(r.completed) for r in readers]

            cluster.remove_node(node)
            removed = True

            for session, reader, items in zip(sessions, readers, completed, strict=True):
                event = await reader.until(
                    lambda e: isinstance(e, RealtimeSessionRecovered), timeout=40 * UNIT
                )
                assert isinstance(event, RealtimeSessionRecovered)
                assert event.reason in ("node_lost", "actor_died")
                assert event.items_restored >= len(items)
                _, info = await session_actor(router, session.session_id)
                assert info["node_id"] != node_id
                await session.send_message("say still here")
                await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
                history = await asyncio.wait_for(session.get_history(), 10 * UNIT)
                assert items <= {item.item_id for item in history}
                assert len(reader.of_type(RealtimeSessionRecovered)) == 1
        finally:
            await asyncio.wait_for(
                asyncio.gather(*(s.close() for s in sessions), return_exceptions=True),
                30 * UNIT,
            )
    finally:
        if not removed:
            cluster.remove_node(node)
