"""The run context wrapper handed to tools, guardrails and dynamic instructions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["RealtimeEventInfo", "RunContextWrapper", "TContext", "ToolContext", "wrap_context"]

TContext = TypeVar("TContext")


@dataclass
class RunContextWrapper(Generic[TContext]):
    """Wraps the ``context`` given to ``runner.run(context=...)``.

    In actor execution the context travels *by value* to the session actor and
    to tool and guardrail workers: changes a tool makes to it stay in that
    worker and do not flow back to the caller or to other calls.
    """

    context: TContext


@dataclass
class ToolContext(RunContextWrapper[TContext]):
    """The context of one tool call: the run context plus the call's identity
    (the SDK's fields). ``agent`` is the agent whose tool runs (a copy, on a
    tool worker); ``tool_call`` is the call as protocol data
    (``{"type": "function_call", "call_id", "name", "arguments"}``), not an
    ``openai`` object; ``run_config`` is not shipped to workers (``None``)."""

    tool_name: str = ""
    tool_call_id: str = ""
    tool_arguments: str = ""
    tool_call: dict[str, Any] | None = None
    tool_namespace: str | None = None
    agent: Any = None
    run_config: Any = None


@dataclass
class RealtimeEventInfo:
    """What the SDK attaches to each event as ``info``. ray-realtime events
    cross processes and carry no context; the class exists for code that
    builds or annotates its own events."""

    context: RunContextWrapper[Any]


def wrap_context(context: Any) -> RunContextWrapper[Any]:
    """A wrapper around ``context`` (returned as is if it already is one)."""
    if isinstance(context, RunContextWrapper):
        return context
    return RunContextWrapper(context)
