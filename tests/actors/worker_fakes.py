"""Fakes of the worker seam, for tests without a Ray runtime: an object
reference, and a worker handle that calls a real :class:`ToolWorker` in this
process the way Ray would (counting the actor calls)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Generator
from typing import Any

from ray_realtime.actors.tool_batch import ToolCall, decode_calls
from ray_realtime.actors.workers import ToolWorker

__all__ = ["FakeRef", "InProcessWorker", "RefObjects"]


class FakeRef:
    """Stands in for an object reference: awaitable, with a stable key."""

    def __init__(self, value: Any, key: str) -> None:
        self._value = value
        self._key = key

    def hex(self) -> str:
        return self._key

    def __await__(self) -> Generator[Any, None, Any]:
        if False:
            yield
        return self._value


class RefObjects:
    """A session's objects (``SessionObjects``) as fake references."""

    def __init__(self, context_bytes: bytes) -> None:
        self._context = FakeRef(context_bytes, "context")
        self._agents: dict[int, FakeRef] = {}

    async def context_ref(self) -> FakeRef:
        return self._context

    async def run_guardrails_ref(self) -> None:
        return None

    async def agent_ref(self, agent: Any) -> FakeRef:
        return self._agents.setdefault(id(agent), FakeRef(agent, f"agent-{id(agent)}"))


class InProcessWorker:
    """A worker handle over a real :class:`ToolWorker` in this process.

    ``sent`` records each actor call: ``(method, calls, keys of the refs sent)``.
    ``worker`` may be swapped (a fresh worker holds nothing in its cache).
    """

    def __init__(self, worker: ToolWorker | None = None) -> None:
        self.worker = worker or ToolWorker()
        self.sent: list[tuple[str, list[ToolCall], list[str]]] = []
        outer = self

        class _RunTools:
            def remote(
                self, payload: bytes, refs: dict[str, Any] | None = None
            ) -> Awaitable[bytes]:
                outer.sent.append(("run_tools", decode_calls(payload), sorted(refs or {})))
                return outer.worker.run_tools(payload, refs)

        class _StreamTools:
            def options(self, **_: Any) -> _StreamTools:
                return self

            def remote(
                self, payload: bytes, refs: dict[str, Any] | None = None
            ) -> AsyncGenerator[Awaitable[Any], None]:
                outer.sent.append(("stream_tools", decode_calls(payload), sorted(refs or {})))

                async def items() -> AsyncGenerator[Awaitable[Any], None]:
                    async for group in outer.worker.stream_tools(payload, refs):
                        # Like Ray's generator: each item is a reference to await.
                        yield asyncio.sleep(0, group)

                return items()

        self.run_tools = _RunTools()
        self.stream_tools = _StreamTools()

    @property
    def tool_calls(self) -> int:
        """Tool calls carried by all actor calls."""
        return sum(len(calls) for _, calls, _ in self.sent)
