"""End-to-end tests of in-process sessions over a real loopback WebSocket.

Every test runs ``RealtimeRunner(..., config={"execution": "in_process"})``
against its own :class:`~ray_realtime.local.LocalModelServer`, whose replies
follow fixed rules (``docs/local_model.md``): ``You said: T``, ``say X`` → X,
a tool is called when the text names it, ``Always reply: X`` in the
instructions forces X, and server VAD turns appended audio into a user turn.
No Ray is started here.

Every wait is bounded by ``asyncio.wait_for`` with a multiple of ``UNIT``
(env ``RAY_REALTIME_TEST_UNIT``, default 1 s); conditions are awaited by
reading events or by bounded polling, never by fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pytest

from ray_realtime import (
    AssistantAudio,
    AssistantMessageItem,
    ConfigError,
    GuardrailFunctionOutput,
    InputAudio,
    InputText,
    InputTooLargeError,
    ModelConnectionError,
    RealtimeAgent,
    RealtimeAgentEndEvent,
    RealtimeAgentStartEvent,
    RealtimeAudio,
    RealtimeAudioEnd,
    RealtimeAudioInterrupted,
    RealtimeError,
    RealtimeEventsLost,
    RealtimeGuardrailTripped,
    RealtimeHandoffEvent,
    RealtimeHistoryAdded,
    RealtimeHistoryUpdated,
    RealtimeItem,
    RealtimeRawModelEvent,
    RealtimeRunner,
    RealtimeSession,
    RealtimeSessionEvent,
    RealtimeToolCallItem,
    RealtimeToolEnd,
    RealtimeToolStart,
    RunContextWrapper,
    SessionClosedError,
    ToolContext,
    UserError,
    UserMessageItem,
    function_tool,
    output_guardrail,
    realtime_handoff,
)
from ray_realtime.core.session_core import guardrail_feedback_message
from ray_realtime.local import LocalModelServer

# One unit of time for waits; raise it on a slow machine.
UNIT = float(os.environ.get("RAY_REALTIME_TEST_UNIT", "1.0"))

# The local model's audio: 12.5 ms of reply audio per character, 40 ms chunks,
# PCM16 mono at 24 kHz (48 bytes per ms).
MS_PER_CHAR = 12.5
CHUNK_MS = 40
BYTES_PER_MS = 48
SAMPLE_RATE = 24_000

T = TypeVar("T")
Predicate = Callable[[RealtimeSessionEvent, list[RealtimeSessionEvent]], bool]


# --------------------------------------------------------------------- helpers


@pytest.fixture
async def server() -> AsyncIterator[LocalModelServer]:
    """A local model server sending audio as fast as it can."""
    async with LocalModelServer() as srv:
        yield srv


@pytest.fixture
async def paced_server() -> AsyncIterator[LocalModelServer]:
    """A local model server sending audio in real time (one 40 ms chunk per 40 ms)."""
    async with LocalModelServer(pace_audio=True) as srv:
        yield srv


def make_runner(agent: RealtimeAgent[Any], **config: Any) -> RealtimeRunner:
    """An in-process runner (never Ray) with extra run config keys."""
    return RealtimeRunner(agent, config={"execution": "in_process", **config})  # type: ignore[typeddict-item]


@contextlib.asynccontextmanager
async def open_session(
    agent: RealtimeAgent[Any],
    srv: LocalModelServer,
    *,
    context: Any = None,
    model_config: dict[str, Any] | None = None,
    **config: Any,
) -> AsyncIterator[RealtimeSession]:
    """An entered session on ``srv``; closed (with its tasks checked) on exit."""
    runner = make_runner(agent, **config)
    session = await runner.run(
        context=context, model_config={"url": srv.url, **(model_config or {})}
    )
    await within(session.enter())
    try:
        yield session
    finally:
        await within(session.close())
    driver = session._backend.driver  # type: ignore[attr-defined]
    assert driver.closed
    assert not driver._tasks, f"tasks left after close: {driver._tasks}"


async def within(awaitable: Awaitable[T], units: float = 5.0) -> T:
    """``await awaitable``, failing the test (TimeoutError) after ``units`` units."""
    return await asyncio.wait_for(awaitable, units * UNIT)


async def collect(
    session: RealtimeSession, until: Predicate, *, timeout: float = 5.0
) -> list[RealtimeSessionEvent]:
    """Events from ``async for event in session`` up to and including the one
    ``until(event, events_so_far)`` accepts; fails the test after ``timeout`` units."""
    events: list[RealtimeSessionEvent] = []

    async def run() -> None:
        async with contextlib.aclosing(aiter(session)) as stream:
            async for event in stream:
                events.append(event)
                if until(event, events):
                    return
        raise AssertionError(f"the session ended first; saw {[e.type for e in events]}")

    try:
        await asyncio.wait_for(run(), timeout * UNIT)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout * UNIT:g} s; saw {[e.type for e in events]}")
    return events


async def drain(session: RealtimeSession) -> list[RealtimeSessionEvent]:
    """Every event left, until the iteration ends (the session closed)."""
    return [e async for e in session]


def nth(event_type: str, count: int = 1) -> Predicate:
    """Stop at the ``count``-th event of ``event_type``."""

    def until(event: RealtimeSessionEvent, events: list[RealtimeSessionEvent]) -> bool:
        return event.type == event_type and sum(e.type == event_type for e in events) >= count

    return until


def of_type(events: list[RealtimeSessionEvent], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def transcript(item: RealtimeItem) -> str:
    """The assistant transcript (or text) of a history item."""
    assert isinstance(item, AssistantMessageItem), item
    return "".join(
        (p.transcript if isinstance(p, AssistantAudio) else p.text) or "" for p in item.content
    )


def assistant_items(history: list[RealtimeItem]) -> list[AssistantMessageItem]:
    return [i for i in history if isinstance(i, AssistantMessageItem)]


def user_texts(history: list[RealtimeItem]) -> list[str]:
    return [
        " ".join(p.text or "" for p in item.content if isinstance(p, InputText))
        for item in history
        if isinstance(item, UserMessageItem)
    ]


def full_chunks(reply: str) -> int:
    """How many 40 ms audio chunks the local model sends for ``reply``."""
    return math.ceil(max(CHUNK_MS, len(reply) * MS_PER_CHAR) / CHUNK_MS)


async def poll(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) until ``condition()`` holds."""

    async def run() -> None:
        # Bounded polling (the caller's timeout), for state with no event to await.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    await within(run(), timeout)


