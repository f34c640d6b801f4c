"""A real Redis going away under a session's writer: the failure reaches the
caller (flush raises, on_error is called), writes keep queueing, and once the
server is back on its port the queued writes land. Nothing in the logs or the
errors shows the session's secrets or the server's password."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import pytest

from ray_realtime.exceptions import StoreUnavailableError
from ray_realtime.store import (
    PutItem,
    RedisStore,
    Secrets,
    SessionState,
    StoredItem,
    WriteBehindStore,
)
from tests.conftest import UNIT
from tests.store.conftest import RedisServer, need_redis_server
from tests.store.util import item

SESSION_SECRET = "tok-redis-secret-9c1d"


async def test_redis_down_then_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    need_redis_server()
    caplog.set_level(logging.DEBUG)
    server = RedisServer(tmp_path / "redis")
    server.start()
    store: RedisStore | None = None
    try:
        store = await RedisStore.open(server.url, socket_timeout_seconds=1.0)
        errors: list[StoreUnavailableError] = []
        writer = WriteBehindStore(
            store,
            flush_interval_seconds=0.005,
            write_timeout_seconds=2.0,
            retry_max_seconds=0.2,
            on_error=errors.append,
        )
        state = SessionState("s", seq=1, secrets=Secrets({"token": SESSION_SECRET}))
        await writer.put_session(state)
        await writer.append_items("s", [item("a")])
        await asyncio.wait_for(writer.flush(), 10 * UNIT)

        server.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        server.proc.wait(timeout=10 * UNIT)  # type: ignore[union-attr]
        writer.enqueue(PutItem("s", StoredItem.from_dict("b", {"text": "while down"})))
        with pytest.raises(StoreUnavailableError) as caught:
            await asyncio.wait_for(writer.flush(), 20 * UNIT)
        assert errors, "on_error was not called"
        assert writer.statistics().inflight_ops >= 1

        # Back on the same port (empty: this test server keeps nothing on disk);
        # the write queued while it was down lands with the next retry.
        server.start()
        await asyncio.wait_for(writer.flush(), 20 * UNIT)
        loaded = await store.load("s")
        assert [i.item_id for i in loaded.items] == ["b"]
        await writer.update_session("s", secrets=state.secrets)
        assert (await writer.load("s")).secrets["token"] == SESSION_SECRET
        await writer.aclose()
    finally:
        if store is not None:
            await store.aclose()
        server.stop()

    shown = caplog.text + str(caught.value) + "".join(str(e) for e in errors)
    assert "the Redis store at" in shown  # the failure was reported...
    assert SESSION_SECRET not in shown  # ...without the session's secrets
    assert server.password not in shown  # ...or the server's password
