"""Plain-data descriptions of agents, as the session core sees them.

The core never calls user code. The shell that drives it turns a live
``RealtimeAgent`` into an :class:`AgentSpec` (evaluating dynamic instructions
and ``is_enabled`` flags) and runs tools, handoffs and guardrails itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AgentSpec", "HandoffSpec", "ToolSpec"]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A function tool: its protocol definition and whether calls need
    approval (always, or as the tool's approval function decides per call)."""

    name: str
    definition: dict[str, Any]
    needs_approval: bool = False
    approval_check: bool = False
    """A function decides per call (``CheckApproval``)."""


@dataclass(frozen=True, slots=True)
class HandoffSpec:
    """A handoff tool and the name of the agent it switches to."""

    tool_name: str
    agent_name: str
    definition: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """An agent as data: name, resolved instructions, tools and handoffs."""

    name: str
    instructions: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    handoffs: tuple[HandoffSpec, ...] = ()
    guardrail_names: tuple[str, ...] = field(default=())
    prompt: dict[str, Any] | None = None
    """The agent's stored prompt (``{"id", "version", "variables"}``), if any."""

    def tool(self, name: str) -> ToolSpec | None:
        """The tool called ``name``, if this agent has it."""
        for tool in self.tools:
            if tool.name == name:
                return tool
        return None

    def handoff(self, tool_name: str) -> HandoffSpec | None:
        """The handoff whose tool is called ``tool_name``, if any."""
        for handoff in self.handoffs:
            if handoff.tool_name == tool_name:
                return handoff
        return None

    def tool_definitions(self) -> list[dict[str, Any]]:
        """Tools then handoffs, as ``session.tools`` entries."""
        return [t.definition for t in self.tools] + [h.definition for h in self.handoffs]
