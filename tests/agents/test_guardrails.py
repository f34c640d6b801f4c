"""Output guardrails: names, decorator forms, sync/async checks."""

from __future__ import annotations

from typing import Any

import pytest

from ray_realtime.agents.context import RunContextWrapper
from ray_realtime.agents.guardrails import (
    GuardrailFunctionOutput,
    OutputGuardrail,
    output_guardrail,
)

CTX: RunContextWrapper[Any] = RunContextWrapper(None)


def no_secrets(ctx: RunContextWrapper[Any], agent: Any, output: str) -> GuardrailFunctionOutput:
    return GuardrailFunctionOutput(
        output_info={"len": len(output)}, tripwire_triggered="secret" in output
    )


async def no_secrets_async(
    ctx: RunContextWrapper[Any], agent: Any, output: str
) -> GuardrailFunctionOutput:
    return no_secrets(ctx, agent, output)


@pytest.mark.parametrize("fn", [no_secrets, no_secrets_async], ids=["sync", "async"])
async def test_run(fn: Any) -> None:
    guardrail = OutputGuardrail(guardrail_function=fn)
    tripped = await guardrail.run(CTX, None, "the secret is 42")
    assert tripped == GuardrailFunctionOutput({"len": 16}, True)
    clean = await guardrail.run(CTX, None, "hello")
    assert clean.tripwire_triggered is False


async def test_run_passes_context_agent_and_output() -> None:
    seen: list[tuple[Any, ...]] = []

    def check(ctx: RunContextWrapper[Any], agent: Any, output: str) -> GuardrailFunctionOutput:
        seen.append((ctx, agent, output))
        return GuardrailFunctionOutput(None, False)

    agent = object()
    await OutputGuardrail(check).run(CTX, agent, "text")
    assert seen == [(CTX, agent, "text")]


def test_get_name_default_and_explicit() -> None:
    assert OutputGuardrail(no_secrets).get_name() == "no_secrets"
    assert OutputGuardrail(no_secrets, name="custom").get_name() == "custom"
    assert OutputGuardrail(no_secrets, name="").get_name() == "no_secrets"


def test_get_name_of_callable_without_name() -> None:
    class Checker:
        def __call__(self, *args: Any) -> GuardrailFunctionOutput:
            return GuardrailFunctionOutput(None, False)

    assert OutputGuardrail(Checker()).get_name() == "guardrail"


def test_decorator_bare() -> None:
    @output_guardrail
    def polite(ctx: RunContextWrapper[Any], agent: Any, output: str) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(None, False)

    assert isinstance(polite, OutputGuardrail)
    assert polite.name is None
    assert polite.get_name() == "polite"


def test_decorator_with_name() -> None:
    @output_guardrail(name="be_polite")
    async def polite(
        ctx: RunContextWrapper[Any], agent: Any, output: str
    ) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(None, False)

    assert isinstance(polite, OutputGuardrail)
    assert polite.get_name() == "be_polite"


def test_decorator_without_arguments_in_parentheses() -> None:
    guardrail = output_guardrail()(no_secrets)
    assert guardrail.get_name() == "no_secrets"


@pytest.mark.parametrize("bad", [True, None, {"tripwire_triggered": True}, "tripped"])
async def test_wrong_return_type_raises_type_error(bad: Any) -> None:
    def sync_bad(ctx: Any, agent: Any, output: str) -> Any:
        return bad

    async def async_bad(ctx: Any, agent: Any, output: str) -> Any:
        return bad

    for fn in (sync_bad, async_bad):
        with pytest.raises(TypeError, match=fn.__name__):
            await OutputGuardrail(fn).run(CTX, None, "x")
