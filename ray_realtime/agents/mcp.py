"""MCP servers as tool sources: ``RealtimeAgent(mcp_servers=[...], mcp_config=...)``.

The classes follow the OpenAI Agents SDK's ``agents.mcp`` API (names,
parameters, documented behaviour), built on the ``mcp`` package (the optional
extra ``ray-realtime[mcp]``; it is imported only when a connection opens).

A server object is a *spec*: it pickles by value without any live connection,
so an agent with MCP servers can travel to a session actor and to tool
workers. Whoever needs the server opens its own connection lazily and keeps it
in a :class:`MCPConnections` cache, one connection per server spec: a tool
worker keeps one per process and event loop (:func:`shared_connections`), an
in-process session keeps its own and closes it when the session ends. A server
opened explicitly (``await server.connect()`` or ``async with server``, as the
SDK's examples do) uses that connection instead, in the process that opened it.

Every wait is bounded: opening a connection by ``connect_timeout_seconds``,
each request by ``client_session_timeout_seconds``, a whole listing by the
caller's timeout and a tool call by the tool's timeout. A server that cannot be
reached, reports a tool error or runs past a timeout raises :class:`ToolError`;
the session turns that into the tool's error output and an ``error`` event.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import importlib.util
import inspect
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NotRequired
from urllib.parse import urlsplit, urlunsplit

from typing_extensions import TypedDict

from ray_realtime.agents.context import RunContextWrapper, ToolContext
from ray_realtime.agents.mcp_connections import (
    Connection,
    MCPConnections,
    describe_error,
    or_shared,
    shared_connections,
)
from ray_realtime.agents.tools import (
    FunctionTool,
    ToolArgumentsError,
    ToolErrorFunction,
    _strict_schema,
    default_tool_error_function,
)
from ray_realtime.exceptions import ConfigError, ToolError

if TYPE_CHECKING:
    from mcp.types import CallToolResult
    from mcp.types import Tool as MCPTool

__all__ = [
    "MCPConfig",
    "MCPConnections",
    "MCPServer",
    "MCPServerSse",
    "MCPServerSseParams",
    "MCPServerStdio",
    "MCPServerStdioParams",
    "MCPServerStreamableHttp",
    "MCPServerStreamableHttpParams",
    "MCPToolListing",
    "ToolFilter",
    "ToolFilterCallable",
    "ToolFilterContext",
    "ToolFilterStatic",
    "check_mcp_fields",
    "create_static_tool_filter",
    "list_agent_mcp_tools",
    "mcp_tool_by_name",
    "shared_connections",
]

logger = logging.getLogger(__name__)

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")


# ------------------------------------------------------------------ config


class MCPConfig(TypedDict):
    """``RealtimeAgent.mcp_config``: how the agent turns MCP tools into its tools."""

    convert_schemas_to_strict: NotRequired[bool]
    """Make the tools' input schemas strict where possible (default False)."""
    failure_error_function: NotRequired[ToolErrorFunction | None]
    """Turns a failed MCP tool call into the model's text; None reports the
    failure itself (default: the function tools' default)."""
    include_server_in_tool_names: NotRequired[bool]
    """Name the tools ``<server name>_<tool name>`` to keep servers apart (default False)."""


_CONFIG_KEYS = frozenset(MCPConfig.__annotations__)


class MCPServerStdioParams(TypedDict):
    """How to start a stdio MCP server: the command, its arguments and environment."""

    command: str
    args: NotRequired[list[str]]
    env: NotRequired[dict[str, str]]
    cwd: NotRequired[str | Path]
    encoding: NotRequired[str]
    encoding_error_handler: NotRequired[Literal["strict", "ignore", "replace"]]


class MCPServerStreamableHttpParams(TypedDict):
    """Where a streamable-HTTP MCP server listens, and the HTTP options."""

    url: str
    headers: NotRequired[dict[str, str]]
    timeout: NotRequired[timedelta | float]
    sse_read_timeout: NotRequired[timedelta | float]
    terminate_on_close: NotRequired[bool]
    httpx_client_factory: NotRequired[Callable[..., Any]]


class MCPServerSseParams(TypedDict):
    """Where an SSE MCP server listens, and the HTTP options."""

    url: str
    headers: NotRequired[dict[str, str]]
    timeout: NotRequired[float]
    sse_read_timeout: NotRequired[float]
    httpx_client_factory: NotRequired[Callable[..., Any]]


