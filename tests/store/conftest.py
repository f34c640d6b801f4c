"""Fixtures of the store tests: a real ``redis-server`` and every backend.

``redis_server`` starts ``redis-server`` on a free loopback port, with a
password (so the tests see that it never reaches a log), and stops it by pid.
Where ``redis-server`` is not installed the Redis tests skip, saying so (CI
installs it: ``.ci/run``).

``any_store`` is parametrised over every backend of the conformance suite:
the in-process fake, SQLite direct, the embedded host in-process (no Ray),
the write-behind writer over the fake, the real store actor (one actor for
the whole module, see ``ray_runtime``) and Redis.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ray_realtime.store import (
    InProcessHostStore,
    MemoryStore,
    SessionStore,
    SqliteStore,
    StoreHost,
    WriteBehindStore,
)
from tests.conftest import UNIT

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on loopback, started and stopped by pid."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.password = "pw-" + secrets.token_hex(12)
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL to reach it, password included."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        """The server's pid."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Start the server and wait (bounded) until it answers."""
        assert REDIS_SERVER is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--requirepass", self.password,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10 * UNIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    auth = f"AUTH {self.password}\r\nPING\r\n".encode()
                    sock.sendall(auth)
                    if b"PONG" in sock.recv(100) or b"PONG" in sock.recv(100):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer within 10 s")

    def stop(self) -> None:
        """Stop the server (by its pid) and wait for it to exit."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10 * UNIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10 * UNIT)


def need_redis_server() -> None:
    """Skip, visibly, where ``redis-server`` is not installed."""
    if REDIS_SERVER is None:
        pytest.skip(
            "redis-server is not installed (apt-get install redis-server): "
            "the Redis store is not tested here"
        )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on loopback, shared by the session's tests."""
    need_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    """Ray for the store actor's tests: the session's runtime when one is up
    (the shared cluster of ``tests/conftest.py``), else a small one-node Ray
    without a dashboard for this module only (the shared 3-node cluster with
    the whole service deployed is far more than one store actor needs)."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(
        address="local",  # a new runtime, never another engineer's running one
        num_cpus=1,
        include_dashboard=False,
        namespace="ray_realtime",
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def store_actor(ray_runtime: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One store actor for a test module."""
    import ray

    from ray_realtime.store.actor import ActorStore, start_store_actor

    path = tmp_path_factory.mktemp("store-actor") / "store.sqlite3"
    handle = start_store_actor(str(path), name=f"store-test-{uuid.uuid4().hex[:8]}")
    try:
        ray.get(handle.list_sessions.remote(), timeout=60 * UNIT)
        yield ActorStore(handle)
    finally:
        ray.kill(handle, no_restart=True)


BACKENDS = [
    "memory",
    "sqlite",
    "host",
    "writer",
    pytest.param("actor", marks=pytest.mark.ray),
    "redis",
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> tuple[str, Any]:
    """A backend's name and what it needs, set up outside any event loop (the
    shared Ray cluster's fixture runs its own)."""
    kind: str = request.param
    if kind == "actor":
        return kind, request.getfixturevalue("store_actor")
    if kind == "redis":
        return kind, request.getfixturevalue("redis_server")
    return kind, None


@pytest.fixture
async def any_store(backend: tuple[str, Any], tmp_path: Path) -> AsyncIterator[SessionStore]:
    """A fresh, empty store of each backend."""
    kind, resource = backend
    store: SessionStore
    if kind == "memory":
        store = MemoryStore()
    elif kind == "sqlite":
        store = await SqliteStore.open(tmp_path / "store.sqlite3")
    elif kind == "host":
        store = InProcessHostStore(StoreHost(str(tmp_path / "host.sqlite3")))
    elif kind == "writer":
        store = WriteBehindStore(MemoryStore(), flush_interval_seconds=0.001)
    elif kind == "actor":
        store = resource
        for session_id in await store.list_sessions():  # empty it through its own API
            await store.delete_session(session_id)
    elif kind == "redis":
        from ray_realtime.store import RedisStore

        store = await RedisStore.open(resource.url, key_prefix=f"t{uuid.uuid4().hex[:8]}:")
    else:  # pragma: no cover
        raise AssertionError(kind)
    try:
        yield store
    finally:
        await store.aclose()
