"""Function tools: ``function_tool`` turns a Python function into a tool.

The tool's name and description come from the function and its docstring; the
JSON schema of its parameters is built with pydantic from the signature and
made *strict* (every property required, no extra properties) as the realtime
API expects. A first parameter annotated ``RunContextWrapper`` (or
``ToolContext``) receives the run context and is not part of the schema.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, overload

from pydantic import BaseModel, ValidationError, create_model
from pydantic.fields import FieldInfo

from ray_realtime.agents.context import RunContextWrapper, TContext, ToolContext
from ray_realtime.exceptions import ToolDefinitionError, UserError
from ray_realtime.types.config import DEFAULT_APPROVAL_REJECTION_MESSAGE

__all__ = [
    "DEFAULT_APPROVAL_REJECTION_MESSAGE",
    "FunctionTool",
    "Tool",
    "ToolArgumentsError",
    "ToolErrorFormatterArgs",
    "ToolTimeoutBehavior",
    "default_tool_error_function",
    "default_tool_timeout_error_message",
    "function_tool",
    "tool_output_to_text",
]

ToolFunction = Callable[..., Any]
ToolErrorFunction = Callable[[RunContextWrapper[Any], Exception], Any]
"""``(context, error) -> str`` (or an awaitable of one): the model's text for a
failed call."""
ToolApprovalFunction = Callable[[RunContextWrapper[Any], dict[str, Any], str], Any]
"""``(context, arguments, call_id) -> bool`` (or an awaitable of one): whether
this call needs approval."""
ToolTimeoutBehavior = Literal["error_as_result", "raise_exception"]
"""A timed-out call: an error text for the model, or a raised error."""


# function_tool's failure_error_function left out: the default function; an
# explicit None means the tool's exception is raised (the SDK's distinction).
_UNSET: Any = object()


class ToolArgumentsError(UserError):
    """The model's arguments for a tool are not valid JSON or do not fit the schema."""


def default_tool_error_function(ctx: RunContextWrapper[Any], error: Exception) -> str:
    """The output the model sees when a tool raises (the SDK's text: it does
    not expose the exception to the model; readers get it in an ``error``
    event)."""
    return "An error occurred while running the tool. Please try again."


def default_tool_timeout_error_message(*, tool_name: str, timeout_seconds: float) -> str:
    """The output the model sees when a call times out (the SDK's text)."""
    return f"Tool '{tool_name}' timed out after {timeout_seconds:g} seconds."


@dataclass
class ToolErrorFormatterArgs(Generic[TContext]):
    """What the run config's ``tool_error_formatter`` receives. Realtime
    sessions call it for rejected approvals (``kind="approval_rejected"``),
    as the SDK does."""

    kind: Literal["approval_rejected", "tool_not_found", "tool_exception"]
    tool_type: Literal["function"]
    tool_name: str
    call_id: str
    default_message: str
    run_context: RunContextWrapper[TContext]
    error: Exception | None = None


@dataclass
class FunctionTool:
    """A tool the model can call.

    ``on_invoke_tool(tool_context, arguments_json)`` runs the tool and returns
    its result (any value; :func:`tool_output_to_text` makes the model's text).
    ``timeout_seconds`` bounds one call (the run config's default when None).
    ``needs_approval`` is a bool or an approval function (see
    :data:`ToolApprovalFunction`); ``failure_error_function`` ``None`` means a
    raising call ends the session with an ``error`` event (the SDK raises it).
    """

    name: str
    description: str
    params_json_schema: dict[str, Any]
    on_invoke_tool: Callable[[ToolContext[Any], str], Awaitable[Any]]
    strict_json_schema: bool = True
    is_enabled: bool | Callable[[RunContextWrapper[Any], Any], Any] = True
    timeout_seconds: float | None = None
    failure_error_function: ToolErrorFunction | None = default_tool_error_function
    needs_approval: bool | ToolApprovalFunction = False
    timeout_behavior: ToolTimeoutBehavior = "error_as_result"
    timeout_error_function: ToolErrorFunction | None = None

    def to_definition(self) -> dict[str, Any]:
        """The tool as the realtime protocol's ``session.tools`` entry."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.params_json_schema,
        }


Tool = FunctionTool
"""Any tool a realtime agent can hold (function tools only, as in the SDK)."""


def tool_output_to_text(output: Any) -> str:
    """The text the model receives for a tool's return value."""
    if isinstance(output, str):
        return output
    if isinstance(output, BaseModel):
        return output.model_dump_json()
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return json.dumps(dataclasses.asdict(output), default=str)
    if isinstance(output, (dict, list, tuple, int, float, bool)) or output is None:
        try:
            return json.dumps(output)
        except (TypeError, ValueError):
            return str(output)
    return str(output)


@overload
def function_tool(func: ToolFunction, /) -> FunctionTool: ...