class ToolFilterStatic(TypedDict):
    """A fixed filter: only ``allowed_tool_names`` (if given), never ``blocked_tool_names``."""

    allowed_tool_names: NotRequired[list[str]]
    blocked_tool_names: NotRequired[list[str]]


@dataclass
class ToolFilterContext:
    """What a callable tool filter is told: the run context, the agent and the server."""

    run_context: RunContextWrapper[Any]
    agent: Any
    server_name: str


ToolFilterCallable = Callable[[ToolFilterContext, "MCPTool"], "bool | Awaitable[bool]"]
"""``(context, tool) -> bool`` (sync or async): whether the agent gets the tool."""

ToolFilter = ToolFilterCallable | ToolFilterStatic | None
"""A static filter, a callable one, or None (every tool)."""


def create_static_tool_filter(
    allowed_tool_names: list[str] | None = None,
    blocked_tool_names: list[str] | None = None,
) -> ToolFilterStatic | None:
    """A :class:`ToolFilterStatic`, or None when neither list is given."""
    if allowed_tool_names is None and blocked_tool_names is None:
        return None
    result: ToolFilterStatic = {}
    if allowed_tool_names is not None:
        result["allowed_tool_names"] = list(allowed_tool_names)
    if blocked_tool_names is not None:
        result["blocked_tool_names"] = list(blocked_tool_names)
    return result


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


class _Unset:
    """Marks ``failure_error_function`` as not given (None means: report the failure)."""

    def __repr__(self) -> str:
        return "UNSET"


_UNSET: Any = _Unset()


