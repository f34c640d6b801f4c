"""The session store: what must outlive a session's actor, and where it lives.

Records (:mod:`~ray_realtime.store.records`): a session's
:class:`SessionState` - completed history items as opaque
:class:`StoredItem` bytes, the current :class:`AgentRecord`, the model
settings, the event sequence number, its :class:`Secrets` (kept, never shown)
and its readers' positions. Audio is not stored. Changes are
:data:`StoreOp` values, applied in batches under the rules of
:mod:`~ray_realtime.store.state` (every write an idempotent upsert).

The seam is :class:`SessionStore`; its backends:

* :class:`MemoryStore` - in-process, the fake;
* :class:`SqliteStore` - a SQLite file in WAL mode;
* the embedded default - a detached store actor on the head node that keeps
  state in memory and appends to a SQLite file
  (:mod:`ray_realtime.store.actor`, the only module here that imports Ray);
* :class:`RedisStore` - Redis, via the optional ``redis`` package.

:class:`WriteBehindStore` wraps any of them for the session side: writes are
queued in O(1) and batched off the turn's path; ``flush()`` makes them
durable. :func:`open_store` picks a backend from the service config's value.
"""

from ray_realtime.store.config import StoreConfig, open_store, parse_store_config
from ray_realtime.store.host import HostStore, InProcessHostStore, StoreHost
from ray_realtime.store.interface import BaseSessionStore, SessionStore
from ray_realtime.store.memory import MemoryStore
from ray_realtime.store.records import (
    AgentRecord,
    DeleteItem,
    DeleteSession,
    PutItem,
    PutSession,
    RemoveReader,
    Secrets,
    SessionState,
    SetReader,
    StoredItem,
    StoreOp,
    UpdateSession,
)
from ray_realtime.store.redis_store import RedisStore, redact_url
from ray_realtime.store.sqlite import SqliteStore
from ray_realtime.store.writer import WriteBehindStore, WriterStatistics

__all__ = [
    "AgentRecord",
    "BaseSessionStore",
    "DeleteItem",
    "DeleteSession",
    "HostStore",
    "InProcessHostStore",
    "MemoryStore",
    "PutItem",
    "PutSession",
    "RedisStore",
    "RemoveReader",
    "Secrets",
    "SessionState",
    "SessionStore",
    "SetReader",
    "SqliteStore",
    "StoreConfig",
    "StoreHost",
    "StoreOp",
    "StoredItem",
    "UpdateSession",
    "WriteBehindStore",
    "WriterStatistics",
    "open_store",
    "parse_store_config",
    "redact_url",
]
