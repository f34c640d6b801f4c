"""Choosing a session store from the service config.

The service config's ``store`` value is one of:

* ``"embedded"`` (the default; also ``None``): the detached store actor on the
  head node, backed by a SQLite file (:mod:`ray_realtime.store.actor`);
* ``"memory"``: :class:`~ray_realtime.store.memory.MemoryStore`, in the
  calling process, lost with it (tests, demos);
* ``"redis://host:port/db"`` (also ``rediss://``, ``unix://``):
  :class:`~ray_realtime.store.redis_store.RedisStore`;
* ``"sqlite:///absolute/path.sqlite3"``: a
  :class:`~ray_realtime.store.sqlite.SqliteStore` opened in the calling
  process (one process per file);
* a mapping with ``backend`` (one of the above names: ``embedded``,
  ``memory``, ``redis``, ``sqlite``) and that backend's options - ``path``,
  ``actor_name``, ``synchronous`` for the embedded and SQLite stores; ``url``
  and ``key_prefix`` for Redis; ``timeout_seconds`` for all but memory.

:func:`parse_store_config` checks a value without opening anything (a bad one
is a :class:`~ray_realtime.exceptions.ConfigError` naming what is wrong);
:func:`open_store` opens the store it describes.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ray_realtime.exceptions import ConfigError
from ray_realtime.store.interface import SessionStore
from ray_realtime.store.redis_store import REDIS_SCHEMES, check_redis_url, redact_url

__all__ = ["StoreConfig", "open_store", "parse_store_config"]

Backend = Literal["embedded", "memory", "redis", "sqlite"]

_BACKENDS: tuple[Backend, ...] = ("embedded", "memory", "redis", "sqlite")
_OPTIONS: dict[str, frozenset[str]] = {
    "embedded": frozenset({"path", "actor_name", "synchronous", "timeout_seconds"}),
    "memory": frozenset(),
    "redis": frozenset({"url", "key_prefix", "timeout_seconds"}),
    "sqlite": frozenset({"path", "synchronous", "timeout_seconds"}),
}


@dataclass(frozen=True)
class StoreConfig:
    """A checked store choice. ``repr`` hides a password in ``url``."""

    backend: Backend = "embedded"
    path: str | None = None
    url: str | None = None
    actor_name: str | None = None
    key_prefix: str = "ray_realtime:"
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    timeout_seconds: float = 10.0

    def __repr__(self) -> str:
        url = None if self.url is None else redact_url(self.url)
        return (
            f"StoreConfig(backend={self.backend!r}, path={self.path!r}, url={url!r}, "
            f"actor_name={self.actor_name!r}, key_prefix={self.key_prefix!r}, "
            f"synchronous={self.synchronous!r}, timeout_seconds={self.timeout_seconds!r})"
        )


def _from_string(value: str) -> StoreConfig:
    if value == "embedded":
        return StoreConfig(backend="embedded")
    if value == "memory":
        return StoreConfig(backend="memory")
    scheme = value.split(":", 1)[0] if ":" in value else ""
    if scheme in REDIS_SCHEMES:
        return StoreConfig(backend="redis", url=check_redis_url(value))
    if scheme == "sqlite":
        path = urllib.parse.urlsplit(value).path
        if not value.startswith("sqlite:///") or not path:
            raise ConfigError(
                f"a SQLite store URL is sqlite:///absolute/path (three slashes), got {value!r}"
            )
        return StoreConfig(backend="sqlite", path=path)
    raise ConfigError(
        f"unknown session store {redact_url(value)!r}: use 'embedded', 'memory', "
        "'redis://host:port/db' or 'sqlite:///path'"
    )


def _from_mapping(value: Mapping[str, Any]) -> StoreConfig:
    backend = value.get("backend", "embedded")
    if backend not in _BACKENDS:
        raise ConfigError(
            f"unknown session store backend {backend!r}: use one of {', '.join(_BACKENDS)}"
        )
    unknown = sorted(set(value) - {"backend"} - _OPTIONS[backend])
    if unknown:
        raise ConfigError(f"unknown option(s) for the {backend} store: {', '.join(unknown)}")
    for key in ("path", "url", "actor_name", "key_prefix"):
        if key in value and (not isinstance(value[key], str) or not value[key]):
            raise ConfigError(f"the store's {key} must be a non-empty string")
    synchronous = value.get("synchronous", "NORMAL")
    if synchronous not in ("NORMAL", "FULL"):
        raise ConfigError(f"the store's synchronous must be NORMAL or FULL, got {synchronous!r}")
    timeout = value.get("timeout_seconds", 10.0)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise ConfigError(f"the store's timeout_seconds must be a number > 0, got {timeout!r}")
    url = value.get("url")
    if backend == "redis":
        if url is None:
            raise ConfigError("the redis store needs a url (redis://host:port/db)")
        check_redis_url(url)
    if backend == "sqlite" and "path" not in value:
        raise ConfigError("the sqlite store needs a path")
    return StoreConfig(
        backend=backend,
        path=value.get("path"),
        url=url,
        actor_name=value.get("actor_name"),
        key_prefix=value.get("key_prefix", "ray_realtime:"),
        synchronous=synchronous,
        timeout_seconds=float(timeout),
    )


def parse_store_config(value: str | Mapping[str, Any] | StoreConfig | None) -> StoreConfig:
    """The :class:`StoreConfig` a service config value names (see the module docstring)."""
    if value is None:
        return StoreConfig()
    if isinstance(value, StoreConfig):
        return value
    if isinstance(value, str):
        return _from_string(value)
    if isinstance(value, Mapping):
        return _from_mapping(value)
    raise ConfigError(
        f"the session store must be a string or a mapping, got {type(value).__name__}"
    )


async def open_store(value: str | Mapping[str, Any] | StoreConfig | None = None) -> SessionStore:
    """Open the session store ``value`` names (default: the embedded store).

    The embedded store needs Ray initialised (it finds or starts the store
    actor); the Redis store needs the ``redis`` package and a server that
    answers. Failing to reach a backend raises
    :class:`~ray_realtime.exceptions.StoreUnavailableError`.
    """
    config = parse_store_config(value)
    if config.backend == "memory":
        from ray_realtime.store.memory import MemoryStore

        return MemoryStore()
    if config.backend == "sqlite":
        from ray_realtime.store.sqlite import SqliteStore

        assert config.path is not None
        return await SqliteStore.open(config.path, config.synchronous, config.timeout_seconds)
    if config.backend == "redis":
        from ray_realtime.store.redis_store import RedisStore

        assert config.url is not None
        return await RedisStore.open(config.url, config.key_prefix, config.timeout_seconds)
    from ray_realtime.store.actor import STORE_ACTOR_NAME, connect_store_actor

    return await connect_store_actor(
        path=config.path,
        name=config.actor_name or STORE_ACTOR_NAME,
        synchronous=config.synchronous,
        call_timeout_seconds=config.timeout_seconds,
    )
