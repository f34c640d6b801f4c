"""Tool and guardrail workers: actors that run user code for sessions.

Agents, tools and guardrails reach a worker once, by object reference, and are
cached here (bounded, least recently used first out); each call then names the
tool by name. The user context arrives as the pickled bytes of one object
reference per session and is unpickled for every call, so it travels *by
value*: a worker's changes to it do not flow back, nor to other calls.

These are plain classes; :mod:`ray_realtime.actors.remote` makes them actors.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from ray_realtime.actors import raylib
from ray_realtime.agents.context import wrap_context
from ray_realtime.agents.mcp import list_agent_mcp_tools, mcp_tool_by_name
from ray_realtime.session.execution import run_guardrails, run_tool_call

__all__ = ["GuardrailWorker", "ToolWorker", "WorkerCache"]

logger = logging.getLogger(__name__)

_CACHE_ENTRIES = 256


class WorkerCache:
    """A bounded cache of objects fetched by reference."""

    def __init__(self, capacity: int = _CACHE_ENTRIES) -> None:
        self._capacity = capacity
        self._items: OrderedDict[str, Any] = OrderedDict()
        self.fetches = 0

    async def get(self, ref: Any) -> Any:
        """The object behind ``ref``, fetched on first use."""
        key = raylib.ref_key(ref)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = await ref
        self.fetches += 1
        self._items[key] = value
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


class _Worker:
    def __init__(self) -> None:
        self._cache = WorkerCache()
        self._calls = 0
        self.node_id = raylib.current_node_id()

    async def ping(self) -> str:
        """This worker's node id (a liveness check)."""
        return self.node_id

    def statistics(self) -> dict[str, Any]:
        """Calls served and cache state."""
        return {
            "node_id": self.node_id,
            "calls": self._calls,
            "cached": len(self._cache),
            "fetches": self._cache.fetches,
        }

    async def _context(self, ctx_refs: list[Any]) -> Any:
        if not ctx_refs:
            return None
        payload = await self._cache.get(ctx_refs[0])
        return raylib.loads(payload)


class ToolWorker(_Worker):
    """Runs tool calls: sync tools in a thread, each call under its timeout."""

    async def run_tool(
        self,
        agent_refs: list[Any],
        tool_name: str,
        call_id: str,
        arguments: str,
        ctx_refs: list[Any],
        default_timeout: float,
    ) -> tuple[str, str | None, str]:
        """Run one call; returns ``(output, error, node_id)``."""
        self._calls += 1
        agent = await self._cache.get(agent_refs[0])
        tool = next((t for t in agent.tools if t.name == tool_name), None)
        if tool is None and agent.mcp_servers:
            # An MCP tool: found and called over this worker's own connections.
            tool = mcp_tool_by_name(agent, tool_name, timeout=default_timeout)
        if tool is None:
            message = f"tool {tool_name!r} not found on agent {agent.name!r}"
            return f"Error: {message}", message, self.node_id
        context = await self._context(ctx_refs)
        outcome = await run_tool_call(
            tool, context, call_id=call_id, arguments=arguments, default_timeout=default_timeout
        )
        return outcome.output, outcome.error, self.node_id

    async def list_mcp_tools(
        self, agent_refs: list[Any], ctx_refs: list[Any], timeout: float
    ) -> tuple[list[Any], list[str], str]:
        """The agent's MCP tools, listed over this worker's connections:
        ``(tools, errors, node_id)``."""
        self._calls += 1
        agent = await self._cache.get(agent_refs[0])
        context = wrap_context(await self._context(ctx_refs))
        listing = await list_agent_mcp_tools(agent, context, timeout=timeout)
        return listing.tools, listing.errors, self.node_id


class GuardrailWorker(_Worker):
    """Runs rounds of output guardrails."""

    async def run_guardrails(
        self,
        agent_refs: list[Any],
        run_guardrail_refs: list[Any],
        text: str,
        ctx_refs: list[Any],
        timeout: float,
    ) -> bytes:
        """Run the agent's and the run config's guardrails on ``text``;
        returns the wire-encoded ``(results, errors)``."""
        from ray_realtime import wire

        self._calls += 1
        agent = await self._cache.get(agent_refs[0])
        run_guardrails_list = (
            await self._cache.get(run_guardrail_refs[0]) if run_guardrail_refs else []
        )
        context = await self._context(ctx_refs)
        guardrails = list(agent.output_guardrails) + list(run_guardrails_list)
        result = await run_guardrails(guardrails, context, agent, agent.name, text, timeout=timeout)
        return wire.encode([result.results, result.errors])
