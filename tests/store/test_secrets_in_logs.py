"""Secrets are stored, and never logged: the captured logs of every backend's
life - writes, loads, failures, retries, a corrupt file - hold no secret."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from ray_realtime.exceptions import StoreError
from ray_realtime.store import (
    InProcessHostStore,
    MemoryStore,
    Secrets,
    SessionState,
    SessionStore,
    SqliteStore,
    StoreHost,
    WriteBehindStore,
)
from tests.conftest import UNIT
from tests.store.util import GatedStore, item

SECRETS = Secrets({"token": "tok-LEAK-CHECK-1", "api_key": "sk-LEAK-CHECK-2"})


async def exercise(store: SessionStore, shown: list[str]) -> None:
    """Write, read and print what a careless caller might print."""
    state = SessionState("s", seq=1, secrets=SECRETS, items=(item("a"),))
    await store.put_session(state)
    await store.update_session("s", secrets=SECRETS, seq=2)
    loaded = await store.load("s")
    assert loaded.secrets == SECRETS  # stored...
    logging.getLogger("a.careless.caller").info("loaded %r / %s", loaded, loaded.secrets)
    shown.append(repr(loaded))


async def test_no_backend_logs_a_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    shown: list[str] = []
    stores: list[SessionStore] = [
        MemoryStore(),
        await SqliteStore.open(tmp_path / "a.sqlite3"),
        InProcessHostStore(StoreHost(str(tmp_path / "b.sqlite3"))),
        WriteBehindStore(MemoryStore(), flush_interval_seconds=0.001),
    ]
    for store in stores:
        await exercise(store, shown)
        await store.aclose()

    # A failing backend: the writer logs and reports the failure.
    failing = GatedStore()
    failing.failing = True
    errors: list[Exception] = []
    writer = WriteBehindStore(
        failing, flush_interval_seconds=0.001, retry_max_seconds=0.01, on_error=errors.append
    )
    await writer.put_session(SessionState("s", secrets=SECRETS))
    with pytest.raises(StoreError) as caught:
        await asyncio.wait_for(writer.flush(), 5 * UNIT)
    shown.append(str(caught.value))
    failing.failing = False
    await asyncio.wait_for(writer.aclose(), 5 * UNIT)

    # A corrupt file: the error names the file, not its contents.
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"not a database " + SECRETS["token"].encode() * 100)
    with pytest.raises(StoreError) as bad:
        await SqliteStore.open(corrupt)
    shown.append(str(bad.value))

    assert "the session store failed a batch" in caplog.text  # the failure was logged
    everything = caplog.text + "".join(shown) + "".join(str(e) for e in errors)
    for secret in SECRETS.values():
        assert secret not in everything
