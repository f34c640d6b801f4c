"""The embedded store as a Ray actor: the only store module that imports Ray.

:data:`SessionStoreActor` is :class:`~ray_realtime.store.host.StoreHost` made
remote (its statistics also name its node). :func:`connect_store_actor` finds
the named actor or starts it: detached (it outlives the driver that started
it), pinned to the head node, using no CPU, and restarted by Ray whenever its
process dies
(``max_restarts=-1``). A restarted actor reopens the same SQLite file and
loads it back, so a SIGKILL of the store loses nothing that was acknowledged.

:class:`ActorStore` is the client: a
:class:`~ray_realtime.store.interface.SessionStore` whose every call is one
actor call, bounded by ``call_timeout_seconds``. A dead, restarting or
unreachable actor surfaces as
:class:`~ray_realtime.exceptions.StoreUnavailableError` (the write-behind
writer retries it); errors the host raised on purpose come back as themselves.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any, Literal

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ray_realtime.exceptions import (
    RayRealtimeError,
    StoreError,
    StoreUnavailableError,
)
from ray_realtime.store.host import HostStore, StoreHost

__all__ = [
    "STORE_ACTOR_NAME",
    "STORE_NAMESPACE",
    "ActorStore",
    "SessionStoreActor",
    "connect_store_actor",
    "default_store_path",
    "start_store_actor",
]

STORE_ACTOR_NAME = "ray_realtime_store"
"""The store actor's default name."""

STORE_NAMESPACE = "ray_realtime"
"""The Ray namespace of the store actor (the project's namespace)."""


class _RayStoreHost(StoreHost):
    """The host, telling also which Ray node it runs on."""

    async def statistics(self) -> dict[str, Any]:
        """:meth:`StoreHost.statistics` plus ``node_id``."""
        stats = await super().statistics()
        stats["node_id"] = str(ray.get_runtime_context().get_node_id())
        return stats


SessionStoreActor: Any = ray.remote(_RayStoreHost)

_HEAD_RESOURCE = "node:__internal_head__"


def default_store_path() -> str:
    """Where the embedded store keeps its file unless told otherwise.

    ``$RAY_REALTIME_STORE_PATH`` when set; else a file in the temporary
    directory named after the Ray cluster's GCS port, so two clusters on one
    host keep apart and a cluster restarted on the same port finds its file.
    """
    explicit = os.environ.get("RAY_REALTIME_STORE_PATH")
    if explicit:
        return explicit
    port = "local"
    if ray.is_initialized():
        port = str(ray.get_runtime_context().gcs_address).rsplit(":", 1)[-1]
    return os.path.join(tempfile.gettempdir(), "ray_realtime", f"session_store-{port}.sqlite3")


def _head_node_id() -> str | None:
    for node in ray.nodes():  # type: ignore[no-untyped-call]
        if node.get("Alive") and _HEAD_RESOURCE in node.get("Resources", {}):
            return str(node["NodeID"])
    return None


class ActorStore(HostStore):
    """A :class:`~ray_realtime.store.interface.SessionStore` backed by the store actor."""

    def __init__(self, handle: Any, call_timeout_seconds: float = 10.0) -> None:
        self.handle = handle
        self._timeout = call_timeout_seconds

    async def _call(self, method: str, *args: Any) -> Any:
        ref = getattr(self.handle, method).remote(*args)
        try:
            return await asyncio.wait_for(ref, self._timeout)
        except TimeoutError as exc:
            raise StoreUnavailableError(
                f"the store actor did not answer {method} within {self._timeout:g} s"
            ) from exc
        except RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, RayRealtimeError):
                raise cause from exc
            raise StoreError(f"the store actor failed {method}: {cause!r}") from exc
        except (RayActorError, GetTimeoutError, RayError) as exc:
            raise StoreUnavailableError(
                f"the store actor is unavailable ({method}): {type(exc).__name__}"
            ) from exc

    async def aclose(self) -> None:
        """Nothing to release: the actor is shared and outlives its clients."""


def start_store_actor(
    path: str | None = None,
    name: str = STORE_ACTOR_NAME,
    namespace: str = STORE_NAMESPACE,
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
) -> Any:
    """The handle of the store actor named ``name``, started on the head node
    if missing (does not wait for it to answer).

    ``path`` (default :func:`default_store_path`) only matters when this call
    starts the actor. Raises :class:`StoreUnavailableError` when Ray is not
    initialised.
    """
    if not ray.is_initialized():
        raise StoreUnavailableError("the embedded session store needs Ray: call ray.init() first")
    options: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        # Restart forever: each restart reloads the file. Writes are
        # idempotent, so Ray may retry a call the dead process had taken.
        "max_restarts": -1,
        "max_task_retries": 2,
        "num_cpus": 0,
    }
    head = _head_node_id()
    if head is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(head, soft=False)
    return SessionStoreActor.options(**options).remote(path or default_store_path(), synchronous)


async def connect_store_actor(
    path: str | None = None,
    name: str = STORE_ACTOR_NAME,
    namespace: str = STORE_NAMESPACE,
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    call_timeout_seconds: float = 10.0,
    start_timeout_seconds: float = 60.0,
) -> ActorStore:
    """A client of the store actor (:func:`start_store_actor`), once it answered.

    The first call opens the file, so a bad path fails here, not on a later
    write; :class:`StoreUnavailableError` when it does not answer within
    ``start_timeout_seconds``.
    """
    handle = start_store_actor(path, name, namespace, synchronous)
    await ActorStore(handle, start_timeout_seconds).list_sessions()
    return ActorStore(handle, call_timeout_seconds)
