"""Tool calls to one worker, coalesced: one actor call carries every call a
process issues to that worker in the same turn of its event loop.

A Ray actor call costs about as much as a tool that looks something up, and a
process manages a bounded number of them per second; a model that asks for
ten tools at once, or many sessions of one actor calling tools together,
would pay for each. So calls are not sent as they come: :meth:`ToolBatcher.submit`
queues one and the queue is sent at the next turn of the loop, as one call
(:data:`MAX_BATCH` calls at most; more make more actor calls).

* One call goes as a plain actor call, answered when it is done: the cheapest
  round trip there is.
* Several go as one *streaming* actor call: the worker yields the answers in
  groups as they are done, so a quick call is not held back by a slow one in
  the same batch.

Agents and contexts travel by object reference, which costs more to send
than a string. Each call names its agent and context by key; the references
ride along only while the worker is not known to hold them (it caches what it
fetched). A worker that no longer holds one (its cache is bounded) answers
that call with ``None``, and the call is sent again with its references.

Calls and answers cross as the bytes of the wire codec (one plain
argument costs Ray less than a structure to pickle): :func:`encode_calls`,
:func:`decode_answers` and their inverses.

Plain asyncio, no Ray: the two ways to reach a worker are passed in, so the
batching is tested without a cluster; :mod:`ray_realtime.actors.pool` makes
them actor calls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ray_realtime import wire
from ray_realtime.exceptions import ToolError

__all__ = [
    "MAX_BATCH",
    "ToolAnswer",
    "ToolBatcher",
    "ToolCall",
    "decode_answers",
    "decode_calls",
    "encode_answers",
    "encode_calls",
]

MAX_BATCH = 128
"""Calls one actor call carries at most (bounds the message's size)."""

_KNOWN_KEYS = 256
"""Object keys a batcher remembers its worker holds (its cache's capacity)."""


class ToolCall(NamedTuple):
    """One tool call as it travels to a worker."""

    agent_key: str
    """Key of the agent's object reference (the worker looks the tool up in it)."""
    context_key: str | None
    """Key of the pickled context's reference; None: no context."""
    tool_name: str
    call_id: str
    arguments: str
    default_timeout: float


ToolAnswer = tuple[str, str | None, bool, Any]
"""A worker's answer to one call: ``(output, error, raised, value)`` as in
:class:`~ray_realtime.session.execution.ToolOutcome`. ``None`` in its place:
the worker did not hold the call's objects and ran nothing."""


def encode_calls(calls: list[ToolCall]) -> bytes:
    """The bytes of a batch of calls (:func:`decode_calls` reads them)."""
    return wire.encode(calls)


def decode_calls(data: bytes) -> list[ToolCall]:
    """The calls of :func:`encode_calls`' bytes; :class:`ToolError` if
    they are not a batch of calls."""
    calls = wire.decode(data)
    if not isinstance(calls, list) or not all(
        isinstance(c, list) and len(c) == len(ToolCall._fields) for c in calls
    ):
        raise ToolError("a tool batch is not a list of calls")
    return [ToolCall(*c) for c in calls]


def encode_answers(answers: list[tuple[int, ToolAnswer | None]]) -> bytes:
    """The bytes of ``(index, answer)`` pairs (:func:`decode_answers` reads
    them). An answer's value is plain data (the executor made it so)."""
    return wire.encode(answers)


def decode_answers(data: bytes) -> list[tuple[int, ToolAnswer | None]]:
    """The ``(index, answer)`` pairs of :func:`encode_answers`' bytes;
    :class:`ToolError` if they are not."""
    pairs = wire.decode(data)
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], int) for p in pairs
    ):
        raise ToolError("tool answers are not a list of (index, answer) pairs")
    decoded: list[tuple[int, ToolAnswer | None]] = []
    for index, answer in pairs:
        if answer is not None and not (isinstance(answer, list) and len(answer) == 4):
            raise ToolError("a tool answer is not (output, error, raised, value)")
        decoded.append((index, None if answer is None else tuple(answer)))
    return decoded


