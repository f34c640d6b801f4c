"""Running user code: one tool call, one round of output guardrails.

Shared by the in-process session and the worker actors, so a tool behaves the
same wherever it runs: a timeout bounds every call, and an exception becomes
the text the model sees plus an error, never a dead session.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ray_realtime import wire
from ray_realtime.agents.context import RunContextWrapper, ToolContext, wrap_context
from ray_realtime.agents.guardrails import OutputGuardrail
from ray_realtime.agents.tools import (
    FunctionTool,
    ToolArgumentsError,
    default_tool_timeout_error_message,
    tool_output_to_text,
)
from ray_realtime.exceptions import SerializationError, ToolTimeoutError
from ray_realtime.types.events import AgentRef, GuardrailRef, OutputGuardrailResult

__all__ = [
    "GuardrailRound",
    "ToolOutcome",
    "event_value",
    "plain_data",
    "run_guardrails",
    "run_tool_call",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """The result of a tool call: ``output`` for the model; ``error`` set when
    the call failed (``output`` then explains the failure to the model);
    ``raised``: the failure is to be raised, not told to the model (the
    tool's ``failure_error_function`` is ``None``, or a timeout with
    ``timeout_behavior="raise_exception"``); ``value``: what ``tool_end``
    shows for a call that succeeded (see :func:`event_value`)."""

    output: str
    error: str | None = None
    raised: bool = False
    value: Any = None

    @property
    def event_output(self) -> Any:
        """``tool_end.output``: the return value of a call that succeeded,
        else the text the model was given."""
        return self.value if self.error is None and not self.raised else self.output


def event_value(result: Any, text: str) -> Any:
    """The tool's return value ``result`` if the wire codec can carry it
    (plain data: str, numbers, bytes, lists, dicts with str keys, our event
    types), else ``text``, the text the model was given. The same rule in
    both modes, so ``tool_end.output`` does not depend on where a session runs."""
    try:
        wire.encode(result)
    except SerializationError:
        return text
    return result


async def _error_text(
    fn: Any, wrapper: RunContextWrapper[Any], exc: Exception, fallback: str
) -> str:
    """What ``fn(wrapper, exc)`` (sync or async) says; ``fallback`` if it fails."""
    try:
        text = fn(wrapper, exc)
        if inspect.isawaitable(text):
            text = await text
    except Exception as inner:
        return f"{fallback} (and its error function raised {type(inner).__name__}: {inner})"
    return text if isinstance(text, str) else str(text)


async def run_tool_call(
    tool: FunctionTool,
    context: Any,
    *,
    call_id: str,
    arguments: str,
    default_timeout: float,
    agent: Any = None,
) -> ToolOutcome:
    """Run one call of ``tool`` with its timeout (``tool.timeout_seconds`` or
    ``default_timeout``); never raises except on cancellation."""
    timeout = tool.timeout_seconds or default_timeout
    wrapper = wrap_context(context)
    tool_ctx = ToolContext(
        context=wrapper.context,
        tool_name=tool.name,
        tool_call_id=call_id,
        tool_arguments=arguments,
        tool_call={
            "type": "function_call",
            "call_id": call_id,
            "name": tool.name,
            "arguments": arguments,
        },
        agent=agent,
    )
    try:
        result = await asyncio.wait_for(tool.on_invoke_tool(tool_ctx, arguments), timeout)
    except TimeoutError:
        message = default_tool_timeout_error_message(tool_name=tool.name, timeout_seconds=timeout)
        if tool.timeout_behavior == "raise_exception":
            return ToolOutcome("", message, raised=True)
        output = message
        if tool.timeout_error_function is not None:
            error = ToolTimeoutError(message, tool.name)
            output = await _error_text(tool.timeout_error_function, tool_ctx, error, message)
        return ToolOutcome(output, message)
    except ToolArgumentsError as exc:
        return ToolOutcome(f"Error: {exc}", str(exc))
    except Exception as exc:
        logger.info("tool %s raised %s", tool.name, type(exc).__name__)
        message = f"Tool {tool.name!r} raised {type(exc).__name__}: {exc}"
        if tool.failure_error_function is None:
            return ToolOutcome("", message, raised=True)
        output = await _error_text(tool.failure_error_function, tool_ctx, exc, message)
        return ToolOutcome(output, message)
    try:
        text = tool_output_to_text(result)
        return ToolOutcome(text, value=event_value(result, text))
    except Exception as exc:
        message = f"Tool {tool.name!r} returned a value that cannot be made text: {exc}"
        return ToolOutcome(f"Error: {message}", message)


@dataclass(frozen=True, slots=True)
class GuardrailRound:
    """The results of one round of guardrails, plus the errors of those that failed."""

    results: list[OutputGuardrailResult]
    errors: list[str]


async def run_guardrails(
    guardrails: Sequence[OutputGuardrail],
    context: Any,
    agent: Any,
    agent_name: str,
    text: str,
    *,
    timeout: float,
) -> GuardrailRound:
    """Run every guardrail on ``text`` concurrently, each bounded by ``timeout``.

    A guardrail that raises or times out counts as not tripped and is reported
    in ``errors``: one broken check must not silence the others.
    """
    wrapper = wrap_context(context)

    async def one(guardrail: OutputGuardrail) -> OutputGuardrailResult | str:
        name = guardrail.get_name()
        try:
            output = await asyncio.wait_for(guardrail.run(wrapper, agent, text), timeout)
        except TimeoutError:
            return f"Guardrail {name!r} timed out after {timeout:g} s."
        except Exception as exc:
            return f"Guardrail {name!r} raised {type(exc).__name__}: {exc}"
        try:
            # User values: a tripwire whose truth is ambiguous (a numpy array)
            # or output_info whose repr raises is this guardrail's error.
            tripped = bool(output.tripwire_triggered)
            info = plain_data(output.output_info)
        except Exception as exc:
            return f"Guardrail {name!r} returned an unusable result: {type(exc).__name__}: {exc}"
        return OutputGuardrailResult(
            guardrail=GuardrailRef(name),
            agent=AgentRef(agent_name),
            agent_output=text,
            tripwire_triggered=tripped,
            output_info=info,
        )

    outcomes = await asyncio.gather(*(one(g) for g in guardrails))
    results = [o for o in outcomes if isinstance(o, OutputGuardrailResult)]
    errors = [o for o in outcomes if isinstance(o, str)]
    return GuardrailRound(results, errors)


def plain_data(value: Any, _depth: int = 0) -> Any:
    """``value`` if it is plain data (str, numbers, None, bytes, lists, dicts
    with str keys), else its ``repr`` — events must cross processes."""
    if value is None or isinstance(value, (str, int, float, bool, bytes)):
        return value
    if _depth > 16:
        return repr(value)
    if isinstance(value, (list, tuple)):
        return [plain_data(v, _depth + 1) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: plain_data(v, _depth + 1) for k, v in value.items()}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return plain_data(dump(mode="json"), _depth + 1)
        except Exception:
            return repr(value)
    return repr(value)
