"""realtime_handoff: tool names, descriptions, input and callbacks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict

from ray_realtime.agents.agent import RealtimeAgent
from ray_realtime.agents.context import RunContextWrapper
from ray_realtime.agents.handoffs import (
    Handoff,
    as_handoff,
    default_handoff_tool_name,
    realtime_handoff,
)
from ray_realtime.agents.tools import ToolArgumentsError
from ray_realtime.exceptions import ToolDefinitionError


class Reason(BaseModel):
    reason: str


class ReasonDict(TypedDict):
    reason: str
    urgent: bool


def billing() -> RealtimeAgent[Any]:
    return RealtimeAgent(name="Billing Agent", handoff_description="Handles invoices and refunds.")


@pytest.mark.parametrize(
    ("agent_name", "tool_name"),
    [
        # The SDK's rule: whitespace and other characters become "_", then lower.
        ("Billing Agent", "transfer_to_billing_agent"),
        ("BillingAgent", "transfer_to_billingagent"),
        ("billing-agent", "transfer_to_billing_agent"),
        ("billing", "transfer_to_billing"),
        ("  Billing  Agent!! ", "transfer_to___billing__agent___"),
        ("Café Bot", "transfer_to_caf__bot"),
    ],
)
def test_default_tool_name(agent_name: str, tool_name: str) -> None:
    assert default_handoff_tool_name(agent_name) == tool_name
    assert realtime_handoff(RealtimeAgent(name=agent_name)).tool_name == tool_name


def test_defaults() -> None:
    agent = billing()
    h = realtime_handoff(agent)
    assert isinstance(h, Handoff)
    assert h.agent_name == "Billing Agent"
    assert h.agent is agent
    assert "Billing Agent" in h.tool_description
    assert "Handles invoices and refunds." in h.tool_description
    assert h.input_json_schema == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
        "required": [],
    }
    assert h.is_enabled is True
    assert h.to_definition() == {
        "type": "function",
        "name": "transfer_to_billing_agent",
        "description": h.tool_description,
        "parameters": h.input_json_schema,
    }


def test_description_without_handoff_description() -> None:
    h = realtime_handoff(RealtimeAgent(name="Sales"))
    assert "Sales" in h.tool_description
    assert "None" not in h.tool_description


def test_overrides() -> None:
    h = realtime_handoff(
        billing(), tool_name_override="go_billing", tool_description_override="Go to billing."
    )
    assert h.tool_name == "go_billing"
    assert h.tool_description == "Go to billing."
    assert h.to_definition()["name"] == "go_billing"


def test_is_enabled_kept() -> None:
    def flag(_ctx: RunContextWrapper[Any], _agent: Any) -> bool:
        return False

    assert realtime_handoff(billing(), is_enabled=False).is_enabled is False
    assert realtime_handoff(billing(), is_enabled=flag).is_enabled is flag


async def test_invoke_without_callback_returns_the_agent() -> None:
    agent = billing()
    h = realtime_handoff(agent)
    assert await h.on_invoke_handoff(RunContextWrapper(None), "") is agent


async def test_on_handoff_called_with_context() -> None:
    calls: list[tuple[Any, ...]] = []
    agent = billing()
    h = realtime_handoff(agent, on_handoff=lambda ctx: calls.append((ctx,)))
    wrapper = RunContextWrapper({"user": "ada"})
    assert await h.on_invoke_handoff(wrapper, "{}") is agent
    assert calls == [(wrapper,)]


async def test_async_on_handoff_is_awaited() -> None:
    calls: list[Any] = []

    async def on_handoff(ctx: RunContextWrapper[Any]) -> None:
        calls.append(ctx.context)

    h = realtime_handoff(billing(), on_handoff=on_handoff)
    await h.on_invoke_handoff(RunContextWrapper("c"), "{}")
    assert calls == ["c"]


async def test_on_handoff_with_pydantic_input() -> None:
    calls: list[tuple[Any, Any]] = []
    agent = billing()
    h = realtime_handoff(
        agent, on_handoff=lambda ctx, data: calls.append((ctx, data)), input_type=Reason
    )
    assert h.input_json_schema["properties"]["reason"]["type"] == "string"
    assert "title" not in h.input_json_schema
    wrapper = RunContextWrapper(None)
    assert await h.on_invoke_handoff(wrapper, '{"reason": "refund"}') is agent
    assert calls == [(wrapper, Reason(reason="refund"))]


async def test_on_handoff_with_typeddict_input() -> None:
    calls: list[Any] = []

    async def on_handoff(ctx: RunContextWrapper[Any], data: ReasonDict) -> None:
        calls.append(data)

    h = realtime_handoff(billing(), on_handoff=on_handoff, input_type=ReasonDict)
    assert set(h.input_json_schema["properties"]) == {"reason", "urgent"}
    await h.on_invoke_handoff(RunContextWrapper(None), '{"reason": "r", "urgent": true}')
    assert calls == [{"reason": "r", "urgent": True}]


@pytest.mark.parametrize("arguments", ["{", '{"reason": 5}', "{}", "[]"])
async def test_invalid_input_raises_tool_arguments_error(arguments: str) -> None:
    calls: list[Any] = []
    h = realtime_handoff(
        billing(), on_handoff=lambda ctx, data: calls.append(data), input_type=Reason
    )
    with pytest.raises(ToolArgumentsError):
        await h.on_invoke_handoff(RunContextWrapper(None), arguments)
    assert calls == []


def test_input_type_without_on_handoff_is_rejected() -> None:
    with pytest.raises(ToolDefinitionError):
        realtime_handoff(billing(), input_type=Reason)


def test_non_agent_is_rejected() -> None:
    with pytest.raises(ToolDefinitionError):
        realtime_handoff("Billing Agent")  # type: ignore[arg-type]


def test_as_handoff() -> None:
    agent = billing()
    made = as_handoff(agent)
    assert isinstance(made, Handoff) and made.agent is agent
    existing = realtime_handoff(agent, tool_name_override="x")
    assert as_handoff(existing) is existing
