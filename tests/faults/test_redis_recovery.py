"""Chaos: the Redis session store end to end.

The service runs with ``store="redis://..."`` (a real ``redis-server`` on
loopback, with a password); a session's state reaches Redis after a turn (and
its secret only as a hash); its actor is SIGKILLed; the same handle sees
exactly one ``session_recovered``, restored from Redis on another actor, and
the next turn works with the history intact.

A session actor opens its store once, on first use, from the router's
``store_config``: the warm actors of the shared cluster already hold the
embedded store, so the test retires the idle ones after each redeploy and the
router's pool replaces them with actors that ask the new router. Afterwards the
original service (embedded store) is restored, and the actors that wrote to
Redis are retired too, so later tests are unaffected.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ray_realtime import (
    RealtimeAgent,
    RealtimeAgentEndEvent,
    RealtimeRunner,
    RealtimeSessionRecovered,
)
from ray_realtime.actors.handle import parse_ticket
from tests.actors.test_session_access import _redeploy
from tests.actors.util import last_reply, wait_until
from tests.conftest import SERVICE_CONFIG, UNIT, RayTestCluster
from tests.faults.util import Reader, kill_session_actor, session_actor
from tests.store.conftest import RedisServer, need_redis_server

pytestmark = [pytest.mark.ray]

_PREFIX = "ray_realtime:"  # RedisStore's default key prefix


async def _retire_idle_session_actors(router: Any) -> None:
    """Kill every session actor hosting no session (they hold the store they
    opened under the previous router) and wait (bounded) until the router's
    pool has a warm actor again."""
    import ray

    def session_actor_names() -> set[str]:
        return {
            entry["name"]
            for entry in ray.util.list_named_actors(all_namespaces=True)
            if entry["namespace"] == "ray_realtime" and entry["name"].startswith("rr_session_")
        }

    killed: set[str] = set()
    for name in session_actor_names():
        try:
            actor = ray.get_actor(name, namespace="ray_realtime")
            info = await asyncio.wait_for(actor.ping.remote(), 10 * UNIT)
        except Exception:  # gone already, or dying
            continue
        if not info["sessions"]:
            ray.kill(actor, no_restart=True)
            killed.add(name)

    async def replaced() -> bool:
        # The killed actors are gone from Ray and from the router's fleet (it
        # notices through its health checks), and the pool has a warm one.
        names = session_actor_names()
        if names & killed:
            return False
        status = await asyncio.wait_for(router.status.remote(), 10 * UNIT)
        alive = [node for node in status["nodes"] if node["alive"]]
        known = sum(node["session_actors"] for node in alive)
        return known == len(names) and any(node["warm"] for node in alive)

    await wait_until(replaced, 60 * UNIT, "the pool to replace the retired session actors")


async def _dump(client: Any) -> dict[str, list[bytes]]:
    """Every key under our prefix and every value it holds, as bytes."""
    out: dict[str, list[bytes]] = {}
    async for raw in client.scan_iter(match=_PREFIX + "*"):
        key = raw.decode()
        kind = (await client.type(raw)).decode()
        values: list[bytes]
        if kind == "hash":
            mapping = await client.hgetall(raw)
            values = [b for pair in mapping.items() for b in pair]
        elif kind == "zset":
            values = list(await client.zrange(raw, 0, -1))
        elif kind == "set":
            values = list(await client.smembers(raw))
        elif kind == "string":
            values = [await client.get(raw)]
        elif kind == "list":
            values = list(await client.lrange(raw, 0, -1))
        else:
            values = []
        out[key] = values
    return out


async def test_redis_store_recovers_a_killed_sessions_actor(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    need_redis_server()
    import redis.asyncio as aioredis

    server = RedisServer(tmp_path / "redis")
    server.start()
    client = aioredis.Redis(
        host="127.0.0.1", port=server.port, password=server.password, socket_timeout=5 * UNIT
    )
    try:
        router = await _redeploy(ray_cluster, {**SERVICE_CONFIG, "store": server.url})
        try:
            await _retire_idle_session_actors(router)
            agent: RealtimeAgent[Any] = RealtimeAgent(name="Keeper", instructions="Be brief.")
            runner = RealtimeRunner(agent, config={"execution": "actor"})
            session = await asyncio.wait_for(runner.run(), 30 * UNIT)
            async with session:
                reader = Reader(session)
                sid = session.session_id
                _, secret = parse_ticket(session.ticket)
                await session.send_message("say kept in redis")
                await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
                assert await last_reply(session) == "kept in redis"
                completed = set(reader.completed)
                assert len(completed) >= 2  # the user's item and the reply

                # The session's state is in Redis (written behind: bounded wait).
                async def stored() -> dict[str, list[bytes]] | None:
                    dump = await _dump(client)
                    order = dump.get(f"{_PREFIX}s:{sid}:order", [])
                    ids = {raw.decode() for raw in order}
                    return dump if completed <= ids else None

                dump = await wait_until(stored, 15 * UNIT, "the session's items in Redis")
                assert sid.encode() in dump[f"{_PREFIX}sessions"]
                assert f"{_PREFIX}s:{sid}:meta" in dump
                # The secret (and so the ticket) is never stored, only its hash.
                ticket = session.ticket
                for key, values in dump.items():
                    for value in values:
                        assert secret.encode() not in value, f"the secret is stored in {key}"
                        assert ticket.encode() not in value, f"the ticket is stored in {key}"

                # SIGKILL its actor: the router restores it from Redis elsewhere.
                dead = await kill_session_actor(router, sid)
                recovered = await reader.until(
                    lambda e: isinstance(e, RealtimeSessionRecovered), timeout=30 * UNIT
                )
                assert isinstance(recovered, RealtimeSessionRecovered)
                assert recovered.reason == "actor_died"
                assert recovered.items_restored >= len(completed)
                _, info = await session_actor(router, sid)
                assert info["pid"] != dead["pid"]

                # The same handle goes on, with its history.
                await session.send_message("say after redis recovery")
                await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
                assert await last_reply(session) == "after redis recovery"
                history = await asyncio.wait_for(session.get_history(), 10 * UNIT)
                ids = {item.item_id for item in history}
                assert completed <= ids, f"lost completed items: {completed - ids}"
                assert len(reader.of_type(RealtimeSessionRecovered)) == 1
        finally:
            # The original service, and no actor left writing to this Redis.
            router = await _redeploy(ray_cluster, SERVICE_CONFIG)
            await _retire_idle_session_actors(router)
    finally:
        await client.aclose()
        server.stop()
