"""A working fake of the router's Ray seam (:class:`RouterOps`), for tests
of the router's logic without Ray.

Fake actors answer the calls the router makes (``ping``, ``start``,
``statistics``, ``close_all``, ``update_workers``) the way the real session
host, workers and model host do; the cluster's node list and the actor
listing can be made slow, empty or failing to reproduce start-up races and
GCS outages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from ray_realtime.cluster.fleet import ActorKind

__all__ = ["FakeActor", "FakeActorGone", "FakeOps", "raw_node"]


class FakeActorGone(Exception):
    """The fake's "actor died" error."""


def raw_node(node_id: str, alive: bool = True, **resources: float) -> dict[str, Any]:
    """A node as ``ray.nodes()`` reports it."""
    return {
        "NodeID": node_id,
        "Alive": alive,
        "NodeManagerAddress": f"10.0.0.{len(node_id)}",
        "Resources": {"CPU": 1.0, f"node:10.0.0.{len(node_id)}": 1.0, **resources},
        "Labels": {},
    }


class FakeActor:
    """One fake actor of the service."""

    def __init__(self, kind: ActorKind, name: str, node_id: str, capacity: int = 1) -> None:
        self.kind = kind
        self.name = name
        self.node_id = node_id
        self.capacity = capacity
        self.sessions: dict[str, str] = {}  # session id -> current agent name
        self.alive = True
        self.url = f"ws://{node_id}/{name}"
        self.secret = f"SECRET-{name}"
        self.worker_updates: list[tuple[str, list[Any]]] = []
        # Workers: set ``retiring`` to make it ask for retirement; ``died``
        # fails its pending watch call as Ray does when the process dies.
        self.retiring = asyncio.Event()
        self.died = asyncio.Event()
        self.in_flight = 0
        self.idle = asyncio.Event()

    async def ping(self) -> Any:
        if self.kind in (ActorKind.TOOL, ActorKind.GUARDRAIL):
            return self.node_id
        return {
            "node_id": self.node_id,
            "data_url": self.url if self.kind is ActorKind.SESSION else "",
            "url": self.url if self.kind is ActorKind.MODEL else "",
            "sessions": list(self.sessions),
            "capacity": self.capacity,
            # Something a real host might also say; the router must not pass it on.
            "token": self.secret,
        }

    async def start(self) -> str:
        return self.url

    async def statistics(self) -> dict[str, Any]:
        return {
            sid: {"agent": agent, "session_id": sid, "token": self.secret}
            for sid, agent in self.sessions.items()
        }

    async def close_all(self) -> None:
        self.sessions.clear()

    async def update_workers(self, kind: str, workers: list[Any]) -> None:
        self.worker_updates.append((kind, workers))

    async def wait_retire(self, stuck_limit: int, timeout: float) -> bool:
        retire = asyncio.ensure_future(self.retiring.wait())
        died = asyncio.ensure_future(self.died.wait())
        done, pending = await asyncio.wait(
            {retire, died}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        if died in done:
            raise FakeActorGone(self.name)
        return retire in done

    async def wait_idle(self) -> None:
        if self.in_flight:
            await self.idle.wait()

    def die(self) -> None:
        """The process is gone (as after SIGKILL)."""
        self.alive = False
        self.died.set()


class FakeOps:
    """:class:`RouterOps` over fake actors and a fake node list.

    ``node_lists``: what successive ``nodes()`` calls return (the last one
    repeats); ``list_failures``: how many ``list_actor_names`` calls fail
    first (``-1``: all); ``nodes_delay`` / ``create_delay``: seconds each call
    takes.
    """

    def __init__(
        self,
        node_lists: Sequence[list[dict[str, Any]]] = (),
        *,
        list_failures: int = 0,
        nodes_delay: float = 0.0,
        create_delay: float = 0.0,
    ) -> None:
        self.node_lists = list(node_lists) or [[raw_node("node-a")]]
        self.list_failures = list_failures
        self.nodes_delay = nodes_delay
        self.create_delay = create_delay
        self.actors: dict[str, FakeActor] = {}
        self.nodes_calls = 0
        self.list_calls = 0
        self.created: list[FakeActor] = []
        self.killed: list[str] = []

    def add_actor(self, actor: FakeActor) -> FakeActor:
        """A running actor of the service (as if left by an earlier router)."""
        self.actors[actor.name] = actor
        return actor

    async def nodes(self) -> list[Mapping[str, Any]]:
        index = min(self.nodes_calls, len(self.node_lists) - 1)
        self.nodes_calls += 1
        await asyncio.sleep(self.nodes_delay)
        return list(self.node_lists[index])

    async def list_actor_names(self) -> list[str]:
        self.list_calls += 1
        await asyncio.sleep(0)
        if self.list_failures < 0 or self.list_calls <= self.list_failures:
            raise ConnectionError("GCS unavailable")
        return [a.name for a in self.actors.values() if a.alive]

    async def get_actor(self, name: str) -> Any | None:
        actor = self.actors.get(name)
        return actor if actor is not None and actor.alive else None

    async def create(self, kind: ActorKind, name: str, node_id: str, capacity: int) -> Any:
        await asyncio.sleep(self.create_delay)
        actor = FakeActor(kind, name, node_id, capacity)
        self.actors[name] = actor
        self.created.append(actor)
        return actor

    async def call(self, handle: Any, method: str, *args: Any, timeout: float) -> Any:
        if not handle.alive:
            raise FakeActorGone(handle.name)
        return await asyncio.wait_for(getattr(handle, method)(*args), timeout)

    async def call_many(
        self, handles: Sequence[Any], method: str, *args: Any, timeout: float
    ) -> list[Any]:
        results: list[Any] = []
        for handle in handles:
            try:
                results.append(await self.call(handle, method, *args, timeout=timeout))
            except Exception as exc:
                results.append(exc)
        return results

    async def kill(self, handle: Any) -> None:
        handle.die()
        self.killed.append(handle.name)

    def is_gone(self, exc: BaseException) -> bool:
        return isinstance(exc, FakeActorGone)

    def live(self, kind: ActorKind, node_id: str | None = None) -> list[FakeActor]:
        """Live fake actors of a kind (on a node)."""
        return [
            a
            for a in self.actors.values()
            if a.alive and a.kind is kind and (node_id is None or a.node_id == node_id)
        ]
