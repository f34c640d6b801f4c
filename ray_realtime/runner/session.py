"""RealtimeSession: the handle the user's process holds.

The same class serves both execution modes; what differs is its backend: an
in-process :class:`~ray_realtime.session.driver.SessionDriver`, or a session
actor reached through Ray. ``async for event in session`` reads the session's
event log from this handle's own position, so several handles (or several
processes) following one session each see every event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Protocol, cast

from ray_realtime.actors.leases import check_keep_alive
from ray_realtime.agents.agent import RealtimeAgent
from ray_realtime.core import history as hist
from ray_realtime.core.history_log import HistoryReplica
from ray_realtime.core.session_core import (
    check_audio_chunk,
    check_call_id,
    check_flag,
    check_rejection_message,
    check_user_message,
)
from ray_realtime.exceptions import SessionClosedError, UserError
from ray_realtime.session.driver import EventBatch, SessionDriver, check_agent
from ray_realtime.types.events import (
    RealtimeEventsLost,
    RealtimeHistoryAdded,
    RealtimeHistoryUpdated,
    RealtimeSessionEvent,
    RealtimeUsageUpdated,
    SessionUsage,
)
from ray_realtime.types.items import RealtimeItem

__all__ = ["InProcessBackend", "RealtimeSession", "SessionBackend"]

# How long one read waits for events before asking again; bounded so that a
# handle notices a dead backend instead of waiting forever.
_READ_WAIT_SECONDS = 5.0


class SessionBackend(Protocol):
    """Where a session runs, as the handle sees it."""

    session_id: str

    @property
    def ticket(self) -> str:
        """What another process passes to ``attach`` (actor sessions only)."""
        ...

    async def start(self) -> None:
        """Create / connect the session."""
        ...

    async def send_message(self, message: Any) -> None:
        """Send a user message."""
        ...

    async def send_audio(self, audio: bytes, commit: bool) -> None:
        """Send input audio."""
        ...

    async def interrupt(self) -> None:
        """Interrupt the current response."""
        ...

    async def update_agent(self, agent: RealtimeAgent[Any]) -> None:
        """Switch the active agent."""
        ...

    async def approve_tool_call(self, call_id: str, always: bool) -> bool:
        """Approve a waiting tool call."""
        ...

    async def reject_tool_call(self, call_id: str, message: str | None, always: bool) -> bool:
        """Reject a waiting tool call."""
        ...

    async def read_events(
        self, after_seq: int, max_events: int, timeout: float | None
    ) -> EventBatch:
        """Events after ``after_seq``, waiting up to ``timeout`` for one."""
        ...

    async def get_history(self) -> list[RealtimeItem]:
        """The session's history now."""
        ...

    async def close(self) -> None:
        """End the session."""
        ...

    async def detach(self, keep_alive_seconds: float | None = None) -> None:
        """Let go of the session and leave it running (``keep_alive_seconds``:
        how long it is kept once nobody holds it; None: the orphan timeout)."""
        ...

    def local_history(self) -> list[RealtimeItem] | None:
        """The history when it is held in this process, else None."""
        ...


class InProcessBackend:
    """Runs the session's driver in this process."""

    def __init__(self, driver: SessionDriver) -> None:
        self.driver = driver
        self.session_id = driver.session_id
        # The driver's log holds history deltas: reads turn them back into the
        # SDK's events on this replica.
        self._replica = HistoryReplica()

    @property
    def ticket(self) -> str:
        """In-process sessions live and die with this process: no ticket."""
        raise UserError(
            "an in-process session cannot be attached from elsewhere; run it with "
            'config={"execution": "actor"}'
        )

    async def start(self) -> None:
        """Connect the driver."""
        await self.driver.start()

    async def send_message(self, message: Any) -> None:
        """Send a user message."""
        await self.driver.send_message(message)

    async def send_audio(self, audio: bytes, commit: bool) -> None:
        """Send input audio."""
        await self.driver.send_audio(audio, commit=commit)

    async def interrupt(self) -> None:
        """Interrupt."""
        await self.driver.interrupt()

    async def update_agent(self, agent: RealtimeAgent[Any]) -> None:
        """Switch agent."""
        await self.driver.update_agent(agent)

    async def approve_tool_call(self, call_id: str, always: bool) -> bool:
        """Approve a tool call."""
        return await self.driver.approve_tool_call(call_id, always=always)

    async def reject_tool_call(self, call_id: str, message: str | None, always: bool) -> bool:
        """Reject a tool call."""
        return await self.driver.reject_tool_call(call_id, message, always=always)

    async def read_events(
        self, after_seq: int, max_events: int, timeout: float | None
    ) -> EventBatch:
        """Read from the driver's log (history deltas materialised)."""
        batch = await self.driver.read_events(after_seq, max_events, timeout)
        if not batch.events:
            return batch
        first = batch.last_seq - len(batch.events) + 1
        replica = self._replica
        if replica.needs_snapshot(batch.events, first):
            # No await since the read: the log is still where the read left it.
            at, items = self.driver.history_at(first - 1)
            replica.reset(items, at)
        events = replica.materialise(batch.events, first)
        return EventBatch(events, batch.last_seq, batch.missed, batch.closed)

    async def get_history(self) -> list[RealtimeItem]:
        """The driver's history."""
        return self.driver.history

    async def close(self) -> None:
        """Close the driver."""
        await self.driver.close()

    async def detach(self, keep_alive_seconds: float | None = None) -> None:
        """An in-process session dies with its process; detaching closes it."""
        await self.driver.close()

    def local_history(self) -> list[RealtimeItem] | None:
        """The driver's history."""
        return self.driver.history


