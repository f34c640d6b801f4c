"""The router shell's logic, on a fake of its Ray seam (no Ray runtime).

Start-up races, rebuilding after a restart, the warm pool, the agents of open
sessions and what listings may carry. The same behaviours run against real
Ray in ``test_router.py``.
"""

from __future__ import annotations

import ast
import asyncio
import pathlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import ray_realtime
from ray_realtime.actors import router as router_module
from ray_realtime.actors.router import Router
from ray_realtime.cluster.fleet import ActorKind
from ray_realtime.exceptions import (
    NoCapacityError,
    ServiceNotRunningError,
    SessionLostError,
    SessionNotFoundError,
)
from tests.actors.router_fakes import FakeActor, FakeOps, raw_node
from tests.conftest import UNIT

CONFIG: dict[str, Any] = {
    "warm_pool_size": 1,
    "tool_workers_per_node": 1,
    "guardrail_workers_per_node": 1,
    "local_model": True,
    # The control loop stays out of the way; tests call reconcile() themselves.
    "health_interval_seconds": 3600.0,
    "health_timeout_seconds": 0.5,
    "actor_start_timeout_seconds": 5.0,
    "refill_delay_seconds": 0.0,
}

TWO_NODES = [raw_node("node-a"), raw_node("node-b")]


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router_module, "REBUILD_BACKOFF", (0.0, 0.0, 0.0, 0.0))


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait for ``condition`` to hold (bounded)."""
    deadline = time.monotonic() + 5 * UNIT
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def killed(ops: FakeOps, name: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return name in ops.killed

    return check


async def shutdown(router: Router) -> None:
    await asyncio.wait_for(router.shutdown(), 5 * UNIT)


# --------------------------------------------------------------- start-up race


async def test_placements_that_arrive_before_the_router_knows_its_nodes_all_succeed() -> None:
    # The GCS lists no node for the first two asks: the router's first
    # reconcile sees none, then placements look again and find them.
    ops = FakeOps([[], [], TWO_NODES], nodes_delay=0.01, create_delay=0.01)
    router = Router(CONFIG, ops)
    # Dedicated actors (sessions_per_actor 1), so that placement spreads them.
    placements = await asyncio.wait_for(
        asyncio.gather(*(router.place_session(f"s{i}", None, 1) for i in range(8))), 10 * UNIT
    )
    assert sorted(p["session_id"] for p in placements) == [f"s{i}" for i in range(8)]
    assert {p["node_id"] for p in placements} == {"node-a", "node-b"}
    # One start served them all (one rebuild), and placement spread the load.
    assert ops.list_calls == 1
    listed = await router.list_sessions()
    per_node = [sum(1 for s in listed if s["node_id"] == n) for n in ("node-a", "node-b")]
    assert per_node == [4, 4]
    await shutdown(router)


async def test_placement_waits_for_the_start_in_progress() -> None:
    ops = FakeOps([TWO_NODES], nodes_delay=0.05, create_delay=0.05)
    router = Router(CONFIG, ops)
    # start() (the deployer) and placements (callers that found the router by
    # name) arrive together; the placements must not see an empty node table.
    results = await asyncio.wait_for(
        asyncio.gather(router.start(), *(router.place_session(f"s{i}") for i in range(4))),
        10 * UNIT,
    )
    status = results[0]
    assert {n["node_id"] for n in status["nodes"]} == {"node-a", "node-b"}
    assert all(p["actor_name"] for p in results[1:])
    await shutdown(router)


async def test_placement_with_no_node_at_all_fails_in_bounded_time() -> None:
    ops = FakeOps([[]])
    router = Router(CONFIG, ops)
    t0 = time.monotonic()
    with pytest.raises(NoCapacityError, match="among 0 node"):
        await asyncio.wait_for(router.place_session("s1"), 10 * UNIT)
    # It looked again for about health_timeout_seconds, not forever.
    assert time.monotonic() - t0 < 5 * UNIT
    assert ops.nodes_calls > 2
    await shutdown(router)


# ------------------------------------------------------------------ rebuild


def _left_behind(ops: FakeOps) -> FakeActor:
    """A session actor hosting s-old, left by an earlier router."""
    host = ops.add_actor(FakeActor(ActorKind.SESSION, "rr_session_old", "node-a"))
    host.sessions["s-old"] = "Assistant"
    ops.add_actor(FakeActor(ActorKind.TOOL, "rr_tool_old", "node-a"))
    ops.add_actor(FakeActor(ActorKind.SESSION, "someone_elses_actor", "node-a"))
    return host


async def test_rebuild_retries_listing_and_adopts_live_sessions() -> None:
    ops = FakeOps([TWO_NODES], list_failures=2)
    _left_behind(ops)
    router = Router(CONFIG, ops)
    await asyncio.wait_for(router.start(), 10 * UNIT)
    assert ops.list_calls == 3
    placement = await router.lookup("s-old")
    assert placement["actor_name"] == "rr_session_old"
    assert placement["node_id"] == "node-a"
    # The session is known, so placing it again is idempotent.
    assert (await router.place_session("s-old"))["actor_name"] == "rr_session_old"
    # The adopted tool worker counts: node-a gets no second one.
    assert len(ops.live(ActorKind.TOOL, "node-a")) == 1
    assert "someone_elses_actor" not in {p["actor_name"] for p in await router.list_sessions()}
    await shutdown(router)


async def test_rebuild_that_keeps_failing_fails_loudly_and_is_tried_again() -> None:
    ops = FakeOps([TWO_NODES], list_failures=-1)
    _left_behind(ops)
    router = Router(CONFIG, ops)
    with pytest.raises(ServiceNotRunningError, match="could not list the service's actors"):
        await asyncio.wait_for(router.start(), 10 * UNIT)
    assert ops.list_calls == len(router_module.REBUILD_BACKOFF) + 1
    # Unhealthy, and says so: no placement, no "not found" for a live session.
    with pytest.raises(ServiceNotRunningError):
        await router.ping()
    with pytest.raises(ServiceNotRunningError):
        await asyncio.wait_for(router.lookup("s-old"), 10 * UNIT)
    with pytest.raises(ServiceNotRunningError):
        await asyncio.wait_for(router.place_session("s-new"), 10 * UNIT)
    assert ops.created == []
    # The GCS answers again: the next call starts the router for real.
    ops.list_failures = 0
    assert (await asyncio.wait_for(router.lookup("s-old"), 10 * UNIT))["node_id"] == "node-a"
    assert await router.ping() == "ok"
    await shutdown(router)


# ------------------------------------------------------------- pools, health


async def test_start_reaches_the_target_and_a_placement_takes_a_warm_actor() -> None:
    ops = FakeOps([TWO_NODES])
    router = Router(CONFIG, ops)
    status = await asyncio.wait_for(router.start(), 10 * UNIT)
    for node in status["nodes"]:
        assert (node["warm"], node["tool_workers"], node["guardrail_workers"]) == (1, 1, 1)
        assert node["model_servers"] == 1
    warm = {a.name for a in ops.live(ActorKind.SESSION)}
    placement = await router.place_session("s1")
    assert placement["actor_name"] in warm
    assert placement["model_url"] == f"ws://{placement['node_id']}/" + next(
        a.name for a in ops.live(ActorKind.MODEL, placement["node_id"])
    )
    assert placement["data_url"].endswith(placement["actor_name"])

    async def mine() -> dict[str, Any]:
        status = await router.status()
        (node,) = [n for n in status["nodes"] if n["node_id"] == placement["node_id"]]
        return node

    # Refilled: the node has its warm actor again, besides the busy one.
    async def refilled() -> bool:
        node = await mine()
        return (node["sessions"], node["session_actors"], node["warm"]) == (1, 2, 1)

    await until(refilled, "the warm pool to refill")
    # The session ends: its actor would exceed the pool, so it is retired.
    await router.session_ended("s1")
    await until(killed(ops, placement["actor_name"]), "the surplus actor to be retired")
    status = await router.status()
    assert all(n["warm"] == 1 for n in status["nodes"])
    await shutdown(router)


async def test_a_dead_session_actor_loses_its_sessions() -> None:
    # Without a session store there is nothing to recover from.
    ops = FakeOps([TWO_NODES])
    router = Router({**CONFIG, "store": "off"}, ops)
    await router.start()
    placement = await router.place_session("s1")
    ops.actors[placement["actor_name"]].alive = False
    await router.reconcile()
    with pytest.raises(SessionLostError, match="its actor died"):
        await router.lookup("s1")
    with pytest.raises(SessionNotFoundError):
        await router.lookup("never-placed")
    assert (await router.status())["lost_sessions"] == 1
    await shutdown(router)


async def test_drain_retires_idle_actors_and_steers_new_sessions() -> None:
    ops = FakeOps([TWO_NODES])
    router = Router(CONFIG, ops)
    await router.start()
    (warm_a,) = ops.live(ActorKind.SESSION, "node-a")
    await router.drain_node("node-a")
    await until(killed(ops, warm_a.name), "the drained node's warm actor to be retired")
    placements = [await router.place_session(f"s{i}") for i in range(3)]
    assert {p["node_id"] for p in placements} == {"node-b"}
    await shutdown(router)


async def test_packed_placements_share_one_starting_actor() -> None:
    ops = FakeOps([[raw_node("node-a")]], create_delay=0.05)
    router = Router(CONFIG, ops)
    await router.start()
    before = len(ops.created)
    placements = await asyncio.gather(*(router.place_session(f"p{i}", None, 4) for i in range(4)))
    assert len({p["actor_name"] for p in placements}) == 1
    packed = [a for a in ops.created[before:] if a.capacity == 4]
    assert len(packed) == 1
    for i in range(4):
        await router.session_ended(f"p{i}")
    # An empty packed actor is never pooled.
    await until(killed(ops, packed[0].name), "the packed actor to be retired")
    await shutdown(router)


# ------------------------------------------------------- agents and listings


async def test_status_shows_the_agents_of_open_sessions() -> None:
    ops = FakeOps([TWO_NODES])
    router = Router(CONFIG, ops)
    await router.start()
    one = await router.place_session("s1")
    two = await router.place_session("s2")
    ops.actors[one["actor_name"]].sessions["s1"] = "Assistant"
    ops.actors[two["actor_name"]].sessions["s2"] = "Assistant"
    status = await router.status()
    assert status["agents_in_use"] == {"Assistant": 2}
    assert status["agents"] == {}  # nothing registered for handoffs
    # A handoff changes a session's agent; registering is a separate thing.
    ops.actors[two["actor_name"]].sessions["s2"] = "Billing"
    assert await router.register_agent("Billing", b"payload") == 1
    status = await router.status()
    assert status["agents_in_use"] == {"Assistant": 1, "Billing": 1}
    assert status["agents"] == {"Billing": 1}
    await router.session_ended("s1")
    assert (await router.status())["agents_in_use"] == {"Billing": 1}
    await shutdown(router)


async def test_listings_carry_ids_and_placement_never_secrets() -> None:
    ops = FakeOps([TWO_NODES])
    router = Router(CONFIG, ops)
    await router.start()
    placement = await router.place_session("s1")
    ops.actors[placement["actor_name"]].sessions["s1"] = "Assistant"
    listed = await router.list_sessions()
    looked_up = await router.lookup("s1")
    status = await router.status()
    assert [set(e) for e in listed] == [{"session_id", "node_id", "actor_name"}]
    assert set(looked_up) == {
        "session_id",
        "actor_name",
        "actor",
        "node_id",
        "model_url",
        "data_url",
        "open_attach",
        "tool_workers",
        "guardrail_workers",
    }
    # The fake hosts put a secret in every answer; none comes out of the router.
    plain = {
        k: v
        for k, v in looked_up.items()
        if k not in ("actor", "tool_workers", "guardrail_workers")
    }
    for answer in (listed, plain, status, await router.list_agents()):
        assert "SECRET" not in repr(answer)
        assert "token" not in repr(answer).lower()
    await shutdown(router)


# --------------------------------------------------------- Ray at the edge


def _imports(path: pathlib.Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_the_router_reaches_ray_only_through_its_seam() -> None:
    root = pathlib.Path(ray_realtime.__file__).parent
    parts = [
        "actors/router.py",
        "cluster/node_table.py",
        "cluster/fleet.py",
        "cluster/session_registry.py",
        "cluster/agent_registry.py",
        "cluster/pools.py",
        "cluster/placer.py",
        "cluster/placement.py",
    ]
    for part in parts:
        imported = _imports(root / part)
        ray_imports = {
            m for m in imported if m == "ray" or m.startswith("ray.") or m.endswith("raylib")
        }
        assert not ray_imports, f"{part} imports {sorted(ray_imports)}"


async def test_ray_calls_that_block_run_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    from ray_realtime.actors import raylib, router_ops

    loop_thread = threading.get_ident()
    threads: list[int] = []

    def blocking(result: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.get_ident())
            time.sleep(0.2)
            return result

        return call

    monkeypatch.setattr(ray, "nodes", blocking([]))
    monkeypatch.setattr(ray.util, "list_named_actors", blocking([]))
    monkeypatch.setattr(raylib, "get_named_actor", blocking(None))
    monkeypatch.setattr(raylib, "kill", blocking(None))
    monkeypatch.setattr(router_ops, "_create", blocking(object()))
    ops = router_ops.RayRouterOps()
    calls = [
        ops.nodes(),
        ops.list_actor_names(),
        ops.get_actor("rr_tool_x"),
        ops.kill(object()),
        ops.create(ActorKind.TOOL, "rr_tool_x", "node-a", 1),
    ]
    for call in calls:
        ticks = 0
        task = asyncio.ensure_future(call)
        while not task.done():
            await asyncio.sleep(0.01)
            ticks += 1
        await task
        # The loop went on serving others while the GCS call blocked a thread.
        assert ticks >= 5
    assert len(threads) == len(calls) and loop_thread not in threads
