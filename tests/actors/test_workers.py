"""Tools and guardrails of an actor session run on worker actors.

Each tool turn is two responses: the function call, then the reply to its
output ("The tool NAME returned: OUTPUT"), so a turn ends at the second
``agent_end``.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest
import ray

from ray_realtime import (
    GuardrailFunctionOutput,
    RealtimeAgent,
    RealtimeError,
    RealtimeGuardrailTripped,
    RealtimeRunner,
    RealtimeSession,
    RealtimeToolEnd,
    RealtimeToolStart,
    RunContextWrapper,
    function_tool,
    output_guardrail,
)
from tests.actors.util import (
    ACTOR,
    collect,
    collect_turns,
    last_reply,
    placement_of,
    session_host,
    where_am_i,
)
from tests.conftest import UNIT, RayTestCluster

pytestmark = [pytest.mark.ray]


@function_tool
async def slow_echo(text: str) -> str:
    """Echo the text after a short pause.

    Args:
        text: What to echo.
    """
    await asyncio.sleep(0.05)
    return f"echo {text} from {os.getpid()}"


@function_tool
def explode() -> str:
    """Always fails."""
    raise ValueError("boom in the worker")


@function_tool(timeout_seconds=0.5)
async def sleepy() -> str:
    """Takes far longer than its timeout."""
    await asyncio.sleep(30)
    return "never"


@function_tool
def bump_counter(ctx: RunContextWrapper[dict[str, Any]]) -> str:
    """Increment the counter in the user context and report it."""
    ctx.context["count"] += 1
    ctx.context["touched_by"] = os.getpid()
    return f"count={ctx.context['count']}"


@output_guardrail(name="no_secrets_on_worker")
def no_secrets(ctx: RunContextWrapper[Any], agent: Any, text: str) -> GuardrailFunctionOutput:
    """Trips on "password"; says where it ran."""
    found = "password" in text.lower()
    info = {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}
    return GuardrailFunctionOutput(output_info=info, tripwire_triggered=found)


def _tool_agent() -> RealtimeAgent[Any]:
    return RealtimeAgent(
        name="Tooler",
        instructions="You use tools.",
        tools=[where_am_i, slow_echo, explode, sleepy, bump_counter],
    )


async def _tool_turn(session: RealtimeSession, text: str) -> tuple[RealtimeToolEnd, list[Any]]:
    await session.send_message(text)
    events = await collect_turns(session, turns=2)
    ends = [e for e in events if isinstance(e, RealtimeToolEnd)]
    assert len(ends) == 1, [e.type for e in events]
    return ends[0], events


async def _worker_stats(router: Any, session_id: str, kind: str) -> tuple[str, dict[str, Any]]:
    """Name and statistics of the ``kind`` worker on the session's node."""
    placement = await placement_of(router, session_id)
    key = "tool_workers" if kind == "tool" else "guardrail_workers"
    local = [(n, h) for n, node, h in placement[key] if node == placement["node_id"]]
    assert len(local) == 1, placement[key]
    name, handle = local[0]
    # The same worker, by name, in the project's namespace.
    assert ray.get_actor(name, namespace="ray_realtime")._actor_id == handle._actor_id
    stats: dict[str, Any] = await asyncio.wait_for(handle.statistics.remote(), 10 * UNIT)
    return name, stats


async def test_sync_tool_runs_in_a_worker_process(ray_cluster: RayTestCluster) -> None:
    runner = RealtimeRunner(_tool_agent(), config=ACTOR)
    async with await runner.run() as session:
        end, events = await _tool_turn(session, "where am i")
        starts = [e for e in events if isinstance(e, RealtimeToolStart)]
        assert [(e.agent.name, e.tool.name) for e in starts] == [("Tooler", "where_am_i")]
        assert end.tool.name == "where_am_i"
        ran = json.loads(end.output)
        placement = await placement_of(ray_cluster.router, session.session_id)
        host = await session_host(ray_cluster.router, session.session_id)
        host_info = await host.ping.remote()
        assert ran["pid"] not in (os.getpid(), host_info["pid"])
        assert ran["node_id"] == placement["node_id"] == host_info["node_id"]
        assert await last_reply(session) == f"The tool where_am_i returned: {end.output}"