@overload
def function_tool(
    *,
    name_override: str | None = None,
    description_override: str | None = None,
    docstring_style: str | None = None,
    use_docstring_info: bool = True,
    failure_error_function: ToolErrorFunction | None = _UNSET,
    strict_mode: bool = True,
    is_enabled: bool | Callable[[RunContextWrapper[Any], Any], Any] = True,
    needs_approval: bool | ToolApprovalFunction = False,
    timeout: float | None = None,
    timeout_behavior: ToolTimeoutBehavior = "error_as_result",
    timeout_error_function: ToolErrorFunction | None = None,
    timeout_seconds: float | None = None,
) -> Callable[[ToolFunction], FunctionTool]: ...


def function_tool(
    func: ToolFunction | None = None,
    /,
    *,
    name_override: str | None = None,
    description_override: str | None = None,
    docstring_style: str | None = None,
    use_docstring_info: bool = True,
    failure_error_function: ToolErrorFunction | None = _UNSET,
    strict_mode: bool = True,
    is_enabled: bool | Callable[[RunContextWrapper[Any], Any], Any] = True,
    needs_approval: bool | ToolApprovalFunction = False,
    timeout: float | None = None,
    timeout_behavior: ToolTimeoutBehavior = "error_as_result",
    timeout_error_function: ToolErrorFunction | None = None,
    timeout_seconds: float | None = None,
) -> FunctionTool | Callable[[ToolFunction], FunctionTool]:
    """Make a :class:`FunctionTool` from a sync or async function.

    Usable bare (``@function_tool``) or with options
    (``@function_tool(name_override="lookup", timeout=5)``), with the SDK's
    options: ``timeout`` bounds each call (``timeout_seconds`` is an alias);
    ``timeout_behavior="raise_exception"`` treats a timeout like a raising
    tool, ``timeout_error_function(ctx, error)`` words the timeout for the
    model; ``failure_error_function`` (sync or async) words a raising call
    for the model, and ``None`` means the exception is raised (the session
    ends with an ``error`` event); ``needs_approval`` is a bool or a (sync or
    async) ``(context, arguments, call_id) -> bool``. Docstrings in Google
    and Sphinx style are read whatever ``docstring_style`` says.
    """
    if timeout is not None and timeout_seconds is not None and timeout != timeout_seconds:
        raise ToolDefinitionError("give timeout or its alias timeout_seconds, not both")
    if timeout is None:
        timeout = timeout_seconds
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise ToolDefinitionError(f"timeout must be a positive number, got {timeout!r}")
    if timeout_behavior not in ("error_as_result", "raise_exception"):
        raise ToolDefinitionError(
            f"timeout_behavior must be 'error_as_result' or 'raise_exception', "
            f"got {timeout_behavior!r}"
        )
    if not (isinstance(needs_approval, bool) or callable(needs_approval)):
        raise ToolDefinitionError("needs_approval must be a bool or a function")
    for name, fn in (
        ("failure_error_function", failure_error_function),
        ("timeout_error_function", timeout_error_function),
    ):
        if fn is not None and fn is not _UNSET and not callable(fn):
            raise ToolDefinitionError(f"{name} must be a function or None")
    if failure_error_function is _UNSET:
        failure_error_function = default_tool_error_function
    timeout_seconds = timeout

    def build(fn: ToolFunction) -> FunctionTool:
        return _build_tool(
            fn,
            name_override=name_override,
            description_override=description_override,
            use_docstring_info=use_docstring_info,
            failure_error_function=failure_error_function,
            strict_mode=strict_mode,
            is_enabled=is_enabled,
            timeout_seconds=timeout_seconds,
            needs_approval=needs_approval,
            timeout_behavior=timeout_behavior,
            timeout_error_function=timeout_error_function,
        )

    if func is not None:
        return build(func)
    return build


