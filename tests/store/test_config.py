"""Choosing a store from the service config value: good values, clear
``ConfigError`` for bad ones, and no password in any message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ray_realtime.exceptions import ConfigError, StoreUnavailableError
from ray_realtime.store import (
    MemoryStore,
    SqliteStore,
    StoreConfig,
    open_store,
    parse_store_config,
    redact_url,
)
from tests.store.conftest import RedisServer, free_port, need_redis_server


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, StoreConfig()),
        ("embedded", StoreConfig()),
        ("memory", StoreConfig(backend="memory")),
        ("redis://10.0.0.5:6379/2", StoreConfig(backend="redis", url="redis://10.0.0.5:6379/2")),
        ("rediss://h/0", StoreConfig(backend="redis", url="rediss://h/0")),
        ("unix:///run/redis.sock", StoreConfig(backend="redis", url="unix:///run/redis.sock")),
        ("sqlite:///var/lib/rr/s.db", StoreConfig(backend="sqlite", path="/var/lib/rr/s.db")),
        (
            {"backend": "embedded", "path": "/data/s.db", "synchronous": "FULL"},
            StoreConfig(path="/data/s.db", synchronous="FULL"),
        ),
        (
            {"backend": "redis", "url": "redis://h:1/0", "key_prefix": "x:", "timeout_seconds": 2},
            StoreConfig(backend="redis", url="redis://h:1/0", key_prefix="x:", timeout_seconds=2),
        ),
    ],
)
def test_good_values(value: Any, expected: StoreConfig) -> None:
    assert parse_store_config(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mongodb://h/1", "unknown session store"),
        ("", "unknown session store"),
        ("redis://h:1/abc", "must be a number"),
        ("redis://:6379/0", "has no host"),
        ("redis://h:99999/0", "malformed"),
        ("sqlite://relative.db", "three slashes"),
        ({"backend": "cassandra"}, "unknown session store backend"),
        ({"backend": "redis"}, "needs a url"),
        ({"backend": "redis", "url": "http://h/0"}, "must start with redis://"),
        ({"backend": "memory", "path": "/x"}, "unknown option"),
        ({"backend": "sqlite"}, "needs a path"),
        ({"backend": "embedded", "synchronous": "OFF"}, "NORMAL or FULL"),
        ({"backend": "embedded", "timeout_seconds": 0}, "timeout_seconds"),
        ({"backend": "embedded", "path": ""}, "non-empty string"),
        (42, "a string or a mapping"),
    ],
)
def test_bad_values_are_config_errors(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_store_config(value)


def test_a_password_in_the_url_never_shows() -> None:
    url = "redis://user:hunter2-pw@h:6379/0"
    assert redact_url(url) == "redis://user:***@h:6379/0"
    assert "hunter2-pw" not in repr(parse_store_config(url))
    with pytest.raises(ConfigError) as caught:
        parse_store_config("redis://:hunter2-pw@h:6379/db-name")
    assert "hunter2-pw" not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_store_config("bogus://:hunter2-pw@h/0")
    assert "hunter2-pw" not in str(caught.value)


async def test_open_memory_and_sqlite(tmp_path: Path) -> None:
    memory = await open_store("memory")
    assert isinstance(memory, MemoryStore)
    sqlite = await open_store(f"sqlite://{tmp_path}/s.db")
    assert isinstance(sqlite, SqliteStore)
    await sqlite.update_session("s", seq=1)
    assert (await sqlite.load("s")).seq == 1
    await sqlite.aclose()


async def test_open_redis_needs_a_server_that_answers(redis_server: RedisServer) -> None:
    store = await open_store(redis_server.url)
    await store.update_session("s", seq=1)
    assert (await store.load("s")).seq == 1
    await store.aclose()
    wrong = redis_server.url.replace(redis_server.password, "wrong-password")
    with pytest.raises(StoreUnavailableError) as caught:
        await open_store(wrong)
    assert "wrong-password" not in str(caught.value)


async def test_open_redis_with_nothing_listening_is_unavailable() -> None:
    need_redis_server()
    url = f"redis://:hunter2-pw@127.0.0.1:{free_port()}/0"
    with pytest.raises(StoreUnavailableError) as caught:
        await open_store({"backend": "redis", "url": url, "timeout_seconds": 2})
    assert "hunter2-pw" not in str(caught.value)
    assert "***" in str(caught.value)


async def test_the_embedded_store_without_ray_says_so() -> None:
    import ray

    if ray.is_initialized():
        pytest.skip("Ray is up in this test session: nothing to check here")
    with pytest.raises(StoreUnavailableError, match="needs Ray"):
        await open_store("embedded")