async def test_async_raising_and_timing_out_tools(ray_cluster: RayTestCluster) -> None:
    runner = RealtimeRunner(_tool_agent(), config=ACTOR)
    async with await runner.run() as session:
        end, _ = await _tool_turn(session, 'slow echo "ping"')
        assert end.output.startswith("echo ping from ")
        assert int(end.output.rsplit(" ", 1)[1]) != os.getpid()

        end, events = await _tool_turn(session, "explode")
        errors = [e for e in events if isinstance(e, RealtimeError)]
        assert len(errors) == 1 and errors[0].error["type"] == "tool_error"
        assert "boom in the worker" in errors[0].error["message"]
        # The default failure_error_function words the output with the SDK's
        # text, which does not expose the exception (readers got it above).
        assert end.output == "An error occurred while running the tool. Please try again."
        assert [e.type for e in events].index("error") < [e.type for e in events].index("tool_end")

        end, events = await _tool_turn(session, "sleepy")
        assert "timed out" in end.output
        assert any(
            isinstance(e, RealtimeError) and "timed out" in e.error["message"] for e in events
        )

        # The session goes on after both failures.
        await session.send_message("are you still there")
        await collect_turns(session)
        assert await last_reply(session) == "You said: are you still there"


async def test_context_travels_by_value(ray_cluster: RayTestCluster) -> None:
    context = {"count": 0}
    runner = RealtimeRunner(_tool_agent(), config=ACTOR)
    async with await runner.run(context=context) as session:
        first, _ = await _tool_turn(session, "bump counter")
        second, _ = await _tool_turn(session, "bump counter")
    # Each call got its own copy of the context; the caller's never changed.
    assert first.output == second.output == "count=1"
    assert context == {"count": 0}


async def test_agents_are_shipped_once_by_reference(ray_cluster: RayTestCluster) -> None:
    router = ray_cluster.router
    runner = RealtimeRunner(_tool_agent(), config=ACTOR)
    async with await runner.run() as session:
        name, before = await _worker_stats(router, session.session_id, "tool")
        await _tool_turn(session, "where am i")
        _, after_first = await _worker_stats(router, session.session_id, "tool")
        for _ in range(3):
            end, _ = await _tool_turn(session, "where am i")
            assert json.loads(end.output)["node_id"] == before["node_id"]
        _, after = await _worker_stats(router, session.session_id, "tool")
    assert after["calls"] - before["calls"] == 4
    # The first call fetched the agent (and the session's context object) once...
    assert after_first["fetches"] - before["fetches"] == 2
    # ...and later calls reused them: one fetch of the agent for four calls.
    assert after["fetches"] == after_first["fetches"]
    print(f"tool worker {name}: {after}")


async def test_guardrail_trips_on_a_guardrail_worker(ray_cluster: RayTestCluster) -> None:
    router = ray_cluster.router
    agent = RealtimeAgent(
        name="Guarded", instructions="You are careful.", output_guardrails=[no_secrets]
    )
    runner = RealtimeRunner(agent, config=ACTOR)
    async with await runner.run() as session:
        _, before = await _worker_stats(router, session.session_id, "guardrail")
        await session.send_message(
            "say My password is hunter2, and I will repeat it all day long for you."
        )
        events = await collect(session, lambda e: isinstance(e, RealtimeGuardrailTripped))
        tripped = events[-1]
        assert isinstance(tripped, RealtimeGuardrailTripped)
        (result,) = [r for r in tripped.guardrail_results if r.tripwire_triggered]
        assert result.guardrail.name == "no_secrets_on_worker"
        assert result.agent.name == "Guarded"
        assert "password" in tripped.message.lower()
        host = await session_host(router, session.session_id)
        host_info = await host.ping.remote()
        assert result.output_info["pid"] not in (os.getpid(), host_info["pid"])
        assert result.output_info["node_id"] == host_info["node_id"]
        _, after = await _worker_stats(router, session.session_id, "guardrail")
        assert after["calls"] > before["calls"]
