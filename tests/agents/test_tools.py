"""function_tool: definition, schema, invocation and output text."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

import pytest
from pydantic import BaseModel

from ray_realtime.agents.context import RunContextWrapper, ToolContext
from ray_realtime.agents.tools import (
    FunctionTool,
    ToolArgumentsError,
    default_tool_error_function,
    function_tool,
    tool_output_to_text,
)
from ray_realtime.exceptions import ToolDefinitionError, UserError


def ctx(context: Any = None) -> ToolContext[Any]:
    return ToolContext(context=context)


class Address(BaseModel):
    street: str
    zip_code: int | None = None


# ------------------------------------------------------------ definition


def test_bare_decorator_makes_a_function_tool() -> None:
    @function_tool
    def add_one(x: int) -> int:
        """Add one to x."""
        return x + 1

    assert isinstance(add_one, FunctionTool)
    assert add_one.name == "add_one"
    assert add_one.description == "Add one to x."
    assert add_one.timeout_seconds is None
    assert add_one.needs_approval is False
    assert add_one.is_enabled is True
    assert add_one.strict_json_schema is True
    assert add_one.failure_error_function is default_tool_error_function


def test_decorator_with_options() -> None:
    def enabled(_ctx: RunContextWrapper[Any], _agent: Any) -> bool:
        return False

    @function_tool(
        name_override="lookup-v2",
        description_override="Look things up.",
        timeout_seconds=5,
        needs_approval=True,
        is_enabled=enabled,
        failure_error_function=None,
    )
    def lookup(q: str) -> str:
        """Ignored docstring."""
        return q

    assert lookup.name == "lookup-v2"
    assert lookup.description == "Look things up."
    assert lookup.timeout_seconds == 5.0 and isinstance(lookup.timeout_seconds, float)
    assert lookup.needs_approval is True
    assert lookup.is_enabled is enabled
    assert lookup.failure_error_function is None


def test_function_tool_called_directly() -> None:
    def f(x: int) -> int:
        return x

    assert function_tool(f).name == "f"
    assert function_tool(name_override="g")(f).name == "g"


def test_description_from_docstring_summary_and_args_in_schema() -> None:
    @function_tool
    def get_weather(city: str, days: int = 3) -> str:
        """Get the weather forecast.

        Uses the public weather service.

        Args:
            city: The city to look up.
            days (int): How many days
                to forecast.

        Returns:
            The forecast as text.
        """
        return city

    assert (
        get_weather.description == "Get the weather forecast.\n\nUses the public weather service."
    )
    props = get_weather.params_json_schema["properties"]
    assert props["city"]["description"] == "The city to look up."
    assert props["days"]["description"] == "How many days to forecast."
    assert "Returns" not in get_weather.description


def test_use_docstring_info_false() -> None:
    @function_tool(use_docstring_info=False)
    def f(x: int) -> int:
        """Summary.

        Args:
            x: The x.
        """
        return x

    assert f.description == ""
    assert "description" not in f.params_json_schema["properties"]["x"]


def test_description_override_keeps_param_docs() -> None:
    @function_tool(description_override="Other.")
    def f(x: int) -> int:
        """Summary.

        Args:
            x: The x.
        """
        return x

    assert f.description == "Other."
    assert f.params_json_schema["properties"]["x"]["description"] == "The x."


def test_strict_schema_all_required_no_additional_properties() -> None:
    @function_tool
    def f(a: str, b: int = 2, c: str | None = None) -> str:
        return a

    schema = f.params_json_schema
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert sorted(schema["required"]) == ["a", "b", "c"]
    assert set(schema["properties"]) == {"a", "b", "c"}
    assert "title" not in schema


def test_strict_schema_applies_to_nested_pydantic_models() -> None:
    @function_tool
    def ship(to: Address, items: list[Address]) -> str:
        return to.street

    schema = ship.params_json_schema
    objects = [schema, *schema.get("$defs", {}).values()]
    assert len(objects) >= 2, schema
    for obj in objects:
        assert obj["additionalProperties"] is False, obj
        assert sorted(obj["required"]) == sorted(obj["properties"]), obj
    assert set(schema["$defs"]["Address"]["required"]) == {"street", "zip_code"}


def test_non_strict_mode_keeps_optional_properties() -> None:
    @function_tool(strict_mode=False)
    def f(a: str, b: int = 2) -> str:
        return a

    assert f.strict_json_schema is False
    assert f.params_json_schema.get("required") == ["a"]
    assert "additionalProperties" not in f.params_json_schema


def test_no_parameters_schema() -> None:
    @function_tool
    def ping() -> str:
        return "pong"

    schema = ping.params_json_schema
    assert schema["type"] == "object"
    assert schema["properties"] == {} and schema["required"] == []
    assert schema["additionalProperties"] is False


def test_parameter_named_properties_keeps_a_valid_schema() -> None:
    @function_tool
    def f(properties: str) -> str:
        return properties

    schema = f.params_json_schema
    assert set(schema["properties"]) == {"properties"}, schema
    assert schema["required"] == ["properties"], schema


async def test_context_parameter_receives_context_and_is_not_in_schema() -> None:
    seen: list[Any] = []

    @function_tool
    def whoami(wrapper: RunContextWrapper[dict[str, str]], greeting: str) -> str:
        seen.append(wrapper)
        return f"{greeting} {wrapper.context['user']}"

    assert set(whoami.params_json_schema["properties"]) == {"greeting"}
    tool_ctx = ctx({"user": "ada"})
    result = await whoami.on_invoke_tool(tool_ctx, '{"greeting": "hi"}')
    assert result == "hi ada"
    assert seen == [tool_ctx]


async def test_tool_context_annotation_also_works() -> None:
    @function_tool
    async def who(c: ToolContext[Any]) -> str:
        return c.tool_call_id

    assert who.params_json_schema["properties"] == {}
    tc = ToolContext(context=None, tool_name="who", tool_call_id="call_7", tool_arguments="{}")
    assert await who.on_invoke_tool(tc, "{}") == "call_7"


def test_context_parameter_not_first_is_rejected() -> None:
    def f(x: int, c: RunContextWrapper[Any]) -> int:
        return x

    with pytest.raises(ToolDefinitionError):
        function_tool(f)


@pytest.mark.parametrize("bad", [0, -1, -0.5, True, "5"])
def test_timeout_seconds_must_be_positive(bad: Any) -> None:
    with pytest.raises(ToolDefinitionError):
        function_tool(timeout_seconds=bad)


@pytest.mark.parametrize("name", ["has space", "dot.name", "x" * 65, "ünïcode", "a/b"])
def test_invalid_names_are_rejected(name: str) -> None:
    def f(x: int) -> int:
        return x

    with pytest.raises(ToolDefinitionError):
        function_tool(name_override=name)(f)


def test_lambda_name_is_rejected() -> None:
    with pytest.raises(ToolDefinitionError):
        function_tool(lambda x: x)


def test_valid_name_edge_lengths() -> None:
    def f(x: int) -> int:
        return x

    assert function_tool(name_override="x" * 64)(f).name == "x" * 64
    assert function_tool(name_override="a-b_C9")(f).name == "a-b_C9"


def test_varargs_rejected() -> None:
    def star(*args: int) -> int:
        return sum(args)

    def kw(**kwargs: int) -> int:
        return len(kwargs)

    with pytest.raises(ToolDefinitionError):
        function_tool(star)
    with pytest.raises(ToolDefinitionError):
        function_tool(kw)


def test_not_callable_rejected() -> None:
    with pytest.raises(ToolDefinitionError):
        function_tool(42)  # type: ignore[call-overload]


def test_tool_definition_error_is_a_user_error() -> None:
    assert issubclass(ToolDefinitionError, UserError)
    assert issubclass(ToolArgumentsError, UserError)


def test_to_definition_shape() -> None:
    @function_tool
    def lookup(q: str) -> str:
        """Look up q."""
        return q

    definition = lookup.to_definition()
    assert definition == {
        "type": "function",
        "name": "lookup",
        "description": "Look up q.",
        "parameters": lookup.params_json_schema,
    }


# ------------------------------------------------------------- invocation


async def test_sync_tool_invocation() -> None:
    @function_tool
    def double(x: int) -> int:
        return x * 2

    assert await double.on_invoke_tool(ctx(), '{"x": 1}') == 2


async def test_async_tool_invocation() -> None:
    @function_tool
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    assert await double.on_invoke_tool(ctx(), '{"x": 1}') == 2


async def test_defaults_and_empty_arguments() -> None:
    @function_tool
    def f(x: int = 7) -> int:
        return x

    assert await f.on_invoke_tool(ctx(), "") == 7
    assert await f.on_invoke_tool(ctx(), "  ") == 7
    assert await f.on_invoke_tool(ctx(), "{}") == 7


async def test_pydantic_model_argument_is_validated_into_the_model() -> None:
    @function_tool
    def street(to: Address) -> str:
        assert isinstance(to, Address)
        return to.street

    assert await street.on_invoke_tool(ctx(), '{"to": {"street": "Main", "zip_code": 1}}') == "Main"


async def test_positional_only_and_keyword_only_parameters() -> None:
    @function_tool
    def f(a: int, /, b: int, *, c: int) -> list[int]:
        return [a, b, c]

    assert await f.on_invoke_tool(ctx(), '{"a": 1, "b": 2, "c": 3}') == [1, 2, 3]


@pytest.mark.parametrize(
    "arguments", ["{", "not json", "[1]", '"x"', "3", '{"x": "not an int"}', '{"y": 1}']
)
async def test_bad_arguments_raise_tool_arguments_error(arguments: str) -> None:
    calls: list[int] = []

    @function_tool
    def f(x: int) -> int:
        calls.append(x)
        return x

    with pytest.raises(ToolArgumentsError):
        await f.on_invoke_tool(ctx(), arguments)
    assert calls == [], "the function must not run on bad arguments"


async def test_tool_exceptions_propagate() -> None:
    @function_tool
    def boom(x: int) -> int:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await boom.on_invoke_tool(ctx(), '{"x": 1}')


async def test_sync_tools_run_in_a_thread() -> None:
    loop_thread = threading.get_ident()

    @function_tool
    def where() -> int:
        return threading.get_ident()

    @function_tool
    async def where_async() -> int:
        return threading.get_ident()

    assert await where.on_invoke_tool(ctx(), "{}") != loop_thread
    assert await where_async.on_invoke_tool(ctx(), "{}") == loop_thread


def test_default_tool_error_function_is_the_sdks_text() -> None:
    # The SDK's default does not expose the exception to the model.
    text = default_tool_error_function(RunContextWrapper(None), ValueError("bad thing"))
    assert text == "An error occurred while running the tool. Please try again."


# ---------------------------------------------------------------- outputs


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("", ""),
        ({"a": 1, "b": [1, 2]}, '{"a": 1, "b": [1, 2]}'),
        ([1, "two"], '[1, "two"]'),
        (3, "3"),
        (True, "true"),
        (None, "null"),
        (Address(street="Main", zip_code=None), '{"street":"Main","zip_code":null}'),
        (Point(1, 2), '{"x": 1, "y": 2}'),
    ],
)
def test_tool_output_to_text(value: Any, expected: str) -> None:
    assert tool_output_to_text(value) == expected


def test_tool_output_to_text_falls_back_to_str() -> None:
    assert tool_output_to_text({"a": object}) == str({"a": object})

    class Thing:
        def __str__(self) -> str:
            return "a thing"

    assert tool_output_to_text(Thing()) == "a thing"
    assert tool_output_to_text(Point) == str(Point), "a dataclass *type* is not serialised"


# ------------------------------------------------------ the SDK's tool options


def test_timeout_is_the_sdk_name_and_timeout_seconds_its_alias() -> None:
    @function_tool(timeout=2)
    def a() -> str:
        """A."""
        return "a"

    @function_tool(timeout_seconds=3)
    def b() -> str:
        """B."""
        return "b"

    assert a.timeout_seconds == 2.0 and b.timeout_seconds == 3.0
    with pytest.raises(ToolDefinitionError, match="not both"):
        function_tool(timeout=1, timeout_seconds=2)
    with pytest.raises(ToolDefinitionError, match="positive"):
        function_tool(timeout=0)
    with pytest.raises(ToolDefinitionError, match="timeout_behavior"):
        function_tool(timeout_behavior="shrug")  # type: ignore[arg-type]
    with pytest.raises(ToolDefinitionError, match="needs_approval"):
        function_tool(needs_approval="yes")  # type: ignore[arg-type]
    with pytest.raises(ToolDefinitionError, match="failure_error_function"):
        function_tool(failure_error_function="oops")  # type: ignore[arg-type]


def test_failure_error_function_default_none_and_custom() -> None:
    def plain() -> str:
        """Plain."""
        return ""

    assert function_tool(plain).failure_error_function is default_tool_error_function
    assert function_tool(failure_error_function=None)(plain).failure_error_function is None


async def _slow() -> str:
    """Slow."""
    await asyncio.sleep(30)
    return "late"


async def test_timeout_behaviours_and_timeout_error_function() -> None:
    from ray_realtime.session.execution import run_tool_call

    async def word(ctx: RunContextWrapper[Any], error: Exception) -> str:
        assert isinstance(ctx, ToolContext) and ctx.tool_name == "_slow"
        return f"too slow: {error}"

    kwargs: Any = {"call_id": "c1", "arguments": "{}", "default_timeout": 30.0}
    as_result = await run_tool_call(function_tool(timeout=0.05)(_slow), None, **kwargs)
    assert as_result.output == "Tool '_slow' timed out after 0.05 seconds."
    assert not as_result.raised
    worded = await run_tool_call(
        function_tool(timeout=0.05, timeout_error_function=word)(_slow), None, **kwargs
    )
    assert worded.output == "too slow: Tool '_slow' timed out after 0.05 seconds."
    raised = await run_tool_call(
        function_tool(timeout=0.05, timeout_behavior="raise_exception")(_slow), None, **kwargs
    )
    assert raised.raised and raised.error == "Tool '_slow' timed out after 0.05 seconds."


async def test_failing_error_function_falls_back_to_the_error() -> None:
    from ray_realtime.session.execution import run_tool_call

    def broken(ctx: RunContextWrapper[Any], error: Exception) -> str:
        raise RuntimeError("formatter broke")

    @function_tool(failure_error_function=broken)
    def fails() -> str:
        """Fails."""
        raise ValueError("bad")

    outcome = await run_tool_call(fails, None, call_id="c", arguments="{}", default_timeout=5.0)
    assert "bad" in outcome.output and "formatter broke" in outcome.output
    assert outcome.error is not None and not outcome.raised
