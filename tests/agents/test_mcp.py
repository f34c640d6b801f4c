"""MCP servers as agent tools, in your process, against real MCP servers.

A real MCP server (``tests/mcp_util.py``) runs as a stdio subprocess started
by ``MCPServerStdio``, or as a streamable-HTTP server on loopback started by
the test; turns run against the bundled local model, which calls a tool when
the user's text names it ("please add numbers a=2 b=3" calls ``add_numbers``)
and then replies ``The tool NAME returned: OUTPUT``. No Ray here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import pickle
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from ray_realtime import (
    ConfigError,
    MCPServerSse,
    MCPServerStdio,
    RealtimeAgent,
    RealtimeError,
    RealtimeRunner,
    RealtimeSession,
    RealtimeSessionEvent,
    RealtimeToolApprovalRequired,
    RealtimeToolEnd,
    RunContextWrapper,
    ToolError,
    ToolFilterContext,
    create_static_tool_filter,
    function_tool,
    realtime_handoff,
)
from ray_realtime.agents.mcp import MCPConnections, list_agent_mcp_tools
from ray_realtime.local import LocalModelServer
from tests.conftest import UNIT
from tests.mcp_util import http_mcp, http_server, stdio_server, write_server

CTX: RunContextWrapper[Any] = RunContextWrapper(None)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    return write_server(tmp_path)


@pytest.fixture
def http_url(script: Path, tmp_path: Path) -> Iterator[str]:
    with http_server(script, tmp_path / "http.log") as url:
        yield url


@pytest.fixture
async def model() -> AsyncIterator[LocalModelServer]:
    async with LocalModelServer() as srv:
        yield srv


@contextlib.asynccontextmanager
async def session_on(
    agent: RealtimeAgent[Any], model: LocalModelServer, **config: Any
) -> AsyncIterator[RealtimeSession]:
    runner = RealtimeRunner(agent, config={"execution": "in_process", **config})  # type: ignore[typeddict-item]
    session = await runner.run(model_config={"url": model.url})
    await asyncio.wait_for(session.enter(), 30 * UNIT)
    try:
        yield session
    finally:
        await asyncio.wait_for(session.close(), 30 * UNIT)


async def events_until(
    session: RealtimeSession,
    until: Callable[[RealtimeSessionEvent], bool],
    timeout: float = 30.0,
) -> list[RealtimeSessionEvent]:
    events: list[RealtimeSessionEvent] = []

    async def run() -> None:
        async for event in session:
            events.append(event)
            if until(event):
                return
        raise AssertionError(f"the session ended first; saw {[e.type for e in events]}")

    try:
        await asyncio.wait_for(run(), timeout * UNIT)
    except TimeoutError:
        pytest.fail(f"timed out; saw {[e.type for e in events]}")
    return events


async def tool_turn(session: RealtimeSession, text: str) -> tuple[RealtimeToolEnd, list[Any]]:
    """Send ``text``; the tool's ``tool_end`` and every event up to the
    ``agent_end`` of the reply to the tool output."""
    await session.send_message(text)
    ends = [0]

    def until(event: RealtimeSessionEvent) -> bool:
        ends[0] += event.type == "agent_end"
        return ends[0] >= 2  # the turn that called the tool, then the reply to its output

    events = await events_until(session, until)
    tool_ends = [e for e in events if isinstance(e, RealtimeToolEnd)]
    assert len(tool_ends) == 1, [e.type for e in events]
    return tool_ends[0], events


async def last_reply(session: RealtimeSession) -> str:
    history = await session.get_history()
    texts = [
        getattr(part, "transcript", None) or getattr(part, "text", None) or ""
        for item in history
        if item.type == "message" and item.role == "assistant"
        for part in item.content
    ]
    return texts[-1]


def errors(events: list[Any]) -> list[dict[str, Any]]:
    return [e.error for e in events if isinstance(e, RealtimeError)]


async def wait_gone(pid: int, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout * UNIT
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"MCP server process {pid} still runs")
        await asyncio.sleep(0.05)


# ------------------------------------------------------------ turns


async def test_stdio_tool_output_reaches_the_model(script: Path, model: LocalModelServer) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(
        name="Calc", instructions="Use tools.", mcp_servers=[stdio_server(script)]
    )
    async with session_on(agent, model) as session:
        end, events = await tool_turn(session, "please add numbers a=2 b=3")
        assert end.tool.name == "add_numbers"
        assert json.loads(end.arguments) == {"a": 2, "b": 3}
        assert end.output == "5"
        assert await last_reply(session) == "The tool add_numbers returned: 5"
        assert errors(events) == []

        # The server is this process's child, and it ends with the session.
        who, _ = await tool_turn(session, "whoami")
        server = json.loads(who.output)
        assert server["ppid"] == psutil.Process().pid
    await wait_gone(server["pid"])


async def test_streamable_http_tool_output_reaches_the_model(
    http_url: str, model: LocalModelServer
) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Calc", mcp_servers=[http_mcp(http_url)])
    async with session_on(agent, model) as session:
        end, events = await tool_turn(session, "please add numbers a=20 b=22")
        assert (end.tool.name, end.output) == ("add_numbers", "42")
        assert await last_reply(session) == "The tool add_numbers returned: 42"
        assert errors(events) == []


async def test_sse_tool_output_reaches_the_model(
    script: Path, tmp_path: Path, model: LocalModelServer
) -> None:
    with http_server(script, tmp_path / "sse.log", "sse", "/sse") as url:
        agent: RealtimeAgent[Any] = RealtimeAgent(
            name="Calc", mcp_servers=[MCPServerSse({"url": url})]
        )
        async with session_on(agent, model) as session:
            end, events = await tool_turn(session, "please add numbers a=4 b=5")
            assert (end.tool.name, end.output) == ("add_numbers", "9")
            assert errors(events) == []


# ----------------------------------------------------------- failures


async def test_tool_error_is_the_output_and_an_error_event(
    script: Path, model: LocalModelServer
) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Calc", mcp_servers=[stdio_server(script)])
    async with session_on(agent, model) as session:
        end, events = await tool_turn(session, 'broken tool reason="because"')
        # The model gets the SDK's fixed text; readers get the detail.
        assert end.output == "An error occurred while running the tool. Please try again."
        (error,) = errors(events)
        assert error["type"] == "tool_error" and error["tool"] == "broken_tool"
        assert "failed" in error["message"]
        # The session goes on.
        end, _ = await tool_turn(session, "please add numbers a=1 b=1")
        assert end.output == "2"


async def test_tool_timeout_is_the_output_and_an_error_event(
    script: Path, model: LocalModelServer
) -> None:
    server = stdio_server(script, client_session_timeout_seconds=0.5)
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Calc", mcp_servers=[server])
    async with session_on(agent, model) as session:
        end, events = await tool_turn(session, "slow tool seconds=5")
        assert end.output == "An error occurred while running the tool. Please try again."
        (error,) = errors(events)
        assert error["type"] == "tool_error"
        assert "did not run 'slow_tool' within 0.5 s" in error["message"]
        end, _ = await tool_turn(session, "please add numbers a=3 b=4")
        assert end.output == "7"


async def test_a_crashed_server_is_an_error_then_restarted(
    script: Path, model: LocalModelServer
) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Calc", mcp_servers=[stdio_server(script)])
    async with session_on(agent, model) as session:
        first, _ = await tool_turn(session, "whoami")
        end, events = await tool_turn(session, "crash")
        assert end.output.startswith("An error occurred")
        (error,) = errors(events)
        assert error["type"] == "tool_error" and "'crash'" in error["message"]
        # The next call opens a new connection: a new server process.
        second, _ = await tool_turn(session, "whoami")
        assert json.loads(second.output)["pid"] != json.loads(first.output)["pid"]
        await wait_gone(json.loads(first.output)["pid"])


async def test_unreachable_server_leaves_its_tools_out_with_an_error(
    model: LocalModelServer, tmp_path: Path
) -> None:
    @function_tool
    def local_echo(text: str) -> str:
        """Echo."""
        return text

    missing = MCPServerStdio({"command": str(tmp_path / "no-such-server")}, name="ghost")
    closed = http_mcp("http://127.0.0.1:9/mcp", name="closed_port")
    agent: RealtimeAgent[Any] = RealtimeAgent(
        name="Calc", tools=[local_echo], mcp_servers=[missing, closed]
    )
    async with session_on(agent, model) as session:
        seen: list[dict[str, Any]] = []

        def two_errors(event: RealtimeSessionEvent) -> bool:
            if isinstance(event, RealtimeError):
                seen.append(event.error)
            return len(seen) == 2

        await events_until(session, two_errors)
        assert [e["type"] for e in seen] == ["mcp_error", "mcp_error"]
        messages = " ".join(e["message"] for e in seen)
        assert "'ghost'" in messages and "'closed_port'" in messages
        # The function tool still works.
        end, _ = await tool_turn(session, "local echo hello")
        assert end.output == "hello"


# ------------------------------------------------------- handoffs, approval


async def test_agent_reached_by_handoff_lists_its_mcp_tools(
    script: Path, model: LocalModelServer
) -> None:
    calc: RealtimeAgent[Any] = RealtimeAgent(
        name="Calc", handoff_description="Adds.", mcp_servers=[stdio_server(script)]
    )
    front: RealtimeAgent[Any] = RealtimeAgent(name="Front", handoffs=[realtime_handoff(calc)])
    async with session_on(front, model) as session:
        await session.send_message("transfer to calc")
        await events_until(session, lambda e: e.type == "handoff")
        await events_until(session, lambda e: e.type == "agent_end")
        end, _ = await tool_turn(session, "please add numbers a=5 b=6")
        assert (end.agent.name, end.output) == ("Calc", "11")


async def test_require_approval_holds_the_call(script: Path, model: LocalModelServer) -> None:
    server = stdio_server(script, require_approval={"always": {"tool_names": ["add_numbers"]}})
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Calc", mcp_servers=[server])
    async with session_on(agent, model) as session:
        await session.send_message("please add numbers a=2 b=2")
        events = await events_until(session, lambda e: e.type == "tool_approval_required")
        (ask,) = [e for e in events if isinstance(e, RealtimeToolApprovalRequired)]
        await session.approve_tool_call(ask.call_id)
        done = await events_until(session, lambda e: e.type == "tool_end")
        assert [e.output for e in done if isinstance(e, RealtimeToolEnd)] == ["4"]


# ------------------------------------------------------------ listing


async def test_filters_names_and_strict_schemas(script: Path) -> None:
    def no_crash(ctx: ToolFilterContext, tool: Any) -> bool:
        assert ctx.agent.name == "Calc" and ctx.server_name == "calc"
        return tool.name != "crash"

    static = stdio_server(
        script,
        name="calc",
        tool_filter=create_static_tool_filter(allowed_tool_names=["add_numbers", "whoami"]),
    )
    dynamic = stdio_server(script, name="calc", tool_filter=no_crash)
    conns = MCPConnections()
    try:
        agent: RealtimeAgent[Any] = RealtimeAgent(name="Calc", mcp_servers=[static])
        listing = await list_agent_mcp_tools(agent, CTX, connections=conns)
        assert [t.name for t in listing.tools] == ["add_numbers", "whoami"]
        assert listing.errors == []
        # One connection per server spec.
        assert len(conns) == 1

        agent = RealtimeAgent(
            name="Calc",
            mcp_servers=[dynamic],
            mcp_config={"include_server_in_tool_names": True, "convert_schemas_to_strict": True},
        )
        listing = await list_agent_mcp_tools(agent, CTX, connections=conns)
        names = [t.name for t in listing.tools]
        assert "calc_add_numbers" in names and "calc_crash" not in names
        add = next(t for t in listing.tools if t.name == "calc_add_numbers")
        assert add.params_json_schema["additionalProperties"] is False
        assert add.params_json_schema["required"] == ["a", "b"]
        assert add.strict_json_schema
        assert len(conns) == 1  # the same spec (name and command): the same connection
    finally:
        await conns.aclose()


async def test_name_clash_with_a_function_tool_is_reported(script: Path) -> None:
    @function_tool
    def whoami() -> str:
        """Mine."""
        return "me"

    agent: RealtimeAgent[Any] = RealtimeAgent(
        name="Calc", tools=[whoami], mcp_servers=[stdio_server(script)]
    )
    conns = MCPConnections()
    try:
        listing = await list_agent_mcp_tools(agent, CTX, connections=conns)
    finally:
        await conns.aclose()
    assert "whoami" not in [t.name for t in listing.tools]
    assert any("'whoami'" in e and "already has" in e for e in listing.errors)


async def test_sdk_idiom_connected_server_and_get_all_tools(script: Path) -> None:
    @function_tool
    def local_echo(text: str) -> str:
        """Echo."""
        return text

    async with stdio_server(script) as server:
        agent: RealtimeAgent[Any] = RealtimeAgent(
            name="Calc", tools=[local_echo], mcp_servers=[server]
        )
        tools = await agent.get_all_tools(CTX)
        assert tools[-1].name == "local_echo" and "add_numbers" in [t.name for t in tools]
        result = await server.call_tool("add_numbers", {"a": 1, "b": 2})
        assert result.content[0].text == "3"  # type: ignore[union-attr]
    with pytest.raises(ToolError, match="could not be reached"):
        await MCPServerStdio({"command": sys.executable + "-missing"}).connect()


async def test_server_pickles_as_its_spec(script: Path) -> None:
    async with stdio_server(script, cache_tools_list=True) as server:
        assert await server.list_tools()
        copy = pickle.loads(pickle.dumps(server))
    assert copy.spec_key() == server.spec_key()
    assert copy._own is None and copy._cached_tools is None
    assert copy.cache_tools_list and copy.params == server.params


def test_default_names_carry_no_credentials() -> None:
    server = http_mcp("https://user:secret@example.com:8443/mcp?token=abc#x")
    assert server.name == "streamable_http: https://example.com:8443/mcp"
    assert "secret" not in server.name and "abc" not in server.name


def test_bad_fields_are_config_errors(script: Path) -> None:
    with pytest.raises(ConfigError, match="mcp_servers"):
        RealtimeAgent(name="A", mcp_servers=["not a server"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="mcp_config"):
        RealtimeAgent(name="A", mcp_config={"bogus": True})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(ConfigError, match="command"):
        MCPServerStdio({})  # type: ignore[typeddict-item]
    with pytest.raises(ConfigError, match="client_session_timeout_seconds"):
        stdio_server(script, client_session_timeout_seconds=-1)
