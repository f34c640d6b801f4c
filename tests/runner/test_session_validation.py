"""Every public method of a session checks its input and raises the project's
typed errors (never a raw AttributeError / TypeError / Ray error), the same
in both execution modes, and a refused input changes nothing: the session
answers the next turn.

The same checks run against an in-process session (local model server on
loopback) and against actor sessions, over the data plane and over Ray calls
only (the shared 3-node test cluster of ``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ray_realtime import (
    AssistantMessageItem,
    InputTooLargeError,
    RealtimeAgent,
    RealtimeRunner,
    RealtimeSession,
    SessionClosedError,
    UserError,
)
from ray_realtime.local import LocalModelServer
from tests.conftest import UNIT, RayTestCluster

TURN_TIMEOUT = 30 * UNIT
LIMITS: dict[str, Any] = {"max_message_chars": 50, "max_audio_chunk_bytes": 1000}
ACTOR_MODES = [
    pytest.param(True, id="data_plane", marks=pytest.mark.ray),
    pytest.param(False, id="ray_calls", marks=pytest.mark.ray),
]


def broken_instructions(ctx: Any, agent: Any) -> str:
    """Instructions that cannot be produced (module level: it crosses to actors)."""
    raise RuntimeError("no instructions today")


@pytest.fixture
async def server() -> AsyncIterator[LocalModelServer]:
    async with LocalModelServer() as srv:
        yield srv


@contextlib.asynccontextmanager
async def opened(
    url: str | None, agent: RealtimeAgent[Any] | None = None, **config: Any
) -> AsyncIterator[RealtimeSession]:
    """An entered session: in-process on ``url``, else an actor session."""
    agent = agent or RealtimeAgent(name="Assistant")
    execution = "in_process" if url else "actor"
    run_config: Any = {"execution": execution, **config}
    runner = RealtimeRunner(agent, config=run_config)
    model_config: Any = {"url": url} if url else None
    session = await runner.run(model_config=model_config)
    await asyncio.wait_for(session.enter(), TURN_TIMEOUT)
    try:
        yield session
    finally:
        await asyncio.wait_for(session.close(), TURN_TIMEOUT)


async def reply_to(session: RealtimeSession, text: str) -> str:
    """Send ``text``; the assistant's reply, once the turn has ended."""
    await asyncio.wait_for(session.send_message(text), TURN_TIMEOUT)

    async def until_end() -> None:
        async for event in session:
            if event.type == "agent_end":
                return
        raise AssertionError("the session ended first")

    await asyncio.wait_for(until_end(), TURN_TIMEOUT)
    last = [i for i in session.history if isinstance(i, AssistantMessageItem)][-1]
    return "".join(
        str(getattr(p, "transcript", None) or getattr(p, "text", "")) for p in last.content
    )


async def refused(call: Any, kind: type[Exception] = UserError) -> Exception:
    """``await call`` raises ``kind`` (an InputTooLargeError only if asked)."""
    with pytest.raises(kind) as info:
        await asyncio.wait_for(call, TURN_TIMEOUT)
    if kind is UserError:
        assert not isinstance(info.value, InputTooLargeError), info.value
    return info.value


# ------------------------------------------------------------------- checks


async def check_messages(session: RealtimeSession) -> None:
    bad_messages: list[Any] = [
        123,
        None,
        b"bytes",
        object(),
        lambda: "not picklable either",
        "",
        {"content": []},
        {"role": "assistant", "content": [{"type": "input_text", "text": "hi"}]},
        {"content": [{"type": "input_text", "text": 5}]},
    ]
    for bad in bad_messages:
        await refused(session.send_message(bad))
    too_long = await refused(session.send_message("x" * 51), InputTooLargeError)
    assert isinstance(too_long, InputTooLargeError)
    assert (too_long.size, too_long.limit) == (51, 50)
    parts = {"content": [{"type": "input_text", "text": "y" * 51}]}
    await refused(session.send_message(parts), InputTooLargeError)
    for kwargs in ({"after_seq": -1}, {"after_seq": "0"}, {"max_events": 0}, {"timeout": -1}):
        await refused(session.read_events(**kwargs))


async def check_audio(session: RealtimeSession) -> None:
    bad_chunks: list[Any] = ["text", [1, 2], None, 7]
    for bad in bad_chunks:
        await refused(session.send_audio(bad))
    # PCM16 (the default): an odd length would split a sample.
    odd = await refused(session.send_audio(b"\0" * 999))
    assert "whole number of pcm16 samples" in str(odd)
    await refused(session.send_audio(b"\0\0", commit="yes"))  # type: ignore[arg-type]
    big = await refused(session.send_audio(b"\0" * 1002), InputTooLargeError)
    assert isinstance(big, InputTooLargeError) and (big.size, big.limit) == (1002, 1000)
    await asyncio.wait_for(session.send_audio(b"\0" * 1000), TURN_TIMEOUT)  # at the bound


