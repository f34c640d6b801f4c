"""A starting router recovers the stored sessions no live actor hosts (their
actor died while no router watched it: the router was killed during a
recovery), on the fake Ray seam. The same path against real Ray:
``tests/faults/test_router_kill.py``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ray_realtime.actors import router as router_module
from ray_realtime.actors.router import Router
from ray_realtime.cluster.fleet import ActorKind
from ray_realtime.exceptions import SessionNotFoundError
from tests.actors.router_fakes import FakeActor, FakeOps, raw_node
from tests.actors.test_router_shell import CONFIG, shutdown
from tests.conftest import UNIT


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router_module, "REBUILD_BACKOFF", (0.0, 0.0, 0.0, 0.0))


class _Host(FakeActor):
    """A session actor that can restore a session and be watched."""

    restored: list[str] = []
    hang_ping = False

    async def ping(self) -> Any:
        if self.hang_ping:
            await asyncio.sleep(3600)
        return await super().ping()

    async def restore_session(self, session_id: str, options: dict[str, Any]) -> dict[str, Any]:
        if session_id not in self.sessions:
            self.sessions[session_id] = "Agent"
            _Host.restored.append(session_id)
        return {"node_id": self.node_id, "restored": True}

    async def watch(self, seconds: float) -> None:
        await asyncio.wait_for(self.died.wait(), seconds)


class _StoreOps(FakeOps):
    """The fake seam with a session store holding ``stored``."""

    def __init__(self, stored: list[str]) -> None:
        super().__init__([[raw_node("node-a")]])
        self.stored = list(stored)
        self.forgotten: list[str] = []

    async def create(self, kind: ActorKind, name: str, node_id: str, capacity: int) -> Any:
        actor = _Host(kind, name, node_id, capacity)
        self.actors[name] = actor
        self.created.append(actor)
        return actor

    async def stored_sessions(self, store: Any) -> list[str]:
        return list(self.stored)

    async def forget_stored(self, store: Any, session_id: str) -> None:
        self.forgotten.append(session_id)


@pytest.fixture(autouse=True)
def fresh_restores() -> None:
    _Host.restored = []


async def test_a_starting_router_recovers_stored_sessions_no_actor_hosts() -> None:
    ops = _StoreOps(["orphan", "live"])
    live = ops.add_actor(_Host(ActorKind.SESSION, "rr_session_live", "node-a"))
    live.sessions["live"] = "Agent"
    router = Router(CONFIG, ops)
    await asyncio.wait_for(router.start(), 10 * UNIT)
    # lookup waits for a recovery in progress.
    placement = await asyncio.wait_for(router.lookup("orphan"), 10 * UNIT)
    assert placement["actor_name"] != live.name
    assert _Host.restored == ["orphan"]  # the live one is adopted, not restored twice
    assert (await router.lookup("live"))["actor_name"] == live.name
    await shutdown(router)


async def test_no_scan_while_a_session_actor_does_not_answer() -> None:
    # It may host the stored session: restoring it elsewhere would run it twice.
    ops = _StoreOps(["maybe-hosted"])
    silent = ops.add_actor(_Host(ActorKind.SESSION, "rr_session_silent", "node-a"))
    silent.hang_ping = True
    router = Router(CONFIG, ops)
    await asyncio.wait_for(router.start(), 10 * UNIT)
    await asyncio.sleep(0.1)
    assert _Host.restored == []
    with pytest.raises(SessionNotFoundError):
        await router.lookup("maybe-hosted")
    await shutdown(router)
