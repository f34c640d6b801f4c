"""Shared data-plane connections: several sessions of one actor over one
WebSocket, each on its own channel with its own secret.

Real loopback WebSockets, real session drivers on the local model server,
no Ray (the handles' recovery over Ray is in test_remote_handle.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ray_realtime.actors.dataplane import (
    CLOSE_BAD_FRAME,
    CLOSE_UNAUTHORIZED,
    DataPlaneBroken,
    DataPlaneServer,
)
from ray_realtime.actors.dataplane_shared import PlaneChannel, open_channel, shared_sockets
from ray_realtime.agents.agent import RealtimeAgent
from ray_realtime.exceptions import ModelConnectionError, UserError
from ray_realtime.local import LocalModelServer
from ray_realtime.model.openai_ws import OpenAIRealtimeWebSocketModel
from ray_realtime.session.driver import SessionDriver
from ray_realtime.types.events import RealtimeAgentEndEvent, RealtimeAudio
from tests.conftest import UNIT

HELLO_TIMEOUT = 0.5 * UNIT
SESSIONS = 3


def _secret(session_id: str) -> str:
    return f"secret-of-{session_id}-0123456789"


@dataclass
class Actor:
    """Several sessions served by one data plane server, as in a packed actor."""

    drivers: dict[str, SessionDriver]
    plane: DataPlaneServer
    connected: list[tuple[str, bool]]


@pytest.fixture
async def actor() -> AsyncIterator[Actor]:
    async with LocalModelServer() as server:
        drivers: dict[str, SessionDriver] = {}
        for i in range(SESSIONS):
            driver = SessionDriver(
                agent=RealtimeAgent(name="Assistant", instructions="Be brief."),
                model=OpenAIRealtimeWebSocketModel(),
                model_config={"url": server.url},
                session_id=f"rt_s{i}",
            )
            await driver.start()
            drivers[driver.session_id] = driver

        async def lookup(sid: str) -> tuple[SessionDriver, str] | None:
            driver = drivers.get(sid)
            return (driver, _secret(sid)) if driver is not None else None

        connected: list[tuple[str, bool]] = []
        plane = DataPlaneServer(
            lookup,
            hello_timeout=HELLO_TIMEOUT,
            on_connection=lambda sid, up: connected.append((sid, up)),
        )
        await plane.start()
        try:
            yield Actor(drivers, plane, connected)
        finally:
            for sock in shared_sockets():
                await sock.close()
            await plane.stop()
            for driver in drivers.values():
                await driver.close()


async def _open(actor: Actor, session_id: str, secret: str | None = None) -> PlaneChannel:
    driver = actor.drivers.get(session_id)
    after = driver.last_seq if driver is not None else 0
    return await open_channel(
        actor.plane.url, session_id, secret or _secret(session_id), after, timeout=5 * UNIT
    )


async def _turn(channel: PlaneChannel, driver: SessionDriver, text: str) -> list[Any]:
    """Send ``text`` on the channel and read it until the turn's ``agent_end``."""
    cursor = driver.last_seq
    await channel.send_message(text)
    seen: list[Any] = []
    async with asyncio.timeout(15 * UNIT):
        while True:
            batch = await channel.read(cursor, 256, 5.0)
            seen.extend(batch.events)
            cursor = batch.last_seq
            assert batch.missed == 0
            if any(isinstance(e, RealtimeAgentEndEvent) for e in batch.events):
                return seen
            assert not batch.closed


async def _wait_for(condition: Any, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds * UNIT):
        while not condition():  # noqa: ASYNC110 - polling a counter of the server
            await asyncio.sleep(0.01)


