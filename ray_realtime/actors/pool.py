"""Worker pools as the session driver sees them: executors over worker actors.

A call goes to the least busy worker on the session's own node, else to the
least busy anywhere. Tool calls to one worker are batched: those issued in
the same turn of the event loop (by one session or by many sessions of the
actor) travel as one actor call (:mod:`ray_realtime.actors.tool_batch`).
A worker that died is dropped from the pool, reported, and each of its calls
is answered with an error output; the session never hangs on it: every call
is bounded by its timeout plus a grace period.

A call that finds no worker (they died, the router is starting their
replacements) waits for one, bounded by the call's own timeout, instead of
failing: the router pushes the new worker list (:meth:`WorkerPool.replace`)
as soon as a replacement is ready. A worker that refuses a call because it is
retiring (its threads are stuck) ran nothing of it, so the call goes to
another worker, or waits for one, the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ray_realtime.actors import raylib
from ray_realtime.actors.tool_batch import (
    ToolAnswer,
    ToolBatcher,
    ToolCall,
    decode_answers,
    encode_calls,
)
from ray_realtime.actors.worker_health import WorkerRetiring
from ray_realtime.agents.agent import RealtimeAgent
from ray_realtime.agents.guardrails import OutputGuardrail
from ray_realtime.agents.mcp import MCPToolListing
from ray_realtime.agents.tools import FunctionTool
from ray_realtime.session.execution import GuardrailRound, ToolOutcome

__all__ = [
    "PoolExecutor",
    "SessionObjects",
    "WorkerPool",
    "WorkerSlot",
]

logger = logging.getLogger(__name__)

# Time a worker gets beyond the call's own timeout before the session gives
# up on it (covers the actor call itself and fetching the agent once).
_GRACE_SECONDS = 5.0


@dataclass
class WorkerSlot:
    """One worker actor in a pool."""

    name: str
    node_id: str
    handle: Any
    in_flight: int = 0
    calls: int = 0
    # The tool calls to this worker, batched per loop turn (made on first use).
    batcher: ToolBatcher | None = field(default=None, repr=False)

    def tool_batcher(self) -> ToolBatcher:
        """The batcher of tool calls to this worker."""
        if self.batcher is None:
            self.batcher = ToolBatcher(
                send=functools.partial(_send_tools, self.handle),
                stream=functools.partial(_stream_tools, self.handle),
            )
        return self.batcher


# The worker's methods take the references only when there are some to send:
# every argument costs the actor call something.


async def _send_tools(
    handle: Any, calls: list[ToolCall], refs: dict[str, Any]
) -> list[tuple[int, ToolAnswer | None]]:
    args = (encode_calls(calls), refs) if refs else (encode_calls(calls),)
    return decode_answers(await raylib.result(handle.run_tools.remote(*args)))


async def _stream_tools(
    handle: Any, calls: list[ToolCall], refs: dict[str, Any]
) -> AsyncGenerator[list[tuple[int, ToolAnswer | None]], None]:
    args = (encode_calls(calls), refs) if refs else (encode_calls(calls),)
    async with contextlib.aclosing(raylib.stream(handle.stream_tools, *args)) as groups:
        async for data in groups:
            yield decode_answers(data)


@dataclass
class WorkerPool:
    """The workers of one kind a session can use, local ones preferred.

    Plain (no Ray): :meth:`wait_pick` waits for :meth:`replace` to bring a
    worker when there is none.
    """

    node_id: str
    workers: list[WorkerSlot] = field(default_factory=list)
    on_dead: Callable[[WorkerSlot], None] | None = None
    # Workers this pool saw die or refuse: a list pushed before the router
    # knew does not bring them back. Only names of the latest list are kept.
    _gone: set[str] = field(default_factory=set, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def pick(self) -> WorkerSlot | None:
        """The least busy local worker, else the least busy anywhere."""
        local = [w for w in self.workers if w.node_id == self.node_id]
        candidates = local or self.workers
        if not candidates:
            return None
        return min(candidates, key=lambda w: (w.in_flight, w.calls))

    async def wait_pick(self, timeout: float) -> WorkerSlot | None:
        """:meth:`pick`, waiting up to ``timeout`` seconds for a worker when
        the pool has none; None when none came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            slot = self.pick()
            remaining = deadline - loop.time()
            if slot is not None or remaining <= 0:
                return slot
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    def mark_dead(self, slot: WorkerSlot) -> None:
        """Drop a dead worker and report it."""
        self._gone.add(slot.name)
        if slot in self.workers:
            self.workers.remove(slot)
            if self.on_dead is not None:
                self.on_dead(slot)

    def drop(self, slot: WorkerSlot) -> None:
        """Drop a retiring worker (the router already replaces it)."""
        self._gone.add(slot.name)
        if slot in self.workers:
            self.workers.remove(slot)

    def replace(self, workers: list[WorkerSlot]) -> None:
        """Take a fresh worker list (after the router replaced dead workers);
        known workers keep their slots (and counts of calls in flight), and
        callers waiting for a worker wake up."""
        names = {w.name for w in workers}
        self._gone &= names
        current = {w.name: w for w in self.workers}
        self.workers = [current.get(w.name, w) for w in workers if w.name not in self._gone]
        # Wake the waiters; later ones wait on a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()


