"""Sessions over the shared 3-node cluster: spreading, drain, locality, requirements.

The nodes are labelled with the custom resources ``zone_a`` / ``zone_b`` /
``zone_c``; ``ray_cluster.zones`` maps a zone to its node id.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ray_realtime import RealtimeAgent, RealtimeRunner, RealtimeSession, RealtimeToolEnd
from ray_realtime.cluster.service import drain_node, service_status
from tests.actors.util import ACTOR, collect_turns, placement_of, wait_until, where_am_i
from tests.conftest import SERVICE_CONFIG, UNIT, RayTestCluster

pytestmark = [pytest.mark.ray, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parent.parent.parent


def _runner(**config: Any) -> RealtimeRunner:
    agent: RealtimeAgent[Any] = RealtimeAgent(
        name="Spread", instructions="You are everywhere.", tools=[where_am_i]
    )
    return RealtimeRunner(agent, config={**ACTOR, **config})


async def _open(runner: RealtimeRunner, count: int) -> list[RealtimeSession]:
    """Start ``count`` sessions at once; on failure close those that started."""
    handles = [await runner.run() for _ in range(count)]
    results = await asyncio.wait_for(
        asyncio.gather(*(h.enter() for h in handles), return_exceptions=True), 60 * UNIT
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        await _close(handles)
        raise errors[0]
    return handles


async def _close(sessions: list[RealtimeSession]) -> None:
    await asyncio.wait_for(
        asyncio.gather(*(s.close() for s in sessions), return_exceptions=True), 30 * UNIT
    )


async def _no_sessions(router: Any) -> None:
    async def empty() -> bool:
        return not await router.list_sessions.remote()

    await wait_until(empty, 15 * UNIT, "earlier tests' sessions to end")


async def _session_nodes(router: Any, sessions: list[RealtimeSession]) -> dict[str, str]:
    listed = {e["session_id"]: e["node_id"] for e in await router.list_sessions.remote()}
    return {s.session_id: listed[s.session_id] for s in sessions}


def _zone_of(cluster: RayTestCluster) -> dict[str, str]:
    return {node: zone for zone, node in cluster.zones.items()}


async def test_sessions_spread_over_the_nodes(ray_cluster: RayTestCluster) -> None:
    router = ray_cluster.router
    await _no_sessions(router)
    # Dedicated (isolated) sessions: placement spreads them by load.
    sessions = await _open(_runner(sessions_per_actor=1), 6)
    try:
        nodes = await _session_nodes(router, sessions)
        zones = Counter(_zone_of(ray_cluster)[n] for n in nodes.values())
        assert zones == {"a": 2, "b": 2, "c": 2}
        status = await service_status()
        # Alive nodes only: a chaos test may have added and removed a node.
        alive = [n for n in status["nodes"] if n["alive"]]
        assert sorted(n["sessions"] for n in alive) == [2, 2, 2]
        for s in sessions:
            assert (await placement_of(router, s.session_id))["node_id"] == nodes[s.session_id]
    finally:
        await _close(sessions)


async def test_drained_node_gets_no_new_sessions(ray_cluster: RayTestCluster) -> None:
    router = ray_cluster.router
    node_c = ray_cluster.zones["c"]
    await _no_sessions(router)
    await drain_node(node_c)
    try:
        status = await service_status()
        (c,) = [n for n in status["nodes"] if n["node_id"] == node_c]
        assert c["drained"] and c["warm"] == 0
        sessions = await _open(_runner(sessions_per_actor=1), 4)
        try:
            nodes = await _session_nodes(router, sessions)
            assert node_c not in nodes.values()
            assert set(nodes.values()) == {ray_cluster.zones["a"], ray_cluster.zones["b"]}
        finally:
            await _close(sessions)
    finally:
        await drain_node(node_c, False)

    async def c_is_warm_again() -> bool:
        status = await service_status()
        (c,) = [n for n in status["nodes"] if n["node_id"] == node_c]
        return not c["drained"] and c["warm"] >= SERVICE_CONFIG["warm_pool_size"]

    await wait_until(c_is_warm_again, 30 * UNIT, "node c to take sessions again")


async def test_tool_runs_on_the_sessions_node(ray_cluster: RayTestCluster) -> None:
    for zone in ("a", "b", "c"):
        runner = _runner(placement={"resources": {f"zone_{zone}": 1}})
        async with await runner.run() as session:
            node = (await placement_of(ray_cluster.router, session.session_id))["node_id"]
            assert node == ray_cluster.zones[zone]
            await session.send_message("where am i")
            events = await collect_turns(session, turns=2)
            (end,) = [e for e in events if isinstance(e, RealtimeToolEnd)]
            assert json.loads(end.output)["node_id"] == node


async def test_placement_requirement_picks_the_node(ray_cluster: RayTestCluster) -> None:
    runner = _runner(placement={"resources": {"zone_b": 1}})
    async with await runner.run() as session:
        placement = await placement_of(ray_cluster.router, session.session_id)
        assert placement["node_id"] == ray_cluster.zones["b"]
        host_info = await placement["actor"].ping.remote()
        assert host_info["node_id"] == ray_cluster.zones["b"]
        await session.send_message("hello zone b")
        await collect_turns(session)


def test_status_cli_shows_every_node(ray_cluster: RayTestCluster) -> None:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ray_realtime.cli", "status", "--address", ray_cluster.address],
        capture_output=True,
        text=True,
        timeout=90 * UNIT,
        cwd=str(ROOT),
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    print("\n".join(lines))
    assert lines[0].split()[:3] == ["node", "address", "alive"]
    rows = [line.split() for line in lines[1:] if line.split()[0][:12] in _short_ids(ray_cluster)]
    assert len(rows) == 3
    assert all(row[1] == "127.0.0.1" and row[2] == "yes" for row in rows)
    assert lines[-1].startswith("sessions: ")


def _short_ids(cluster: RayTestCluster) -> set[str]:
    return {node[:12] for node in cluster.zones.values()}