async def say_and_expect(session: RealtimeSession, text: str) -> str:
    """Send ``say text`` and return the reply of that turn."""
    await within(session.send_message(f"say {text}"))
    await collect(session, nth("agent_end"))
    return transcript(assistant_items(session.history)[-1])


async def wait_for_logged(session: RealtimeSession, event_type: str) -> Any:
    """Poll (bounded) ``read_events(after_seq=0)`` until the log holds an event
    of ``event_type``; returns that batch. Does not move the handle's position."""

    async def run() -> Any:
        while True:
            batch = await within(session.read_events(after_seq=0, timeout=0))
            if any(e.type == event_type for e in batch.events):
                return batch
            await asyncio.sleep(0.01)

    return await within(run())


def tone_then_silence(tone_s: float, silence_s: float) -> bytes:
    """A 220 Hz tone at 0.4 of full scale, then silence, as PCM16 24 kHz."""
    t = np.arange(int(tone_s * SAMPLE_RATE)) / SAMPLE_RATE
    voice = (0.4 * 32767 * np.sin(2 * np.pi * 220 * t)).astype("<i2")
    quiet = np.zeros(int(silence_s * SAMPLE_RATE), dtype="<i2")
    return np.concatenate([voice, quiet]).tobytes()


# ------------------------------------------------------------------- text turn


