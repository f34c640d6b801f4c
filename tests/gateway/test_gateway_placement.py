"""A gateway's calls get sessions on the gateway's own node while it has
room (the test cluster's three nodes, actor sessions)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest

from ray_realtime.cluster.service import service_status
from ray_realtime.demo import build_demo_agent
from ray_realtime.gateway.server import Gateway
from tests.conftest import RayTestCluster
from tests.gateway.sim import TwilioCaller, silence_ulaw, tone_ulaw
from tests.gateway.test_gateway_calls import _until


async def _sessions_by_node() -> dict[str, int]:
    status = await service_status()
    return {n["node_id"]: int(n["sessions"]) for n in status["nodes"]}


async def _concurrent_calls(gw: Gateway, calls: int) -> dict[str, int]:
    """Hold ``calls`` calls open at once; where their sessions are."""
    url = f"ws://127.0.0.1:{gw.port}/twilio/media-stream"
    async with AsyncExitStack() as stack:
        callers = [await stack.enter_async_context(TwilioCaller(url)) for _ in range(calls)]
        for n, caller in enumerate(callers, 1):
            await caller.start()
            await _until(lambda n=n: gw.open_sessions == n, 60, "the session")
        sessions = {k: v for k, v in (await _sessions_by_node()).items() if v}
        # The sessions are real: the last caller speaks and is answered.
        await callers[-1].speak(tone_ulaw(0.6) + silence_ulaw(0.8))
        await _until(lambda: len(callers[-1].audio) > 0, 30, "reply audio")
    await _until(lambda: gw.open_sessions == 0, 30, "the sessions to close")
    return sessions


@pytest.mark.asyncio
async def test_sessions_prefer_the_gateways_node(ray_cluster: RayTestCluster) -> None:
    # Load balancing alone would spread three sessions over the three nodes.
    node = ray_cluster.node_of_zone("b")
    async with Gateway(build_demo_agent(), prefer_node_id=node) as gw:
        assert await _concurrent_calls(gw, 3) == {node: 3}


@pytest.mark.asyncio
async def test_an_unplaceable_preference_falls_back_to_any_node(
    ray_cluster: RayTestCluster,
) -> None:
    async with Gateway(build_demo_agent(), prefer_node_id="f" * 56) as gw:
        sessions = await _concurrent_calls(gw, 1)
    assert sum(sessions.values()) == 1 and set(sessions) <= set(ray_cluster.zones.values())