async def check_agents_calls_and_close(session: RealtimeSession) -> None:
    bad_agents: list[Any] = ["x", None, {"name": "Assistant"}]
    for bad in bad_agents:
        await refused(session.update_agent(bad))
    broken: RealtimeAgent[Any] = RealtimeAgent(name="Broken", instructions=broken_instructions)
    error = await refused(session.update_agent(broken))
    assert "no instructions today" in str(error)
    bad_ids: list[Any] = [123, None, "", "c" * 513]
    for bad_id in bad_ids:
        await refused(session.approve_tool_call(bad_id))
        await refused(session.reject_tool_call(bad_id))
    await refused(session.reject_tool_call("call_1", rejection_message=5))  # type: ignore[arg-type]
    await refused(session.approve_tool_call("call_1", always="yes"))  # type: ignore[arg-type]
    assert await asyncio.wait_for(session.approve_tool_call("no_such_call"), TURN_TIMEOUT) is False
    assert await asyncio.wait_for(session.reject_tool_call("no_such_call"), TURN_TIMEOUT) is False
    await asyncio.wait_for(session.interrupt(), TURN_TIMEOUT)  # nothing to interrupt: fine

    # Nothing refused reached the session: it still answers, as the agent it had.
    assert await reply_to(session, "say still here") == "still here"
    switched: RealtimeAgent[Any] = RealtimeAgent(
        name="Switched", instructions="Always reply: switched"
    )
    await asyncio.wait_for(session.update_agent(switched), TURN_TIMEOUT)
    assert await reply_to(session, "hello") == "switched"

    await asyncio.wait_for(session.close(), TURN_TIMEOUT)
    await asyncio.wait_for(session.close(), TURN_TIMEOUT)  # idempotent
    after_close: list[Any] = [
        session.send_message("hi"),
        session.send_audio(b"\0\0"),
        session.interrupt(),
        session.update_agent(switched),
        session.approve_tool_call("call_1"),
        session.reject_tool_call("call_1"),
    ]
    for call in after_close:
        await refused(call, SessionClosedError)


async def check_everything(session: RealtimeSession) -> None:
    await check_messages(session)
    await check_audio(session)
    await check_agents_calls_and_close(session)


async def check_g711_takes_odd_lengths(session: RealtimeSession) -> None:
    # G.711 has one byte per sample: any length is whole samples.
    await asyncio.wait_for(session.send_audio(b"\xff" * 999), TURN_TIMEOUT)
    await refused(session.send_audio(b"\xff" * 1001), InputTooLargeError)
    assert await reply_to(session, "say ulaw") == "ulaw"


G711: dict[str, Any] = {"model_settings": {"input_audio_format": "g711_ulaw"}}


# ------------------------------------------------------------------- in process


async def test_in_process_session_validates_every_input(server: LocalModelServer) -> None:
    async with opened(server.url, **LIMITS) as session:
        await check_everything(session)


async def test_in_process_g711_audio_may_have_odd_length(server: LocalModelServer) -> None:
    async with opened(server.url, **LIMITS, **G711) as session:
        await check_g711_takes_odd_lengths(session)


# ------------------------------------------------------------------------ actor


@pytest.mark.parametrize("data_plane", ACTOR_MODES)
async def test_actor_session_validates_every_input(
    ray_cluster: RayTestCluster, data_plane: bool
) -> None:
    async with opened(None, data_plane=data_plane, **LIMITS) as session:
        assert session._backend.data_plane_connected is data_plane  # type: ignore[attr-defined]
        await check_everything(session)


@pytest.mark.parametrize("data_plane", ACTOR_MODES)
async def test_actor_g711_audio_may_have_odd_length(
    ray_cluster: RayTestCluster, data_plane: bool
) -> None:
    async with opened(None, data_plane=data_plane, **LIMITS, **G711) as session:
        await check_g711_takes_odd_lengths(session)


async def test_a_session_never_entered_refuses_commands_and_closes(
    server: LocalModelServer,
) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Assistant")
    runner = RealtimeRunner(agent, config={"execution": "in_process"})
    session = await runner.run(model_config={"url": server.url})
    await refused(session.send_message("hi"), SessionClosedError)
    await refused(session.interrupt(), SessionClosedError)
    await asyncio.wait_for(session.close(), TURN_TIMEOUT)
    await asyncio.wait_for(session.close(), TURN_TIMEOUT)
    await refused(session.send_audio(b"\0\0"), SessionClosedError)