async def test_text_turn_events_audio_and_history(server: LocalModelServer) -> None:
    agent = RealtimeAgent(name="Assistant", instructions="Be brief.")
    async with open_session(agent, server) as session:
        await within(session.send_message("hello there"))
        events = await collect(session, nth("agent_end"))

    reply = "You said: hello there"
    kinds = [e.type for e in events]
    assert kinds[-1] == "agent_end"
    start = of_type(events, RealtimeAgentStartEvent)
    end = of_type(events, RealtimeAgentEndEvent)
    assert [e.agent.name for e in start] == ["Assistant"]
    assert [e.agent.name for e in end] == ["Assistant"]

    audio = of_type(events, RealtimeAudio)
    assert len(audio) == full_chunks(reply)
    for chunk in audio:
        assert isinstance(chunk.audio.data, bytes)
        assert len(chunk.audio.data) > 0 and len(chunk.audio.data) % 2 == 0  # PCM16
    total = sum(len(chunk.audio.data) for chunk in audio)
    assert total == round(len(reply) * MS_PER_CHAR * SAMPLE_RATE / 1000) * 2
    audio_end = of_type(events, RealtimeAudioEnd)
    assert len(audio_end) == 1
    item_id = audio_end[0].item_id
    assert {chunk.item_id for chunk in audio} == {item_id}
    # agent_start < every audio < audio_end < agent_end
    first_audio = kinds.index("audio")
    last_audio = len(kinds) - 1 - kinds[::-1].index("audio")
    assert kinds.index("agent_start") < first_audio
    assert last_audio < kinds.index("audio_end") < kinds.index("agent_end")

    added = of_type(events, RealtimeHistoryAdded)
    assert isinstance(added[0].item, UserMessageItem)
    assert added[0].item.content == [InputText(text="hello there")]
    assert any(
        isinstance(e.item, AssistantMessageItem) and e.item.item_id == item_id for e in added
    )
    updated = of_type(events, RealtimeHistoryUpdated)
    assert updated, "no history_updated event"
    # The transcript reaches history through the events too.
    last_history = updated[-1].history
    assert transcript(next(i for i in last_history if i.item_id == item_id)) == reply

    history = session.history
    assert [type(i) for i in history] == [UserMessageItem, AssistantMessageItem]
    user, assistant = history
    assert user.content == [InputText(text="hello there")]
    assert assistant.item_id == item_id
    assert assistant.previous_item_id == user.item_id
    assert assistant.status == "completed"
    assert transcript(assistant) == reply


async def test_two_turns_in_one_session(server: LocalModelServer) -> None:
    agent = RealtimeAgent(name="Assistant")
    async with open_session(agent, server) as session:
        assert await say_and_expect(session, "one") == "one"
        assert await say_and_expect(session, "two") == "two"
        assert user_texts(session.history) == ["say one", "say two"]
        assert [transcript(i) for i in assistant_items(session.history)] == ["one", "two"]


# ----------------------------------------------------------------------- tools


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: The city.
    """
    return f"sunny in {city}"


@function_tool
async def lookup_order(order_id: str) -> str:
    """Look up an order by id."""
    await asyncio.sleep(0)
    return f"order {order_id} shipped"


@function_tool
def whoami(ctx: RunContextWrapper[Any]) -> str:
    """Who is calling, from the run context."""
    assert isinstance(ctx, ToolContext)
    assert ctx.tool_name == "whoami"
    return f"user {ctx.context['user']}"


@function_tool
def explode() -> str:
    """A tool that always fails."""
    raise ValueError("kaboom")


async def run_tool_turn(session: RealtimeSession, text: str) -> list[RealtimeSessionEvent]:
    """A user message that calls a tool: the call's response, then the reply."""
    await within(session.send_message(text))
    return await collect(session, nth("agent_end", 2))


@pytest.mark.parametrize(
    ("message", "tool", "arguments", "output"),
    [
        ("get weather in Paris", "get_weather", {"city": "Paris"}, "sunny in Paris"),
        ("please lookup order A17", "lookup_order", {"order_id": "A17"}, "order A17 shipped"),
        ("whoami", "whoami", {}, "user ada"),
    ],
    ids=["sync", "async", "context"],
)
async def test_tool_turn(
    server: LocalModelServer, message: str, tool: str, arguments: dict[str, Any], output: str
) -> None:
    agent = RealtimeAgent(name="Assistant", tools=[get_weather, lookup_order, whoami])
    async with open_session(agent, server, context={"user": "ada"}) as session:
        events = await run_tool_turn(session, message)

        starts = of_type(events, RealtimeToolStart)
        ends = of_type(events, RealtimeToolEnd)
        assert [(s.tool.name, json.loads(s.arguments)) for s in starts] == [(tool, arguments)]
        assert [(e.tool.name, e.output) for e in ends] == [(tool, output)]
        assert starts[0].agent.name == ends[0].agent.name == "Assistant"
        assert starts[0].call_id and starts[0].call_id == ends[0].call_id
        assert json.loads(ends[0].arguments) == arguments
        assert not of_type(events, RealtimeError)
        kinds = [e.type for e in events]
        assert kinds.index("tool_start") < kinds.index("tool_end")

        history = session.history
        calls = [i for i in history if isinstance(i, RealtimeToolCallItem)]
        assert [(c.name, c.output, c.status) for c in calls] == [(tool, output, "completed")]
        reply = transcript(assistant_items(history)[-1])
        assert reply == f"The tool {tool} returned: {output}"


