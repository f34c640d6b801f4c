"""The embedded store actor survives its own death: SIGKILL its process, Ray
restarts it on the same SQLite file, and everything acknowledged is there -
also for writes a session's writer queued while it was down."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ray_realtime.store import (
    AgentRecord,
    PutItem,
    Secrets,
    SessionState,
    WriteBehindStore,
    open_store,
)
from ray_realtime.store.actor import ActorStore, connect_store_actor
from tests.conftest import UNIT
from tests.store.util import item

pytestmark = pytest.mark.ray


async def wait_for_pid_change(store: ActorStore, old_pid: int) -> dict[str, Any]:
    """The restarted actor's statistics, once a new process answers (bounded)."""
    deadline = time.monotonic() + 60 * UNIT
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            stats = await store.statistics()
            if stats["pid"] != old_pid:
                return stats
        except Exception as exc:  # restarting: unavailable for a while
            last = exc
        await asyncio.sleep(0.1)
    raise AssertionError(f"the store actor did not come back within 60 s: {last!r}")


async def test_sigkill_then_restart_on_the_same_file_loses_nothing(
    ray_runtime: None, tmp_path: Path
) -> None:
    import ray

    path = str(tmp_path / "store.sqlite3")
    name = f"store-kill-{uuid.uuid4().hex[:8]}"
    store = await open_store({"backend": "embedded", "path": path, "actor_name": name})
    assert isinstance(store, ActorStore)
    try:
        state = SessionState(
            "sess-1",
            agent=AgentRecord("triage", 2),
            settings={"voice": "alloy"},
            seq=10,
            secrets=Secrets({"token": "tok-secret"}),
            readers={"r1": 10},
        )
        writer = WriteBehindStore(store, flush_interval_seconds=0.005, retry_max_seconds=0.2)
        await writer.put_session(state)
        await writer.append_items("sess-1", [item(f"i{n}") for n in range(100)])
        await writer.append_items("sess-2", [item("other")])
        await asyncio.wait_for(writer.flush(), 30 * UNIT)

        before = await store.statistics()
        assert before["path"] == path
        os.kill(before["pid"], signal.SIGKILL)
        # The session goes on while its store is down: its writes queue.
        for n in range(100, 120):
            writer.enqueue(PutItem("sess-1", item(f"i{n}")))
        writer.enqueue(state_update := PutItem("sess-1", item("i5", "transcribed later")))
        assert state_update.item.item_id == "i5"

        after = await wait_for_pid_change(store, before["pid"])
        assert after["loaded_sessions"] == 2  # reloaded from the file
        await asyncio.wait_for(writer.flush(), 60 * UNIT)
        loaded = await store.load("sess-1")
        assert [i.item_id for i in loaded.items] == [f"i{n}" for n in range(120)]
        assert loaded.items[5].to_dict()["text"] == "transcribed later"
        assert (loaded.agent, loaded.seq, loaded.readers) == (
            AgentRecord("triage", 2),
            10,
            {"r1": 10},
        )
        assert loaded.secrets["token"] == "tok-secret"
        assert await store.list_sessions() == ["sess-1", "sess-2"]
        await writer.aclose()
    finally:
        ray.kill(store.handle, no_restart=True)

    # A new actor (another name, say after the cluster restarted) on the same file.
    again = await connect_store_actor(path, name=name + "-again")
    try:
        assert [i.item_id for i in (await again.load("sess-1")).items] == [
            f"i{n}" for n in range(120)
        ]
    finally:
        ray.kill(again.handle, no_restart=True)


async def test_the_actor_is_named_and_on_the_head_node(ray_runtime: None, tmp_path: Path) -> None:
    import ray

    name = f"store-where-{uuid.uuid4().hex[:8]}"
    store = await connect_store_actor(str(tmp_path / "s.sqlite3"), name=name)
    try:
        same = await connect_store_actor(str(tmp_path / "other.sqlite3"), name=name)
        assert (await same.statistics())["path"] == str(tmp_path / "s.sqlite3")  # found, not made
        head = next(
            n["NodeID"] for n in ray.nodes() if "node:__internal_head__" in n.get("Resources", {})
        )
        assert (await store.statistics())["node_id"] == head
    finally:
        ray.kill(store.handle, no_restart=True)
