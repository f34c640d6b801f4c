"""Deploying and reaching the ray-realtime service (the router and its pools).

:func:`ensure_service` connects to Ray (an embedded local Ray when no address
is given and ``RAY_ADDRESS`` is unset) and starts the router if it is not
running; the router then starts the worker pools, the warm pools and, when no
OpenAI key is configured, a local model server on each node.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray_realtime.actors import raylib
from ray_realtime.cluster.connect import connect_async
from ray_realtime.cluster.service_config import ServiceConfig
from ray_realtime.exceptions import ServiceNotRunningError

__all__ = [
    "drain_node",
    "ensure_service",
    "forget_router",
    "get_router",
    "move_sessions",
    "register_agent",
    "service_status",
    "shutdown_service",
]


def get_router() -> Any:
    """The router's handle; :class:`ServiceNotRunningError` if it is not deployed."""
    router = raylib.get_named_actor(raylib.ROUTER_NAME)
    if router is None:
        raise ServiceNotRunningError(
            "the ray-realtime router is not running in this Ray cluster; "
            "start it with `ray-realtime serve` (or let a session start it)"
        )
    return router


async def ensure_service(
    config: ServiceConfig | dict[str, Any] | None = None, *, address: str | None = None
) -> Any:
    """Connect to Ray and make sure the router runs; returns its handle.

    ``config`` only applies when this call deploys the router. Starting or
    joining Ray and looking the router up run off the event loop.
    """
    await connect_async(address)
    cached = _cached_router()
    if cached is not None:
        return cached
    router = await asyncio.to_thread(raylib.get_named_actor, raylib.ROUTER_NAME)
    if router is not None:
        _remember_router(router)
        return router
    from ray_realtime.actors.remote import RouterActor

    cfg = config if isinstance(config, ServiceConfig) else ServiceConfig.from_dict(config)
    store = await asyncio.to_thread(_deploy_store, cfg)
    if store is not None:
        # The first sessions' writes must not pay the store actor's start.
        await raylib.result(store.statistics.remote(), _STORE_START_SECONDS)
    options = raylib.actor_options(name=raylib.ROUTER_NAME)
    # Two processes deploying at once get the same router, not two.
    options["get_if_exists"] = True
    router = RouterActor.options(**options).remote(cfg.to_dict())
    # start() is idempotent; every caller waits until the pools are up.
    await router.start.remote()
    _remember_router(router)
    return router


_STORE_START_SECONDS = 60.0


def _deploy_store(cfg: ServiceConfig) -> Any:
    """Start the embedded session store actor beside the router (detached, on
    the head node; a no-op when it runs or another store is configured);
    its handle, or None when no embedded store is configured."""
    if not cfg.stores_sessions:
        return None
    from ray_realtime.store.actor import STORE_ACTOR_NAME, start_store_actor
    from ray_realtime.store.config import parse_store_config

    store = parse_store_config(cfg.store)
    if store.backend != "embedded":
        return None
    return start_store_actor(
        store.path, store.actor_name or STORE_ACTOR_NAME, synchronous=store.synchronous
    )


# The router's handle, per Ray runtime: looking it up by name is a round trip
# to the GCS that every session start would otherwise pay.
_router_cache: dict[str, Any] = {}


def _runtime_key() -> str:
    import ray

    return str(ray.get_runtime_context().get_job_id())


def _cached_router() -> Any | None:
    return _router_cache.get(_runtime_key())


def _remember_router(router: Any) -> None:
    _router_cache.clear()
    _router_cache[_runtime_key()] = router


def forget_router() -> None:
    """Drop the cached router handle (after the service was stopped)."""
    _router_cache.clear()


async def register_agent(agent: Any) -> int:
    """Register ``agent`` (a new version if the name exists) cluster-wide;
    sessions pick it up at their next handoff to that name."""
    router = await ensure_service()
    payload = raylib.dumps(agent, "agent")
    version: int = await router.register_agent.remote(agent.name, payload)
    return version


async def drain_node(node_id: str, drained: bool = True) -> None:
    """Stop (``drained=False``: resume) placing new sessions on a node."""
    await get_router().drain_node.remote(node_id, drained)


async def move_sessions(node_id: str) -> dict[str, int]:
    """Move every session off a node to other nodes (a drain past its
    timeout): ``{"moved": n, "lost": m}``."""
    result: dict[str, int] = await get_router().move_sessions.remote(node_id)
    return result


async def service_status() -> dict[str, Any]:
    """The router's status: nodes, sessions per node, pools, warm pool."""
    status: dict[str, Any] = await get_router().status.remote()
    return status


async def shutdown_service() -> None:
    """Stop every actor of the service and the router."""
    router = raylib.get_named_actor(raylib.ROUTER_NAME)
    if router is None:
        return
    try:
        await router.shutdown.remote()
    finally:
        raylib.kill(router)
        forget_router()