async def test_sessions_of_one_actor_share_one_connection(actor: Actor) -> None:
    ids = list(actor.drivers)
    channels = await asyncio.gather(*(_open(actor, sid) for sid in ids))
    try:
        # One TCP connection for all of them, at both ends.
        assert actor.plane.statistics()["connections"] == 1
        assert len(shared_sockets()) == 1 and shared_sockets()[0].channels == SESSIONS
        turns = await asyncio.gather(
            *(
                _turn(ch, actor.drivers[sid], f"Hello from {sid}")
                for ch, sid in zip(channels, ids, strict=True)
            )
        )
        for events in turns:
            assert any(isinstance(e, RealtimeAudio) and e.audio.data for e in events)
        # Each channel got its own session's events, and only those.
        for ch, sid in zip(channels, ids, strict=True):
            assert ch.can_serve(actor.drivers[sid].last_seq)
        # Input audio on one channel reaches that session only.
        before = {sid: len(d.history) for sid, d in actor.drivers.items()}
        await channels[0].send_audio(b"\x00\x00" * 480, False)
        await channels[0].send_playback(("", 0, 0))
        with pytest.raises(UserError, match="type 'message'"):
            await channels[1].send_message({"type": "bogus"})
        await channels[2].send_interrupt()
        assert {sid: len(d.history) for sid, d in actor.drivers.items()} == before
        assert sorted(sid for sid, up in actor.connected if up) == sorted(ids)
        assert actor.plane.statistics()["connections"] == 1
        # Pushes of several sessions share frames: fewer frames than batches.
        assert actor.plane.statistics()["frames_out"] > 0
    finally:
        for ch in channels:
            await ch.close()
    # Closing the last channel closes the socket.
    assert shared_sockets() == []
    await _wait_for(lambda: actor.plane.statistics()["connections"] == 0)
    assert sorted(sid for sid, up in actor.connected if not up) == sorted(ids)


async def test_a_wrong_secret_on_a_shared_socket_disturbs_no_one(actor: Actor) -> None:
    a, b, c = list(actor.drivers)
    first = await _open(actor, a)
    try:
        turn = asyncio.ensure_future(_turn(first, actor.drivers[a], "Hello while refused"))
        start = time.monotonic()
        with pytest.raises(ModelConnectionError, match="refused"):
            await _open(actor, b, secret="not-the-secret")
        # Refused at the hello deadline (as an unknown session would be), not earlier.
        assert time.monotonic() - start >= HELLO_TIMEOUT * 0.8
        with pytest.raises(ModelConnectionError, match="refused"):
            await _open(actor, "rt_nobody")
        assert any(isinstance(e, RealtimeAudio) for e in await turn)
        assert not first.broken
        assert actor.plane.statistics()["connections"] == 1
        assert actor.plane.statistics()["refused"] == 2
        # The right secret on the same socket is still welcomed.
        third = await _open(actor, c)
        assert len(shared_sockets()) == 1 and shared_sockets()[0].channels == 2
        assert await _turn(third, actor.drivers[c], "Hello third")
        assert await _turn(first, actor.drivers[a], "Hello again")
        await third.close()
    finally:
        await first.close()


async def test_a_session_ending_and_a_handle_leaving_while_others_go_on(actor: Actor) -> None:
    a, b, c = list(actor.drivers)
    ca, cb, cc = [await _open(actor, sid) for sid in (a, b, c)]
    try:
        # Session a ends: its channel reads to the closed batch, the others go on.
        await actor.drivers[a].close()
        async with asyncio.timeout(5 * UNIT):
            cursor = 0
            while True:
                batch = await ca.read(cursor, 256, 1.0)
                cursor = batch.last_seq
                if batch.closed:
                    break
        assert ca.closed and not ca.broken
        with pytest.raises(DataPlaneBroken):
            await ca.send_audio(b"\x00\x00", False)  # the handle then goes over Ray
        # Handle b leaves (its session goes on): c is not disturbed.
        await cb.close()
        await _wait_for(lambda: (b, False) in actor.connected)
        assert not actor.drivers[b].closed
        assert await _turn(cc, actor.drivers[c], "Hello c")
        assert actor.plane.statistics()["connections"] == 1
        # b comes back on the same socket from where it was.
        cb = await _open(actor, b)
        assert shared_sockets()[0].channels == 3
        assert await _turn(cb, actor.drivers[b], "Hello b again")
    finally:
        for ch in (ca, cb, cc):
            await ch.close()
    assert shared_sockets() == []


