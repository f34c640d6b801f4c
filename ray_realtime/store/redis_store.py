"""The Redis session store, for clusters whose head node must be survivable.

Needs the ``redis`` package (``pip install 'ray-realtime[redis]'``), imported
only when a :class:`RedisStore` is made, so the rest of the store works
without it. Talks to a standalone Redis (or the primary of a replicated one)
given by a URL, ``redis://[:password@]host:port/db`` (``rediss://`` for TLS,
``unix://`` for a socket).

Layout, under ``key_prefix`` (default ``ray_realtime:``)::

    {prefix}sessions             SET   every stored session id
    {prefix}s:{id}:meta          HASH  agent_name, agent_version, settings,
                                       seq, secrets, next_pos
    {prefix}s:{id}:items         HASH  item id -> encoded item
    {prefix}s:{id}:order         ZSET  item id, scored by its position
    {prefix}s:{id}:readers       HASH  reader id -> last sequence number

Each batch of ops is one ``MULTI``/``EXEC`` transaction (atomic, one round
trip). Appending an item is a small Lua script inside it, so that an item seen
for the first time takes the next position and a known one keeps its own.
Loading a session reads its keys in one transaction too (a consistent
snapshot). Durability is Redis's: run it with AOF (``appendonly yes``) to keep
acknowledged writes across a Redis restart; ``docs/reliability.md`` says how.

The URL may hold a password: :func:`redact_url` is what any message shows.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import Any

from ray_realtime.exceptions import (
    ConfigError,
    SessionNotFoundError,
    StoreError,
    StoreUnavailableError,
    UserError,
)
from ray_realtime.store.interface import BaseSessionStore
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
    assert_never,
    pack_value,
    unpack_value,
)

__all__ = ["REDIS_SCHEMES", "RedisStore", "redact_url"]

REDIS_SCHEMES = ("redis", "rediss", "unix")
"""URL schemes :class:`RedisStore` accepts."""

# KEYS: order, items, meta. ARGV: item id, data.
_PUT_ITEM_LUA = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  local pos = redis.call('HINCRBY', KEYS[3], 'next_pos', 1)
  redis.call('ZADD', KEYS[1], pos, ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def check_redis_url(url: str) -> str:
    """``url`` if it is a usable Redis URL, else :class:`ConfigError`."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"the Redis store URL {redact_url(url)} is malformed: {exc}") from exc
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigError("the Redis store URL must start with redis://, rediss:// or unix://")
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError("a unix:// Redis store URL needs a socket path")
        return url
    if not parts.hostname:
        raise ConfigError(f"the Redis store URL {redact_url(url)} has no host")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"the Redis store URL {redact_url(url)} has a bad port")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ConfigError(
            f"the Redis store URL {redact_url(url)} names database {db!r}: it must be a number"
        )
    return url