def _bare_url(url: str) -> str:
    """``url`` without credentials, query or fragment: a server's default name
    appears in errors and events, where a token in its URL must not."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


# ------------------------------------------------------------------ servers


class MCPServer(abc.ABC):
    """An MCP server an agent takes tools from (the transports are subclasses).

    ``cache_tools_list`` keeps a connection's first tool list; ``tool_filter``
    chooses the tools the agent gets; ``use_structured_content`` makes a
    result's structured content the tool output; ``max_retry_attempts`` retries
    a failed listing or call with exponential backoff from
    ``retry_backoff_seconds_base``; ``require_approval`` (``"always"``,
    ``"never"``, a bool, a dict of tool name to either, or ``{"always":
    {"tool_names": [...]}, "never": {...}}``) marks tools that need approval;
    ``failure_error_function`` overrides the agent's ``mcp_config`` one.
    ``client_session_timeout_seconds`` bounds each request (listing, a call)
    once connected; ``connect_timeout_seconds`` (ours) bounds opening a
    connection, the server's start and initialisation included.
    """

    def __init__(
        self,
        cache_tools_list: bool = False,
        name: str | None = None,
        client_session_timeout_seconds: float | None = 5,
        tool_filter: ToolFilter = None,
        use_structured_content: bool = False,
        max_retry_attempts: int = 0,
        retry_backoff_seconds_base: float = 1.0,
        message_handler: Any = None,
        require_approval: Any = None,
        failure_error_function: ToolErrorFunction | _Unset | None = _UNSET,
        *,
        connect_timeout_seconds: float = 30.0,
    ) -> None:
        if importlib.util.find_spec("mcp") is None:
            raise ConfigError("MCP servers need the mcp package: pip install 'ray-realtime[mcp]'")
        self.cache_tools_list = bool(cache_tools_list)
        self._name = name
        if client_session_timeout_seconds in (None, 0):
            # The SDK lets None/0 mean "no timeout"; every wait here is bounded.
            client_session_timeout_seconds = 300.0
        self.client_session_timeout_seconds = _seconds(
            client_session_timeout_seconds, "client_session_timeout_seconds"
        )
        self.connect_timeout_seconds = _seconds(connect_timeout_seconds, "connect_timeout_seconds")
        if tool_filter is not None and not (callable(tool_filter) or isinstance(tool_filter, dict)):
            raise ConfigError(f"tool_filter must be a dict or a callable, not {tool_filter!r}")
        self.tool_filter = tool_filter
        self.use_structured_content = bool(use_structured_content)
        if isinstance(max_retry_attempts, bool) or not isinstance(max_retry_attempts, int):
            raise ConfigError(f"max_retry_attempts must be an int, got {max_retry_attempts!r}")
        self.max_retry_attempts = max(0, max_retry_attempts)
        self.retry_backoff_seconds_base = float(retry_backoff_seconds_base)
        self.message_handler = message_handler
        self.require_approval = require_approval
        self.failure_error_function = failure_error_function
        self._own: Connection | None = None
        self._cached_tools: list[MCPTool] | None = None

    # A server travels as its spec: the live connection and caches stay behind.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_own"] = None
        state["_cached_tools"] = None
        return state

    @property
    def name(self) -> str:
        """A readable name for the server."""
        return self._name or self._default_name()

    @abc.abstractmethod
    def _default_name(self) -> str: ...

    @abc.abstractmethod
    def _params_key(self) -> Any:
        """The transport parameters, as plain data for :meth:`spec_key`."""

    @abc.abstractmethod
    def _transport(self) -> contextlib.AbstractAsyncContextManager[tuple[Any, Any]]:
        """The ``mcp`` package's client transport for this server."""

    def spec_key(self) -> str:
        """What identifies one connection: the transport, its parameters and the
        session options (connections are cached per key)."""
        return json.dumps(
            [
                type(self).__name__,
                self.name,
                self._params_key(),
                self.client_session_timeout_seconds,
            ],
            sort_keys=True,
            default=repr,
        )

    # -- the SDK's explicit lifecycle (optional here)

    async def connect(self) -> None:
        """Open this object's own connection (used instead of a cached one)."""
        if self._own is not None and self._own.alive:
            return
        conn = Connection(self)
        await conn.open(self.connect_timeout_seconds)
        self._own = conn

    async def cleanup(self) -> None:
        """Close this object's own connection, if open."""
        conn, self._own = self._own, None
        if conn is not None:
            await conn.close()

    async def __aenter__(self) -> MCPServer:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.cleanup()

    def invalidate_tools_cache(self) -> None:
        """Forget the cached tool list (with ``cache_tools_list``)."""
        self._cached_tools = None
        if self._own is not None:
            self._own.tools = None

    # -- requests

    async def _connection(self, connections: MCPConnections | None) -> Connection:
        if self._own is not None and self._own.alive:
            return self._own
        return await or_shared(connections).get(self)

    async def _request(
        self, what: str, connections: MCPConnections | None, op: Callable[[Connection], Any]
    ) -> Any:
        from mcp import MCPError
        from mcp.types import CONNECTION_CLOSED

        attempt = 0
        while True:
            conn = await self._connection(connections)
            try:
                return await asyncio.wait_for(op(conn), self.client_session_timeout_seconds)
            except MCPError as exc:
                error: Exception = ToolError(f"MCP server {self.name!r} refused to {what}: {exc}")
                if exc.code == CONNECTION_CLOSED:
                    # The server went away: open a new connection next time.
                    await self._drop(conn, connections)
                    error = ToolError(f"MCP server {self.name!r} closed the connection ({what})")
            except TimeoutError:
                error = ToolError(
                    f"MCP server {self.name!r} did not {what} within "
                    f"{self.client_session_timeout_seconds:g} s"
                )
            except Exception as exc:
                # The transport broke (the server exited, the socket closed).
                await self._drop(conn, connections)
                error = ToolError(
                    f"MCP server {self.name!r} failed to {what}: {describe_error(exc)}"
                )
            if attempt >= self.max_retry_attempts:
                raise error
            await asyncio.sleep(self.retry_backoff_seconds_base * (2**attempt))
            attempt += 1

    async def _drop(self, conn: Connection, connections: MCPConnections | None) -> None:
        if conn is self._own:
            await self.cleanup()
        else:
            await or_shared(connections).discard(conn)

    async def list_tools(
        self,
        run_context: RunContextWrapper[Any] | None = None,
        agent: Any = None,
        *,
        connections: MCPConnections | None = None,
    ) -> list[MCPTool]:
        """The server's tools, filtered by ``tool_filter`` (a callable filter
        needs ``run_context`` and ``agent``)."""

        async def fetch(conn: Connection) -> list[MCPTool]:
            if self.cache_tools_list and conn.tools is not None:
                return conn.tools
            assert conn.session is not None
            tools = list((await conn.session.list_tools()).tools)
            if self.cache_tools_list:
                conn.tools = tools
            return tools

        if self.cache_tools_list and self._cached_tools is not None:
            tools = self._cached_tools
        else:
            tools = await self._request("list its tools", connections, fetch)
            if self.cache_tools_list:
                self._cached_tools = tools
        return await self._filter(tools, run_context, agent)

    async def _filter(
        self, tools: list[MCPTool], run_context: RunContextWrapper[Any] | None, agent: Any
    ) -> list[MCPTool]:
        flt = self.tool_filter
        if flt is None:
            return list(tools)
        if isinstance(flt, dict):
            allowed = flt.get("allowed_tool_names")
            blocked = set(flt.get("blocked_tool_names") or ())
            return [
                t for t in tools if (allowed is None or t.name in allowed) and t.name not in blocked
            ]
        if run_context is None or agent is None:
            raise ToolError(
                f"MCP server {self.name!r}: a callable tool_filter needs run_context and agent"
            )
        context = ToolFilterContext(run_context, agent, self.name)
        kept = []
        for tool in tools:
            verdict = flt(context, tool)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if verdict:
                kept.append(tool)
        return kept

    async def call_tool(
        self,
        tool_name: str,
        arguments: dict[str, Any] | None,
        *,
        connections: MCPConnections | None = None,
    ) -> CallToolResult:
        """Call one tool; the server's result (``is_error`` set when the tool failed)."""

        async def call(conn: Connection) -> Any:
            assert conn.session is not None
            return await conn.session.call_tool(tool_name, arguments or {})

        result: CallToolResult = await self._request(f"run {tool_name!r}", connections, call)
        return result

    def needs_approval(self, tool_name: str) -> bool:
        """Whether calls of ``tool_name`` wait for approval (``require_approval``)."""
        policy = self.require_approval
        if policy is None or isinstance(policy, bool):
            return bool(policy)
        if isinstance(policy, str):
            return policy == "always"
        if isinstance(policy, dict):
            always, never = policy.get("always"), policy.get("never")
            if isinstance(always, dict) or isinstance(never, dict):
                if isinstance(always, dict) and tool_name in (always.get("tool_names") or ()):
                    return True
                return False
            return policy.get(tool_name) in ("always", True)
        raise ConfigError(f"MCP server {self.name!r}: require_approval {policy!r} is not valid")


