"""Calling the user's per-call callbacks the way the SDK calls them: approval
functions, the run config's ``tool_error_formatter``, agent prompt functions
and agent hooks. Each takes sync or async user code; the driver decides what a
failure means (these helpers let exceptions through)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from typing import Any

from ray_realtime.agents.agent import RealtimeAgent
from ray_realtime.agents.context import RunContextWrapper, ToolContext
from ray_realtime.agents.tools import FunctionTool, ToolErrorFormatterArgs
from ray_realtime.exceptions import UserError
from ray_realtime.types.config import DEFAULT_APPROVAL_REJECTION_MESSAGE
from ray_realtime.types.model_events import RealtimeModelToolCallEvent

__all__ = ["agent_prompt", "call_hook", "format_rejection", "needs_approval"]


async def _resolved(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def needs_approval(
    tool: FunctionTool | None, context: RunContextWrapper[Any], call: RealtimeModelToolCallEvent
) -> bool:
    """Whether ``call`` needs approval: the tool's flag, or its approval
    function called as the SDK does, ``(context, arguments_dict, call_id)``.
    A call of a tool no longer there is asked about (never run unasked)."""
    check = tool.needs_approval if tool is not None else True
    if not callable(check):
        return bool(check)
    arguments = json.loads(call.arguments) if call.arguments.strip() else {}
    return bool(await _resolved(check(context, arguments, call.call_id)))


async def format_rejection(
    formatter: Any, context: RunContextWrapper[Any], tool_name: str, call_id: str
) -> str | None:
    """The ``tool_error_formatter`` text of a rejected call (``None``: no
    formatter, or it gave no string: the default text)."""
    if formatter is None:
        return None
    args = ToolErrorFormatterArgs(
        kind="approval_rejected",
        tool_type="function",
        tool_name=tool_name,
        call_id=call_id,
        default_message=DEFAULT_APPROVAL_REJECTION_MESSAGE,
        run_context=context,
    )
    text = await _resolved(formatter(args))
    return text if isinstance(text, str) else None


async def agent_prompt(
    agent: RealtimeAgent[Any], context: RunContextWrapper[Any]
) -> dict[str, Any] | None:
    """The agent's prompt as plain data: a dict, or what a prompt function
    (sync or async, given the context and the agent) returns."""
    prompt = agent.prompt
    if callable(prompt):
        prompt = await _resolved(prompt(context, agent))
    if prompt is None:
        return None
    if not isinstance(prompt, Mapping) or not isinstance(prompt.get("id"), str):
        raise UserError(f"agent {agent.name!r}: prompt must be a dict with an 'id'")
    return dict(prompt)


async def call_hook(
    agent: RealtimeAgent[Any],
    name: str,
    context: RunContextWrapper[Any],
    call: RealtimeModelToolCallEvent,
    *args: Any,
) -> None:
    """``agent.hooks.<name>(tool_context, agent, *args)`` when the agent has hooks."""
    if agent.hooks is None:
        return
    ctx = ToolContext(
        context=context.context,
        tool_name=call.name,
        tool_call_id=call.call_id,
        tool_arguments=call.arguments,
        agent=agent,
    )
    await getattr(agent.hooks, name)(ctx, agent, *args)
