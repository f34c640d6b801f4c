"""RealtimeAgent: validation, clone, instructions and enabled tools."""

from __future__ import annotations

from typing import Any

import pytest

from ray_realtime.agents.agent import RealtimeAgent, resolve_instructions
from ray_realtime.agents.context import RunContextWrapper
from ray_realtime.agents.tools import FunctionTool, function_tool
from ray_realtime.exceptions import ConfigError

CTX: RunContextWrapper[Any] = RunContextWrapper({"user": "ada"})


def make_tool(name: str, is_enabled: Any = True) -> FunctionTool:
    def fn(x: int) -> int:
        return x

    return function_tool(name_override=name, is_enabled=is_enabled)(fn)


# -------------------------------------------------------------- validation


@pytest.mark.parametrize("name", ["", "   ", None, 3])
def test_bad_name(name: Any) -> None:
    with pytest.raises(ConfigError):
        RealtimeAgent(name=name)


@pytest.mark.parametrize("instructions", [42, ["a"], b"bytes", {"text": "x"}])
def test_bad_instructions(instructions: Any) -> None:
    with pytest.raises(ConfigError) as info:
        RealtimeAgent(name="A", instructions=instructions)
    assert "'A'" in str(info.value)


def test_non_function_tool_rejected() -> None:
    def plain(x: int) -> int:
        return x

    with pytest.raises(ConfigError) as info:
        RealtimeAgent(name="A", tools=[plain])  # type: ignore[list-item]
    assert "function_tool" in str(info.value)


def test_valid_agent_defaults() -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="A")
    assert agent.instructions is None and agent.handoff_description is None
    assert agent.tools == [] and agent.handoffs == [] and agent.output_guardrails == []
    assert RealtimeAgent(name="B").tools is not agent.tools, "default lists are not shared"


# ------------------------------------------------------------------- clone


def test_clone_replaces_fields_and_keeps_the_rest() -> None:
    tool = make_tool("t")
    agent = RealtimeAgent(name="A", instructions="be kind", tools=[tool], handoff_description="d")
    clone = agent.clone(name="B", instructions="be brief")
    assert (clone.name, clone.instructions) == ("B", "be brief")
    assert clone.tools == [tool] and clone.handoff_description == "d"
    assert (agent.name, agent.instructions) == ("A", "be kind"), "the original is unchanged"
    assert clone is not agent


def test_clone_validates() -> None:
    with pytest.raises(ConfigError):
        RealtimeAgent(name="A").clone(name="")


# ------------------------------------------------------------ instructions


async def test_resolve_string_and_none() -> None:
    assert await resolve_instructions(RealtimeAgent(name="A", instructions="hi"), CTX) == "hi"
    assert await resolve_instructions(RealtimeAgent(name="A"), CTX) is None


async def test_resolve_sync_callable() -> None:
    seen: list[Any] = []

    def instructions(ctx: RunContextWrapper[Any], agent: RealtimeAgent[Any]) -> str:
        seen.append((ctx, agent))
        return f"Help {ctx.context['user']} as {agent.name}."

    agent = RealtimeAgent(name="A", instructions=instructions)
    assert await resolve_instructions(agent, CTX) == "Help ada as A."
    assert seen == [(CTX, agent)]
    assert await agent.get_system_prompt(CTX) == "Help ada as A."


async def test_resolve_async_callable() -> None:
    async def instructions(ctx: RunContextWrapper[Any], agent: RealtimeAgent[Any]) -> str:
        return f"async {agent.name}"

    agent = RealtimeAgent(name="A", instructions=instructions)
    assert await resolve_instructions(agent, CTX) == "async A"


@pytest.mark.parametrize("value", [None, 5, ["x"]])
async def test_callable_returning_non_str(value: Any) -> None:
    async def async_bad(ctx: Any, agent: Any) -> Any:
        return value

    for fn in (lambda ctx, agent: value, async_bad):
        agent = RealtimeAgent(name="A", instructions=fn)
        with pytest.raises(ConfigError):
            await resolve_instructions(agent, CTX)


# ------------------------------------------------------------------- tools


async def test_get_all_tools_honours_is_enabled() -> None:
    seen: list[Any] = []

    def only_for_ada(ctx: RunContextWrapper[Any], agent: Any) -> bool:
        seen.append((ctx, agent))
        return bool(ctx.context["user"] == "ada")

    async def async_no(ctx: RunContextWrapper[Any], agent: Any) -> bool:
        return False

    async def async_truthy(ctx: RunContextWrapper[Any], agent: Any) -> int:
        return 1

    tools = [
        make_tool("on"),
        make_tool("off", False),
        make_tool("ada", only_for_ada),
        make_tool("async_no", async_no),
        make_tool("async_truthy", async_truthy),
    ]
    agent = RealtimeAgent(name="A", tools=tools)
    enabled = await agent.get_all_tools(CTX)
    assert [t.name for t in enabled] == ["on", "ada", "async_truthy"]
    assert seen == [(CTX, agent)]
    other = await agent.get_all_tools(RunContextWrapper({"user": "bob"}))
    assert [t.name for t in other] == ["on", "async_truthy"]