Send = Callable[[list[ToolCall], dict[str, Any]], Awaitable[list[tuple[int, ToolAnswer | None]]]]
"""Send a batch as one call; every answer at once, as ``(index, answer)``."""

Stream = Callable[
    [list[ToolCall], dict[str, Any]], AsyncGenerator[list[tuple[int, ToolAnswer | None]], None]
]
"""Send a batch as one call; the answers in groups of ``(index, answer)`` as
they are done."""


@dataclass
class _Queued:
    call: ToolCall
    refs: dict[str, Any]
    bound: float
    future: asyncio.Future[ToolAnswer]
    resend: bool = False


@dataclass
class ToolBatcher:
    """The calls to one worker, sent in batches (one per loop turn).

    ``statistics()`` counts the actor calls made (``batches``) and the tool
    calls they carried (``calls``).
    """

    send: Send
    stream: Stream
    max_batch: int = MAX_BATCH
    batches: int = 0
    calls: int = 0
    _queue: list[_Queued] = field(default_factory=list, repr=False)
    _known: OrderedDict[str, None] = field(default_factory=OrderedDict, repr=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    def submit(
        self, call: ToolCall, refs: dict[str, Any], bound: float
    ) -> asyncio.Future[ToolAnswer]:
        """Queue ``call`` for the next batch; its answer, or the exception
        that failed its batch (the worker died or refused it, or ``bound``
        seconds passed). ``refs``: the references of the call's keys.
        Cancelling the future drops the call if it was not sent yet."""
        future: asyncio.Future[ToolAnswer] = asyncio.get_running_loop().create_future()
        self._enqueue(_Queued(call, refs, bound, future))
        return future

    def statistics(self) -> dict[str, int]:
        """Actor calls made, tool calls carried, calls waiting for the next batch."""
        return {"batches": self.batches, "calls": self.calls, "queued": len(self._queue)}

    def _enqueue(self, queued: _Queued) -> None:
        if not self._queue:
            # Sent at the next turn: every call issued in this one joins it.
            asyncio.get_running_loop().call_soon(self._flush)
        self._queue.append(queued)

    def _flush(self) -> None:
        queued = [q for q in self._queue if not q.future.done()]
        self._queue = []
        for start in range(0, len(queued), self.max_batch):
            task = asyncio.ensure_future(self._send(queued[start : start + self.max_batch]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Queued]) -> None:
        refs: dict[str, Any] = {}
        for q in batch:
            for key, ref in q.refs.items():
                if q.resend or key not in self._known:
                    refs[key] = ref
        calls = [q.call for q in batch]
        self.batches += 1
        self.calls += len(batch)
        answered: set[int] = set()
        failure: Exception = ToolError("the worker ended the batch without the call's answer")
        try:
            # Bounded: each call is bounded on the worker, and its caller
            # stops waiting at its own bound; this task stops there too.
            async with asyncio.timeout(max(q.bound for q in batch)):
                if len(batch) == 1:
                    for index, answer in await self.send(calls, refs):
                        answered.add(index)
                        self._settle(batch[index], answer)
                else:
                    async with contextlib.aclosing(self.stream(calls, refs)) as groups:
                        async for group in groups:
                            for index, answer in group:
                                answered.add(index)
                                self._settle(batch[index], answer)
        except Exception as exc:
            failure = exc
        for index, q in enumerate(batch):
            if index not in answered and not q.future.done():
                q.future.set_exception(failure)

    def _settle(self, queued: _Queued, answer: ToolAnswer | None) -> None:
        if answer is None:
            # The worker no longer holds the call's objects: send them along.
            for key in queued.refs:
                self._known.pop(key, None)
            if queued.future.done():
                return
            if queued.resend:
                message = "the worker lost the call's agent or context twice"
                queued.future.set_exception(ToolError(message, queued.call.tool_name))
            else:
                queued.resend = True
                self._enqueue(queued)
            return
        for key in queued.refs:
            self._known[key] = None
            self._known.move_to_end(key)
        while len(self._known) > _KNOWN_KEYS:
            self._known.popitem(last=False)
        if not queued.future.done():
            queued.future.set_result(answer)
