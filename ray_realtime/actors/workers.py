"""Tool and guardrail workers: actors that run user code for sessions.

Agents, tools and guardrails reach a worker once, by object reference, and are
cached here (bounded, least recently used first out); each call then names the
tool by name; tool calls name their agent and context by key, and come in
batches (:mod:`ray_realtime.actors.tool_batch`), each call of a batch booked
and run on its own. The user context arrives as the pickled bytes of one
object reference per session and is unpickled for every call, so it travels
*by value*: a worker's changes to it do not flow back, nor to other calls.

Every call is booked in the worker's
:class:`~ray_realtime.actors.worker_health.ThreadLedger`, and sync tools run
on the worker's own thread pool, so the worker knows which threads are stuck
(their call timed out, the thread runs on). Past the limit it retires: it
refuses new calls, :meth:`_Worker.wait_retire` (the router's watch) returns,
and the router replaces it and kills it once :meth:`_Worker.wait_idle`.

These are plain classes; :mod:`ray_realtime.actors.remote` makes them actors.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ray_realtime.actors import raylib
from ray_realtime.actors.logs import configure_actor_logging
from ray_realtime.actors.tool_batch import (
    MAX_BATCH,
    ToolAnswer,
    ToolCall,
    decode_calls,
    encode_answers,
)
from ray_realtime.actors.worker_health import CURRENT_CALL, ThreadLedger, TrackingExecutor
from ray_realtime.agents.context import wrap_context
from ray_realtime.agents.mcp import list_agent_mcp_tools, mcp_tool_by_name
from ray_realtime.cluster.service_config import ServiceConfig
from ray_realtime.exceptions import ToolError
from ray_realtime.session.execution import run_guardrails, run_tool_call

__all__ = ["MISSING", "GuardrailWorker", "ToolWorker", "WorkerCache"]

logger = logging.getLogger(__name__)

_CACHE_ENTRIES = 256

# A streamed batch sends the answers that come within this gap of each other
# (and within the second bound of the group's first) as one message.
_GROUP_GAP_SECONDS = 0.001
_GROUP_SECONDS = 0.005


class _Missing:
    """Nothing cached under that key."""


MISSING: Any = _Missing()
"""What :meth:`WorkerCache.peek` gives for a key it does not hold."""


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

    def peek(self, key: str) -> Any:
        """The object cached under ``key``, or :data:`MISSING`."""
        if key not in self._items:
            return MISSING
        self._items.move_to_end(key)
        return self._items[key]

    def __len__(self) -> int:
        return len(self._items)


class _Worker:
    def __init__(self) -> None:
        configure_actor_logging()
        self._cache = WorkerCache()
        self._calls = 0
        self.node_id = raylib.current_node_id()
        self._ledger = ThreadLedger(ServiceConfig.worker_stuck_threads)
        self._executor: TrackingExecutor | None = None
        self._retire = asyncio.Event()
        self._idle = asyncio.Event()
        self._batches = 0
        # The calls of batches, each in a task of its own (they end within
        # their timeouts; held here so none is collected while it runs).
        self._running: set[asyncio.Future[Any]] = set()

    async def ping(self) -> str:
        """This worker's node id (a liveness check)."""
        return self.node_id

    def statistics(self) -> dict[str, Any]:
        """Calls served, cache state and thread health."""
        return {
            "node_id": self.node_id,
            "pid": os.getpid(),
            "calls": self._calls,
            "batches": self._batches,
            "cached": len(self._cache),
            "fetches": self._cache.fetches,
            "in_flight": self._ledger.in_flight,
            "busy_threads": self._ledger.busy,
            "stuck_threads": self._ledger.stuck,
            "retiring": self._ledger.retiring,
        }

    async def wait_retire(self, stuck_limit: int, timeout: float) -> bool:
        """Wait until this worker must retire (True) or ``timeout`` passes
        (False). The router keeps one such call pending on every worker: it
        answers at once when the worker retires, and fails at once (Ray's
        actor death) when the process dies. ``stuck_limit``: the service's
        bound on stuck threads."""
        self._ledger.stuck_limit = stuck_limit
        if self._ledger.check():
            self._retire.set()
        try:
            await asyncio.wait_for(self._retire.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_idle(self) -> None:
        """Wait until no call is in flight (a retiring worker takes no new
        ones, so this ends; the router bounds the wait by its grace period)."""
        while self._ledger.in_flight:
            self._idle.clear()
            await self._idle.wait()

    def _open(self) -> int:
        """Book one call: its ledger id. Refuses it (WorkerRetiring) once retiring."""
        if self._executor is None:
            # Sync tools go to asyncio's default executor: make it ours.
            self._executor = TrackingExecutor(self._ledger)
            asyncio.get_running_loop().set_default_executor(self._executor)
        call = self._ledger.open_call()
        self._calls += 1
        return call

    def _close(self, call: int) -> None:
        """A booked call ended; its threads still running are stuck."""
        if self._ledger.close_call(call):
            if not self._retire.is_set():
                logger.warning(
                    "worker %s retires: %d threads stuck in calls that timed out",
                    self.node_id[:8],
                    self._ledger.stuck,
                )
            self._retire.set()
        if not self._ledger.in_flight:
            self._idle.set()

    @contextlib.contextmanager
    def _booked(self) -> Iterator[None]:
        """Book one call for the block; refuses it (WorkerRetiring) once retiring."""
        call = self._open()
        token = CURRENT_CALL.set(call)
        try:
            yield
        finally:
            CURRENT_CALL.reset(token)
            self._close(call)

    async def _context(self, ctx_refs: list[Any]) -> Any:
        if not ctx_refs:
            return None
        payload = await self._cache.get(ctx_refs[0])
        return raylib.loads(payload)


class ToolWorker(_Worker):
    """Runs tool calls: sync tools in a thread, each call under its timeout."""

    async def run_tools(self, payload: bytes, refs: dict[str, Any] | None = None) -> bytes:
        """Run a batch of calls (:func:`~ray_realtime.actors.tool_batch.encode_calls`'
        bytes); every answer once all are done, as
        :func:`~ray_realtime.actors.tool_batch.encode_answers`' bytes.
        ``refs``: the references of the agents and contexts the calls name,
        when this worker may not hold them. Raises
        :class:`~ray_realtime.actors.worker_health.WorkerRetiring`, having
        run nothing, when the worker is retiring."""
        tasks = await self._start(decode_calls(payload), refs or {})
        answers = [await tasks[0]] if len(tasks) == 1 else await asyncio.gather(*tasks)
        return encode_answers(list(enumerate(answers)))

    async def stream_tools(
        self, payload: bytes, refs: dict[str, Any] | None = None
    ) -> AsyncIterator[bytes]:
        """:meth:`run_tools`, yielding the answers in groups as the calls
        end: a quick call does not wait for a slow one."""
        tasks = await self._start(decode_calls(payload), refs or {})
        index = {task: i for i, task in enumerate(tasks)}
        pending: set[asyncio.Future[ToolAnswer | None]] = set(tasks)
        loop = asyncio.get_running_loop()
        while pending:
            group, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            # Answers that come close together share one message.
            until = loop.time() + _GROUP_SECONDS
            while pending and (left := until - loop.time()) > 0:
                more, pending = await asyncio.wait(
                    pending,
                    timeout=min(_GROUP_GAP_SECONDS, left),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not more:
                    break
                group |= more
            yield encode_answers(sorted((index[task], task.result()) for task in group))

    async def _start(
        self, calls: list[ToolCall], refs: dict[str, Any]
    ) -> list[asyncio.Future[ToolAnswer | None]]:
        """Book every call of a batch (all or none: a retiring worker refuses
        the batch before running any of it), fetch the objects it brings,
        and start each call in a task of its own."""
        if len(calls) > MAX_BATCH:
            raise ToolError(f"a batch of {len(calls)} tool calls is over the bound of {MAX_BATCH}")
        # All or none: the first refusal comes before any call is booked,
        # and nothing between two bookings can make the worker retire.
        booked = [self._open() for _ in calls]
        self._batches += 1
        fetched: dict[str, Any] = {}
        failed: dict[str, str] = {}
        try:
            for key, ref in refs.items():
                try:
                    fetched[key] = await self._cache.get(ref)
                except Exception as exc:
                    failed[key] = f"{type(exc).__name__}: {exc}"
        except BaseException:
            for call in booked:
                self._close(call)
            raise
        tasks: list[asyncio.Future[ToolAnswer | None]] = [
            asyncio.ensure_future(self._one(ledger_id, call, fetched, failed))
            for ledger_id, call in zip(booked, calls, strict=True)
        ]
        for ledger_id, task in zip(booked, tasks, strict=True):
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            # Closed when the task ends, even one cancelled before it started.
            task.add_done_callback(functools.partial(self._closed, ledger_id))
        return tasks

    def _closed(self, ledger_id: int, _: object) -> None:
        self._close(ledger_id)

    def _object(self, key: str, fetched: dict[str, Any], failed: dict[str, str]) -> Any:
        if key in fetched:
            return fetched[key]
        if key in failed:
            raise ToolError(f"fetching the call's objects failed: {failed[key]}")
        return self._cache.peek(key)

    async def _one(
        self, ledger_id: int, call: ToolCall, fetched: dict[str, Any], failed: dict[str, str]
    ) -> ToolAnswer | None:
        """One call of a batch, booked under ``ledger_id`` (closed by
        :meth:`_start` when it ends); never raises."""
        token = CURRENT_CALL.set(ledger_id)
        try:
            agent = self._object(call.agent_key, fetched, failed)
            payload = (
                None
                if call.context_key is None
                else self._object(call.context_key, fetched, failed)
            )
            if agent is MISSING or payload is MISSING:
                return None
            tool = next((t for t in agent.tools if t.name == call.tool_name), None)
            if tool is None and agent.mcp_servers:
                # An MCP tool: found and called over this worker's own connections.
                tool = mcp_tool_by_name(agent, call.tool_name, timeout=call.default_timeout)
            if tool is None:
                message = f"tool {call.tool_name!r} not found on agent {agent.name!r}"
                return f"Error: {message}", message, False, None
            # Unpickled for every call: the context travels by value.
            context = None if payload is None else raylib.loads(payload)
            outcome = await run_tool_call(
                tool,
                context,
                call_id=call.call_id,
                arguments=call.arguments,
                default_timeout=call.default_timeout,
                agent=agent,
            )
            return outcome.output, outcome.error, outcome.raised, outcome.value
        except Exception as exc:
            message = f"tool {call.tool_name!r} failed on its worker: {type(exc).__name__}: {exc}"
            return f"Error: {message}", message, False, None
        finally:
            CURRENT_CALL.reset(token)

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

        with self._booked():
            agent = await self._cache.get(agent_refs[0])
            run_guardrails_list = (
                await self._cache.get(run_guardrail_refs[0]) if run_guardrail_refs else []
            )
            context = await self._context(ctx_refs)
            guardrails = list(agent.output_guardrails) + list(run_guardrails_list)
            result = await run_guardrails(
                guardrails, context, agent, agent.name, text, timeout=timeout
            )
            return wire.encode([result.results, result.errors])