async def test_raising_tool_reports_error_and_session_continues(server: LocalModelServer) -> None:
    agent = RealtimeAgent(name="Assistant", tools=[explode])
    async with open_session(agent, server) as session:
        events = await run_tool_turn(session, "explode now")

        errors = of_type(events, RealtimeError)
        assert len(errors) == 1
        assert errors[0].error["type"] == "tool_error"
        assert errors[0].error["tool"] == "explode"
        assert "kaboom" in errors[0].error["message"]
        (end,) = of_type(events, RealtimeToolEnd)
        assert end.tool.name == "explode"
        # The model gets the SDK's default text; readers got the exception above.
        assert end.output == "An error occurred while running the tool. Please try again."
        kinds = [e.type for e in events]
        assert kinds.index("error") < kinds.index("tool_end")
        # The model was told: its reply quotes the error text.
        reply = transcript(assistant_items(session.history)[-1])
        assert reply.startswith("The tool explode returned: An error occurred")

        assert await say_and_expect(session, "still alive") == "still alive"


async def test_tool_timeout_reports_error_and_session_continues(
    server: LocalModelServer,
) -> None:
    state: dict[str, Any] = {"cancelled": False}

    @function_tool(timeout_seconds=0.2)
    async def slow_tool() -> str:
        """Sleeps far past its timeout."""
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise
        return "never"

    agent = RealtimeAgent(name="Assistant", tools=[slow_tool])
    async with open_session(agent, server) as session:
        events = await run_tool_turn(session, "run slow tool")

        (error,) = of_type(events, RealtimeError)
        assert error.error["type"] == "tool_error"
        (end,) = of_type(events, RealtimeToolEnd)
        assert end.tool.name == "slow_tool"
        assert re.search(r"time(d)? ?out", end.output, re.IGNORECASE), end.output
        assert "0.2" in end.output
        assert state["cancelled"], "the timed-out tool coroutine was not cancelled"
        assert await say_and_expect(session, "next turn") == "next turn"


def _ordering_tools(record: list[str]) -> list[Any]:
    @function_tool
    async def slow_first() -> str:
        """Runs long."""
        record.append("start slow_first")
        await asyncio.sleep(0.3 * UNIT)
        record.append("end slow_first")
        return "first done"

    @function_tool
    async def fast_second() -> str:
        """Runs at once."""
        record.append("start fast_second")
        await asyncio.sleep(0)
        record.append("end fast_second")
        return "second done"

    return [slow_first, fast_second]


async def _two_calls(session: RealtimeSession) -> list[RealtimeSessionEvent]:
    await within(session.send_message("run slow first"))
    # The second message follows the first call, so the model calls again.
    events = await collect(session, nth("tool_start"))
    await within(session.send_message("run fast second"))
    events += await collect(session, nth("tool_end", 2))
    return events


async def test_sequential_tool_calls_run_in_order(server: LocalModelServer) -> None:
    record: list[str] = []
    agent = RealtimeAgent(name="Assistant", tools=_ordering_tools(record))
    async with open_session(agent, server, async_tool_calls=False) as session:
        events = await _two_calls(session)
        assert [e.tool.name for e in of_type(events, RealtimeToolStart)] == [
            "slow_first",
            "fast_second",
        ]
    assert record == ["start slow_first", "end slow_first", "start fast_second", "end fast_second"]


async def test_concurrent_tool_calls_overlap(server: LocalModelServer) -> None:
    """The contrast to the sequential test: by default a fast call overtakes a slow one."""
    record: list[str] = []
    agent = RealtimeAgent(name="Assistant", tools=_ordering_tools(record))
    async with open_session(agent, server) as session:
        await _two_calls(session)
    assert record == ["start slow_first", "start fast_second", "end fast_second", "end slow_first"]


# -------------------------------------------------------------------- handoffs