class SessionObjects:
    """The objects of one session in the object store, put once, owned by the
    session actor (so they outlive the process that started the session)."""

    def __init__(self, context_bytes: bytes, run_guardrails: list[OutputGuardrail]) -> None:
        self._context_bytes = context_bytes
        self._run_guardrails = run_guardrails
        # key -> (the object, the task putting it): calls that need an object
        # at the same time wait for one put, and so resume together (their
        # calls then go in one batch).
        self._puts: dict[Any, tuple[Any, asyncio.Future[Any]]] = {}

    # Put on first use: a session that never calls a tool never pays for it,
    # and session start stays a few method calls. A put is a call to the
    # object store that may block (spilling): it runs off the event loop.
    async def _put(self, key: Any, value: Any) -> Any:
        entry = self._puts.get(key)
        if entry is not None and entry[0] is value:
            put = entry[1]
            # A put that failed is tried again by the next call.
            if not put.done() or (not put.cancelled() and put.exception() is None):
                return await asyncio.shield(put)
        put = asyncio.ensure_future(asyncio.to_thread(raylib.put, value))
        self._puts[key] = (value, put)
        return await asyncio.shield(put)

    async def context_ref(self) -> Any:
        """The reference of the pickled context."""
        return await self._put("context", self._context_bytes)

    async def run_guardrails_ref(self) -> Any | None:
        """The reference of the run config's guardrails (None when there are none)."""
        if not self._run_guardrails:
            return None
        return await self._put("run_guardrails", self._run_guardrails)

    async def agent_ref(self, agent: RealtimeAgent[Any]) -> Any:
        """The reference of ``agent`` (put on first use; agents are few per session)."""
        return await self._put(id(agent), agent)


class _NoWorker(Exception):
    """The pool has no worker to take the call."""


class _WorkerDied(Exception):
    """The worker died during the call; it was dropped from the pool."""