async def test_a_dropped_socket_breaks_every_channel_on_it(actor: Actor) -> None:
    ids = list(actor.drivers)
    channels = [await _open(actor, sid) for sid in ids]
    try:
        await _turn(channels[0], actor.drivers[ids[0]], "Hello before the drop")
        sock = shared_sockets()[0]
        pending = asyncio.ensure_future(channels[1].send_message("Hello", timeout=10 * UNIT))
        await asyncio.sleep(0)
        sock._ws.transport.abort()  # type: ignore[union-attr]  # the network drops
        async with asyncio.timeout(5 * UNIT):
            for ch in channels:
                while not ch.broken:  # noqa: ASYNC110 - polling a flag
                    await asyncio.sleep(0.01)
        for ch in channels:
            with pytest.raises(DataPlaneBroken):
                while True:
                    await ch.read(actor.drivers[ids[0]].last_seq + 10**6, 256, 0.1)
            with pytest.raises(DataPlaneBroken):
                await ch.send_audio(b"\x00\x00", False)
        with contextlib.suppress(DataPlaneBroken):
            await pending  # it may have gone out before the drop
        assert shared_sockets() == []
        await _wait_for(lambda: actor.plane.statistics()["connections"] == 0)
        # A new socket serves them again, from where each was.
        again = [await _open(actor, sid) for sid in ids]
        assert len(shared_sockets()) == 1
        for ch, sid in zip(again, ids, strict=True):
            assert await _turn(ch, actor.drivers[sid], "Hello after the drop")
        for ch in again:
            await ch.close()
    finally:
        for ch in channels:
            await ch.close()


# ------------------------------------------------------------ the wire


def _hello(channel: int, session_id: str, secret: str | None = None, after: int = 0) -> bytes:
    hello = {
        "channel": channel,
        "session_id": session_id,
        "token": secret or _secret(session_id),
        "after_seq": after,
    }
    return bytes(msgpack.packb(hello))


async def _recv_map(ws: Any) -> dict[str, Any]:
    """The next control frame (pushed event batches are skipped)."""
    async with asyncio.timeout(5 * UNIT):
        while True:
            frame = await ws.recv()
            if frame[0] & 0xF0 == 0x80:
                return dict(msgpack.unpackb(frame))


async def test_shared_frames_on_the_wire(actor: Actor) -> None:
    a, b, _ = list(actor.drivers)
    async with connect(actor.plane.url, max_size=None) as ws:
        # Before a welcome: only hellos; after it, a hello per channel.
        await ws.send(_hello(7, a, after=10**6))
        assert await _recv_map(ws) == {"welcome": 7}
        await ws.send(b"\xc0")  # ready
        await ws.send(_hello(9, b, secret="wrong", after=10**6))
        await ws.send(msgpack.packb([2, {"type": "bogus"}, False, 1, 7]))
        assert (await _recv_map(ws))["ack"] == 1
        # A request on a channel that is not open is told "ended".
        await ws.send(msgpack.packb([3, None, False, 2, 8]))
        assert await _recv_map(ws) == {"ended": 8}
        assert await _recv_map(ws) == {"refused": 9}
        # Channel numbers only grow: a smaller one is a protocol error.
        await ws.send(_hello(8, b))
        with pytest.raises(ConnectionClosed):
            await _recv_map(ws)
    assert ws.close_code == CLOSE_BAD_FRAME