async def test_handoff_switches_agent_before_the_reply(server: LocalModelServer) -> None:
    calls: list[Any] = []

    def on_handoff(ctx: RunContextWrapper[Any]) -> None:
        calls.append(ctx.context)

    billing = RealtimeAgent(name="Billing Agent", instructions="Always reply: billing here")
    agent = RealtimeAgent(
        name="Assistant",
        instructions="You are helpful.",
        handoffs=[realtime_handoff(billing, on_handoff=on_handoff)],
    )
    async with open_session(
        agent, server, context={"user": "ada"}, emit_raw_model_events=True
    ) as session:
        await within(session.send_message("please transfer to billing agent"))
        events = await collect(session, nth("agent_end", 2))
        # The session now belongs to the billing agent: its next reply is forced.
        await within(session.send_message("hello?"))
        events += await collect(session, nth("agent_end"))

    assert calls == [{"user": "ada"}]
    (handoff,) = of_type(events, RealtimeHandoffEvent)
    assert handoff.from_agent.name == "Assistant"
    assert handoff.to_agent.name == "Billing Agent"
    assert not of_type(events, RealtimeToolStart)  # a handoff is not a tool call
    assert [e.agent.name for e in of_type(events, RealtimeAgentStartEvent)] == [
        "Assistant",
        "Billing Agent",
        "Billing Agent",
    ]
    assert [transcript(i) for i in assistant_items(session.history)] == [
        "billing here",
        "billing here",
    ]
    calls_in_history = [i for i in session.history if isinstance(i, RealtimeToolCallItem)]
    assert [c.name for c in calls_in_history] == ["transfer_to_billing_agent"]
    assert calls_in_history[0].output is not None and "Billing Agent" in calls_in_history[0].output

    # On the wire: the server confirmed the billing instructions before it
    # received the handoff's tool output.
    raw = [e.data for e in of_type(events, RealtimeRawModelEvent)]
    raw_types = [getattr(d, "type", None) for d in raw]
    assert "function_call" in raw_types

    def index_of(pred: Callable[[dict[str, Any]], bool]) -> int:
        for i, d in enumerate(raw):
            data = getattr(d, "data", None)
            if isinstance(data, dict) and pred(data):
                return i
        raise AssertionError("raw event not found")

    update_at = index_of(
        lambda d: (
            d.get("type") == "session.updated"
            and d["session"].get("instructions") == "Always reply: billing here"
        )
    )
    output_at = index_of(
        lambda d: (
            d.get("type") == "conversation.item.added"
            and d["item"].get("type") == "function_call_output"
        )
    )
    assert update_at < output_at


# ------------------------------------------------------------------ guardrails


def word_filter_guardrail(checked: list[str], delay: float) -> Any:
    """An output guardrail named ``word_filter`` tripping on "secret"; it
    records every text it checks and takes ``delay`` seconds."""

    @output_guardrail(name="word_filter")
    async def word_filter(
        ctx: RunContextWrapper[Any], agent: Any, text: str
    ) -> GuardrailFunctionOutput:
        checked.append(text)
        await asyncio.sleep(delay)
        found = "secret" in text.lower()
        return GuardrailFunctionOutput(output_info={"found": found}, tripwire_triggered=found)

    return word_filter


TEXT_ONLY = {"output_modalities": ["text"]}


async def test_output_guardrail_trips_once_per_response_and_feeds_back(
    server: LocalModelServer,
) -> None:
    """Text replies: every guarded round (and the final check) of the first
    response sees the word, yet only one trip acts; the model gets the
    feedback message and answers it."""
    checked: list[str] = []
    reply = "the secret is out and now we talk"  # 33 characters: 4 rounds + final
    agent = RealtimeAgent(
        name="Assistant", output_guardrails=[word_filter_guardrail(checked, 0.1 * UNIT)]
    )
    async with open_session(
        agent,
        server,
        guardrails_settings={"debounce_text_length": 10},
        model_settings=TEXT_ONLY,
    ) as session:
        await within(session.send_message(f"say {reply}"))
        events = await collect(session, nth("agent_end", 2))
        feedback = guardrail_feedback_message(["word_filter"])
        # Let every round still in flight finish (bounded); none may trip again.
        driver = session._backend.driver  # type: ignore[attr-defined]
        await poll(lambda: driver._guardrail_rounds == 0)
        events += (await within(session.read_events())).events

    tripped = of_type(events, RealtimeGuardrailTripped)
    assert len(tripped) == 1, f"{len(tripped)} trips; rounds saw {checked}"
    (result,) = tripped[0].guardrail_results
    assert result.guardrail.name == "word_filter"
    assert result.agent.name == "Assistant"
    assert result.tripwire_triggered
    assert result.output_info == {"found": True}
    assert "secret" in tripped[0].message
    assert reply.startswith(tripped[0].message)
    assert sum("secret" in text for text in checked) >= 2, checked

    assert user_texts(session.history) == [f"say {reply}", feedback]
    first, second = assistant_items(session.history)
    assert transcript(first) == reply
    assert transcript(second) == f"You said: {feedback}"