def _build_tool(
    fn: ToolFunction,
    *,
    name_override: str | None,
    description_override: str | None,
    use_docstring_info: bool,
    failure_error_function: ToolErrorFunction | None,
    strict_mode: bool,
    is_enabled: bool | Callable[[RunContextWrapper[Any], Any], Any],
    timeout_seconds: float | None,
    needs_approval: bool | ToolApprovalFunction,
    timeout_behavior: ToolTimeoutBehavior,
    timeout_error_function: ToolErrorFunction | None,
) -> FunctionTool:
    if not callable(fn):
        raise ToolDefinitionError(f"function_tool needs a function, got {type(fn).__name__}")
    name: str = name_override or str(getattr(fn, "__name__", ""))
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name or ""):
        raise ToolDefinitionError(
            f"tool name {name!r} must be 1-64 letters, digits, '_' or '-'", name
        )
    doc_description, param_docs = _parse_docstring(inspect.getdoc(fn) or "")
    if not use_docstring_info:
        doc_description, param_docs = "", {}
    description = description_override or doc_description

    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ToolDefinitionError(f"cannot read the type hints of tool {name!r}: {exc}") from exc
    params = list(signature.parameters.values())
    takes_context = False
    if params and _is_context_annotation(hints.get(params[0].name)):
        takes_context = True
        params = params[1:]
    fields: dict[str, Any] = {}
    for param in params:
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ToolDefinitionError(f"tool {name!r}: *args/**kwargs cannot be tool parameters")
        if _is_context_annotation(hints.get(param.name)):
            raise ToolDefinitionError(
                f"tool {name!r}: the context parameter must be the first parameter"
            )
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (
            annotation,
            FieldInfo(default=default, description=param_docs.get(param.name)),
        )
    try:
        args_model: type[BaseModel] = create_model(f"{name}_args", **fields)
        schema = args_model.model_json_schema()
    except Exception as exc:
        raise ToolDefinitionError(f"tool {name!r}: cannot build a JSON schema: {exc}") from exc
    schema.pop("title", None)
    if strict_mode:
        schema = _strict_schema(schema)
    is_async = inspect.iscoroutinefunction(fn)
    param_names = [p.name for p in params]
    positional_only = {p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_ONLY}

    async def on_invoke_tool(ctx: ToolContext[Any], arguments: str) -> Any:
        try:
            raw = json.loads(arguments) if arguments and arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ToolArgumentsError(
                f"arguments of tool {name!r} are not valid JSON: {exc}"
            ) from None
        if not isinstance(raw, dict):
            raise ToolArgumentsError(f"arguments of tool {name!r} must be a JSON object")
        try:
            parsed = args_model.model_validate(raw)
        except ValidationError as exc:
            raise ToolArgumentsError(f"invalid arguments for tool {name!r}: {exc}") from None
        values = {n: getattr(parsed, n) for n in param_names}
        args = [values.pop(n) for n in param_names if n in positional_only]
        if takes_context:
            args.insert(0, ctx)
        if is_async:
            return await fn(*args, **values)
        # Sync tools run in a thread so a slow one never stalls live audio.
        return await asyncio.to_thread(fn, *args, **values)

    tool = FunctionTool(
        name=name,
        description=description,
        params_json_schema=schema,
        on_invoke_tool=on_invoke_tool,
        strict_json_schema=strict_mode,
        is_enabled=is_enabled,
        timeout_seconds=float(timeout_seconds) if timeout_seconds is not None else None,
        failure_error_function=failure_error_function,
        needs_approval=needs_approval,
        timeout_behavior=timeout_behavior,
        timeout_error_function=timeout_error_function,
    )
    return tool


def _is_context_annotation(annotation: Any) -> bool:
    if annotation is None:
        return False
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and issubclass(origin, RunContextWrapper)


def _strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Every object closed and every property required, recursively (the
    realtime API's strict mode rejects optional or open objects)."""

    def walk(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(
                value, dict
            ):
                # A mapping of names to schemas, not a schema itself.
                out[key] = {name: walk(sub) for name, sub in value.items()}
            elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
                out[key] = [walk(sub) for sub in value]
            elif key in ("items", "additionalProperties", "not", "contains"):
                out[key] = walk(value)
            else:
                out[key] = value
        if out.get("type") == "object" or "properties" in out:
            out["additionalProperties"] = False
            out["required"] = list(out.get("properties", {}))
        return out

    result: dict[str, Any] = walk(schema)
    result.setdefault("type", "object")
    result.setdefault("properties", {})
    return result


_SECTION = re.compile(
    r"^\s*(Args|Arguments|Parameters|Params|Returns?|Raises|Yields|Examples?)\s*:\s*$"
)
_GOOGLE_PARAM = re.compile(r"^\s+(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_PARAM = re.compile(r"^\s*:param\s+(?:[\w\[\], ]+\s+)?(\w+)\s*:\s*(.*)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary and the per-parameter descriptions of a docstring
    (Google ``Args:`` sections and Sphinx ``:param x:`` lines)."""
    description: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    for line in doc.splitlines():
        header = _SECTION.match(line)
        if header:
            section = header.group(1).lower()
            current = None
            continue
        sphinx = _SPHINX_PARAM.match(line)
        if sphinx:
            current = sphinx.group(1)
            params[current] = sphinx.group(2).strip()
            section = "sphinx"
            continue
        if section is None:
            description.append(line)
        elif section in ("args", "arguments", "parameters", "params"):
            match = _GOOGLE_PARAM.match("    " + line if not line.startswith(" ") else line)
            if match and (not line.startswith("        ") or current is None):
                current = match.group(1).lstrip("*")
                params[current] = match.group(3).strip()
            elif current and line.strip():
                params[current] = f"{params[current]} {line.strip()}".strip()
        elif section == "sphinx" and current and line.strip() and not line.lstrip().startswith(":"):
            params[current] = f"{params[current]} {line.strip()}".strip()
    text = "\n".join(description).strip()
    return text, params
