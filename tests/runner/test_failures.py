"""Failures never hide in logs: every task a session spawns that fails tells
the readers with an ``error`` event and mends the turn, so the turn ends
(``agent_end`` arrives) and the next turn works.

One test per kind of spawned work: a tool call, a handoff, a round of output
guardrails, the model's listener dispatch and its response requests. Real
parts throughout: an in-process session over a loopback WebSocket to the local
model server. Where a seam's contract says "must not raise" (tool and
guardrail executors), a small executor that breaks it stands in for a broken
one, to prove the session survives even that. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from ray_realtime import (
    GuardrailFunctionOutput,
    InputTooLargeError,
    RealtimeAgent,
    RealtimeError,
    RealtimeHandoffEvent,
    RealtimeSession,
    RealtimeToolCallItem,
    RealtimeToolEnd,
    function_tool,
    output_guardrail,
    realtime_handoff,
)
from ray_realtime.local import LocalModelServer
from ray_realtime.model.interface import RealtimeModelListener
from ray_realtime.model.openai_ws import OpenAIRealtimeWebSocketModel
from ray_realtime.runner.session import InProcessBackend
from ray_realtime.session.driver import SessionDriver
from ray_realtime.session.execution import GuardrailRound, ToolOutcome
from ray_realtime.types import model_events as me
from ray_realtime.types.model_inputs import RealtimeModelSendRawMessage, RealtimeModelSendUserInput
from tests.runner.test_e2e_in_process import (
    UNIT,
    assistant_items,
    collect,
    nth,
    of_type,
    open_session,
    run_tool_turn,
    say_and_expect,
    transcript,
    within,
)

# Over the protocol's 15 MiB limit of one client event.
HUGE = 16 << 20


@pytest.fixture
async def server() -> AsyncIterator[LocalModelServer]:
    """A local model server sending audio as fast as it can."""
    async with LocalModelServer() as srv:
        yield srv


def errors_of(events: list[Any], kind: str) -> list[dict[str, Any]]:
    return [e.error for e in of_type(events, RealtimeError) if e.error.get("type") == kind]


async def open_driver_session(
    agent: RealtimeAgent[Any], srv: LocalModelServer, **executors: Any
) -> RealtimeSession:
    """An entered in-process session whose driver has the given executors."""
    driver = SessionDriver(
        agent=agent,
        model=OpenAIRealtimeWebSocketModel(),
        model_config={"url": srv.url},
        **executors,
    )
    return await within(RealtimeSession(InProcessBackend(driver)).enter())


# ----------------------------------------------------------------- tool calls


@function_tool
def dump_everything() -> str:
    """Returns far more than the model can take."""
    return "x" * HUGE


async def test_tool_output_over_the_protocol_limit_is_replaced_and_the_turn_ends(
    server: LocalModelServer,
) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Assistant", tools=[dump_everything])
    async with open_session(agent, server) as session:
        # The call's response, then the reply to the replacement output.
        events = await run_tool_turn(session, "please dump everything")

        (error,) = errors_of(events, "model_send_failed")
        assert error["tool"] == "dump_everything"
        assert error["input"] == "send_tool_output"
        assert "InputTooLargeError" in error["message"]
        (end,) = of_type(events, RealtimeToolEnd)
        assert len(end.output) == HUGE  # readers see what the tool returned
        # The model got a short error output instead, and answered it.
        (call,) = [i for i in session.history if isinstance(i, RealtimeToolCallItem)]
        assert call.output is not None and len(call.output) < 1000
        assert "could not be delivered" in call.output
        reply = transcript(assistant_items(session.history)[-1])
        assert reply.startswith("The tool dump_everything returned: Error:")

        assert await say_and_expect(session, "still here") == "still here"


class BrokenToolExecutor:
    """A tool executor breaking its "must not raise" contract."""

    async def run_tool(self, agent: Any, tool: Any, **kwargs: Any) -> ToolOutcome:
        raise RuntimeError("the tool pool fell over")


async def test_a_failing_tool_task_answers_the_call_with_its_error(
    server: LocalModelServer,
) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Assistant", tools=[dump_everything])
    session = await open_driver_session(agent, server, tool_executor=BrokenToolExecutor())
    async with session:
        events = await run_tool_turn(session, "please dump everything")

        (error,) = errors_of(events, "tool_error")
        assert "the tool pool fell over" in error["message"]
        assert error["call_id"]
        (end,) = of_type(events, RealtimeToolEnd)
        assert "the tool pool fell over" in end.output
        reply = transcript(assistant_items(session.history)[-1])
        assert reply.startswith("The tool dump_everything returned: Error:")
        assert await say_and_expect(session, "still here") == "still here"


# ------------------------------------------------------------------- handoffs


async def test_a_handoff_whose_session_update_is_refused_still_ends_the_turn(
    server: LocalModelServer,
) -> None:
    # The new agent's instructions are over the protocol's limit, so its
    # session.update cannot be sent from the handoff task.
    billing: RealtimeAgent[Any] = RealtimeAgent(name="Billing Agent", instructions="y" * HUGE)
    agent: RealtimeAgent[Any] = RealtimeAgent(
        name="Assistant", handoffs=[realtime_handoff(billing)]
    )
    async with open_session(agent, server) as session:
        await within(session.send_message("please transfer to billing agent"))
        events = await collect(session, nth("agent_end", 2))

        (error,) = errors_of(events, "model_send_failed")
        assert error["input"] == "send_session_update"
        assert "InputTooLargeError" in error["message"]
        assert len(of_type(events, RealtimeHandoffEvent)) == 1
        # The handoff's output still went out and the model answered it.
        (call,) = [i for i in session.history if isinstance(i, RealtimeToolCallItem)]
        assert call.output is not None and "Billing Agent" in call.output

        assert await say_and_expect(session, "still here") == "still here"


# ----------------------------------------------------------------- guardrails


@output_guardrail
def ambiguous_guardrail(ctx: Any, agent: Any, text: str) -> GuardrailFunctionOutput:
    """A guardrail whose tripwire has no single truth value (a numpy array)."""
    ambiguous: Any = np.array([True, False])
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered=ambiguous)


async def test_a_guardrail_with_an_unusable_result_is_reported(
    server: LocalModelServer,
) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(
        name="Assistant", output_guardrails=[ambiguous_guardrail]
    )
    async with open_session(agent, server, guardrails_settings={"debounce_text_length": 5}) as s:
        await within(s.send_message("say a long enough reply"))
        events = await collect(s, nth("agent_end"))
        # Rounds may end after agent_end: read until the final round's report.
        if not errors_of(events, "guardrail_error"):
            events += await collect(s, lambda e, _: e.type == "error")
        errors = errors_of(events, "guardrail_error")
        assert errors and "ambiguous_guardrail" in errors[0]["message"]
        assert "unusable result" in errors[0]["message"]
        assert await say_and_expect(s, "still here") == "still here"


class BrokenGuardrailExecutor:
    """A guardrail executor breaking its "must not raise" contract."""

    async def run_guardrails(self, agent: Any, guardrails: Any, **kwargs: Any) -> GuardrailRound:
        raise RuntimeError("the guardrail pool fell over")


async def test_a_failing_guardrail_task_is_reported(server: LocalModelServer) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(
        name="Assistant", output_guardrails=[ambiguous_guardrail]
    )
    session = await open_driver_session(agent, server, guardrail_executor=BrokenGuardrailExecutor())
    async with session:
        await within(session.send_message("say hello"))
        events = await collect(session, nth("agent_end"))
        if not errors_of(events, "guardrail_error"):
            events += await collect(session, lambda e, _: e.type == "error")
        errors = errors_of(events, "guardrail_error")
        assert errors and "the guardrail pool fell over" in errors[0]["message"]
        assert await say_and_expect(session, "still here") == "still here"


# --------------------------------------------------------------- model layer


class Recorder(RealtimeModelListener):
    """Records model events; raises on the event types in ``fail_on``."""

    def __init__(self, *fail_on: str) -> None:
        self.events: list[me.RealtimeModelEvent] = []
        self.fail_on = set(fail_on)
        self.changed = asyncio.Event()

    async def on_event(self, event: me.RealtimeModelEvent) -> None:
        self.events.append(event)
        self.changed.set()
        if event.type in self.fail_on:
            raise RuntimeError(f"listener broke on {event.type}")

    async def wait_for(self, event_type: str) -> me.RealtimeModelEvent:
        async def run() -> me.RealtimeModelEvent:
            while True:
                for event in self.events:
                    if event.type == event_type:
                        return event
                self.changed.clear()
                await self.changed.wait()

        return await within(run())


async def test_a_raising_listener_is_told_with_an_exception_event(
    server: LocalModelServer,
) -> None:
    model = OpenAIRealtimeWebSocketModel()
    listener = Recorder("turn_started")
    model.add_listener(listener)
    await within(model.connect({"url": server.url}))
    try:
        await within(model.send_event(RealtimeModelSendUserInput("say hi")))
        report = await listener.wait_for("exception")
        assert isinstance(report, me.RealtimeModelExceptionEvent)
        assert report.exception_type == "RuntimeError"
        assert "listener broke on turn_started" in report.message
        assert report.context is not None and "turn_started" in report.context
        await listener.wait_for("turn_ended")  # the reader went on
    finally:
        await within(model.close())


async def test_a_refused_response_request_does_not_block_later_responses(
    server: LocalModelServer,
) -> None:
    model = OpenAIRealtimeWebSocketModel()
    listener = Recorder()
    model.add_listener(listener)
    await within(model.connect({"url": server.url}))
    try:
        huge = {"type": "response.create", "response": {"instructions": "z" * HUGE}}
        with pytest.raises(InputTooLargeError):
            await within(model.send_event(RealtimeModelSendRawMessage(huge)))
        # The refused request never went out: the next one is not held behind it.
        await within(model.send_event(RealtimeModelSendUserInput("say after")))
        await asyncio.wait_for(listener.wait_for("turn_ended"), 5 * UNIT)
    finally:
        await within(model.close())