async def test_output_guardrail_final_check_runs_when_rounds_are_busy(
    server: LocalModelServer,
) -> None:
    checked: list[str] = []
    reply = (
        "this reply is long enough to have more than eight guarded rounds "
        "in flight and ends with the secret"
    )
    agent = RealtimeAgent(
        name="Assistant", output_guardrails=[word_filter_guardrail(checked, 0.3 * UNIT)]
    )
    async with open_session(
        agent,
        server,
        guardrails_settings={"debounce_text_length": 10},
        model_settings=TEXT_ONLY,
    ) as session:
        await within(session.send_message(f"say {reply}"))
        events = await collect(session, nth("guardrail_tripped"), timeout=1.5)
    assert len(checked[-1]) == len(reply)
    assert of_type(events, RealtimeGuardrailTripped)[0].message == reply


async def test_output_guardrail_trips_during_audio(paced_server: LocalModelServer) -> None:
    checked: list[str] = []
    reply = "the secret is out now and I will keep talking about it for a while"
    agent = RealtimeAgent(name="Assistant", output_guardrails=[word_filter_guardrail(checked, 0.0)])
    async with open_session(
        agent, paced_server, guardrails_settings={"debounce_text_length": 10}
    ) as session:
        await within(session.send_message(f"say {reply}"))
        events = await collect(session, nth("guardrail_tripped"))
    (tripped,) = of_type(events, RealtimeGuardrailTripped)
    assert [r.guardrail.name for r in tripped.guardrail_results] == ["word_filter"]
    assert "secret" in tripped.message and reply.startswith(tripped.message)
    # It tripped mid-reply, on the first round that saw the word.
    assert len(tripped.message) < len(reply)
    assert tripped.message == next(text for text in checked if "secret" in text)


async def test_output_guardrail_interrupts_audio_and_feeds_back(
    paced_server: LocalModelServer,
) -> None:
    checked: list[str] = []
    reply = (
        "the secret is out now and I will keep talking about it for quite a while "
        "so that the reply is long enough to be cut"
    )
    agent = RealtimeAgent(
        name="Assistant", output_guardrails=[word_filter_guardrail(checked, 0.1 * UNIT)]
    )
    async with open_session(
        agent, paced_server, guardrails_settings={"debounce_text_length": 10}
    ) as session:
        await within(session.send_message(f"say {reply}"))
        events = await collect(session, nth("agent_end", 2), timeout=4)

    tripped = of_type(events, RealtimeGuardrailTripped)
    assert len(tripped) == 1, f"{len(tripped)} trips; rounds saw {checked}"
    assert "secret" in tripped[0].message

    first_item = assistant_items(session.history)[0]
    kinds = [e.type for e in events]
    trip_at = kinds.index("guardrail_tripped")
    assert trip_at < kinds.index("agent_end")
    interrupted = of_type(events, RealtimeAudioInterrupted)
    assert [e.item_id for e in interrupted] == [first_item.item_id]
    assert trip_at < kinds.index("audio_interrupted")
    first_audio = [e for e in of_type(events, RealtimeAudio) if e.item_id == first_item.item_id]
    assert 0 < len(first_audio) < full_chunks(reply)
    assert first_item.status == "incomplete"
    assert len(transcript(first_item)) < len(reply)

    # The feedback message reached the model, and it answered it.
    feedback = guardrail_feedback_message(["word_filter"])
    assert user_texts(session.history) == [f"say {reply}", feedback]
    second_item = assistant_items(session.history)[1]
    assert transcript(second_item) == f"You said: {feedback}"
    assert second_item.status == "completed"


# -------------------------------------------------------------------- audio in


