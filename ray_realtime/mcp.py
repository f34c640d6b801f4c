"""MCP servers for realtime agents, under the path the OpenAI Agents SDK uses
(``from agents.mcp import MCPServerStdio`` becomes
``from ray_realtime.mcp import MCPServerStdio``).

The classes live in :mod:`ray_realtime.agents.mcp`, which documents how they
connect; this module only re-exports the public names.
"""

from ray_realtime.agents.mcp import (
    MCPConfig,
    MCPServer,
    MCPServerSse,
    MCPServerSseParams,
    MCPServerStdio,
    MCPServerStdioParams,
    MCPServerStreamableHttp,
    MCPServerStreamableHttpParams,
    ToolFilter,
    ToolFilterCallable,
    ToolFilterContext,
    ToolFilterStatic,
    create_static_tool_filter,
)

__all__ = [
    "MCPConfig",
    "MCPServer",
    "MCPServerSse",
    "MCPServerSseParams",
    "MCPServerStdio",
    "MCPServerStdioParams",
    "MCPServerStreamableHttp",
    "MCPServerStreamableHttpParams",
    "ToolFilter",
    "ToolFilterCallable",
    "ToolFilterContext",
    "ToolFilterStatic",
    "create_static_tool_filter",
]
