"""Handoffs: tools that switch the session to another agent."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ray_realtime.agents.agent import Handoff, RealtimeAgent
from ray_realtime.agents.context import RunContextWrapper
from ray_realtime.agents.tools import ToolArgumentsError
from ray_realtime.exceptions import ToolDefinitionError

__all__ = ["Handoff", "default_handoff_tool_name", "realtime_handoff"]


def default_handoff_tool_name(agent_name: str) -> str:
    """The SDK's rule: ``transfer_to_<name>`` with each whitespace or other
    character outside ``[A-Za-z0-9_]`` made ``_``, then lower-cased:
    "Billing Agent" → ``transfer_to_billing_agent``, "BillingAgent" →
    ``transfer_to_billingagent``."""
    name = re.sub(r"[^a-zA-Z0-9_]", "_", re.sub(r"\s", "_", f"transfer_to_{agent_name}"))
    return name.lower()


def default_handoff_tool_description(agent: RealtimeAgent[Any]) -> str:
    """The tool description the model sees for a handoff to ``agent`` (the
    SDK's text)."""
    return (
        f"Handoff to the {agent.name} agent to handle the request. "
        f"{agent.handoff_description or ''}"
    )


def realtime_handoff(
    agent: RealtimeAgent[Any],
    *,
    tool_name_override: str | None = None,
    tool_description_override: str | None = None,
    on_handoff: Callable[..., Any] | None = None,
    input_type: type[Any] | None = None,
    is_enabled: bool | Callable[[RunContextWrapper[Any], Any], Any] = True,
) -> Handoff:
    """Make a :class:`Handoff` to ``agent``.

    ``on_handoff(context_wrapper)`` — or ``on_handoff(context_wrapper, input)``
    when ``input_type`` is given, with the model's arguments validated as that
    type — runs when the model calls the handoff, before the switch.
    """
    if not isinstance(agent, RealtimeAgent):
        raise ToolDefinitionError(
            f"realtime_handoff needs a RealtimeAgent, got {type(agent).__name__}"
        )
    if (on_handoff is None) != (input_type is None) and input_type is not None:
        raise ToolDefinitionError("input_type needs an on_handoff callback to receive the input")
    adapter: TypeAdapter[Any] | None = None
    if input_type is not None:
        adapter = TypeAdapter(input_type)
        schema = adapter.json_schema()
        schema.pop("title", None)
    else:
        schema = {"type": "object", "properties": {}, "additionalProperties": False, "required": []}
    tool_name = tool_name_override or default_handoff_tool_name(agent.name)

    async def on_invoke_handoff(ctx: RunContextWrapper[Any], arguments: str) -> RealtimeAgent[Any]:
        if adapter is not None and on_handoff is not None:
            try:
                value = adapter.validate_python(json.loads(arguments or "{}"))
            except (json.JSONDecodeError, ValidationError) as exc:
                raise ToolArgumentsError(
                    f"invalid input for handoff {tool_name!r}: {exc}"
                ) from None
            result = on_handoff(ctx, value)
        elif on_handoff is not None:
            result = on_handoff(ctx)
        else:
            result = None
        if inspect.isawaitable(result):
            await result
        return agent

    return Handoff(
        tool_name=tool_name,
        tool_description=tool_description_override or default_handoff_tool_description(agent),
        input_json_schema=schema,
        on_invoke_handoff=on_invoke_handoff,
        agent_name=agent.name,
        is_enabled=is_enabled,
        agent=agent,
    )


def as_handoff(item: Any) -> Handoff:
    """An agent in ``handoffs`` becomes a default handoff; a Handoff stays."""
    if isinstance(item, Handoff):
        return item
    return realtime_handoff(item)
