"""Leases with real Ray: a session none of whose handles is connected is
closed after the run config's ``orphan_timeout_seconds``; ``detach(
keep_alive_seconds=...)`` keeps it that long; attaching restarts the clock; a
handle that is open (even idle) keeps it.

Liveness is read from the router (``lookup``), which holds nothing: only
handles hold a session.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ray_realtime import (
    RealtimeAgent,
    RealtimeRunner,
    RealtimeSession,
    SessionClosedError,
    SessionNotFoundError,
    UserError,
)
from tests.actors.util import ACTOR, collect_turns, last_reply, wait_until
from tests.conftest import UNIT, RayTestCluster

pytestmark = [pytest.mark.ray]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# Short, so the tests are; the actor checks every quarter of it.
TIMEOUT = 2.0 * UNIT


def _runner(**config: Any) -> RealtimeRunner:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Assistant", instructions="Be brief.")
    return RealtimeRunner(agent, config={**ACTOR, "orphan_timeout_seconds": TIMEOUT, **config})


async def _alive(router: Any, session_id: str) -> bool:
    try:
        await asyncio.wait_for(router.lookup.remote(session_id), 10 * UNIT)
    except SessionNotFoundError:
        return False
    return True


async def _wait_closed(router: Any, session_id: str, within: float) -> float:
    """Wait until the router forgets the session; the time it took."""
    t0 = time.monotonic()

    async def gone() -> bool:
        return not await _alive(router, session_id)

    await wait_until(gone, within, f"session {session_id} to be closed", interval=0.05)
    return time.monotonic() - t0


async def _assert_closed_for_a_ticket_holder(ticket: str) -> None:
    # Closed the way close_session closes: a late attach is refused, typed.
    try:
        handle = await asyncio.wait_for(RealtimeSession.attach(ticket), 10 * UNIT)
    except SessionNotFoundError:
        return
    try:
        with pytest.raises(SessionClosedError):
            await asyncio.wait_for(handle.send_message("anyone?"), 10 * UNIT)
    finally:
        await handle.detach()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.mark.parametrize("data_plane", [True, False], ids=["data_plane", "ray_calls"])
async def test_the_session_of_a_killed_driver_is_closed(
    ray_cluster: RayTestCluster, data_plane: bool
) -> None:
    router = ray_cluster.router
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "lease_opener.py"),
        ray_cluster.address,
        str(TIMEOUT),
        "1" if data_plane else "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
        env=_child_env(),
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 90 * UNIT)
        if not line:
            assert proc.stderr is not None
            err = await asyncio.wait_for(proc.stderr.read(), 10 * UNIT)
            raise AssertionError(f"the opener failed: {err.decode()[-3000:]}")
        opened = json.loads(line)
        session_id, ticket = opened["session_id"], opened["ticket"]
        assert opened["pid"] == proc.pid

        # Its driver lives and holds it (idle: no reads), past the timeout.
        await asyncio.sleep(2.5 * TIMEOUT)
        assert await _alive(router, session_id)

        os.kill(proc.pid, signal.SIGKILL)  # no close, no detach
        await asyncio.wait_for(proc.wait(), 10 * UNIT)
        took = await _wait_closed(router, session_id, TIMEOUT + 10 * UNIT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    # Closed after the timeout, not before (a data plane drops at once; the
    # Ray-call handle's last touch is up to a quarter timeout old).
    assert took >= (0.7 if data_plane else 0.45) * TIMEOUT
    await _assert_closed_for_a_ticket_holder(ticket)


async def test_keep_alive_keeps_a_detached_session_that_long(
    ray_cluster: RayTestCluster,
) -> None:
    router = ray_cluster.router
    keep = 2.5 * TIMEOUT
    session = await _runner().run()
    await session.enter()
    session_id, ticket = session.session_id, session.ticket
    await session.detach(keep_alive_seconds=keep)
    t0 = time.monotonic()
    await asyncio.sleep(1.5 * TIMEOUT)  # past the orphan timeout
    assert await _alive(router, session_id)
    await _wait_closed(router, session_id, keep + 10 * UNIT)
    assert time.monotonic() - t0 >= 0.9 * keep
    await _assert_closed_for_a_ticket_holder(ticket)


async def test_detach_without_keep_alive_closes_after_the_orphan_timeout(
    ray_cluster: RayTestCluster,
) -> None:
    router = ray_cluster.router
    session = await _runner().run()
    await session.enter()
    session_id = session.session_id
    await session.detach()
    took = await _wait_closed(router, session_id, TIMEOUT + 10 * UNIT)
    assert took >= 0.7 * TIMEOUT


async def test_reattaching_restarts_the_clock(ray_cluster: RayTestCluster) -> None:
    router = ray_cluster.router
    timeout = 3.0 * UNIT
    session = await _runner(orphan_timeout_seconds=timeout).run()
    await session.enter()
    session_id, ticket = session.session_id, session.ticket
    await session.detach()
    t0 = time.monotonic()
    await asyncio.sleep(0.65 * timeout)
    again = await asyncio.wait_for(RealtimeSession.attach(ticket), 10 * UNIT)
    await again.detach()
    t1 = time.monotonic()
    # Past the first deadline (and its check), short of the second.
    await asyncio.sleep(max(0.0, t0 + 1.5 * timeout - time.monotonic()))
    assert time.monotonic() < t1 + timeout
    assert await _alive(router, session_id)
    await _wait_closed(router, session_id, timeout + 10 * UNIT)
    assert time.monotonic() - t1 >= 0.7 * timeout


@pytest.mark.parametrize("data_plane", [True, False], ids=["data_plane", "ray_calls"])
async def test_an_attached_idle_handle_keeps_the_session(
    ray_cluster: RayTestCluster, data_plane: bool
) -> None:
    router = ray_cluster.router
    async with await _runner(data_plane=data_plane).run() as session:
        assert session._backend.data_plane_connected is data_plane  # type: ignore[attr-defined]
        await asyncio.sleep(2.5 * TIMEOUT)  # no reads, no sends
        assert await _alive(router, session.session_id)
        await session.send_message("still here")
        await collect_turns(session)
        assert await last_reply(session) == "You said: still here"


async def test_keep_alive_is_checked(ray_cluster: RayTestCluster) -> None:
    async with await _runner().run() as session:
        with pytest.raises(UserError, match="keep_alive_seconds"):
            await session.detach(keep_alive_seconds=-1)
        # The bad call let nothing go: the session still works.
        await session.send_message("ok")
        await collect_turns(session)
