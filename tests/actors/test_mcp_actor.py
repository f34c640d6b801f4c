"""MCP tools in actor mode: the agent's MCP servers travel by value to the
session actor, their tools are listed on a tool worker and called there, over
the worker's own connection (one per server spec).

Uses the shared 3-node cluster of ``tests/conftest.py`` and the real MCP
server of ``tests/mcp_util.py``; turns run against the bundled local model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from ray_realtime import (
    RealtimeAgent,
    RealtimeError,
    RealtimeRunner,
    RealtimeSession,
    RealtimeSessionEvent,
    RealtimeToolEnd,
)
from tests.actors.util import ACTOR, collect, last_reply
from tests.conftest import RayTestCluster
from tests.mcp_util import http_mcp, http_server, stdio_server, write_server

pytestmark = [pytest.mark.ray]


@pytest.fixture
def script(tmp_path: Path) -> Path:
    return write_server(tmp_path)


@pytest.fixture
def http_url(script: Path, tmp_path: Path) -> Iterator[str]:
    with http_server(script, tmp_path / "http.log") as url:
        yield url


async def tool_turn(
    session: RealtimeSession, text: str
) -> tuple[RealtimeToolEnd, list[RealtimeSessionEvent]]:
    """Send ``text``; its ``tool_end`` and the events up to the reply to the tool output."""
    await session.send_message(text)
    ends = [0]

    def until(event: RealtimeSessionEvent) -> bool:
        ends[0] += event.type == "agent_end"
        return ends[0] >= 2

    events = await collect(session, until)
    (end,) = [e for e in events if isinstance(e, RealtimeToolEnd)]
    return end, events


def errors(events: list[RealtimeSessionEvent]) -> list[dict[str, Any]]:
    return [e.error for e in events if isinstance(e, RealtimeError)]


async def test_stdio_tool_runs_on_a_tool_worker(ray_cluster: RayTestCluster, script: Path) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Calc", mcp_servers=[stdio_server(script)])
    async with await RealtimeRunner(agent, config=ACTOR).run() as session:  # type: ignore[arg-type]
        end, events = await tool_turn(session, "please add numbers a=2 b=3")
        assert (end.tool.name, json.loads(end.arguments), end.output) == (
            "add_numbers",
            {"a": 2, "b": 3},
            "5",
        )
        assert await last_reply(session) == "The tool add_numbers returned: 5"
        assert errors(events) == []

        # The server process is a child of a tool worker, not of this process,
        # and the worker keeps its connection: a second call meets the same one.
        first, _ = await tool_turn(session, "whoami")
        second, _ = await tool_turn(session, "whoami")
        server = json.loads(first.output)
        assert json.loads(second.output) == server
        assert server["ppid"] != os.getpid()
        assert "ToolWorker" in " ".join(psutil.Process(server["ppid"]).cmdline())


async def test_streamable_http_tool_in_actor_mode(
    ray_cluster: RayTestCluster, http_url: str
) -> None:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Calc", mcp_servers=[http_mcp(http_url)])
    async with await RealtimeRunner(agent, config=ACTOR).run() as session:  # type: ignore[arg-type]
        end, events = await tool_turn(session, "please add numbers a=20 b=22")
        assert (end.tool.name, end.output) == ("add_numbers", "42")
        assert await last_reply(session) == "The tool add_numbers returned: 42"
        assert errors(events) == []


async def test_server_errors_in_actor_mode_never_end_the_session(
    ray_cluster: RayTestCluster, script: Path
) -> None:
    closed = http_mcp("http://127.0.0.1:9/mcp", name="closed_port")
    agent: RealtimeAgent[Any] = RealtimeAgent(
        name="Calc", mcp_servers=[stdio_server(script), closed]
    )
    async with await RealtimeRunner(agent, config=ACTOR).run() as session:  # type: ignore[arg-type]
        end, events = await tool_turn(session, 'broken tool reason="because"')
        found = errors(events)
        assert [e["type"] for e in found] == ["mcp_error", "tool_error"]
        assert "'closed_port'" in found[0]["message"]
        assert end.output.startswith("An error occurred")
        assert found[1]["tool"] == "broken_tool"
        end, _ = await tool_turn(session, "please add numbers a=1 b=1")
        assert end.output == "2"
