"""The SDK's approval and tool behaviour, end to end against the local model.

In-process sessions on a loopback :class:`LocalModelServer` (no Ray), and one
actor-mode approval test on the shared ``ray_cluster``: ``approve_tool_call``
/ ``reject_tool_call`` with the SDK's keywords, approval functions that are
really called, the SDK's default texts, ``tool_error_formatter``,
``function_tool(timeout=...)``, async and ``None`` failure functions, agent
hooks and the ``ToolContext`` fields a tool sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ray_realtime import (
    RealtimeAgent,
    RealtimeAgentHooks,
    RealtimeRunner,
    RealtimeSession,
    RealtimeSessionEvent,
    RealtimeToolApprovalRequired,
    RealtimeToolEnd,
    RunContextWrapper,
    ToolContext,
    ToolErrorFormatterArgs,
    function_tool,
)
from ray_realtime.local import LocalModelServer
from tests.conftest import UNIT, RayTestCluster

TIMEOUT = 10 * UNIT


@function_tool(needs_approval=True)
def get_weather(city: str) -> str:
    """Tell the weather in a city."""
    return f"sunny in {city}"


CHECKS: list[tuple[Any, dict[str, Any], str]] = []


def big_orders_only(ctx: RunContextWrapper[Any], arguments: dict[str, Any], call_id: str) -> bool:
    CHECKS.append((ctx.context, arguments, call_id))
    return arguments["order_id"].startswith("BIG")


async def async_big_orders_only(
    ctx: RunContextWrapper[Any], arguments: dict[str, Any], call_id: str
) -> bool:
    await asyncio.sleep(0)
    return big_orders_only(ctx, arguments, call_id)


def lookup_order_tool(check: Any) -> Any:
    @function_tool(needs_approval=check)
    def lookup_order(order_id: str) -> str:
        """Look an order up."""
        return f"order {order_id} shipped"

    return lookup_order


async def polite_failure(ctx: RunContextWrapper[Any], error: Exception) -> str:
    await asyncio.sleep(0)
    return f"sorry: {error}"


@function_tool(failure_error_function=polite_failure)
def explode() -> str:
    """A tool that always fails."""
    raise ValueError("kaboom")


@function_tool(failure_error_function=None)
def detonate() -> str:
    """A tool whose failure is raised."""
    raise ValueError("boom")


@function_tool(timeout=0.2 * UNIT)
async def dawdle() -> str:
    """A tool slower than its timeout."""
    await asyncio.sleep(30 * UNIT)
    return "late"


SEEN: list[ToolContext[Any]] = []


@function_tool
def whoami(ctx: ToolContext[Any]) -> str:
    """Who is asking."""
    SEEN.append(ctx)
    return "ada"


class Recorder(RealtimeAgentHooks[Any]):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def on_tool_start(self, context: RunContextWrapper[Any], agent: Any, tool: Any) -> None:
        self.calls.append(("start", tool.name))

    async def on_tool_end(
        self, context: RunContextWrapper[Any], agent: Any, tool: Any, result: Any
    ) -> None:
        self.calls.append(("end", str(result)))


@pytest.fixture
async def server() -> AsyncIterator[LocalModelServer]:
    async with LocalModelServer() as srv:
        yield srv


@contextlib.asynccontextmanager
async def opened(
    agent: RealtimeAgent[Any], url: str | None, context: Any = None, **config: Any
) -> AsyncIterator[RealtimeSession]:
    """An entered session: in-process on ``url``, else an actor session."""
    run_config: Any = {"execution": "in_process" if url else "actor", **config}
    session = await RealtimeRunner(agent, config=run_config).run(
        context=context, model_config={"url": url} if url else None
    )
    await asyncio.wait_for(session.enter(), TIMEOUT)
    try:
        yield session
    finally:
        await asyncio.wait_for(session.close(), TIMEOUT)


async def read_until(session: RealtimeSession, event_type: str) -> list[RealtimeSessionEvent]:
    """Events up to and including the first ``event_type``; bounded."""
    events: list[RealtimeSessionEvent] = []

    async def run() -> None:
        async for event in session:
            events.append(event)
            if event.type == event_type:
                return
        raise AssertionError(f"the session ended first: {[e.type for e in events]}")

    await asyncio.wait_for(run(), TIMEOUT)
    return events


async def turn(session: RealtimeSession, text: str, until: str) -> list[RealtimeSessionEvent]:
    await asyncio.wait_for(session.send_message(text), TIMEOUT)
    return await read_until(session, until)


async def approval_flow(session: RealtimeSession) -> None:
    """approve, reject with and without a message, then ``always``."""
    events = await turn(session, "get weather in Paris", "tool_approval_required")
    (asked,) = [e for e in events if isinstance(e, RealtimeToolApprovalRequired)]
    assert asked.tool.name == "get_weather" and json.loads(asked.arguments) == {"city": "Paris"}
    assert await session.approve_tool_call(asked.call_id) is True
    (end,) = [e for e in await read_until(session, "tool_end") if isinstance(e, RealtimeToolEnd)]
    assert end.output == "sunny in Paris"
    await read_until(session, "agent_end")

    events = await turn(session, "get weather in Oslo", "tool_approval_required")
    call_id = events[-1].call_id  # type: ignore[attr-defined]
    assert await session.reject_tool_call(call_id, rejection_message="Not today.") is True
    ends = [e for e in await read_until(session, "tool_end") if isinstance(e, RealtimeToolEnd)]
    assert ends[-1].output == "Not today."
    await read_until(session, "agent_end")

    events = await turn(session, "get weather in Rome", "tool_approval_required")
    call_id = events[-1].call_id  # type: ignore[attr-defined]
    assert await session.reject_tool_call(call_id, always=True) is True
    ends = [e for e in await read_until(session, "tool_end") if isinstance(e, RealtimeToolEnd)]
    assert ends[-1].output == "Tool execution was not approved."  # the SDK's default
    await read_until(session, "agent_end")

    # "always": the next call is refused without asking.
    events = await turn(session, "get weather in Lima", "tool_end")
    assert not [e for e in events if isinstance(e, RealtimeToolApprovalRequired)]
    assert events[-1].output == "Tool execution was not approved."  # type: ignore[attr-defined]
    await read_until(session, "agent_end")


async def test_approvals_in_process(server: LocalModelServer) -> None:
    agent = RealtimeAgent(name="Assistant", tools=[get_weather])
    async with opened(agent, server.url) as session:
        await approval_flow(session)


async def test_approvals_in_an_actor_session(ray_cluster: RayTestCluster) -> None:
    agent = RealtimeAgent(name="Assistant", tools=[get_weather])
    async with opened(agent, None) as session:
        await approval_flow(session)


async def test_approve_always_runs_the_next_call_unasked(server: LocalModelServer) -> None:
    agent = RealtimeAgent(name="Assistant", tools=[get_weather])
    async with opened(agent, server.url) as session:
        events = await turn(session, "get weather in Paris", "tool_approval_required")
        await session.approve_tool_call(events[-1].call_id, always=True)  # type: ignore[attr-defined]
        await read_until(session, "tool_end")
        await read_until(session, "agent_end")
        events = await turn(session, "get weather in Oslo", "tool_end")
        assert not [e for e in events if isinstance(e, RealtimeToolApprovalRequired)]
        assert events[-1].output == "sunny in Oslo"  # type: ignore[attr-defined]


@pytest.mark.parametrize("check", [big_orders_only, async_big_orders_only], ids=["sync", "async"])
async def test_approval_function_is_called_per_call(server: LocalModelServer, check: Any) -> None:
    CHECKS.clear()
    agent = RealtimeAgent(name="Assistant", tools=[lookup_order_tool(check)])
    async with opened(agent, server.url, context={"user": "ada"}) as session:
        events = await turn(session, "please lookup order A17", "tool_end")
        assert not [e for e in events if isinstance(e, RealtimeToolApprovalRequired)]
        assert events[-1].output == "order A17 shipped"  # type: ignore[attr-defined]
        await read_until(session, "agent_end")
        events = await turn(session, "please lookup order BIG9", "tool_approval_required")
        await session.approve_tool_call(events[-1].call_id)  # type: ignore[attr-defined]
        await read_until(session, "tool_end")
    # The SDK's arguments: the run context wrapper, the parsed arguments, the call id.
    assert [(c, a) for c, a, _ in CHECKS] == [
        ({"user": "ada"}, {"order_id": "A17"}),
        ({"user": "ada"}, {"order_id": "BIG9"}),
    ]
    assert all(call_id.startswith("call_") for _, _, call_id in CHECKS)


async def test_tool_error_formatter_words_rejections(server: LocalModelServer) -> None:
    seen: list[ToolErrorFormatterArgs[Any]] = []

    async def formatter(args: ToolErrorFormatterArgs[Any]) -> str:
        seen.append(args)
        return f"{args.tool_name} refused ({args.default_message})"

    agent = RealtimeAgent(name="Assistant", tools=[get_weather])
    async with opened(agent, server.url, tool_error_formatter=formatter) as session:
        events = await turn(session, "get weather in Paris", "tool_approval_required")
        await session.reject_tool_call(events[-1].call_id)  # type: ignore[attr-defined]
        ends = [e for e in await read_until(session, "tool_end") if isinstance(e, RealtimeToolEnd)]
    assert ends[-1].output == "get_weather refused (Tool execution was not approved.)"
    assert [(a.kind, a.tool_type, a.tool_name) for a in seen] == [
        ("approval_rejected", "function", "get_weather")
    ]


async def test_async_failure_error_function_is_awaited(server: LocalModelServer) -> None:
    agent = RealtimeAgent(name="Assistant", tools=[explode])
    async with opened(agent, server.url) as session:
        events = await turn(session, "explode now", "tool_end")
    assert events[-1].output == "sorry: kaboom"  # type: ignore[attr-defined]


async def test_failure_error_function_none_raises_out_of_the_session(
    server: LocalModelServer,
) -> None:
    agent = RealtimeAgent(name="Assistant", tools=[detonate])
    async with opened(agent, server.url) as session:
        await asyncio.wait_for(session.send_message("detonate now"), TIMEOUT)
        events = [e async for e in session]  # the session ends
    errors = [e for e in events if e.type == "error"]
    assert [e.error["type"] for e in errors] == ["tool_exception"]  # type: ignore[attr-defined]
    assert "boom" in errors[0].error["message"]  # type: ignore[attr-defined]
    assert not [e for e in events if e.type == "tool_end"], "the model was not answered"


async def test_timeout_gives_the_sdks_text(server: LocalModelServer) -> None:
    agent = RealtimeAgent(name="Assistant", tools=[dawdle])
    async with opened(agent, server.url) as session:
        events = await turn(session, "dawdle please", "tool_end")
    assert events[-1].output == f"Tool 'dawdle' timed out after {0.2 * UNIT:g} seconds."  # type: ignore[attr-defined]


async def test_hooks_and_tool_context(server: LocalModelServer) -> None:
    SEEN.clear()
    hooks = Recorder()
    agent = RealtimeAgent(name="Assistant", tools=[whoami], hooks=hooks)
    async with opened(agent, server.url, context={"user": "ada"}) as session:
        events = await turn(session, "whoami", "tool_end")
        await read_until(session, "agent_end")
    call_id = events[-1].call_id  # type: ignore[attr-defined]
    assert hooks.calls == [("start", "whoami"), ("end", "ada")]
    (ctx,) = SEEN
    assert (ctx.tool_name, ctx.tool_call_id, ctx.tool_arguments) == ("whoami", call_id, "{}")
    assert ctx.tool_call == {
        "type": "function_call",
        "call_id": call_id,
        "name": "whoami",
        "arguments": "{}",
    }
    assert ctx.agent is agent and ctx.context == {"user": "ada"}


async def test_ga_settings_reach_the_local_model(server: LocalModelServer) -> None:
    settings = {
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "noise_reduction": {"type": "near_field"},
                "transcription": {"model": "gpt-4o-transcribe", "languages": ["en"]},
                "turn_detection": {"type": "semantic_vad", "eagerness": "low"},
            },
            "output": {"voice": {"id": "voice_1"}, "speed": 1.1},
        },
        "prompt": {"id": "pmpt_1"},
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
    }
    agent = RealtimeAgent(name="Assistant", tools=[get_weather])
    async with opened(agent, server.url, model_settings=settings, tracing_disabled=True) as session:
        # The nested input format counts: G.711 takes any number of bytes.
        await asyncio.wait_for(session.send_audio(b"\xff" * 5), TIMEOUT)
        events = await turn(session, "say hello", "agent_end")
    assert not [e for e in events if e.type == "error"], events
