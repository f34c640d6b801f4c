"""A warm session actor is ready before its first session: it opens the
session store and takes the router's worker lists while it warms up, so a
handle's ``open_session`` carries no worker handles and waits for neither."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from ray_realtime import RealtimeAgent, RealtimeError, RealtimeSession, RealtimeToolEnd
from ray_realtime.actors import raylib
from ray_realtime.actors.handle import make_ticket
from ray_realtime.actors.router import Router
from ray_realtime.actors.session_host import SessionHost
from ray_realtime.cluster.fleet import ActorKind
from ray_realtime.session.start import new_session_id
from tests.actors.router_fakes import FakeOps, raw_node
from tests.actors.util import collect_turns, where_am_i
from tests.conftest import UNIT, RayTestCluster

# ------------------------------------------- the router, on its fake seam

CONFIG: dict[str, Any] = {
    "warm_pool_size": 1,
    "tool_workers_per_node": 1,
    "guardrail_workers_per_node": 1,
    "local_model": False,
    "health_interval_seconds": 3600.0,
    "health_timeout_seconds": 0.5,
    "actor_start_timeout_seconds": 5.0,
    "refill_delay_seconds": 0.0,
}


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5 * UNIT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_warm_actors_get_the_worker_lists_and_their_changes() -> None:
    ops = FakeOps([[raw_node("node-a")]])
    router = Router(CONFIG, ops)
    await asyncio.wait_for(router.start(), 5 * UNIT)
    try:
        (warm,) = ops.live(ActorKind.SESSION)
        assert not warm.sessions
        (tool,) = ops.live(ActorKind.TOOL)
        (guard,) = ops.live(ActorKind.GUARDRAIL)
        # What a warming actor asks for.
        lists = await router.worker_lists()
        assert {k: [n for n, _, _ in v] for k, v in lists.items()} == {
            "tool": [tool.name],
            "guardrail": [guard.name],
        }
        # A worker dies: the warm actor (no session yet) hears of the
        # replacement too, since its first session will use its own lists.
        tool.die()
        await _until(lambda: len(ops.live(ActorKind.TOOL)) == 1, "the replacement")
        (new,) = ops.live(ActorKind.TOOL)

        def latest() -> list[str] | None:
            pushed = [w for kind, w in warm.worker_updates if kind == "tool"]
            return [n for n, _, _ in pushed[-1]] if pushed else None

        await _until(lambda: latest() == [new.name], "the warm actor's new tool list")
    finally:
        await asyncio.wait_for(router.shutdown(), 5 * UNIT)


# ------------------------------------------------------------- real Ray


@pytest.mark.ray
async def test_a_warming_actor_opens_the_store_and_takes_the_worker_lists(
    ray_cluster: RayTestCluster,
) -> None:
    # The class itself, in this process: what its first ping starts in the
    # background is done before any session arrives.
    host = SessionHost(1, "warm-probe")
    try:
        await asyncio.wait_for(host.ping(), 10 * UNIT)
        assert host._warmup is not None
        await asyncio.wait_for(asyncio.shield(host._warmup), 10 * UNIT)
        assert host._store is not None and host._store_error == ""
        lists = await ray_cluster.router.worker_lists.remote()
        for kind in ("tool", "guardrail"):
            held = {w.name for w in host._pools[kind].workers}
            assert held == {name for name, _, _ in lists[kind]} != set()
    finally:
        await host.close_all()
        if host._dataplane is not None:
            await host._dataplane.stop()


@pytest.mark.ray
async def test_a_session_opened_without_worker_lists_runs_tools_on_the_routers_workers(
    ray_cluster: RayTestCluster,
) -> None:
    """What a handle now does: ``open_session`` without worker lists."""
    router = ray_cluster.router
    sid = new_session_id()
    placement = await asyncio.wait_for(router.place_session.remote(sid, None, None), 10 * UNIT)
    host = placement["actor"]
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Tooler", tools=[where_am_i])
    payload = raylib.dumps((raylib.dumps(agent), raylib.dumps(None), {}, {}))
    options = {"model_url": placement["model_url"]}
    info = await asyncio.wait_for(host.open_session.remote(sid, payload, options), 30 * UNIT)
    secret = info["token"]
    try:
        session = await asyncio.wait_for(
            RealtimeSession.attach(make_ticket(sid, secret)), 10 * UNIT
        )
        await session.send_message("where am i")
        events = await collect_turns(session, turns=2)
        assert [e for e in events if isinstance(e, RealtimeError)] == []
        (end,) = [e for e in events if isinstance(e, RealtimeToolEnd)]
        ran = json.loads(end.output)
        host_info = await asyncio.wait_for(host.ping.remote(), 10 * UNIT)
        assert ran["pid"] != host_info["pid"]  # a worker ran it
        assert ran["node_id"] == placement["node_id"]
        await session.detach()
    finally:
        await asyncio.wait_for(host.close_session.remote(sid, secret), 10 * UNIT)


async def test_a_placement_carries_no_worker_handles_and_a_lookup_does() -> None:
    ops = FakeOps([[raw_node("node-a")]])
    router = Router(CONFIG, ops)
    await asyncio.wait_for(router.start(), 5 * UNIT)
    try:
        placed = await router.place_session("s1")
        assert "tool_workers" not in placed and "guardrail_workers" not in placed
        assert {"actor", "actor_name", "node_id", "model_url", "data_url"} <= set(placed)
        looked_up = await router.lookup("s1")
        assert [n for n, _, _ in looked_up["tool_workers"]] == [
            a.name for a in ops.live(ActorKind.TOOL)
        ]
    finally:
        await asyncio.wait_for(router.shutdown(), 5 * UNIT)
