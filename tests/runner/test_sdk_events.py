"""The SDK's event order and contents, in both modes, against the local model.

Each test runs in-process on a loopback :class:`LocalModelServer` and in a
session actor on the shared ``ray_cluster``: a run-level output guardrail's
verdict comes before the response's ``agent_end``; ``raw_model_event`` with
``emit_raw_model_events``; ``OutputGuardrailResult`` with the SDK's fields;
``tool_end.output`` as the tool's return value.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ray_realtime import (
    GuardrailFunctionOutput,
    RealtimeAgent,
    RealtimeAudio,
    RealtimeAudioInterrupted,
    RealtimeGuardrailTripped,
    RealtimePlaybackTracker,
    RealtimeRawModelEvent,
    RealtimeRunner,
    RealtimeSession,
    RealtimeToolEnd,
    RunContextWrapper,
    function_tool,
    output_guardrail,
)
from ray_realtime.local import LocalModelServer
from tests.runner.test_sdk_parity import TIMEOUT, opened, read_until, turn


@pytest.fixture(params=["in_process", "actor"])
def mode(request: pytest.FixtureRequest) -> str:
    """The execution mode; ``actor`` brings the shared Ray cluster up."""
    if request.param == "actor":
        request.getfixturevalue("ray_cluster")
    return str(request.param)


@contextlib.asynccontextmanager
async def session_in(
    mode: str, agent: RealtimeAgent[Any], **config: Any
) -> AsyncIterator[RealtimeSession]:
    """An entered session: in-process on a fresh local model, or an actor session."""
    if mode == "actor":
        async with opened(agent, None, **config) as session:
            yield session
        return
    async with LocalModelServer() as srv, opened(agent, srv.url, **config) as session:
        yield session


@output_guardrail(name="no_pineapple")
async def no_pineapple(
    ctx: RunContextWrapper[Any], agent: Any, output: str
) -> GuardrailFunctionOutput:
    hit = "pineapple" in output.lower()
    return GuardrailFunctionOutput(
        output_info={"hit": hit, "length": len(output)}, tripwire_triggered=hit
    )


async def test_run_guardrail_verdict_comes_before_agent_end(mode: str) -> None:
    agent = RealtimeAgent(name="Chef", instructions="Cook.")
    async with session_in(mode, agent, output_guardrails=[no_pineapple]) as session:
        events = await turn(session, "pineapple pizza", "agent_end")
        tripped = [e for e in events if isinstance(e, RealtimeGuardrailTripped)]
        assert tripped, f"no guardrail_tripped before agent_end: {[e.type for e in events]}"
        (result,) = tripped[0].guardrail_results
        # The SDK's OutputGuardrailResult: guardrail, agent, agent_output, output.
        assert result.guardrail.name == "no_pineapple"
        assert result.agent.name == "Chef"
        assert "pineapple" in result.agent_output.lower()
        assert isinstance(result.output, GuardrailFunctionOutput)
        assert result.output.tripwire_triggered is True
        assert result.output.output_info == {"hit": True, "length": len(result.agent_output)}
        assert result.tripwire_triggered is True and result.output_info["hit"] is True


async def test_raw_model_events(mode: str) -> None:
    agent = RealtimeAgent(name="Assistant")
    async with session_in(mode, agent, emit_raw_model_events=True) as session:
        events = await turn(session, "Hello", "agent_end")
        raw = [e for e in events if isinstance(e, RealtimeRawModelEvent)]
        kinds = {e.data.type for e in raw}
        assert {"turn_started", "transcript_delta", "turn_ended"} <= kinds, kinds
        # The server's own events too, as the SDK's model reports them.
        server = [e.data.data for e in raw if e.data.type == "raw_server_event"]  # type: ignore[union-attr]
        assert "response.done" in {d.get("type") for d in server}


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


@function_tool
def get_weather(city: str) -> dict[str, Any]:
    """The weather in a city, as data."""
    return {"city": city, "temp_c": 21, "tags": ["sunny", "dry"]}


@function_tool
def lookup_order(order_id: str) -> Any:
    """An order, as an object the wire cannot carry."""
    return Opaque()


async def test_tool_end_output_is_the_return_value(mode: str) -> None:
    agent = RealtimeAgent(name="Assistant", tools=[get_weather, lookup_order])
    async with session_in(mode, agent) as session:
        events = await turn(session, "get weather in Paris", "tool_end")
        end = events[-1]
        assert isinstance(end, RealtimeToolEnd)
        assert end.output == {"city": "Paris", "temp_c": 21, "tags": ["sunny", "dry"]}
        await read_until(session, "agent_end")
        events = await turn(session, "please lookup order A17", "tool_end")
        end = events[-1]
        assert isinstance(end, RealtimeToolEnd)
        assert end.output == "<opaque>"
        await read_until(session, "agent_end")


# ---------------------------------------------------------------- barge-in

LONG = "Tell me everything about the history of the harbour " * 4


@pytest.mark.parametrize("data_plane", [True, False], ids=["data_plane", "ray_calls"])
async def test_barge_in_truncates_where_the_listener_was(mode: str, data_plane: bool) -> None:
    """The application's tracker stays in its process (actor mode: the handle
    reports it); an interrupt truncates the reply at what was played."""
    if mode == "in_process" and not data_plane:
        pytest.skip("one in-process run is enough")
    tracker = RealtimePlaybackTracker()
    agent = RealtimeAgent(name="Guide")
    config: dict[str, Any] = {"emit_raw_model_events": True, "data_plane": data_plane}
    async with contextlib.AsyncExitStack() as stack:
        url = None
        if mode == "in_process":
            url = (await stack.enter_async_context(LocalModelServer())).url
        runner = RealtimeRunner(agent, config={"execution": mode, **config})  # type: ignore[typeddict-item]
        model_config: dict[str, Any] = {"playback_tracker": tracker}
        if url:
            model_config["url"] = url
        session = await runner.run(model_config=model_config)  # type: ignore[arg-type]
        await stack.enter_async_context(session)
        events = await turn(session, LONG, "audio")
        audio = events[-1]
        assert isinstance(audio, RealtimeAudio)
        received = len(audio.audio.data)
        while received < 300 * 48:  # 300 ms of 24 kHz PCM16 arrived: 200 ms is within it
            more = (await read_until(session, "audio"))[-1]
            assert isinstance(more, RealtimeAudio) and more.item_id == audio.item_id
            received += len(more.audio.data)
        # The listener heard 200 ms, in two pieces, while more audio arrives.
        tracker.on_play_ms(audio.item_id, audio.content_index, 120)
        tracker.on_play_ms(audio.item_id, audio.content_index, 80)
        await session.interrupt()
        events = await read_until(session, "audio_interrupted")
        (interrupted,) = [e for e in events if isinstance(e, RealtimeAudioInterrupted)]
        assert interrupted.item_id == audio.item_id
        truncated: list[dict[str, Any]] = []

        def is_truncated(event: Any) -> bool:
            if isinstance(event, RealtimeRawModelEvent) and event.data.type == "raw_server_event":
                data = event.data.data  # type: ignore[union-attr]
                if data.get("type") == "conversation.item.truncated":
                    truncated.append(data)
                    return True
            return False

        if not any(is_truncated(e) for e in events):

            async def until_truncated() -> None:
                async for event in session:
                    if is_truncated(event):
                        return

            await asyncio.wait_for(until_truncated(), TIMEOUT)
        assert truncated[0]["item_id"] == audio.item_id
        assert truncated[0]["audio_end_ms"] == 200
        # As in-process, the model's reset of the tracker reaches the application's.
        assert tracker.get_state()["current_item_id"] is None
