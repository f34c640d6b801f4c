"""The router: agent registry and handoffs, the warm pool, packing sessions."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import ray

from ray_realtime import (
    RealtimeAgent,
    RealtimeAgentEndEvent,
    RealtimeHandoffEvent,
    RealtimeRunner,
    realtime_handoff,
)
from ray_realtime.cluster.service import register_agent, service_status
from ray_realtime.cluster.service_config import ServiceConfig
from tests.actors.util import ACTOR, collect_turns, last_reply, placement_of, wait_until
from tests.conftest import SERVICE_CONFIG, UNIT, RayTestCluster

# The size of warm actors: the service's sessions_per_actor (packed by default).
WARM_SIZE = ServiceConfig.from_dict(SERVICE_CONFIG).sessions_per_actor

pytestmark = [pytest.mark.ray]

WARM = SERVICE_CONFIG["warm_pool_size"]
ROOT = str(Path(__file__).resolve().parent.parent.parent)


async def test_handoff_uses_the_newest_registered_agent(ray_cluster: RayTestCluster) -> None:
    tag = uuid.uuid4().hex[:6]
    # Letters only in the tag's spoken form, so the local model matches the tool name.
    name = f"Billing Agent {''.join(chr(ord('a') + int(c, 16) % 26) for c in tag)}"
    billing: RealtimeAgent[Any] = RealtimeAgent(
        name=name, instructions="Always reply: billing version one"
    )
    front: RealtimeAgent[Any] = RealtimeAgent(
        name="Front Desk", instructions="You route calls.", handoffs=[realtime_handoff(billing)]
    )
    async with await RealtimeRunner(front, config=ACTOR).run() as session:
        # Status shows the agent the open session runs (none is registered).
        status = await service_status()
        assert status["agents_in_use"].get("Front Desk") == 1
        assert name not in status["agents"]
        # Listings carry ids and placement, never a session's secrets.
        listed = [
            e
            for e in await ray_cluster.router.list_sessions.remote()
            if e["session_id"] == session.session_id
        ]
        assert [set(e) for e in listed] == [{"session_id", "node_id", "actor_name"}]
        assert "token" not in repr(status).lower() and "secret" not in repr(status).lower()

        # A new version is registered after the session started (and was built).
        newer: RealtimeAgent[Any] = RealtimeAgent(
            name=name, instructions="Always reply: billing version two"
        )
        version = await register_agent(newer)
        assert version == 1
        assert (await service_status())["agents"][name] == 1

        tool_name = "transfer_to_" + name.lower().replace(" ", "_")
        await session.send_message(f"Please {tool_name.replace('_', ' ')} now.")
        events = await collect_turns(session, turns=2)
        handoffs = [e for e in events if isinstance(e, RealtimeHandoffEvent)]
        assert [(h.from_agent.name, h.to_agent.name) for h in handoffs] == [("Front Desk", name)]
        ends = [e.agent.name for e in events if isinstance(e, RealtimeAgentEndEvent)]
        assert ends == ["Front Desk", name]
        # The reply comes from the registered version, not the one the handoff holds.
        assert await last_reply(session) == "billing version two"
        in_use = (await service_status())["agents_in_use"]
        assert in_use.get(name) == 1 and "Front Desk" not in in_use

        # Registering again bumps the version; the session does not change mid-agent.
        assert await register_agent(newer) == 2
        await session.send_message("anything else")
        await collect_turns(session)
        assert await last_reply(session) == "billing version two"


async def test_status_command_names_the_agents_of_open_sessions(
    ray_cluster: RayTestCluster,
) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Concierge", instructions="Hi.")
    async with await RealtimeRunner(agent, config=ACTOR).run():
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        # The command runs in its own process, as a user runs it (a thread keeps
        # this test's event loop, and so the session, going meanwhile).
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "ray_realtime.cli", "status", "--address", ray_cluster.address],
            capture_output=True,
            text=True,
            timeout=90 * UNIT,
            cwd=ROOT,
            env=env,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert "agents in sessions: Concierge (1 session)" in last, last


async def _warm_by_node() -> dict[str, int]:
    return {n["node_id"]: n["warm"] for n in (await service_status())["nodes"] if n["alive"]}


async def _warm_actors() -> dict[str, str]:
    """Empty session actors of the service: name -> node id."""
    names = [
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["namespace"] == "ray_realtime" and entry["name"].startswith("rr_session_")
    ]
    warm = {}
    for name in names:
        try:
            info = await asyncio.wait_for(
                ray.get_actor(name, namespace="ray_realtime").ping.remote(), 5 * UNIT
            )
        except Exception:
            continue  # being retired
        if not info["sessions"] and info["capacity"] == WARM_SIZE:
            warm[name] = info["node_id"]
    return warm


async def _pool_full() -> bool:
    warm = await _warm_by_node()
    return len(warm) == 3 and all(count == WARM for count in warm.values())


async def test_session_start_takes_a_warm_actor_and_the_pool_refills(
    ray_cluster: RayTestCluster,
) -> None:
    async def settled() -> dict[str, str] | None:
        # The router's count and the live actors agree (no refill in flight).
        warm = await _warm_actors()
        per_node = Counter(warm.values())
        ok = await _pool_full() and len(per_node) == 3 and set(per_node.values()) == {WARM}
        return warm if ok else None

    warm_before = await wait_until(settled, 30 * UNIT, "a settled warm pool on every node")
    placements = (await service_status())["placements"]

    runner = RealtimeRunner(RealtimeAgent(name="Quick", instructions="Hi."), config=ACTOR)
    session = await runner.run()
    t0 = time.perf_counter()
    async with session:
        entered = time.perf_counter() - t0
        print(f"session start (async with entry) on a warm actor: {entered * 1000:.1f} ms")
        placement = await placement_of(ray_cluster.router, session.session_id)
        node = placement["node_id"]
        assert warm_before.get(placement["actor_name"]) == node  # it took a warm actor
        assert (await service_status())["placements"] == placements + 1

        # The pool refills in the background while the session runs: a new
        # warm actor on the node, and the status back at the target.
        t1 = time.perf_counter()

        async def refilled() -> bool:
            now = await _warm_actors()
            fresh = [n for n, where in now.items() if where == node and n not in warm_before]
            full = await _pool_full()
            return bool(fresh) and full

        await wait_until(refilled, 30 * UNIT, "the warm pool to refill")
        print(f"warm pool back to {WARM} per node after {time.perf_counter() - t1:.2f} s")
        status = await service_status()
        (mine,) = [n for n in status["nodes"] if n["node_id"] == node]
        assert mine["sessions"] == 1 and mine["warm"] == WARM

        await session.send_message("quick hello")
        await collect_turns(session)
        assert await last_reply(session) == "You said: quick hello"


async def test_sessions_are_packed_into_one_actor(ray_cluster: RayTestCluster) -> None:
    runner = RealtimeRunner(
        RealtimeAgent(name="Packed", instructions="Hi."),
        config={**ACTOR, "sessions_per_actor": 3},
    )
    async with AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(await runner.run()) for _ in range(3)]
        placements = [await placement_of(ray_cluster.router, s.session_id) for s in sessions]
        names = {p["actor_name"] for p in placements}
        assert len(names) == 1, placements
        host = placements[0]["actor"]
        info = await host.ping.remote()
        assert info["capacity"] == 3
        assert sorted(info["sessions"]) == sorted(s.session_id for s in sessions)

        # The packed sessions are independent.
        for i, s in enumerate(sessions):
            await s.send_message(f"packed number {i}")
        for i, s in enumerate(sessions):
            await collect_turns(s)
            assert await last_reply(s) == f"You said: packed number {i}"
        stats = await host.statistics.remote()
        assert set(stats) == {s.session_id for s in sessions}
    # The three closed; the packed actor (not the service's size) is retired.
    await wait_until(
        lambda: _actor_gone(next(iter(names))), 15 * UNIT, "the packed actor to be retired"
    )


async def test_concurrent_packed_placements_share_the_starting_actor(
    ray_cluster: RayTestCluster,
) -> None:
    # Four at once, four per actor, no actor of that size yet: one process, not four.
    runner = RealtimeRunner(
        RealtimeAgent(name="Packed", instructions="Hi."),
        config={**ACTOR, "sessions_per_actor": 4},
    )
    async with AsyncExitStack() as stack:
        handles = [await runner.run() for _ in range(4)]
        sessions = await asyncio.wait_for(
            asyncio.gather(*(stack.enter_async_context(h) for h in handles)), 60 * UNIT
        )
        placements = [await placement_of(ray_cluster.router, s.session_id) for s in sessions]
        names = {p["actor_name"] for p in placements}
        assert len(names) == 1, placements
    await wait_until(
        lambda: _actor_gone(next(iter(names))), 15 * UNIT, "the packed actor to be retired"
    )


async def _actor_gone(name: str) -> bool:
    names = {e["name"] for e in ray.util.list_named_actors(all_namespaces=True)}
    return name not in names


async def test_router_state_is_rebuilt_after_a_restart(ray_cluster: RayTestCluster) -> None:
    from ray_realtime.actors import raylib
    from ray_realtime.cluster.service import ensure_service, forget_router

    agent: RealtimeAgent[Any] = RealtimeAgent(name="Assistant", instructions="You are helpful.")
    async with await RealtimeRunner(agent, config=ACTOR).run() as session:
        await session.send_message("before the router restarts")
        await collect_turns(session)
        before = await service_status()
        old_router = ray_cluster.router
        ray.kill(old_router, no_restart=True)
        forget_router()

        async def router_gone() -> bool:
            return raylib.get_named_actor(raylib.ROUTER_NAME) is None

        await wait_until(router_gone, 10 * UNIT, "the old router to go")
        # A new router finds the running actors by name and asks them what they host.
        router = await asyncio.wait_for(ensure_service(SERVICE_CONFIG), 60 * UNIT)
        ray_cluster.router = router
        placement = await router.lookup.remote(session.session_id)
        assert placement["session_id"] == session.session_id
        listed = {s["session_id"] for s in await router.list_sessions.remote()}
        assert session.session_id in listed
        after = await service_status()
        by_node = {n["node_id"]: n for n in after["nodes"]}
        for node in [n for n in before["nodes"] if n["alive"]]:  # a removed node is forgotten
            rebuilt = by_node[node["node_id"]]
            assert rebuilt["tool_workers"] == node["tool_workers"]
            assert rebuilt["model_servers"] == node["model_servers"]
        # The session never noticed: it goes on through the same actor.
        await session.send_message("after the router restarted")
        await collect_turns(session)
        assert await last_reply(session) == "You said: after the router restarted"


async def _fresh_router_nobody_started() -> Any:
    """Replace the service's router by a new one that nobody has started yet:
    drivers then find it by name, as they do right after another process
    deployed it, and their calls arrive before it knows the cluster."""
    from ray_realtime.actors import raylib
    from ray_realtime.actors.remote import RouterActor
    from ray_realtime.cluster.service import forget_router

    old = raylib.get_named_actor(raylib.ROUTER_NAME)
    if old is not None:
        ray.kill(old, no_restart=True)
    forget_router()

    async def router_gone() -> bool:
        return raylib.get_named_actor(raylib.ROUTER_NAME) is None

    await wait_until(router_gone, 10 * UNIT, "the old router to go")
    return RouterActor.options(**raylib.actor_options(name=raylib.ROUTER_NAME)).remote(
        SERVICE_CONFIG
    )


async def test_sessions_arriving_together_at_a_fresh_router_all_open(
    ray_cluster: RayTestCluster,
) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Crowd", instructions="Hi.")
    for round_ in range(2):
        ray_cluster.router = await _fresh_router_nobody_started()

        async def one(i: int, round_: int = round_) -> str:
            async with await RealtimeRunner(agent, config=ACTOR).run() as session:
                await session.send_message(f"crowd {round_} {i}")
                await collect_turns(session)
                return await last_reply(session)

        replies = await asyncio.wait_for(
            asyncio.gather(*(one(i) for i in range(8)), return_exceptions=True), 120 * UNIT
        )
        assert replies == [f"You said: crowd {round_} {i}" for i in range(8)]
        assert (await service_status())["placements"] == 8
