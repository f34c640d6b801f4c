"""Output guardrails: checks on what the agent says, run on its transcript."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, overload

from ray_realtime.agents.context import RunContextWrapper
from ray_realtime.types.guardrails import GuardrailFunctionOutput

__all__ = ["GuardrailFunctionOutput", "OutputGuardrail", "output_guardrail"]


GuardrailFunction = Callable[
    [RunContextWrapper[Any], Any, str],
    GuardrailFunctionOutput | Awaitable[GuardrailFunctionOutput],
]


@dataclass
class OutputGuardrail:
    """An output guardrail: ``guardrail_function(context_wrapper, agent,
    agent_output)`` (sync or async) judges the transcript so far."""

    guardrail_function: GuardrailFunction
    name: str | None = None

    def get_name(self) -> str:
        """The guardrail's name: ``name`` or the function's name."""
        if self.name:
            return self.name
        return getattr(self.guardrail_function, "__name__", "guardrail")

    async def run(
        self, context: RunContextWrapper[Any], agent: Any, agent_output: str
    ) -> GuardrailFunctionOutput:
        """Run the check once."""
        result = self.guardrail_function(context, agent, agent_output)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, GuardrailFunctionOutput):
            raise TypeError(
                f"guardrail {self.get_name()!r} returned {type(result).__name__}, "
                "not GuardrailFunctionOutput"
            )
        return result


@overload
def output_guardrail(func: GuardrailFunction, /) -> OutputGuardrail: ...


@overload
def output_guardrail(
    *, name: str | None = None
) -> Callable[[GuardrailFunction], OutputGuardrail]: ...


def output_guardrail(
    func: GuardrailFunction | None = None, /, *, name: str | None = None
) -> OutputGuardrail | Callable[[GuardrailFunction], OutputGuardrail]:
    """Make an :class:`OutputGuardrail` from a function (bare or with ``name=``)."""

    def build(fn: GuardrailFunction) -> OutputGuardrail:
        return OutputGuardrail(guardrail_function=fn, name=name)

    if func is not None:
        return build(func)
    return build