class RealtimeSession:
    """A realtime session: send it messages and audio, iterate its events.

    Use it as ``async with await runner.run() as session:``; leaving the block
    closes the session (or, after :meth:`detach`, leaves it running).
    """

    def __init__(self, backend: SessionBackend, *, after_seq: int = 0) -> None:
        self._backend = backend
        self._cursor = after_seq
        self._entered = False
        self._closed = False
        self._detached = False
        self._history_cache: list[RealtimeItem] = []
        self._usage_cache = SessionUsage()

    # ------------------------------------------------------------ identity

    @classmethod
    async def attach(cls, ticket: str, *, after_seq: int = 0) -> RealtimeSession:
        """A handle to a running actor-backed session, from any process of the
        cluster; it reads events after ``after_seq`` (0: from the oldest kept).

        ``ticket`` is the owner's :attr:`ticket` (the session's id and secret:
        whoever holds it may read and steer the session), or a bare session
        id when the service allows open attach (``ServiceConfig.open_attach``).
        Raises :class:`SessionAccessError` (no ticket, a wrong or malformed
        one), :class:`SessionNotFoundError` or :class:`SessionLostError`."""
        from ray_realtime.actors.handle import attach_backend

        backend = await attach_backend(ticket, after_seq=after_seq)
        session = cls(backend, after_seq=after_seq)
        session._entered = True  # the session already runs: nothing to start
        return session

    @property
    def session_id(self) -> str:
        """The session's id (listings show it; it grants nothing by itself)."""
        return self._backend.session_id

    @property
    def ticket(self) -> str:
        """An opaque string that lets another process :meth:`attach` to this
        (actor) session: hand it only to whom may read and steer the session.
        :class:`UserError` for an in-process session."""
        return self._backend.ticket

    @property
    def last_seq(self) -> int:
        """Sequence number of the last event this handle yielded."""
        return self._cursor

    @property
    def history(self) -> list[RealtimeItem]:
        """The history as this handle knows it (live for in-process sessions;
        for remote ones, as of the last history event read — see
        :meth:`get_history`)."""
        local = self._backend.local_history()
        return local if local is not None else list(self._history_cache)

    @property
    def usage(self) -> SessionUsage:
        """What the session used so far: tokens (from each response's
        ``response.done``), seconds of audio in and out, tool calls, in total
        and ``by_agent``. Live for in-process sessions; for actor sessions,
        as of the last ``usage`` event this handle read (one comes with every
        model response), so it costs no round trip."""
        if isinstance(self._backend, InProcessBackend):
            return self._backend.driver.usage
        return self._usage_cache

    async def get_history(self) -> list[RealtimeItem]:
        """The session's history, fetched now."""
        self._history_cache = await self._backend.get_history()
        return list(self._history_cache)

    # ----------------------------------------------------------- lifecycle

    async def enter(self) -> RealtimeSession:
        """Start the session (what ``async with`` does on entry)."""
        if not self._entered:
            self._entered = True
            await self._backend.start()
        return self

    async def __aenter__(self) -> RealtimeSession:
        return await self.enter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._detached:
            return
        await self.close()

    async def close(self) -> None:
        """End the session; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._backend.close()

    async def detach(self, *, keep_alive_seconds: float | None = None) -> None:
        """Let go of the session and leave it running (actor sessions); another
        process can :meth:`attach` to it with its :attr:`ticket`.

        A session none of whose handles is connected is closed after the run
        config's ``orphan_timeout_seconds`` (default 300); ``keep_alive_seconds``
        (0 to 86,400) keeps it exactly that long instead, unless a handle
        attaches again first (which restarts the ordinary clock)."""
        keep = check_keep_alive(keep_alive_seconds)
        self._detached = True
        self._closed = True
        await self._backend.detach(keep)

    # ------------------------------------------------------------ commands
    #
    # Every command checks its input here, before it crosses to either
    # backend, with the core's check functions; the session's size bounds and
    # audio format are checked again where they are known (the core, and the
    # actor handle before a frame goes out), with the same functions.

    def _check_open(self) -> None:
        if self._closed:
            raise SessionClosedError(f"session {self.session_id} is closed", self.session_id)

    async def send_message(self, message: str | dict[str, Any]) -> None:
        """Send a user message: text, or a ``{"type": "message", "role":
        "user", "content": [...]}`` dict. The model replies."""
        self._check_open()
        await self._backend.send_message(check_user_message(message))

    async def send_audio(self, audio: bytes, *, commit: bool = False) -> None:
        """Send raw input audio in the session's input format (whole samples:
        an even number of bytes in PCM16); ``commit`` ends the user's turn
        when server voice detection is off."""
        self._check_open()
        await self._backend.send_audio(check_audio_chunk(audio), check_flag(commit, "commit"))

    async def interrupt(self) -> None:
        """Stop the current response; its audio is truncated where playback is."""
        self._check_open()
        await self._backend.interrupt()

    async def update_agent(self, agent: RealtimeAgent[Any]) -> None:
        """Switch the active agent (no handoff event)."""
        self._check_open()
        await self._backend.update_agent(check_agent(agent))

    async def approve_tool_call(self, call_id: str, *, always: bool = False) -> bool:
        """Run a tool call that is waiting for approval (the SDK's signature).
        ``always=True`` also approves the tool's later calls in this session.
        Returns whether such a call was waiting."""
        self._check_open()
        return await self._backend.approve_tool_call(
            check_call_id(call_id), check_flag(always, "always")
        )

    async def reject_tool_call(
        self, call_id: str, *, always: bool = False, rejection_message: str | None = None
    ) -> bool:
        """Refuse a tool call that is waiting for approval (the SDK's
        signature). The model receives ``rejection_message``, else the run
        config's ``tool_error_formatter`` text, else "Tool execution was not
        approved."; ``always=True`` also refuses the tool's later calls in this
        session. Returns whether such a call was waiting."""
        self._check_open()
        return await self._backend.reject_tool_call(
            check_call_id(call_id),
            check_rejection_message(rejection_message),
            check_flag(always, "always"),
        )

    # -------------------------------------------------------------- events

    async def read_events(
        self, after_seq: int | None = None, max_events: int = 256, timeout: float | None = 0.0
    ) -> EventBatch:
        """One batch of events after ``after_seq`` (default: this handle's
        position), without moving the handle's position; ``timeout`` is how
        long to wait for the first event (``None``: until one comes)."""
        _check_read(after_seq, max_events, timeout)
        after = self._cursor if after_seq is None else after_seq
        return await self._backend.read_events(after, max_events, timeout)

    def __aiter__(self) -> AsyncIterator[RealtimeSessionEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RealtimeSessionEvent]:
        while True:
            batch = await self._backend.read_events(self._cursor, 256, _READ_WAIT_SECONDS)
            if batch.missed:
                yield RealtimeEventsLost(batch.missed)
            first = batch.last_seq - len(batch.events) + 1
            for offset, event in enumerate(batch.events):
                self._cursor = first + offset
                # Backends hand out the SDK's events only (deltas materialised).
                public = cast(RealtimeSessionEvent, event)
                self._track_history(public)
                yield public
            self._cursor = batch.last_seq
            if batch.closed:
                return

    def _track_history(self, event: RealtimeSessionEvent) -> None:
        if isinstance(event, RealtimeHistoryUpdated):
            self._history_cache = list(event.history)
        elif isinstance(event, RealtimeHistoryAdded):
            hist.insert_item(self._history_cache, event.item)
        elif isinstance(event, RealtimeUsageUpdated):
            self._usage_cache = event.usage


def _check_read(after_seq: Any, max_events: Any, timeout: Any) -> None:
    if after_seq is not None and (
        isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0
    ):
        raise UserError(f"after_seq must be an int >= 0 or None, got {after_seq!r}")
    if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
        raise UserError(f"max_events must be an int >= 1, got {max_events!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
    ):
        raise UserError(f"timeout must be a number >= 0 or None, got {timeout!r}")
