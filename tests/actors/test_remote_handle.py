"""The remote session handle: several readers, other processes, attach / detach.

A session in an actor outlives the handle that started it: any process of
the cluster given its ticket can attach to it, read every event from its own
position, and let go (``detach``) or end it (``close``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ray_realtime import (
    RealtimeAgent,
    RealtimeAudio,
    RealtimeRunner,
    RealtimeSession,
    SessionClosedError,
    SessionNotFoundError,
)
from ray_realtime.actors.handle import make_ticket
from tests.actors.util import (
    ACTOR,
    assistant_texts,
    collect_turns,
    last_reply,
    placement_of,
    wait_until,
)
from tests.conftest import UNIT, RayTestCluster

pytestmark = [pytest.mark.ray]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _runner(**config: Any) -> RealtimeRunner:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Assistant", instructions="You are helpful.")
    return RealtimeRunner(agent, config={**ACTOR, **config})


async def test_two_readers_in_one_process_see_the_same_events(
    ray_cluster: RayTestCluster,
) -> None:
    async with await _runner().run() as session:
        other = await RealtimeSession.attach(session.ticket)
        try:
            first, second = (
                asyncio.ensure_future(collect_turns(session)),
                asyncio.ensure_future(collect_turns(other)),
            )
            await session.send_message("say two readers")
            a, b = await asyncio.gather(first, second)
            assert [e.type for e in a] == [e.type for e in b]
            assert "audio" in [e.type for e in a]
            assert session.last_seq == other.last_seq
            # Same audio bytes, in the same order.
            audio_a = [e.audio.data for e in a if isinstance(e, RealtimeAudio)]
            audio_b = [e.audio.data for e in b if isinstance(e, RealtimeAudio)]
            assert audio_a == audio_b
        finally:
            await other.detach()


async def test_attach_from_a_second_driver_process(ray_cluster: RayTestCluster) -> None:
    async with await _runner().run() as session:
        script = HERE / "attach_reader.py"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            ray_cluster.address,
            "say hello from another process",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(ROOT),
            env={**_child_env(), "RAY_REALTIME_TICKET": session.ticket},
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 90 * UNIT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode == 0, err.decode()[-3000:]
        result = json.loads(out.decode().strip().splitlines()[-1])
        assert result["session_id"] == session.session_id
        assert result["types"][-1] == "agent_end"
        assert "agent_start" in result["types"] and "audio" in result["types"]
        assert result["reply"] == "hello from another process"
        assert result["pid"] != os.getpid()

        # This handle follows the same session and sees the other driver's turn.
        events = await collect_turns(session)
        assert [e.type for e in events] == result["types"]
        assert await last_reply(session) == "hello from another process"
        # The other process detached: the session is still alive here.
        await session.send_message("still here")
        await collect_turns(session)
        assert await last_reply(session) == "You said: still here"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.pop("RAY_ADDRESS", None)
    return env


async def test_detach_and_reattach(ray_cluster: RayTestCluster) -> None:
    router = ray_cluster.router
    async with await _runner().run() as session:
        session_id, ticket = session.session_id, session.ticket
        await session.send_message("first turn")
        await collect_turns(session)
        await session.detach()
    # Leaving the block after detach() left the session running.
    placement = await placement_of(router, session_id)
    assert placement["session_id"] == session_id
    with pytest.raises(SessionClosedError):
        await session.send_message("this handle let go")

    again = await asyncio.wait_for(RealtimeSession.attach(ticket), 10 * UNIT)
    async with again:
        # The attached handle reads from the start: the first turn is there too.
        await again.send_message("second turn")
        await collect_turns(again, turns=2)
        history = await again.get_history()
        assert assistant_texts(history) == ["You said: first turn", "You said: second turn"]
    # Leaving the block closed it: gone for good, with a typed error.
    await _assert_gone(router, session_id, ticket)


async def _assert_gone(router: Any, session_id: str, ticket: str) -> None:
    async def gone() -> bool:
        try:
            handle = await asyncio.wait_for(RealtimeSession.attach(ticket), 10 * UNIT)
        except SessionNotFoundError:
            return True
        # The router may not have heard of the close yet: the actor says closed.
        with pytest.raises(SessionClosedError):
            await asyncio.wait_for(handle.send_message("anyone?"), 10 * UNIT)
        await handle.detach()
        return False

    await wait_until(gone, 10 * UNIT, "the router to forget the closed session")
    with pytest.raises(SessionNotFoundError):
        await router.lookup.remote(session_id)


async def test_attach_to_an_unknown_session(ray_cluster: RayTestCluster) -> None:
    ticket = make_ticket("rt_does_not_exist", "a-secret-of-24-characters")
    with pytest.raises(SessionNotFoundError):
        await asyncio.wait_for(RealtimeSession.attach(ticket), 10 * UNIT)


async def test_calls_on_a_closed_session(ray_cluster: RayTestCluster) -> None:
    async with await _runner().run() as session:
        other = await RealtimeSession.attach(session.ticket)
    with pytest.raises(SessionClosedError):
        await session.send_message("too late")
    # A second handle learns it from the actor (the error crosses the boundary typed).
    with pytest.raises(SessionClosedError):
        await asyncio.wait_for(other.send_message("too late"), 10 * UNIT)
    with pytest.raises(SessionClosedError):
        await asyncio.wait_for(other.send_audio(b"\0" * 960), 10 * UNIT)
    # Reading a closed session ends the iteration instead of hanging.
    events = await asyncio.wait_for(_drain(other), 10 * UNIT)
    assert isinstance(events, list)
    await other.detach()


async def _drain(session: RealtimeSession) -> list[Any]:
    return [event async for event in session]


async def test_sessions_of_one_actor_share_one_socket_and_survive_its_drop(
    ray_cluster: RayTestCluster,
) -> None:
    from ray_realtime.actors.dataplane_shared import shared_sockets
    from ray_realtime.types.events import RealtimeEventsLost, RealtimeSessionRecovered

    # Packed (the default): the three land on one actor, and their handles
    # here share one data-plane socket to it.
    runner = _runner(sessions_per_actor=3)
    sessions = [await runner.run() for _ in range(3)]
    for session in sessions:
        await session.__aenter__()
    try:
        names = {s._backend.actor_name for s in sessions}  # type: ignore[attr-defined]
        assert len(names) == 1
        urls = {s.url for s in shared_sockets() if s.channels}
        assert len(urls) == 1
        sock = next(s for s in shared_sockets() if s.channels)
        assert sock.channels == 3
        assert all(s._backend.data_plane_connected for s in sessions)  # type: ignore[attr-defined]
        turns = await asyncio.gather(
            *(_turn_after(s, f"say shared {i}") for i, s in enumerate(sessions))
        )
        assert all("audio" in [e.type for e in t] for t in turns)
        # The socket drops mid-stream: every session goes on over Ray, losing nothing.
        reading = [asyncio.ensure_future(collect_turns(s)) for s in sessions]
        await asyncio.gather(*(s.send_message("say after the drop") for s in sessions))
        sock._ws.transport.abort()  # type: ignore[union-attr]
        after = await asyncio.gather(*reading)
        for events in after:
            assert "audio" in [e.type for e in events]
            assert not [e for e in events if isinstance(e, RealtimeEventsLost)]
            assert not [e for e in events if isinstance(e, RealtimeSessionRecovered)]
        assert not any(s._backend.data_plane_connected for s in sessions)  # type: ignore[attr-defined]
        again = await asyncio.gather(*(_turn_after(s, "say over Ray") for s in sessions))
        assert all("audio" in [e.type for e in t] for t in again)
    finally:
        for session in sessions:
            await session.close()
    assert not [s for s in shared_sockets() if s.url in urls]


async def _turn_after(session: RealtimeSession, text: str) -> list[Any]:
    reading = asyncio.ensure_future(collect_turns(session))
    await session.send_message(text)
    return await reading
