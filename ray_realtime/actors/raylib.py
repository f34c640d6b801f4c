"""The small set of Ray calls the actors make, in one place.

Everything else in :mod:`ray_realtime.actors` reads as ordinary async Python;
a Ray API change is fixed here.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import AsyncGenerator
from typing import Any

import ray
import ray.cloudpickle as cloudpickle
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ray_realtime.actors.logs import LOG_FORMAT_ENV
from ray_realtime.exceptions import SerializationError

__all__ = [
    "NAMESPACE",
    "ROUTER_NAME",
    "ActorGone",
    "actor_options",
    "current_node_id",
    "dumps",
    "gather_with_timeout",
    "get_named_actor",
    "is_actor_gone",
    "kill",
    "loads",
    "node_ip",
    "put",
    "ref_key",
    "result",
    "stream",
    "unwrap_task_error",
]

NAMESPACE = "ray_realtime"
"""The Ray namespace of every named ray-realtime actor."""

ROUTER_NAME = "ray_realtime_router"
"""The router actor's name in :data:`NAMESPACE`."""

ActorGone = (RayActorError, ActorDiedError, ActorUnavailableError)
"""Exceptions meaning the called actor is dead or unreachable."""


def is_actor_gone(exc: BaseException) -> bool:
    """Whether ``exc`` says the called actor is dead or unreachable."""
    return isinstance(exc, ActorGone)


def current_node_id() -> str:
    """The id of the node this process runs on ("" outside Ray)."""
    if not ray.is_initialized():
        return ""
    return str(ray.get_runtime_context().get_node_id())


def node_ip() -> str:
    """This node's address as Ray knows it (127.0.0.1 in the embedded mode):
    servers of ours that other nodes must reach bind it, nothing wider."""
    if not ray.is_initialized():
        return "127.0.0.1"
    return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]


def ref_key(ref: Any) -> str:
    """A stable string key for an object reference."""
    hex_fn = getattr(ref, "hex", None)
    return str(hex_fn()) if callable(hex_fn) else repr(ref)


def dumps(value: Any, what: str = "value") -> bytes:
    """Pickle ``value`` with Ray's cloudpickle; :class:`SerializationError` if it can't be."""
    try:
        return bytes(cloudpickle.dumps(value))  # type: ignore[no-untyped-call]
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise SerializationError(
            f"the {what} cannot be serialised to reach the session actor: {reason}"
        ) from None


def loads(data: bytes) -> Any:
    """Inverse of :func:`dumps`."""
    return pickle.loads(data)


def put(value: Any) -> Any:
    """Store ``value`` in the object store; the caller owns the reference."""
    return ray.put(value)


def get_named_actor(name: str) -> Any | None:
    """The named actor in the project's namespace, or None."""
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def kill(handle: Any) -> None:
    """Kill an actor, without restart; ignores one that is already gone."""
    try:
        ray.kill(handle, no_restart=True)
    except Exception:
        pass


def actor_options(
    *, name: str | None = None, node_id: str | None = None, max_concurrency: int = 1000
) -> dict[str, Any]:
    """Options for our actors: zero CPUs reserved (they are I/O bound and many
    share a core), detached and named so they survive the router and can be
    found again, pinned to ``node_id`` when given."""
    options: dict[str, Any] = {
        "num_cpus": 0,
        "max_concurrency": max_concurrency,
        "namespace": NAMESPACE,
    }
    if name is not None:
        options["name"] = name
        options["lifetime"] = "detached"
    if node_id:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
    # The service's log format reaches every actor it starts (and theirs).
    log_format = os.environ.get(LOG_FORMAT_ENV)
    if log_format:
        options["runtime_env"] = {"env_vars": {LOG_FORMAT_ENV: log_format}}
    return options


async def result(ref: Any, timeout: float | None = None) -> Any:
    """What an object reference resolves to, waiting at most ``timeout``
    seconds (:class:`asyncio.TimeoutError` past it; None: no bound)."""
    if timeout is None:
        return await ref
    import asyncio

    return await asyncio.wait_for(result(ref), timeout)


async def stream(method: Any, *args: Any) -> AsyncGenerator[Any, None]:
    """What the streaming actor method ``method`` (an async generator on the
    actor) yields for ``args``, item by item, as the actor yields them."""
    refs = method.options(num_returns="streaming").remote(*args)
    async for ref in refs:
        yield await ref


async def gather_with_timeout(refs: list[Any], timeout: float) -> list[Any]:
    """Await every reference at once, bounded by ``timeout``: each result, or
    the exception it raised (:class:`TimeoutError` for those still pending)."""
    import asyncio

    tasks = [asyncio.ensure_future(result(r)) for r in refs]
    if not tasks:
        return []
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    results: list[Any] = []
    for task in tasks:
        if task in pending:
            results.append(TimeoutError("no answer in time"))
        elif task.exception() is not None:
            results.append(task.exception())
        else:
            results.append(task.result())
    return results


def unwrap_task_error(exc: BaseException) -> BaseException:
    """The error an actor method raised, out of Ray's ``RayTaskError`` wrapper
    (our exceptions are picklable, so the original crosses intact)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and type(exc).__name__.startswith("RayTaskError"):
        return cause
    return exc