async def test_spoken_turn_found_by_vad(server: LocalModelServer) -> None:
    agent = RealtimeAgent(name="Assistant")
    audio = tone_then_silence(0.6, 0.9)
    chunk = CHUNK_MS * BYTES_PER_MS  # 40 ms
    async with open_session(
        agent,
        server,
        model_settings={"input_audio_transcription": {"model": "gpt-4o-transcribe"}},
    ) as session:
        for i in range(0, len(audio), chunk):
            await within(session.send_audio(audio[i : i + chunk]))
        events = await collect(session, nth("agent_end"))
        # The transcription may come after the reply; wait (bounded) for it.
        await poll(
            lambda: any(
                isinstance(p, InputAudio) and p.transcript
                for i in session.history
                if isinstance(i, UserMessageItem)
                for p in i.content
            )
        )
        history = session.history

    user_added = [
        e.item for e in of_type(events, RealtimeHistoryAdded) if isinstance(e.item, UserMessageItem)
    ]
    assert len(user_added) == 1
    assert [type(p) for p in user_added[0].content] == [InputAudio]
    (reply_item,) = assistant_items(history)
    match = re.fullmatch(r"I heard (\d+) ms of audio\.", transcript(reply_item))
    assert match, transcript(reply_item)
    heard = int(match.group(1))
    # 0.6 s of tone plus the 500 ms of silence that ends the turn (prefix
    # padding cannot reach before the start of the audio).
    assert heard == 600 + 500
    (user,) = [i for i in history if isinstance(i, UserMessageItem)]
    assert user.item_id == user_added[0].item_id
    assert [p.transcript for p in user.content if isinstance(p, InputAudio)] == [
        f"<speech {heard} ms>"
    ]


# ------------------------------------------------------------------- interrupt


async def test_interrupt_cuts_the_reply(paced_server: LocalModelServer) -> None:
    reply = "this is a long reply that will be interrupted well before it can finish speaking"
    agent = RealtimeAgent(name="Assistant")
    async with open_session(agent, paced_server) as session:
        await within(session.send_message(f"say {reply}"))
        events = await collect(session, nth("audio"))
        item_id = events[-1].item_id  # type: ignore[union-attr]
        await within(session.interrupt(), 1)
        events += await collect(session, nth("agent_end"))
        history = session.history
        # The session goes on after an interruption.
        assert await say_and_expect(session, "after") == "after"

    kinds = [e.type for e in events]
    interrupted = of_type(events, RealtimeAudioInterrupted)
    assert [e.item_id for e in interrupted] == [item_id]
    cut = kinds.index("audio_interrupted")
    late = [e for e in events[cut:] if isinstance(e, (RealtimeAudio, RealtimeAudioEnd))]
    assert not late, f"audio events after the interruption: {late}"
    chunks = [e for e in events if isinstance(e, RealtimeAudio) and e.item_id == item_id]
    assert 0 < len(chunks) < full_chunks(reply)
    (item,) = assistant_items(history)
    assert item.item_id == item_id
    said = transcript(item)
    assert reply.startswith(said)
    assert item.status == "incomplete"
    assert len(said) < len(reply)


# ------------------------------------------------------------------- bad input


async def test_message_over_limit_is_refused_and_session_goes_on(
    server: LocalModelServer,
) -> None:
    agent = RealtimeAgent(name="Assistant")
    async with open_session(agent, server, max_message_chars=50) as session:
        with pytest.raises(InputTooLargeError) as info:
            await within(session.send_message("x" * 51))
        assert (info.value.size, info.value.limit) == (51, 50)
        with pytest.raises(InputTooLargeError):
            await within(
                session.send_message(
                    {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "y" * 51}],
                    }
                )
            )
        assert await say_and_expect(session, "still here") == "still here"
        assert user_texts(session.history) == ["say still here"]


async def test_bad_audio_is_refused(server: LocalModelServer) -> None:
    agent = RealtimeAgent(name="Assistant")
    async with open_session(agent, server, max_audio_chunk_bytes=1000) as session:
        with pytest.raises(UserError) as info:
            await within(session.send_audio("not bytes"))  # type: ignore[arg-type]
        assert not isinstance(info.value, InputTooLargeError)
        with pytest.raises(InputTooLargeError) as too_big:
            await within(session.send_audio(b"\0" * 1002))
        assert (too_big.value.size, too_big.value.limit) == (1002, 1000)
        await within(session.send_audio(b"\0" * 1000))  # at the limit: fine
        assert await say_and_expect(session, "ok") == "ok"


async def test_commands_after_close_raise(server: LocalModelServer) -> None:
    agent = RealtimeAgent(name="Assistant")
    async with open_session(agent, server) as session:
        await within(session.close())
        await within(session.close())  # idempotent
        with pytest.raises(SessionClosedError) as info:
            await within(session.send_message("hello"))
        assert info.value.session_id == session.session_id
        with pytest.raises(SessionClosedError):
            await within(session.send_audio(b"\0\0"))
        with pytest.raises(SessionClosedError):
            await within(session.interrupt())