class RedisStore(BaseSessionStore):
    """A :class:`~ray_realtime.store.interface.SessionStore` in Redis.

    Open it with ``await RedisStore.open(url)``, which checks the server answers.
    """

    def __init__(
        self,
        url: str,
        key_prefix: str = "ray_realtime:",
        socket_timeout_seconds: float = 5.0,
    ) -> None:
        check_redis_url(url)
        try:
            import redis.asyncio as redis_asyncio
            import redis.exceptions as redis_exceptions
        except ImportError as exc:
            raise ConfigError(
                "the Redis session store needs the redis package: pip install 'ray-realtime[redis]'"
            ) from exc
        self.url = redact_url(url)
        self._prefix = key_prefix
        self._errors: tuple[type[BaseException], ...] = (redis_exceptions.RedisError, OSError)
        self._client: Any = redis_asyncio.from_url(
            url,
            socket_timeout=socket_timeout_seconds,
            socket_connect_timeout=socket_timeout_seconds,
            decode_responses=False,
        )
        self._put_item = self._client.register_script(_PUT_ITEM_LUA)
        self._closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        key_prefix: str = "ray_realtime:",
        socket_timeout_seconds: float = 5.0,
    ) -> RedisStore:
        """A store on ``url``, once the server answered a PING."""
        store = cls(url, key_prefix, socket_timeout_seconds)
        try:
            await store._guard("ping", store._client.ping())
        except BaseException:
            await store.aclose()
            raise
        return store

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, key_prefix={self._prefix!r})"

    # ------------------------------------------------------------ plumbing

    async def _guard(self, what: str, awaitable: Any) -> Any:
        if self._closed:
            raise StoreError("the Redis store is closed")
        try:
            return await awaitable
        except self._errors as exc:
            raise StoreUnavailableError(
                f"the Redis store at {self.url} failed {what}: {type(exc).__name__}: {exc}"
            ) from exc

    def _keys(self, session_id: str) -> tuple[str, str, str, str]:
        base = f"{self._prefix}s:{session_id}"
        return f"{base}:meta", f"{base}:items", f"{base}:order", f"{base}:readers"

    # ----------------------------------------------------------- the writes

    async def apply(self, ops: Sequence[StoreOp]) -> None:
        """Apply ``ops`` in one MULTI/EXEC transaction."""
        if not ops:
            return
        # The context resets the pipeline (returning its connection) on every path.
        async with self._client.pipeline(transaction=True) as pipe:
            for op in ops:
                await self._queue(pipe, op)
            await self._guard("a write", pipe.execute())

    async def _queue(self, pipe: Any, op: StoreOp) -> None:
        sessions = f"{self._prefix}sessions"
        if isinstance(op, PutSession):
            state = op.state
            meta, items, order, readers = self._keys(state.session_id)
            pipe.delete(meta, items, order, readers)
            fields: dict[str, Any] = {
                "settings": pack_value(dict(state.settings), "model settings"),
                "seq": state.seq,
                "secrets": pack_value(state.secrets.reveal(), "secrets"),
                "next_pos": len(state.items),
            }
            if state.agent is not None:
                fields["agent_name"] = state.agent.name
                fields["agent_version"] = state.agent.version
            pipe.hset(meta, mapping=fields)
            if state.items:
                pipe.hset(items, mapping={item.item_id: item.data for item in state.items})
                pipe.zadd(order, {item.item_id: pos for pos, item in enumerate(state.items, 1)})
            if state.readers:
                pipe.hset(readers, mapping=dict(state.readers))
            pipe.sadd(sessions, state.session_id)
            return
        if isinstance(op, DeleteSession):
            pipe.delete(*self._keys(op.session_id))
            pipe.srem(sessions, op.session_id)
            return
        meta, items, order, readers = self._keys(op.session_id)
        pipe.sadd(sessions, op.session_id)
        if isinstance(op, UpdateSession):
            fields = {}
            if op.agent is not None:
                fields["agent_name"] = op.agent.name
                fields["agent_version"] = op.agent.version
            if op.settings is not None:
                fields["settings"] = pack_value(dict(op.settings), "model settings")
            if op.seq is not None:
                fields["seq"] = op.seq
            if op.secrets is not None:
                fields["secrets"] = pack_value(op.secrets.reveal(), "secrets")
            if fields:
                pipe.hset(meta, mapping=fields)
        elif isinstance(op, PutItem):
            await self._put_item(
                keys=[order, items, meta], args=[op.item.item_id, op.item.data], client=pipe
            )
        elif isinstance(op, DeleteItem):
            pipe.zrem(order, op.item_id)
            pipe.hdel(items, op.item_id)
        elif isinstance(op, SetReader):
            pipe.hset(readers, op.reader_id, op.seq)
        elif isinstance(op, RemoveReader):
            pipe.hdel(readers, op.reader_id)
        else:
            assert_never(op)

    # ------------------------------------------------------------ the reads

    async def load(self, session_id: str) -> SessionState:
        """One session's state, read in one transaction."""
        meta, items, order, readers = self._keys(session_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.sismember(f"{self._prefix}sessions", session_id)
            pipe.hgetall(meta)
            pipe.zrange(order, 0, -1)
            pipe.hgetall(items)
            pipe.hgetall(readers)
            answer = await self._guard("a read", pipe.execute())
        known, meta_map, ids, item_map, reader_map = answer
        if not known:
            raise SessionNotFoundError(f"the store holds no session {session_id!r}", session_id)
        try:
            return _state_of(session_id, meta_map, ids, item_map, reader_map)
        except (UserError, KeyError, TypeError, ValueError) as exc:
            raise StoreError(
                f"the stored state of session {session_id!r} is malformed: {type(exc).__name__}"
            ) from exc

    async def list_sessions(self) -> list[str]:
        """The stored session ids, sorted."""
        members = await self._guard("a listing", self._client.smembers(f"{self._prefix}sessions"))
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._client.aclose()
        except self._errors:
            pass  # closing a pool whose server is gone: nothing left to release


def _state_of(
    session_id: str,
    meta: dict[bytes, bytes],
    ids: list[bytes],
    items: dict[bytes, bytes],
    readers: dict[bytes, bytes],
) -> SessionState:
    agent = None
    if b"agent_name" in meta:
        agent = AgentRecord(meta[b"agent_name"].decode(), int(meta.get(b"agent_version", b"0")))
    settings = unpack_value(meta[b"settings"], "model settings") if b"settings" in meta else {}
    secrets = unpack_value(meta[b"secrets"], "secrets") if b"secrets" in meta else {}
    return SessionState(
        session_id,
        agent,
        settings,
        int(meta.get(b"seq", b"0")),
        Secrets(secrets),
        {reader.decode(): int(seq) for reader, seq in readers.items()},
        tuple(StoredItem(item_id.decode(), items[item_id]) for item_id in ids),
    )