class MCPServerStdio(MCPServer):
    """An MCP server run as a subprocess, spoken to over its stdin/stdout.
    In actor mode each tool worker starts its own process of it."""

    def __init__(self, params: MCPServerStdioParams, *args: Any, **kwargs: Any) -> None:
        if not isinstance(params, dict) or not isinstance(params.get("command"), str):
            raise ConfigError("MCPServerStdio params need a 'command' string")
        super().__init__(*args, **kwargs)
        self.params = params

    def _default_name(self) -> str:
        return f"stdio: {self.params['command']}"

    def _params_key(self) -> Any:
        return dict(self.params)

    def _transport(self) -> contextlib.AbstractAsyncContextManager[tuple[Any, Any]]:
        from mcp import StdioServerParameters, stdio_client

        p = self.params
        options: dict[str, Any] = {"command": p["command"], "args": list(p.get("args", []))}
        for key in ("env", "cwd", "encoding", "encoding_error_handler"):
            if key in p:
                options[key] = p[key]
        return stdio_client(StdioServerParameters(**options))


class MCPServerStreamableHttp(MCPServer):
    """An MCP server reached over the streamable-HTTP transport."""

    def __init__(self, params: MCPServerStreamableHttpParams, *args: Any, **kwargs: Any) -> None:
        if not isinstance(params, dict) or not isinstance(params.get("url"), str):
            raise ConfigError("MCPServerStreamableHttp params need a 'url' string")
        super().__init__(*args, **kwargs)
        self.params = params

    def _default_name(self) -> str:
        return f"streamable_http: {_bare_url(self.params['url'])}"

    def _params_key(self) -> Any:
        return dict(self.params)

    @contextlib.asynccontextmanager
    async def _open_http(self) -> AsyncIterator[tuple[Any, Any]]:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        p = self.params
        timeout = _seconds(p.get("timeout", 5), "timeout")
        read = _seconds(p.get("sse_read_timeout", 300), "sse_read_timeout")
        factory = p.get("httpx_client_factory") or create_mcp_http_client
        client = factory(headers=p.get("headers"), timeout=httpx2.Timeout(timeout, read=read))
        async with (
            client,
            streamable_http_client(
                p["url"], http_client=client, terminate_on_close=p.get("terminate_on_close", True)
            ) as streams,
        ):
            yield streams[0], streams[1]

    def _transport(self) -> contextlib.AbstractAsyncContextManager[tuple[Any, Any]]:
        return self._open_http()


