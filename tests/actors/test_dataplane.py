"""The data plane over a real loopback WebSocket, with a real session driver
talking to the local model server (no Ray needed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ray_realtime.actors.dataplane import (
    CLOSE_UNAUTHORIZED,
    DataPlaneClient,
    DataPlaneServer,
)
from ray_realtime.agents.agent import RealtimeAgent
from ray_realtime.exceptions import ModelConnectionError
from ray_realtime.local import LocalModelServer
from ray_realtime.model.openai_ws import OpenAIRealtimeWebSocketModel
from ray_realtime.session.driver import SessionDriver
from ray_realtime.types.events import RealtimeAgentEndEvent, RealtimeAudio, RealtimeSessionEvent
from tests.conftest import UNIT

TOKEN = "s3cret-token"


@pytest.fixture
async def setup() -> AsyncIterator[tuple[SessionDriver, DataPlaneServer]]:
    async with LocalModelServer() as server:
        driver = SessionDriver(
            agent=RealtimeAgent(name="Assistant", instructions="Be brief."),
            model=OpenAIRealtimeWebSocketModel(),
            model_config={"url": server.url},
            session_id="rt_test",
        )
        await driver.start()

        async def lookup(sid: str) -> tuple[SessionDriver, str] | None:
            return (driver, TOKEN) if sid == driver.session_id else None

        plane = DataPlaneServer(lookup, hello_timeout=0.5 * UNIT)
        await plane.start()
        try:
            yield driver, plane
        finally:
            await plane.stop()
            await driver.close()


async def _until_agent_end(client: DataPlaneClient, after: int) -> tuple[list[Any], int]:
    seen: list[RealtimeSessionEvent] = []
    cursor = after
    async with asyncio.timeout(10):
        while True:
            batch = await client.read(cursor, 256, 5.0)
            seen.extend(batch.events)
            cursor = batch.last_seq
            if any(isinstance(e, RealtimeAgentEndEvent) for e in batch.events):
                return seen, cursor
            assert not batch.closed


async def test_events_are_pushed_and_audio_flows(
    setup: tuple[SessionDriver, DataPlaneServer],
) -> None:
    driver, plane = setup
    client = await DataPlaneClient.open(plane.url, driver.session_id, TOKEN, 0)
    try:
        await driver.send_message("Hello over the data plane")
        events, cursor = await _until_agent_end(client, 0)
        assert any(isinstance(e, RealtimeAudio) and e.audio.data for e in events)
        assert cursor == driver.last_seq or cursor <= driver.last_seq
        # Input audio over the socket: a tone then silence is a spoken turn.
        t = np.arange(int(0.5 * 24000)) / 24000
        tone = (0.4 * 32767 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()
        audio = tone + bytes(int(0.9 * 24000) * 2)
        for i in range(0, len(audio), 1920):
            await client.send_audio(audio[i : i + 1920], False)
        events, _ = await _until_agent_end(client, cursor)
        assert plane.frames_in >= len(audio) // 1920
        history = driver.history
        assert any(getattr(i, "role", "") == "user" for i in history)
    finally:
        await client.close()


async def test_reader_resumes_mid_batch(setup: tuple[SessionDriver, DataPlaneServer]) -> None:
    driver, plane = setup
    client = await DataPlaneClient.open(plane.url, driver.session_id, TOKEN, 0)
    try:
        await driver.send_message("Hello")
        first = await client.read(0, 1, 5.0)
        assert len(first.events) == 1 and first.last_seq == 1
        assert client.can_serve(1) and not client.can_serve(0)
        rest = await client.read(1, 256, 5.0)
        assert rest.last_seq >= 2 and rest.missed == 0
    finally:
        await client.close()


async def _say_hello(url: str, hello: Any, timeout: float = 5.0) -> int | None:
    """Send ``hello`` (bytes as is, else msgpack) and return the close code."""
    async with connect(url, max_size=None) as ws:
        await ws.send(hello if isinstance(hello, bytes) else msgpack.packb(hello))
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(timeout):
                while True:
                    await ws.recv()
    return info.value.rcvd.code if info.value.rcvd is not None else None


@pytest.mark.parametrize(
    ("session_id", "token"), [("rt_test", "wrong"), ("rt_unknown", TOKEN), ("rt_test", "é" * 9)]
)
async def test_bad_hello_is_refused_with_one_close_code(
    setup: tuple[SessionDriver, DataPlaneServer], session_id: str, token: str
) -> None:
    _, plane = setup
    with pytest.raises(ModelConnectionError, match="refused"):
        await DataPlaneClient.open(plane.url, session_id, token, 0)
    # A wrong secret and an unknown session look the same to the peer.
    hello = {"session_id": session_id, "token": token, "after_seq": 0}
    assert await _say_hello(plane.url, hello) == CLOSE_UNAUTHORIZED


async def test_garbage_frame_closes_socket_not_session(
    setup: tuple[SessionDriver, DataPlaneServer],
) -> None:
    driver, plane = setup
    async with connect(plane.url) as ws:
        await ws.send(
            msgpack.packb({"session_id": driver.session_id, "token": TOKEN, "after_seq": 0})
        )
        assert msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5)) == {"welcome": True}
        await ws.send(b"\xc0")  # ready
        await ws.send(b"\xc1 not msgpack")
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
    assert not driver.closed
    start = driver.last_seq
    client = await DataPlaneClient.open(plane.url, driver.session_id, TOKEN, start)
    try:
        await driver.send_message("still alive?")
        events, _ = await _until_agent_end(client, start)
        assert events
    finally:
        await client.close()


async def test_requests_are_acked_with_typed_errors(
    setup: tuple[SessionDriver, DataPlaneServer],
) -> None:
    from ray_realtime.exceptions import UserError

    driver, plane = setup
    client = await DataPlaneClient.open(plane.url, driver.session_id, TOKEN, 0)
    try:
        # The session refuses a malformed message: the error comes back typed.
        with pytest.raises(UserError, match="type 'message'"):
            await client.send_message({"type": "bogus"})
        await client.send_message("Hello after a refusal")
        events, _ = await _until_agent_end(client, 0)
        assert any(isinstance(e, RealtimeAudio) for e in events)
        await client.send_interrupt()
    finally:
        await client.close()
    assert not driver.closed