async def test_a_shared_connection_that_is_never_welcomed_is_closed(actor: Actor) -> None:
    a, *_ = list(actor.drivers)
    for frames in (
        [_hello(1, a, secret="wrong")],
        [_hello(1, a, secret="wrong"), msgpack.packb([1, b"\x00\x00", False, 0, 1])],
        [_hello(1, "rt_nobody"), _hello(2, "rt_other")],
    ):
        start = time.monotonic()
        async with connect(actor.plane.url, max_size=None) as ws:
            with contextlib.suppress(ConnectionClosed):
                for frame in frames:
                    await ws.send(frame)
                async with asyncio.timeout(HELLO_TIMEOUT + 5 * UNIT):
                    while True:
                        await ws.recv()
        assert ws.close_code == CLOSE_UNAUTHORIZED, frames
        assert time.monotonic() - start <= HELLO_TIMEOUT + 2 * UNIT
    await _wait_for(lambda: actor.plane.statistics()["unauthenticated"] == 0)


async def test_a_session_nobody_reads_does_not_hold_the_others(actor: Actor) -> None:
    a, b, _ = list(actor.drivers)
    idle = await open_channel(
        actor.plane.url, a, _secret(a), actor.drivers[a].last_seq, max_buffered=4
    )
    busy = await _open(actor, b)
    try:
        start = actor.drivers[a].last_seq
        # Session a makes events nobody reads, while b does two turns.
        await idle.send_message("Hello to nobody")
        for text in ("Hello b", "Hello b again"):
            assert any(
                isinstance(e, RealtimeAudio) for e in await _turn(busy, actor.drivers[b], text)
            )
        await _wait_for(lambda: actor.drivers[a].last_seq - start > 4)
        # a's buffer kept its newest events and says what it dropped.
        batch = await idle.read(start, 256, 1.0)
        assert batch.missed > 0 and len(batch.events) <= 4
        assert not idle.broken and not busy.broken
    finally:
        await idle.close()
        await busy.close()


async def test_more_sessions_opening_at_once_than_hellos_allowed_in_flight(
    actor: Actor,
) -> None:
    # The actor answers at most MAX_OPENING hellos at a time per socket; the
    # handle's process keeps within it, so a burst of opens breaks nothing.
    from ray_realtime.actors.dataplane import MAX_OPENING

    a = next(iter(actor.drivers))
    channels = await asyncio.gather(*(_open(actor, a) for _ in range(MAX_OPENING + 8)))
    try:
        assert actor.plane.statistics()["connections"] == 1
        assert shared_sockets()[0].channels == MAX_OPENING + 8
        assert await _turn(channels[-1], actor.drivers[a], "Hello after a burst")
    finally:
        for ch in channels:
            await ch.close()
    assert shared_sockets() == []


@pytest.mark.parametrize("ticks", [0, 1, 3, 10, 40])
async def test_an_opener_cancelled_before_its_welcome_leaves_no_socket_open(
    actor: Actor, ticks: int
) -> None:
    """A handle gives up its early dial (its open failed): the socket dialled
    for it alone closes instead of staying open with no channel."""
    from websockets.protocol import State

    task = asyncio.ensure_future(_open(actor, "rt_s0"))
    await asyncio.sleep(0)
    (sock,) = shared_sockets()
    for _ in range(ticks):  # cancel at a different point of the dial each time
        await asyncio.sleep(0.001)
    task.cancel()
    (result,) = await asyncio.gather(task, return_exceptions=True)
    if isinstance(result, PlaneChannel):  # it finished first: close it, as the handle does
        await result.close()
    deadline = time.monotonic() + 5 * UNIT
    while time.monotonic() < deadline:
        ws = sock._ws
        connecting = sock._connecting is not None and not sock._connecting.done()
        if not connecting and (ws is None or ws.state is State.CLOSED):
            break
        await asyncio.sleep(0.01)
    assert sock.done
    assert sock._ws is None or sock._ws.state is State.CLOSED
    assert sock not in shared_sockets()
    # The next opener dials afresh and works.
    channel = await _open(actor, "rt_s0")
    await channel.close()
