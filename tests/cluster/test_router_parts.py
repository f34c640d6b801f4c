"""The router's plain parts, one by one, without Ray: the node table, the
fleet, the session and agent registries, the pools and the placer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ray_realtime.cluster.agent_registry import AgentRegistry
from ray_realtime.cluster.fleet import (
    ActorKind,
    ActorRecord,
    Fleet,
    StartingActor,
    record_from_ping,
)
from ray_realtime.cluster.node_table import NodeTable
from ray_realtime.cluster.placement import PlacementRequirement
from ray_realtime.cluster.placer import Placer
from ray_realtime.cluster.pools import WarmPool, WorkerPools
from ray_realtime.cluster.service_config import ServiceConfig
from ray_realtime.cluster.session_registry import SessionRegistry
from ray_realtime.exceptions import ConfigError, NoCapacityError


def raw(node_id: str, alive: bool = True, **resources: float) -> dict[str, Any]:
    return {
        "NodeID": node_id,
        "Alive": alive,
        "NodeManagerAddress": "10.0.0.1",
        "Resources": {"CPU": 2.0, "node:10.0.0.1": 1.0, **resources},
        "Labels": {"zone": "z1"},
    }


def session_actor(name: str, node_id: str, capacity: int = 1, *sessions: str) -> ActorRecord:
    return ActorRecord(name, ActorKind.SESSION, node_id, object(), capacity, set(sessions))


# ---------------------------------------------------------------- node table


def test_node_table_parses_ray_nodes_and_keeps_drained_flags() -> None:
    table = NodeTable()
    table.update([raw("a", GPU=1), raw("b"), {"Alive": True}])
    assert [n.node_id for n in table] == ["a", "b"]
    a = table.get("a")
    assert a is not None
    assert a.resources == {"CPU": 2.0, "GPU": 1.0}  # the node:<ip> resource is dropped
    assert a.labels == {"zone": "z1"} and a.address == "10.0.0.1"
    table.set_drained("a", True)
    # b vanished from Ray's list: dead; a's drain survives the refresh.
    table.update([raw("a", GPU=1)])
    assert table.is_dead("b") and not table.is_dead("a") and not table.is_dead("unknown")
    assert a.drained and not a.open
    assert table.has_live_node()
    with pytest.raises(ConfigError, match="unknown node"):
        table.set_drained("zzz", True)
    view = {n.node_id: n for n in table.placement_view({"a": 3}, 50)}
    assert (view["a"].sessions, view["a"].capacity, view["a"].drained) == (3, 50, True)
    assert (view["b"].sessions, view["b"].alive) == (0, False)


def test_node_table_with_no_live_node() -> None:
    table = NodeTable()
    assert not table.has_live_node()
    table.update([raw("a", alive=False)])
    assert not table.has_live_node()


# --------------------------------------------------------------------- fleet


def test_actor_kinds_round_trip_through_names() -> None:
    for kind in ActorKind:
        name = kind.new_name()
        assert ActorKind.of_name(name) is kind
    assert ActorKind.of_name("ray_realtime_router") is None
    assert ActorKind.of_name("rr_sessionX") is None


def test_record_from_ping_reads_hosts_models_and_workers() -> None:
    host = record_from_ping(
        "rr_session_1",
        ActorKind.SESSION,
        "h",
        {"node_id": "a", "capacity": 3, "sessions": ["s1"], "data_url": "ws://x", "token": "t"},
    )
    assert (host.node_id, host.capacity, host.sessions, host.url) == ("a", 3, {"s1"}, "ws://x")
    model = record_from_ping("rr_model_1", ActorKind.MODEL, "h", {"node_id": "b", "url": "ws://m"})
    assert (model.node_id, model.url, model.sessions) == ("b", "ws://m", set())
    worker = record_from_ping("rr_tool_1", ActorKind.TOOL, "h", "c")
    assert (worker.node_id, worker.capacity) == ("c", 1)


def test_fleet_queries() -> None:
    fleet = Fleet()
    full = session_actor("full", "a", 2, "s1", "s2")
    half = session_actor("half", "a", 2, "s3")
    empty = session_actor("empty", "a", 2)
    fleet.add(full)
    fleet.add(half)
    fleet.add(empty)
    fleet.add(ActorRecord("t1", ActorKind.TOOL, "a", "th"))
    fleet.add(ActorRecord("m1", ActorKind.MODEL, "b", "mh", url="ws://m"))
    # Packing: the fullest actor with room.
    assert fleet.free_session_actor("a", 2) is half
    assert fleet.free_session_actor("a", 3) is None
    assert fleet.partly_used_nodes(2) == {"a"}
    assert fleet.workers(ActorKind.TOOL) == [("t1", "a", "th")]
    assert fleet.model_url("b") == "ws://m" and fleet.model_url("a") == ""
    assert {r.name for r in fleet.hosts_with_sessions()} == {"full", "half"}
    fleet.begin_start(StartingActor("new", ActorKind.SESSION, "a", 1))
    assert [s.name for s in fleet.starting(ActorKind.SESSION, "a")] == ["new"]
    fleet.end_start("new")
    assert fleet.starting(ActorKind.SESSION) == []
    assert fleet.remove("half") is half and "half" not in fleet
    assert len(fleet.clear()) == 4 and len(fleet) == 0


# ------------------------------------------------------------------ registry


def test_session_registry_places_idempotently_and_counts_load() -> None:
    registry = SessionRegistry()
    first = registry.place("s1", "act1", "a")
    assert registry.place("s1", "act2", "b") is first
    assert registry.placements == 1
    registry.adopt("s2", "act2", "b")  # found by a rebuild: not a placement
    assert registry.placements == 1
    with registry.reserving("s3", "b"):
        assert registry.load_by_node() == {"a": 1, "b": 2}
        assert registry.sessions_by_node() == {"a": 1, "b": 1}
    assert registry.load_by_node() == {"a": 1, "b": 1}
    assert registry.listing() == [
        {"session_id": "s1", "node_id": "a", "actor_name": "act1"},
        {"session_id": "s2", "node_id": "b", "actor_name": "act2"},
    ]
    assert registry.remove("s1") == first and registry.remove("s1") is None
    assert len(registry) == 1


def test_session_registry_remembers_a_bounded_number_of_lost_sessions() -> None:
    registry = SessionRegistry(lost_kept=3)
    for i in range(5):
        registry.place(f"s{i}", "act", "a")
    registry.lose([f"s{i}" for i in range(5)], "its node died")
    assert len(registry) == 0 and registry.lost_count == 3
    assert registry.lost_reason("s4") == "its node died"
    assert registry.lost_reason("s0") is None  # the oldest were forgotten


def test_agent_registry_versions_and_agents_in_use_are_separate() -> None:
    registry = AgentRegistry()
    assert registry.get("Billing") is None
    assert registry.register("Billing", b"v1") == 1
    assert registry.register("Billing", b"v2") == 2
    entry = registry.get("Billing")
    assert entry is not None and (entry.version, entry.payload) == (2, b"v2")
    registry.observe({"s1": "Front Desk", "s2": "Front Desk", "s3": ""})
    assert registry.in_use() == {"Front Desk": 2}
    # What sessions run never becomes a registered version (handoffs unchanged).
    assert registry.versions() == {"Billing": 2}
    registry.observe({"s2": "Billing"})
    assert registry.in_use() == {"Billing": 1, "Front Desk": 1}
    registry.forget_sessions(["s1"])
    assert registry.in_use() == {"Billing": 1}
    registry.keep_only([])
    assert registry.in_use() == {}


# --------------------------------------------------------------------- pools


def test_worker_pools_count_ready_and_starting_workers() -> None:
    config = ServiceConfig(tool_workers_per_node=2, guardrail_workers_per_node=1, local_model=True)
    fleet = Fleet()
    pools = WorkerPools(config, fleet)
    assert sorted(pools.missing("a")) == sorted(
        [ActorKind.TOOL, ActorKind.TOOL, ActorKind.GUARDRAIL, ActorKind.MODEL]
    )
    fleet.add(ActorRecord("t1", ActorKind.TOOL, "a", None))
    fleet.begin_start(StartingActor("t2", ActorKind.TOOL, "a"))
    fleet.add(ActorRecord("g1", ActorKind.GUARDRAIL, "b", None))  # another node's
    assert sorted(pools.missing("a")) == sorted([ActorKind.GUARDRAIL, ActorKind.MODEL])
    no_model = WorkerPools(ServiceConfig(local_model=False), Fleet())
    assert ActorKind.MODEL not in no_model.missing("a")


def test_warm_pool_has_one_definition_of_warm() -> None:
    config = ServiceConfig(warm_pool_size=2, sessions_per_actor=1)
    fleet = Fleet()
    warm = WarmPool(config, fleet)
    table = NodeTable()
    table.update([raw("a")])
    node = table.get("a")
    assert node is not None
    assert warm.deficit(node) == 2
    fleet.add(session_actor("busy", "a", 1, "s1"))  # hosts a session: not warm
    fleet.add(session_actor("packed", "a", 3))  # another size: not warm
    fleet.add(session_actor("w1", "a"))
    assert [r.name for r in warm.warm("a")] == ["w1"]
    # Starts for a waiting placement are not warm-pool refills.
    fleet.begin_start(StartingActor("p", ActorKind.SESSION, "a", 1, for_placement=True))
    assert warm.deficit(node) == 1
    fleet.begin_start(StartingActor("w2", ActorKind.SESSION, "a", 1))
    assert warm.deficit(node) == 0
    # Nothing is trimmed while a session actor is starting on the node.
    fleet.add(session_actor("w3", "a"))
    fleet.add(session_actor("w4", "a"))
    assert warm.surplus(node) == []
    fleet.end_start("p")
    fleet.end_start("w2")
    assert [r.name for r in warm.surplus(node)] == ["w4"]  # the newest beyond the target
    table.set_drained("a", True)
    assert [r.name for r in warm.surplus(node)] == ["w1", "w3", "w4"]


def test_warm_pool_decides_what_a_released_actor_becomes() -> None:
    config = ServiceConfig(warm_pool_size=1, sessions_per_actor=1)
    fleet = Fleet()
    warm = WarmPool(config, fleet)
    table = NodeTable()
    table.update([raw("a")])
    node = table.get("a")
    released = session_actor("r", "a")
    fleet.add(released)
    assert not warm.retire_after_release(released, node)  # the pool needs it
    fleet.add(session_actor("w", "a"))
    assert warm.retire_after_release(released, node)  # beyond the pool
    packed = session_actor("packed", "a", 4)
    fleet.add(packed)
    assert warm.retire_after_release(packed, node)  # empty packed actors never pool
    packed.sessions.add("s")
    assert not warm.retire_after_release(packed, node)  # still hosts a session
    fleet.remove("w")
    table.set_drained("a", True)
    assert warm.retire_after_release(released, node)  # a drained node keeps none


# -------------------------------------------------------------------- placer


def make_placer(nodes: list[dict[str, Any]]) -> tuple[Placer, Fleet, SessionRegistry]:
    table = NodeTable()
    table.update(nodes)
    fleet = Fleet()
    sessions = SessionRegistry()
    return Placer(table, sessions, fleet, 50), fleet, sessions


def test_placer_spreads_by_load_reservations_included() -> None:
    placer, _, sessions = make_placer([raw("a"), raw("b")])
    sessions.place("s1", "x", "a")
    assert placer.choose_node(PlacementRequirement(), 1) == "b"
    with sessions.reserving("s2", "b"), sessions.reserving("s3", "b"):
        assert placer.choose_node(PlacementRequirement(), 1) == "a"
    with pytest.raises(NoCapacityError):
        placer.choose_node(PlacementRequirement(resources={"GPU": 1}), 1)


def test_placer_fills_a_partly_used_packed_actor_first() -> None:
    placer, fleet, sessions = make_placer([raw("a"), raw("b")])
    for i in range(3):
        sessions.place(f"s{i}", "packed", "b")
    fleet.add(session_actor("packed", "b", 4, "s0", "s1", "s2"))
    # b is busier, but its packed actor has a free slot.
    assert placer.choose_node(PlacementRequirement(), 4) == "b"
    assert placer.choose_node(PlacementRequirement(), 1) == "a"


async def test_placer_shares_a_starting_packed_actor() -> None:
    placer, _, _ = make_placer([raw("a")])
    starts = 0
    gate = asyncio.Event()

    async def start() -> ActorRecord:
        nonlocal starts
        starts += 1
        await gate.wait()
        return session_actor(f"packed{starts}", "a", 2)

    first = asyncio.ensure_future(placer.start_shared("a", 2, start))
    await asyncio.sleep(0)
    # While it starts, a packed placement on that node is steered to it.
    assert placer.choose_node(PlacementRequirement(), 2) == "a"
    second = asyncio.ensure_future(placer.start_shared("a", 2, start))
    third = asyncio.ensure_future(placer.start_shared("a", 2, start))  # no slot left: its own
    await asyncio.sleep(0)
    gate.set()
    one, two, three = await asyncio.wait_for(asyncio.gather(first, second, third), 5)
    assert one is two and three is not one
    assert starts == 2


async def test_placer_start_failure_reaches_every_sharer() -> None:
    placer, _, _ = make_placer([raw("a")])

    async def start() -> ActorRecord:
        await asyncio.sleep(0.01)
        raise RuntimeError("no process")

    first = asyncio.ensure_future(placer.start_shared("a", 3, start))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(placer.start_shared("a", 3, start))
    with pytest.raises(RuntimeError):
        await first
    assert await second is None  # the sharer learns there is no actor
