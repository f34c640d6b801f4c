"""ray-realtime against the OpenAI Agents SDK (openai-agents 0.24, a test-only
extra): every public name of ``agents.realtime`` imports from ``ray_realtime``,
and the defaults, texts, rules and signatures the SDK documents are ours too.
Skipped, with the reason, when the SDK is not installed."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import ray_realtime
from ray_realtime.agents.handoffs import default_handoff_tool_description, default_handoff_tool_name
from ray_realtime.agents.tools import (
    default_tool_error_function,
    default_tool_timeout_error_message,
)

sdk_realtime = pytest.importorskip(
    "agents.realtime", reason="openai-agents (the test extra) is not installed"
)
import agents  # noqa: E402
import agents.tool  # noqa: E402

EXTRA_NAMES = [
    "function_tool",
    "RunContextWrapper",
    "ToolContext",
    "output_guardrail",
    "OutputGuardrail",
    "GuardrailFunctionOutput",
]


def test_every_sdk_realtime_name_imports_from_ray_realtime() -> None:
    wanted = list(sdk_realtime.__all__) + EXTRA_NAMES
    missing = [name for name in wanted if name not in ray_realtime.__all__]
    assert missing == []
    for name in wanted:
        assert getattr(ray_realtime, name) is not None


def test_default_model_settings_are_the_sdks() -> None:
    assert ray_realtime.DEFAULT_MODEL_SETTINGS == sdk_realtime.DEFAULT_MODEL_SETTINGS


def test_default_texts_are_the_sdks() -> None:
    ctx: Any = ray_realtime.RunContextWrapper(None)
    assert default_tool_error_function(
        ctx, ValueError("x")
    ) == agents.tool.default_tool_error_function(agents.RunContextWrapper(None), ValueError("x"))
    assert agents.tool.DEFAULT_APPROVAL_REJECTION_MESSAGE == "Tool execution was not approved."
    from ray_realtime.types.config import DEFAULT_APPROVAL_REJECTION_MESSAGE

    assert DEFAULT_APPROVAL_REJECTION_MESSAGE == agents.tool.DEFAULT_APPROVAL_REJECTION_MESSAGE
    for name, seconds in (("slow", 2.0), ("slow", 0.25)):
        assert default_tool_timeout_error_message(
            tool_name=name, timeout_seconds=seconds
        ) == agents.tool.default_tool_timeout_error_message(tool_name=name, timeout_seconds=seconds)


@pytest.mark.parametrize(
    "name", ["BillingAgent", "Billing Agent", "billing-agent", "Café Bot", "  A  b!! ", "x"]
)
def test_handoff_tool_names_and_descriptions_are_the_sdks(name: str) -> None:
    sdk_agent = sdk_realtime.RealtimeAgent(name=name, handoff_description="Bills.")
    ours = ray_realtime.RealtimeAgent(name=name, handoff_description="Bills.")
    assert default_handoff_tool_name(name) == agents.Handoff.default_tool_name(sdk_agent)
    assert default_handoff_tool_description(ours) == agents.Handoff.default_tool_description(
        sdk_agent
    )
    assert (
        ray_realtime.realtime_handoff(ours).tool_name
        == sdk_realtime.realtime_handoff(sdk_agent).tool_name
    )


def _params(fn: Any) -> list[tuple[str, Any, Any]]:
    return [
        (p.name, p.kind, p.default)
        for p in inspect.signature(fn).parameters.values()
        if p.name != "self"
    ]


@pytest.mark.parametrize("method", ["approve_tool_call", "reject_tool_call"])
def test_approval_signatures_are_the_sdks(method: str) -> None:
    ours = _params(getattr(ray_realtime.RealtimeSession, method))
    theirs = _params(getattr(sdk_realtime.RealtimeSession, method))
    assert ours == theirs


def test_function_tool_takes_the_sdks_timeout_and_failure_options() -> None:
    ours = inspect.signature(ray_realtime.function_tool).parameters
    theirs = inspect.signature(agents.function_tool).parameters
    for name in (
        "name_override",
        "description_override",
        "docstring_style",
        "use_docstring_info",
        "failure_error_function",
        "strict_mode",
        "is_enabled",
        "needs_approval",
        "timeout",
        "timeout_behavior",
        "timeout_error_function",
    ):
        assert name in ours and name in theirs, name
        assert ours[name].kind == theirs[name].kind, name
    assert ours["timeout"].default is None and ours["timeout_behavior"].default == "error_as_result"


def test_tool_context_has_the_sdks_fields() -> None:
    sdk_fields = {
        "tool_name",
        "tool_call_id",
        "tool_arguments",
        "tool_call",
        "tool_namespace",
        "agent",
        "run_config",
    }
    ours = {f for f in ray_realtime.ToolContext.__dataclass_fields__}
    assert sdk_fields <= ours
