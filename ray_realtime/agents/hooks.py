"""Lifecycle hooks: :class:`RealtimeAgentHooks` (set on an agent as
``RealtimeAgent(hooks=...)``) and :class:`RealtimeRunHooks`, with the SDK's
method names and arguments. Subclass and override what you need; every method
is a coroutine that does nothing by default.

The session calls an agent's ``on_tool_start`` / ``on_tool_end`` around each of
its tool calls and the new agent's ``on_handoff`` after a handoff; it runs them
where the session runs (the session actor in actor mode, with the context it
holds by value). A hook that raises becomes an ``error`` event. ``on_start``,
``on_end`` and the ``on_llm_*`` hooks, and :class:`RealtimeRunHooks` (which the
SDK's realtime runner takes nowhere), are defined for code written against the
SDK and not called, as in the SDK's realtime sessions.
"""

from __future__ import annotations

from typing import Any, Generic

from ray_realtime.agents.context import RunContextWrapper, TContext

__all__ = ["RealtimeAgentHooks", "RealtimeRunHooks"]


class RealtimeAgentHooks(Generic[TContext]):
    """Callbacks on one agent's lifecycle."""

    async def on_start(self, context: RunContextWrapper[TContext], agent: Any) -> None:
        """The agent became active."""

    async def on_end(self, context: RunContextWrapper[TContext], agent: Any, output: Any) -> None:
        """The agent produced its final output."""

    async def on_handoff(
        self, context: RunContextWrapper[TContext], agent: Any, source: Any
    ) -> None:
        """The session handed off from ``source`` to this ``agent``."""

    async def on_tool_start(
        self, context: RunContextWrapper[TContext], agent: Any, tool: Any
    ) -> None:
        """``agent`` is about to call ``tool`` (``context`` is a ``ToolContext``)."""

    async def on_tool_end(
        self, context: RunContextWrapper[TContext], agent: Any, tool: Any, result: Any
    ) -> None:
        """``tool`` returned ``result`` (the text the model receives)."""

    async def on_llm_start(
        self,
        context: RunContextWrapper[TContext],
        agent: Any,
        system_prompt: str | None,
        input_items: list[Any],
    ) -> None:
        """Before a model call (not called by realtime sessions)."""

    async def on_llm_end(
        self, context: RunContextWrapper[TContext], agent: Any, response: Any
    ) -> None:
        """After a model call (not called by realtime sessions)."""


class RealtimeRunHooks(Generic[TContext]):
    """Callbacks on a whole run's lifecycle."""

    async def on_agent_start(self, context: RunContextWrapper[TContext], agent: Any) -> None:
        """An agent became active."""

    async def on_agent_end(
        self, context: RunContextWrapper[TContext], agent: Any, output: Any
    ) -> None:
        """An agent produced its final output."""

    async def on_handoff(
        self, context: RunContextWrapper[TContext], from_agent: Any, to_agent: Any
    ) -> None:
        """A handoff from ``from_agent`` to ``to_agent``."""

    async def on_tool_start(
        self, context: RunContextWrapper[TContext], agent: Any, tool: Any
    ) -> None:
        """A tool is about to run."""

    async def on_tool_end(
        self, context: RunContextWrapper[TContext], agent: Any, tool: Any, result: Any
    ) -> None:
        """A tool returned ``result``."""

    async def on_llm_start(
        self,
        context: RunContextWrapper[TContext],
        agent: Any,
        system_prompt: str | None,
        input_items: list[Any],
    ) -> None:
        """Before a model call."""

    async def on_llm_end(
        self, context: RunContextWrapper[TContext], agent: Any, response: Any
    ) -> None:
        """After a model call."""
