"""RealtimeAgent: a named set of instructions, tools, handoffs and guardrails;
Handoff: a tool that switches the session to another agent."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic

from ray_realtime.agents.context import RunContextWrapper, TContext
from ray_realtime.agents.guardrails import OutputGuardrail
from ray_realtime.agents.hooks import RealtimeAgentHooks
from ray_realtime.agents.mcp import MCPConfig, MCPServer, check_mcp_fields, list_agent_mcp_tools
from ray_realtime.agents.tools import FunctionTool
from ray_realtime.exceptions import ConfigError, ToolError

__all__ = ["Handoff", "RealtimeAgent", "resolve_instructions"]

InstructionsFunction = Callable[
    [RunContextWrapper[Any], "RealtimeAgent[Any]"], str | Awaitable[str]
]


@dataclass
class RealtimeAgent(Generic[TContext]):
    """An agent for realtime sessions.

    ``instructions`` is a string or a sync/async callable of
    ``(context_wrapper, agent)`` returning one, evaluated when the agent
    becomes active. ``handoffs`` holds agents or :class:`Handoff`s;
    ``handoff_description`` tells other agents when to hand off to this one.
    The model settings are per session (the run config), not per agent, as
    the realtime API holds one session configuration.

    ``mcp_servers`` lend the agent their tools (see :mod:`ray_realtime.agents.mcp`):
    listed when the agent starts in a session, called where tools run;
    ``mcp_config`` says how they become tools.
    """

    name: str
    instructions: str | InstructionsFunction | None = None
    handoff_description: str | None = None
    tools: list[FunctionTool] = field(default_factory=list)
    handoffs: list[RealtimeAgent[Any] | Handoff] = field(default_factory=list)
    output_guardrails: list[OutputGuardrail] = field(default_factory=list)
    prompt: Any = None
    hooks: RealtimeAgentHooks[Any] | None = None
    """Lifecycle callbacks of this agent (see :mod:`ray_realtime.agents.hooks`)."""
    mcp_servers: list[MCPServer] = field(default_factory=list)
    mcp_config: MCPConfig = field(default_factory=lambda: MCPConfig())

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("a RealtimeAgent needs a non-empty name")
        if self.instructions is not None and not (
            isinstance(self.instructions, str) or callable(self.instructions)
        ):
            raise ConfigError(
                f"agent {self.name!r}: instructions must be a string or a callable, "
                f"not {type(self.instructions).__name__}"
            )
        for tool in self.tools:
            if not isinstance(tool, FunctionTool):
                raise ConfigError(
                    f"agent {self.name!r}: tools must be FunctionTool (use @function_tool), "
                    f"got {type(tool).__name__}"
                )
        check_mcp_fields(self.name, self.mcp_servers, self.mcp_config)

    def clone(self, **kwargs: Any) -> RealtimeAgent[TContext]:
        """A copy with the given fields replaced (lists are copied shallowly)."""
        return dataclasses.replace(self, **kwargs)

    async def get_system_prompt(self, run_context: RunContextWrapper[TContext]) -> str | None:
        """The instructions for this run: the string, or what the callable returns."""
        return await resolve_instructions(self, run_context)

    async def get_all_tools(self, run_context: RunContextWrapper[TContext]) -> list[FunctionTool]:
        """The MCP servers' tools, then the function tools enabled for this run."""
        mcp_tools = await self.get_mcp_tools(run_context) if self.mcp_servers else []
        return [*mcp_tools, *await self.get_function_tools(run_context)]

    async def get_mcp_tools(self, run_context: RunContextWrapper[TContext]) -> list[FunctionTool]:
        """The tools of the MCP servers, listed now in this process; a server
        that cannot list them is a :class:`~ray_realtime.exceptions.ToolError`."""
        listing = await list_agent_mcp_tools(self, run_context)
        if listing.errors:
            raise ToolError("; ".join(listing.errors), "")
        return listing.tools

    async def get_function_tools(
        self, run_context: RunContextWrapper[TContext]
    ) -> list[FunctionTool]:
        """The function tools enabled for this run."""
        enabled: list[FunctionTool] = []
        for tool in self.tools:
            flag = tool.is_enabled
            if callable(flag):
                result = flag(run_context, self)
                if inspect.isawaitable(result):
                    result = await result
                flag = bool(result)
            if flag:
                enabled.append(tool)
        return enabled


@dataclass
class Handoff:
    """A handoff tool. ``on_invoke_handoff(context_wrapper, arguments_json)``
    runs the user's ``on_handoff`` callback and returns the agent to switch to.
    ``agent_name`` names the target, so a session running in another process
    can resolve the newest registered version of that agent by name."""

    tool_name: str
    tool_description: str
    input_json_schema: dict[str, Any]
    on_invoke_handoff: Callable[[RunContextWrapper[Any], str], Awaitable[RealtimeAgent[Any]]]
    agent_name: str
    strict_json_schema: bool = True
    is_enabled: bool | Callable[[RunContextWrapper[Any], Any], Any] = True
    agent: RealtimeAgent[Any] | None = field(default=None, repr=False)

    def to_definition(self) -> dict[str, Any]:
        """The handoff as the realtime protocol's ``session.tools`` entry."""
        return {
            "type": "function",
            "name": self.tool_name,
            "description": self.tool_description,
            "parameters": self.input_json_schema,
        }


async def resolve_instructions(
    agent: RealtimeAgent[Any], run_context: RunContextWrapper[Any]
) -> str | None:
    """Evaluate an agent's instructions (string or sync/async callable)."""
    instructions = agent.instructions
    if instructions is None or isinstance(instructions, str):
        return instructions
    result = instructions(run_context, agent)
    if inspect.isawaitable(result):
        result = await result
    if not isinstance(result, str):
        raise ConfigError(
            f"instructions callable of agent {agent.name!r} returned "
            f"{type(result).__name__}, not str"
        )
    return result