class PoolExecutor:
    """Runs tool calls and guardrail rounds on the worker actors of one pool.

    A session host makes one over its tool pool (the driver's tool executor)
    and one over its guardrail pool (its guardrail executor). Every error
    becomes an outcome for the session, never an exception.
    """

    def __init__(self, pool: WorkerPool, objects: SessionObjects) -> None:
        self._pool = pool
        self._objects = objects

    async def _call(
        self, send: Callable[[WorkerSlot], Awaitable[Any]], timeout: float, wait: float
    ) -> Any:
        """What ``send(worker slot)`` gives, from the least busy worker,
        within ``timeout``; waits up to ``wait`` seconds for a
        worker when there is none. Raises :class:`_NoWorker`,
        :class:`asyncio.TimeoutError`, :class:`_WorkerDied` (the worker is
        dropped from the pool) or what the call raised."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            slot = await self._pool.wait_pick(max(0.0, deadline - loop.time()))
            if slot is None:
                raise _NoWorker
            slot.in_flight += 1
            slot.calls += 1
            try:
                async with asyncio.timeout(timeout):
                    return await send(slot)
            except Exception as exc:
                if raylib.is_actor_gone(exc):
                    self._pool.mark_dead(slot)
                    raise _WorkerDied from None
                if not isinstance(raylib.unwrap_task_error(exc), WorkerRetiring):
                    raise
                # Refused before running anything: another worker takes it.
                self._pool.drop(slot)
            finally:
                slot.in_flight -= 1

    async def run_tool(
        self,
        agent: RealtimeAgent[Any],
        tool: FunctionTool,
        *,
        call_id: str,
        arguments: str,
        context: Any,
        default_timeout: float,
    ) -> ToolOutcome:
        """Run one call on a worker; errors become outcomes. With no worker,
        it waits for one up to the tool's timeout."""
        wait = tool.timeout_seconds or default_timeout
        timeout = wait + _GRACE_SECONDS
        try:
            agent_ref = await self._objects.agent_ref(agent)
            context_ref = await self._objects.context_ref()
            agent_key, context_key = raylib.ref_key(agent_ref), raylib.ref_key(context_ref)
            call = ToolCall(agent_key, context_key, tool.name, call_id, arguments, default_timeout)
            refs = {agent_key: agent_ref, context_key: context_ref}
            output, error, raised, value = await self._call(
                lambda slot: slot.tool_batcher().submit(call, refs, timeout), timeout, wait
            )
            return ToolOutcome(output, error, raised, value)
        except _NoWorker:
            message = f"no tool worker is available (waited {wait:g} s for one)"
        except TimeoutError:
            message = f"tool {tool.name!r} got no answer from its worker in {timeout:g} s"
        except _WorkerDied:
            message = f"the worker running tool {tool.name!r} died; the call was not completed"
        except Exception as exc:
            message = f"tool {tool.name!r} failed on its worker: {type(exc).__name__}: {exc}"
        return ToolOutcome(f"Error: {message}", message)

    async def list_mcp_tools(
        self, agent: RealtimeAgent[Any], *, context: Any, timeout: float
    ) -> MCPToolListing:
        """List the agent's MCP tools on a worker (where they will be called,
        over the worker's own connections); errors are reported, not raised."""
        try:
            agent_ref = await self._objects.agent_ref(agent)
            context_ref = await self._objects.context_ref()
            tools, errors, _ = await self._call(
                lambda slot: raylib.result(
                    slot.handle.list_mcp_tools.remote([agent_ref], [context_ref], timeout)
                ),
                timeout + _GRACE_SECONDS,
                timeout,
            )
            return MCPToolListing(list(tools), list(errors))
        except _NoWorker:
            message = "no tool worker is available"
        except TimeoutError:
            message = f"the tool worker did not answer within {timeout + _GRACE_SECONDS:g} s"
        except _WorkerDied:
            message = "the tool worker died"
        except Exception as exc:
            message = f"the tool worker failed: {type(exc).__name__}: {exc}"
        return MCPToolListing(
            [], [f"the MCP tools of agent {agent.name!r} are unavailable: {message}"]
        )

    async def run_guardrails(
        self,
        agent: RealtimeAgent[Any],
        guardrails: list[OutputGuardrail],
        *,
        text: str,
        context: Any,
        timeout: float,
    ) -> GuardrailRound:
        """Run one round on a worker; errors are reported, not raised. With
        no worker, it waits for one up to ``timeout``."""
        from ray_realtime import wire

        objects = self._objects
        try:
            agent_ref = await objects.agent_ref(agent)
            context_ref = await objects.context_ref()
            run_ref = await objects.run_guardrails_ref()
            refs = [run_ref] if run_ref is not None else []
            data = await self._call(
                lambda slot: raylib.result(
                    slot.handle.run_guardrails.remote(
                        [agent_ref],
                        refs,
                        text,
                        [context_ref],
                        timeout,
                    )
                ),
                timeout + _GRACE_SECONDS,
                timeout,
            )
            results, errors = wire.decode(data)
            return GuardrailRound(list(results), list(errors))
        except _NoWorker:
            return GuardrailRound(
                [], [f"no guardrail worker is available (waited {timeout:g} s for one)"]
            )
        except TimeoutError:
            return GuardrailRound([], ["guardrail worker gave no answer in time"])
        except _WorkerDied:
            return GuardrailRound([], ["the guardrail worker died"])
        except Exception as exc:
            return GuardrailRound([], [f"guardrail worker failed: {type(exc).__name__}: {exc}"])
