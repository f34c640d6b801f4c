"""The router's Ray calls, behind one small seam.

:class:`RouterOps` is every way the router touches Ray: list the cluster's
nodes and the service's named actors, start an actor, call one, kill one.
:class:`RayRouterOps` does it with Ray. Calls that block on the GCS
(``ray.nodes``, ``list_named_actors``, ``get_actor``, creating a named actor,
``ray.kill``) run in a worker thread, so the router's event loop never stalls
on them; actor method calls are awaited as the object references they are.

Tests of the router's logic run it on a fake of this seam, without Ray.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ray_realtime.actors import raylib
from ray_realtime.cluster.fleet import ActorKind

__all__ = ["RayRouterOps", "RouterOps"]


class RouterOps(Protocol):
    """What the router needs from Ray."""

    async def nodes(self) -> list[Mapping[str, Any]]:
        """The cluster's nodes, as ``ray.nodes()`` reports them."""

    async def list_actor_names(self) -> list[str]:
        """Names of the named actors in the service's namespace (raises when
        the cluster cannot say)."""

    async def get_actor(self, name: str) -> Any | None:
        """The named actor's handle, or None when it is gone."""

    async def create(self, kind: ActorKind, name: str, node_id: str, capacity: int) -> Any:
        """Start a named, detached actor of ``kind`` on ``node_id``; its handle."""

    async def call(self, handle: Any, method: str, *args: Any, timeout: float) -> Any:
        """Call one actor method, bounded by ``timeout`` (TimeoutError)."""

    async def call_many(
        self, handles: Sequence[Any], method: str, *args: Any, timeout: float
    ) -> list[Any]:
        """Call a method on many actors at once: each result, or the exception
        it raised (TimeoutError for those that did not answer in time)."""

    async def kill(self, handle: Any) -> None:
        """Stop an actor for good; one already gone is fine."""

    def is_gone(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the called actor is dead or unreachable."""


class RayRouterOps:
    """:class:`RouterOps` with Ray."""

    async def nodes(self) -> list[Mapping[str, Any]]:
        """``ray.nodes()``, off the event loop."""
        import ray

        found = await asyncio.to_thread(ray.nodes)
        return list(found)

    async def list_actor_names(self) -> list[str]:
        """``list_named_actors`` in our namespace, off the event loop."""
        import ray

        entries = await asyncio.to_thread(ray.util.list_named_actors, all_namespaces=True)
        return [
            str(e.get("name", ""))
            for e in entries
            if isinstance(e, dict) and e.get("namespace") == raylib.NAMESPACE
        ]

    async def get_actor(self, name: str) -> Any | None:
        """``ray.get_actor`` in our namespace, off the event loop."""
        return await asyncio.to_thread(raylib.get_named_actor, name)

    async def create(self, kind: ActorKind, name: str, node_id: str, capacity: int) -> Any:
        """Create the actor (registering a named actor waits on the GCS: off the loop)."""
        return await asyncio.to_thread(_create, kind, name, node_id, capacity)

    async def call(self, handle: Any, method: str, *args: Any, timeout: float) -> Any:
        """One bounded actor call."""
        ref = getattr(handle, method).remote(*args)
        return await asyncio.wait_for(ref, timeout)

    async def call_many(
        self, handles: Sequence[Any], method: str, *args: Any, timeout: float
    ) -> list[Any]:
        """Bounded calls to many actors at once."""
        refs = [getattr(h, method).remote(*args) for h in handles]
        return await raylib.gather_with_timeout(refs, timeout)

    async def kill(self, handle: Any) -> None:
        """``ray.kill`` without restart, off the event loop."""
        await asyncio.to_thread(raylib.kill, handle)

    def is_gone(self, exc: BaseException) -> bool:
        """Ray's actor-died errors."""
        return raylib.is_actor_gone(exc)

    # The session store (optional for a fake: the router skips what is missing).

    async def stored_sessions(self, store: Any) -> list[str]:
        """The ids of the sessions the session store ``store`` holds."""
        found: list[str] = await (await self._store(store)).list_sessions()
        return found

    async def forget_stored(self, store: Any, session_id: str) -> None:
        """Delete a session from the session store ``store``."""
        from ray_realtime.store.records import DeleteSession

        await (await self._store(store)).apply([DeleteSession(session_id)])

    async def _store(self, store: Any) -> Any:
        from ray_realtime.store.config import open_store

        opened = getattr(self, "_opened_store", None)
        if opened is None:
            opened = await open_store(store)
            self._opened_store = opened
        return opened


def _create(kind: ActorKind, name: str, node_id: str, capacity: int) -> Any:
    from ray_realtime.actors import remote

    options = raylib.actor_options(name=name, node_id=node_id)
    if kind is ActorKind.SESSION:
        return remote.SessionActor.options(**options).remote(capacity, name)
    if kind is ActorKind.TOOL:
        return remote.ToolWorkerActor.options(**options).remote()
    if kind is ActorKind.GUARDRAIL:
        return remote.GuardrailWorkerActor.options(**options).remote()
    return remote.LocalModelActor.options(**options).remote()