class MCPServerSse(MCPServer):
    """An MCP server reached over the (older) HTTP + server-sent-events transport."""

    def __init__(self, params: MCPServerSseParams, *args: Any, **kwargs: Any) -> None:
        if not isinstance(params, dict) or not isinstance(params.get("url"), str):
            raise ConfigError("MCPServerSse params need a 'url' string")
        super().__init__(*args, **kwargs)
        self.params = params

    def _default_name(self) -> str:
        return f"sse: {_bare_url(self.params['url'])}"

    def _params_key(self) -> Any:
        return dict(self.params)

    def _transport(self) -> contextlib.AbstractAsyncContextManager[tuple[Any, Any]]:
        from mcp.client.sse import sse_client

        p = self.params
        options: dict[str, Any] = {
            "headers": p.get("headers"),
            "timeout": _seconds(p.get("timeout", 5), "timeout"),
            "sse_read_timeout": _seconds(p.get("sse_read_timeout", 300), "sse_read_timeout"),
        }
        if "httpx_client_factory" in p:
            options["httpx_client_factory"] = p["httpx_client_factory"]
        return sse_client(p["url"], **options)


# -------------------------------------------------------- agent tools


def check_mcp_fields(agent_name: str, servers: Any, config: Any) -> None:
    """A :class:`ConfigError` unless ``servers`` are MCP servers and
    ``config`` an :class:`MCPConfig`."""
    if not isinstance(servers, list) or not all(isinstance(s, MCPServer) for s in servers):
        raise ConfigError(f"agent {agent_name!r}: mcp_servers must be a list of MCPServer")
    if not isinstance(config, dict) or set(config) - _CONFIG_KEYS:
        raise ConfigError(
            f"agent {agent_name!r}: mcp_config takes the keys {sorted(_CONFIG_KEYS)}, "
            f"got {config!r}"
        )


@dataclass(frozen=True)
class MCPToolListing:
    """The MCP tools of an agent, and why any server's tools are missing."""

    tools: list[FunctionTool] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class _MCPInvoker:
    """``on_invoke_tool`` of an MCP tool: calls ``tool_name`` on ``server``.
    Picklable: the connection cache stays behind (the far side uses its own)."""

    def __init__(
        self, server: MCPServer, tool_name: str, connections: MCPConnections | None
    ) -> None:
        self.server = server
        self.tool_name = tool_name
        self.connections = connections

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "connections": None}

    async def __call__(self, ctx: ToolContext[Any], arguments: str) -> str:
        try:
            args = json.loads(arguments) if arguments and arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ToolArgumentsError(
                f"arguments of tool {self.tool_name!r} are not valid JSON: {exc}"
            ) from None
        if not isinstance(args, dict):
            raise ToolArgumentsError(f"arguments of tool {self.tool_name!r} must be a JSON object")
        result = await self.server.call_tool(self.tool_name, args, connections=self.connections)
        text = _result_text(result, self.server.use_structured_content)
        if getattr(result, "is_error", False):
            raise ToolError(
                f"MCP tool {self.tool_name!r} of server {self.server.name!r} failed: {text}",
                self.tool_name,
            )
        return text


def _result_text(result: Any, structured: bool) -> str:
    """The model's text for a tool result: the structured content when asked
    for and present, else the text parts (other parts as JSON)."""
    if structured and getattr(result, "structured_content", None) is not None:
        return json.dumps(result.structured_content)
    content = list(getattr(result, "content", None) or [])
    if content and all(getattr(c, "type", None) == "text" for c in content):
        return "\n".join(c.text for c in content)
    return json.dumps([c.model_dump(mode="json") for c in content])