def test_unknown_config_key_fails_at_construction() -> None:
    agent = RealtimeAgent(name="Assistant")
    with pytest.raises(ConfigError, match="no_such_key"):
        RealtimeRunner(agent, config={"execution": "in_process", "no_such_key": 1})  # type: ignore[typeddict-unknown-key]


async def test_iteration_ends_after_close(server: LocalModelServer) -> None:
    agent = RealtimeAgent(name="Assistant")
    async with open_session(agent, server) as session:
        await within(session.send_message("say hi"))
        seen: list[str] = []

        async def read_all() -> None:
            async for event in session:
                seen.append(event.type)

        reader = asyncio.create_task(read_all())
        await poll(lambda: "agent_end" in seen)
        assert not reader.done()  # an open session keeps its reader waiting
        await within(session.close())
        await within(reader, 2)
        # A new iteration of a closed session ends too, at once.
        assert await within(drain(session)) == []


async def test_unreachable_model_fails_entry_and_leaves_no_task() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port now.
    before = asyncio.all_tasks()
    runner = make_runner(RealtimeAgent(name="Assistant"))
    session = await runner.run(model_config={"url": f"ws://127.0.0.1:{port}/v1/realtime"})
    with pytest.raises(ModelConnectionError, match=str(port)):
        await within(session.__aenter__())
    driver = session._backend.driver  # type: ignore[attr-defined]
    assert driver.closed

    def settled() -> bool:
        others = asyncio.all_tasks() - before - {asyncio.current_task()}
        return not driver._tasks and not others

    # Nothing keeps running. (The driver spawns a close() task on the
    # "disconnected" status of the failed connect; it returns on its first
    # step, so allow it a few loop turns.)
    await poll(settled, timeout=1)
    with pytest.raises(SessionClosedError):
        await within(session.send_message("hello"))
    with pytest.raises(SessionClosedError):
        await within(session.send_audio(b"\0\0"))
    # Iteration ends at once; at most the connection error was logged.
    leftovers = await within(drain(session))
    assert all(isinstance(e, RealtimeError) for e in leftovers), leftovers


# ---------------------------------------------------------------- event reading


async def test_read_events_does_not_move_the_iterator(server: LocalModelServer) -> None:
    agent = RealtimeAgent(name="Assistant")
    async with open_session(agent, server) as session:
        await within(session.send_message("hello"))
        batch = await wait_for_logged(session, "agent_end")
        assert any(e.type == "agent_end" for e in batch.events)
        assert batch.missed == 0 and not batch.closed
        assert batch.last_seq == len(batch.events)
        assert session.last_seq == 0

        head = await collect(session, nth("agent_start"))
        cursor = session.last_seq
        assert cursor == len(head)
        assert head == batch.events[:cursor]

        again = await within(session.read_events(after_seq=0))
        assert again.events == batch.events
        assert session.last_seq == cursor
        mine = await within(session.read_events())  # default: from this handle's position
        assert mine.events == batch.events[cursor:]
        assert session.last_seq == cursor

        rest = await collect(session, nth("agent_end"))
        assert rest == batch.events[cursor:]


async def test_slow_reader_gets_events_lost_and_log_stays_bounded(
    server: LocalModelServer,
) -> None:
    agent = RealtimeAgent(name="Assistant")
    async with open_session(agent, server, event_log_size=16) as session:
        log = session._backend.driver._log  # type: ignore[attr-defined]
        sizes: list[int] = []
        append = log.append

        def tracking_append(event: Any) -> int:
            seq = append(event)
            sizes.append(len(log))
            return seq

        log.append = tracking_append
        await within(session.send_message("say " + "many words to speak " * 8))
        await wait_for_logged(session, "agent_end")
        produced = log.last_seq
        assert produced > 3 * 16

        events = await collect(session, nth("agent_end"))
        assert isinstance(events[0], RealtimeEventsLost)
        assert events[0].missed == produced - 16
        assert len(events) == 1 + 16
        assert session.last_seq == produced
        assert max(sizes) == 16 and len(log) == 16
        # The session goes on after the loss.
        assert await say_and_expect(session, "fine") == "fine"