def _public_name(server: MCPServer, tool_name: str, config: MCPConfig) -> str:
    if not config.get("include_server_in_tool_names"):
        return tool_name
    prefix = _NAME_CHARS.sub("_", server.name).strip("_") or "mcp"
    return f"{prefix}_{tool_name}"[:64]


def _function_tool(
    server: MCPServer,
    tool: MCPTool,
    config: MCPConfig,
    connections: MCPConnections | None,
) -> FunctionTool:
    schema: dict[str, Any] = dict(tool.input_schema or {})
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    strict = False
    if config.get("convert_schemas_to_strict"):
        try:
            schema, strict = _strict_schema(schema), True
        except Exception:
            logger.info("MCP tool %s: schema kept as is (not convertible to strict)", tool.name)
    failure = server.failure_error_function
    if isinstance(failure, _Unset):
        failure = config.get("failure_error_function", default_tool_error_function)
    return FunctionTool(
        name=_public_name(server, tool.name, config),
        description=tool.description or "",
        params_json_schema=schema,
        on_invoke_tool=_MCPInvoker(server, tool.name, connections),
        strict_json_schema=strict,
        failure_error_function=failure,
        needs_approval=server.needs_approval(tool.name),
    )


async def list_agent_mcp_tools(
    agent: Any,
    run_context: RunContextWrapper[Any],
    *,
    connections: MCPConnections | None = None,
    timeout: float = 30.0,
) -> MCPToolListing:
    """The tools of ``agent``'s MCP servers as function tools, listed
    concurrently, each server within ``timeout``. A server that fails is left
    out and named in ``errors``; so is a tool whose name another tool of the
    agent already has. Never raises except on cancellation."""
    servers: list[MCPServer] = list(agent.mcp_servers)
    config: MCPConfig = agent.mcp_config or MCPConfig()

    async def one(server: MCPServer) -> list[MCPTool] | str:
        try:
            return await asyncio.wait_for(
                server.list_tools(run_context, agent, connections=connections), timeout
            )
        except TimeoutError:
            return f"MCP server {server.name!r} did not list its tools within {timeout:g} s"
        except Exception as exc:
            return f"MCP server {server.name!r}: its tools are unavailable: {describe_error(exc)}"

    listed = await asyncio.gather(*(one(s) for s in servers))
    taken = {t.name for t in agent.tools}
    listing = MCPToolListing()
    for server, found in zip(servers, listed, strict=True):
        if isinstance(found, str):
            listing.errors.append(found)
            continue
        for tool in found:
            try:
                ftool = _function_tool(server, tool, config, connections)
            except Exception as exc:
                listing.errors.append(
                    f"MCP tool {tool.name!r} of server {server.name!r} is unusable: {exc}"
                )
                continue
            if ftool.name in taken:
                listing.errors.append(
                    f"MCP tool {ftool.name!r} of server {server.name!r} left out: "
                    "the agent already has a tool of that name"
                )
                continue
            taken.add(ftool.name)
            listing.tools.append(ftool)
    return listing


def mcp_tool_by_name(agent: Any, name: str, *, timeout: float = 30.0) -> FunctionTool:
    """A tool that calls the MCP tool ``name`` of ``agent`` where it runs: it
    lists the agent's servers on this process's connections to find the tool
    (a tool worker receives the agent, not the tool) and calls it. A missing
    tool or a failing server is the call's error."""
    config: MCPConfig = agent.mcp_config or MCPConfig()
    servers: list[MCPServer] = list(agent.mcp_servers)
    failure: Any = config.get("failure_error_function", default_tool_error_function)
    if len(servers) == 1 and not isinstance(servers[0].failure_error_function, _Unset):
        failure = servers[0].failure_error_function

    async def invoke(ctx: ToolContext[Any], arguments: str) -> Any:
        listing = await list_agent_mcp_tools(agent, RunContextWrapper(ctx.context), timeout=timeout)
        for tool in listing.tools:
            if tool.name == name:
                return await tool.on_invoke_tool(ctx, arguments)
        why = "; ".join(listing.errors)
        raise ToolError(
            f"tool {name!r} is not among the MCP tools of agent {agent.name!r}"
            + (f" ({why})" if why else ""),
            name,
        )

    return FunctionTool(
        name=name,
        description="",
        params_json_schema={"type": "object", "properties": {}},
        on_invoke_tool=invoke,
        failure_error_function=failure,
    )
