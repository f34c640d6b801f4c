"""The session driver: the asyncio shell around the session core.

A :class:`SessionDriver` owns one session: the model connection, the core, the
bounded event log and every task the session starts. It feeds the core with
model events and user commands, and carries out what the core asks: events go
to the log, inputs to the model, tool calls / handoffs / guardrails to the
executors. The in-process session runs a driver in the caller's process; the
session actor runs the same driver inside a Ray actor, with executors that
fan out to worker actors.

A lost model connection is restored and the history replayed into the new
model session by the :class:`~ray_realtime.session.recovery.ModelRecovery`
part (also how a session restored from the store comes up).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ray_realtime.agents.agent import RealtimeAgent, resolve_instructions
from ray_realtime.agents.context import RunContextWrapper, wrap_context
from ray_realtime.agents.guardrails import OutputGuardrail
from ray_realtime.agents.handoffs import Handoff, as_handoff
from ray_realtime.agents.mcp import MCPConnections, MCPToolListing, list_agent_mcp_tools
from ray_realtime.agents.tools import FunctionTool
from ray_realtime.core.event_log import EventLog, LogRead
from ray_realtime.core.history_log import (
    HistoryDelta,
    HistoryTrail,
    LogEvent,
    estimate_event_bytes,
)
from ray_realtime.core.outputs import (
    CheckApproval,
    EmitEvent,
    RunGuardrails,
    RunHandoff,
    RunTool,
    SendToModel,
)
from ray_realtime.core.session_core import SessionCore, check_call_id, check_rejection_message
from ray_realtime.core.specs import AgentSpec, HandoffSpec, ToolSpec
from ray_realtime.exceptions import ModelConnectionError, SessionClosedError, UserError
from ray_realtime.model.interface import RealtimeModel
from ray_realtime.model.playback import ReportedPlaybackTracker, check_playback_snapshot
from ray_realtime.session.callbacks import (
    agent_prompt,
    call_hook,
    format_rejection,
    needs_approval,
)
from ray_realtime.session.execution import (
    GuardrailRound,
    ToolOutcome,
    run_guardrails,
    run_tool_call,
)
from ray_realtime.session.recovery import ModelRecovery
from ray_realtime.types import model_events as me
from ray_realtime.types.config import (
    RealtimeModelConfig,
    RealtimeRunConfig,
    SessionLimits,
    resolve_limits,
    resolve_model_reconnect,
)
from ray_realtime.types.events import RealtimeError, RealtimeSessionEvent, SessionUsage
from ray_realtime.types.items import RealtimeItem
from ray_realtime.types.model_inputs import (
    RealtimeModelSendEvent,
)

__all__ = [
    "AgentResolver",
    "BeforeEmit",
    "EventBatch",
    "GuardrailExecutor",
    "LocalAgentResolver",
    "LocalGuardrailExecutor",
    "LocalToolExecutor",
    "SessionDriver",
    "ToolExecutor",
    "agent_spec",
    "check_agent",
]

logger = logging.getLogger(__name__)

# Guardrail rounds in flight per session; more periodic ones are skipped (the
# final check of a response always runs), so a slow guardrail cannot pile up tasks.
_MAX_GUARDRAIL_ROUNDS = 8
# How long close() waits for events held behind a before_emit wait.
_OUTBOX_DRAIN_SECONDS = 5.0


BeforeEmit = Callable[[LogEvent, int], Awaitable[None] | None]
"""Called with each event the core emits and the sequence number it will get,
before readers can see it; when it returns an awaitable, the event - and every
event after it in the log's order - is held until it ends, while the session
goes on processing (the session actor makes history items durable this way)."""


class ToolExecutor(Protocol):
    """Runs tool calls (in this process, or on worker actors)."""

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
        """Run one call; must not raise except on cancellation."""
        ...

    async def list_mcp_tools(
        self, agent: RealtimeAgent[Any], *, context: Any, timeout: float
    ) -> MCPToolListing:
        """The tools of ``agent``'s MCP servers, listed where its tools run;
        must not raise except on cancellation."""
        ...


class GuardrailExecutor(Protocol):
    """Runs rounds of output guardrails."""

    async def run_guardrails(
        self,
        agent: RealtimeAgent[Any],
        guardrails: list[OutputGuardrail],
        *,
        text: str,
        context: Any,
        timeout: float,
    ) -> GuardrailRound:
        """Run every guardrail on ``text``; must not raise except on cancellation."""
        ...


class AgentResolver(Protocol):
    """Finds the agent a handoff switches to."""

    async def resolve(self, name: str, fallback: RealtimeAgent[Any]) -> RealtimeAgent[Any]:
        """The newest agent registered under ``name``, else ``fallback``."""
        ...


class LocalToolExecutor:
    """Runs tools in this process; MCP servers are reached over connections
    of its own, closed by :meth:`aclose`."""

    def __init__(self) -> None:
        self._mcp = MCPConnections()

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
        """Run one call here."""
        return await run_tool_call(
            tool,
            context,
            call_id=call_id,
            arguments=arguments,
            default_timeout=default_timeout,
            agent=agent,
        )

    async def list_mcp_tools(
        self, agent: RealtimeAgent[Any], *, context: Any, timeout: float
    ) -> MCPToolListing:
        """List here, on this executor's connections."""
        return await list_agent_mcp_tools(
            agent, wrap_context(context), connections=self._mcp, timeout=timeout
        )

    async def aclose(self) -> None:
        """Close the MCP connections (their server processes end)."""
        await self._mcp.aclose()


class LocalGuardrailExecutor:
    """Runs guardrails in this process."""

    async def run_guardrails(
        self,
        agent: RealtimeAgent[Any],
        guardrails: list[OutputGuardrail],
        *,
        text: str,
        context: Any,
        timeout: float,
    ) -> GuardrailRound:
        """Run one round here."""
        return await run_guardrails(guardrails, context, agent, agent.name, text, timeout=timeout)


class LocalAgentResolver:
    """Resolves a handoff to the agent the handoff itself holds."""

    async def resolve(self, name: str, fallback: RealtimeAgent[Any]) -> RealtimeAgent[Any]:
        """Always ``fallback``."""
        return fallback


@dataclass(frozen=True, slots=True)
class EventBatch:
    """One read of a session's events: ``events`` in order, their sequence
    numbers running up to ``last_seq``; ``missed`` events were dropped from
    the bounded log before this reader got them; ``closed`` once the session
    has ended and nothing more will come. A read of the driver's log itself
    holds history deltas (:class:`~ray_realtime.core.history_log.HistoryDelta`);
    a session handle's reads never do (it turns them into the SDK's events)."""

    events: list[LogEvent]
    last_seq: int
    missed: int
    closed: bool


def check_agent(agent: Any) -> RealtimeAgent[Any]:
    """``agent`` if it is a :class:`RealtimeAgent`, else a :class:`UserError`
    (shared by the session front and the driver, so both modes agree)."""
    if not isinstance(agent, RealtimeAgent):
        raise UserError(f"update_agent takes a RealtimeAgent, not {type(agent).__name__}")
    return agent


async def agent_spec(
    agent: RealtimeAgent[Any],
    context: RunContextWrapper[Any],
    mcp_tools: list[FunctionTool] | None = None,
) -> AgentSpec:
    """The plain-data view of ``agent`` the core works with; ``mcp_tools`` are
    its MCP servers' tools, listed by the caller where tools run."""
    instructions = await resolve_instructions(agent, context)
    tools = [*(mcp_tools or []), *await agent.get_function_tools(context)]
    handoffs: list[HandoffSpec] = []
    for item in agent.handoffs:
        handoff = as_handoff(item)
        if await _enabled(handoff.is_enabled, context, agent):
            handoffs.append(
                HandoffSpec(handoff.tool_name, handoff.agent_name, handoff.to_definition())
            )
    return AgentSpec(
        name=agent.name,
        instructions=instructions,
        tools=tuple(
            ToolSpec(
                t.name,
                t.to_definition(),
                needs_approval=t.needs_approval is True,
                approval_check=callable(t.needs_approval),
            )
            for t in tools
        ),
        handoffs=tuple(handoffs),
        guardrail_names=tuple(g.get_name() for g in agent.output_guardrails),
        prompt=await agent_prompt(agent, context),
    )


async def _enabled(flag: Any, context: RunContextWrapper[Any], agent: Any) -> bool:
    if callable(flag):
        result = flag(context, agent)
        if asyncio.iscoroutine(result):
            result = await result
        return bool(result)
    return bool(flag)


class SessionDriver(ModelRecovery):
    """Runs one realtime session over a :class:`RealtimeModel`.

    ``history`` seeds a restored session with its completed items; it is
    replayed into the model when the driver connects (:meth:`start` or
    :meth:`recover_model`).
    """

    def __init__(
        self,
        *,
        agent: RealtimeAgent[Any],
        model: RealtimeModel,
        context: Any = None,
        run_config: RealtimeRunConfig | None = None,
        model_config: RealtimeModelConfig | None = None,
        tool_executor: ToolExecutor | None = None,
        guardrail_executor: GuardrailExecutor | None = None,
        agent_resolver: AgentResolver | None = None,
        session_id: str = "",
        clock: Callable[[], float] = time.monotonic,
        on_closed: Callable[[SessionDriver], None] | None = None,
        history: Sequence[RealtimeItem] | None = None,
        start_seq: int = 0,
        before_emit: BeforeEmit | None = None,
        on_event: Callable[[RealtimeSessionEvent], None] | None = None,
    ) -> None:
        self.session_id = session_id
        self._model = model
        self._context = wrap_context(context)
        self._run_config: RealtimeRunConfig = run_config or {}
        self._model_config: RealtimeModelConfig = model_config or {}
        self._limits = resolve_limits(self._run_config)
        self._own_tools_exec = tool_executor is None
        self._tools_exec: ToolExecutor = tool_executor or LocalToolExecutor()
        self._guards_exec = guardrail_executor or LocalGuardrailExecutor()
        self._resolver = agent_resolver or LocalAgentResolver()
        self._agents: dict[str, RealtimeAgent[Any]] = {}
        # The MCP tools of each agent, as listed when it last started.
        self._mcp_tools: dict[str, list[FunctionTool]] = {}
        self._current = agent
        self._register_agent(agent)
        self._run_guardrails: list[OutputGuardrail] = list(
            self._run_config.get("output_guardrails") or []
        )
        self._core: SessionCore | None = None
        # A restored session (recovery): its history (``history``, replayed
        # into the model at start) and where its event numbers continue;
        # before_emit lets the host make an event's state durable before any
        # reader can see the event.
        self._before_emit = before_emit
        # Sees every event as it enters the log (the host's metrics); must not raise.
        self._observe = on_event
        # The log holds history deltas, bounded in count and in bytes; the
        # trail keeps the history as of its newest event and what each delta
        # in it replaced, so a reader can resync at any number it holds.
        self._log: EventLog[LogEvent] = EventLog(
            self._limits["event_log_size"],
            start_seq,
            max_bytes=self._limits["event_log_bytes"],
            size_of=estimate_event_bytes,
        )
        self._trail = HistoryTrail(history or ())
        # Events held back behind a before_emit wait (a store flush), in log
        # order, each with what it waits for (already running). Only the
        # emission waits: the session goes on processing meanwhile, and the
        # release task appends them in order as their waits end.
        self._outbox: deque[tuple[LogEvent, asyncio.Future[None] | None]] = deque()
        self._releasing: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._processing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sequential_tools = not self._run_config.get("async_tool_calls", True)
        self._tool_lock = asyncio.Lock()
        self._guardrail_rounds = 0
        self._started = False
        self._closed = False
        self._clock = clock
        self._on_closed = on_closed
        self.closed_at: float | None = None
        # Model connection recovery (see ray_realtime.session.recovery).
        self._initial_history = list(history or ())
        self._init_recovery(resolve_model_reconnect(self._run_config))

    # --------------------------------------------------------------- state

    @property
    def closed(self) -> bool:
        """Whether the session has ended."""
        return self._closed

    @property
    def current_agent(self) -> RealtimeAgent[Any]:
        """The active agent."""
        return self._current

    @property
    def history(self) -> list[RealtimeItem]:
        """A copy of the history."""
        return self._core.history if self._core is not None else []

    @property
    def limits(self) -> SessionLimits:
        """The bounds this session keeps."""
        return self._limits

    @property
    def usage(self) -> SessionUsage:
        """The session's usage so far (empty before start)."""
        return self._core.usage if self._core is not None else SessionUsage()

    @property
    def input_audio_format(self) -> str:
        """The format ``send_audio`` takes (``"pcm16"`` before start)."""
        return self._core.input_audio_format if self._core is not None else "pcm16"

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest event."""
        return self._log.last_seq

    def statistics(self) -> dict[str, Any]:
        """A snapshot for monitoring."""
        stats: dict[str, Any] = dict(self._core.statistics()) if self._core else {}
        stats.update(
            session_id=self.session_id,
            agent=self._current.name,
            events=self._log.last_seq,
            events_kept=len(self._log),
            event_log_bytes=self._log.bytes,
            tasks=len(self._tasks),
            closed=self._closed,
            model_recoveries=self._recoveries,
        )
        return stats

    # ----------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Connect to the model with the starting agent's settings (and replay
        the ``history`` the driver was created with, if any)."""
        if self._started:
            return
        self._started = True
        try:
            mcp_errors = await self._create_core()
        except BaseException:
            await self._close_tools_exec()
            raise
        assert self._core is not None
        self._model.add_listener(self)
        try:
            # A restored session's history goes into the new model session.
            await self._connect_model(self._core, starting=True)
            self._model_live = True
        except BaseException:
            self._model.remove_listener(self)
            self._closed = True
            self._wake()
            await self._close_tools_exec()
            raise
        if mcp_errors:
            await self._process()  # the errors of MCP servers reach the readers now

    async def _create_core(self) -> list[str]:
        """Build the core for the current agent (its MCP tools listed); the
        errors of MCP servers that could not list theirs, already reported."""
        spec, mcp_errors = await self._agent_spec(self._current)
        self._core = SessionCore(
            spec,
            run_model_settings=self._run_config.get("model_settings"),
            initial_model_settings=self._model_config.get("initial_model_settings"),
            limits=self._limits,
            run_guardrail_names=[g.get_name() for g in self._run_guardrails],
            emit_raw_model_events=bool(self._run_config.get("emit_raw_model_events", False)),
            history=self._initial_history,
            tracing_disabled=bool(self._run_config.get("tracing_disabled", False)),
            history_deltas=True,
        )
        self._initial_history = []
        self._report_mcp_errors(mcp_errors)
        return mcp_errors

    async def close(self) -> None:
        """End the session: cancel its tasks, close the model; idempotent."""
        if self._closed:
            return
        if self._outbox:
            # Readers stop at a closed session's last event: let the held
            # ones in first (their waits are bounded by the host).
            await self._drain_outbox(_OUTBOX_DRAIN_SECONDS)
            if self._closed:
                return
        self._closed = True
        self.closed_at = self._clock()
        me_task = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not me_task]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._model.remove_listener(self)
        try:
            await self._model.close()
        except Exception:
            logger.warning("closing the model connection of session %s failed", self.session_id)
        await self._close_tools_exec()
        if self._outbox:  # held by the last outputs, while closing
            await self._drain_outbox(_OUTBOX_DRAIN_SECONDS)
        self._wake()
        if self._on_closed is not None:
            try:
                self._on_closed(self)
            except Exception:
                logger.exception("on_closed callback of session %s failed", self.session_id)

    # ------------------------------------------------------------ commands

    def _require_open(self) -> SessionCore:
        if self._closed or self._core is None:
            state = "closed" if self._closed else "not started"
            raise SessionClosedError(f"session {self.session_id} is {state}", self.session_id)
        return self._core

    async def send_message(self, message: Any) -> None:
        """Send a user message (text or message dict)."""
        self._require_open().send_message(message)
        await self._process()

    async def send_audio(self, audio: bytes, *, commit: bool = False) -> None:
        """Send input audio."""
        self._require_open().send_audio(audio, commit=commit)
        await self._process()

    async def interrupt(self) -> None:
        """Interrupt the current response."""
        self._require_open().interrupt()
        await self._process()

    def report_playback(self, snapshot: Any) -> None:
        """Where the user's playback is, as the session handle's tracker last
        reported it (actor mode; see :mod:`ray_realtime.model.playback`).
        A :class:`UserError` for a malformed report; ignored by a session
        opened without a tracker."""
        checked = check_playback_snapshot(snapshot)
        self._require_open()
        tracker = self._model_config.get("playback_tracker")
        if isinstance(tracker, ReportedPlaybackTracker):
            tracker.report(checked)

    async def update_agent(self, agent: RealtimeAgent[Any]) -> None:
        """Switch to ``agent`` without a handoff; a :class:`UserError` when it
        is not an agent or its instructions / tools cannot be resolved."""
        core = self._require_open()
        check_agent(agent)
        try:
            spec, mcp_errors = await self._agent_spec(agent)
        except Exception as exc:
            raise UserError(
                f"agent {agent.name!r} cannot be used: {type(exc).__name__}: {exc}"
            ) from exc
        self._register_agent(agent)
        self._current = agent
        core.update_agent(spec)
        self._report_mcp_errors(mcp_errors)
        await self._process()

    async def report_error(self, error: dict[str, Any]) -> None:
        """Emit an ``error`` event (input refused on a path with no reply)."""
        self._require_open().report_error(error)
        await self._process()

    async def approve_tool_call(self, call_id: str, *, always: bool = False) -> bool:
        """Approve a tool call waiting for approval (``always``: and the
        tool's later calls)."""
        found = self._require_open().approve_tool_call(call_id, always=always)
        await self._process()
        return found

    async def reject_tool_call(
        self, call_id: str, message: str | None = None, *, always: bool = False
    ) -> bool:
        """Reject a tool call waiting for approval (``always``: and the tool's
        later calls). Without ``message`` the run config's
        ``tool_error_formatter`` words it, else the SDK's default text."""
        core = self._require_open()
        check_rejection_message(message, self._limits["max_message_chars"])
        tool_name = core.awaiting_approval(check_call_id(call_id))
        if message is None and tool_name is not None:
            try:
                message = await format_rejection(
                    self._run_config.get("tool_error_formatter"), self._context, tool_name, call_id
                )
            except Exception as exc:
                self._internal_error("the tool_error_formatter", exc)
        if self._closed:
            return False
        found = core.reject_tool_call(call_id, message, always=always)
        await self._process()
        return found

    # -------------------------------------------------------------- events

    async def read_events(
        self, after_seq: int, max_events: int = 256, timeout: float | None = None
    ) -> EventBatch:
        """Events after ``after_seq``; waits up to ``timeout`` for the first one
        (``None``: until one comes or the session closes; 0: no wait)."""
        max_events = max(1, min(max_events, self._log.capacity))
        batch = self._log.read(after_seq, max_events)
        if batch.events or batch.missed or self._closed or timeout == 0:
            return self._batch(batch)
        waiter = self._wakeup
        try:
            if timeout is None:
                await waiter.wait()
            else:
                await asyncio.wait_for(waiter.wait(), timeout)
        except TimeoutError:
            pass
        return self._batch(self._log.read(after_seq, max_events))

    def history_at(self, seq: int) -> tuple[int, list[RealtimeItem]]:
        """``(at, items)``: the history as of event ``at`` - ``seq``, unless
        the log no longer reaches back that far (then as of the event before
        its oldest). What a reader resyncs its replica from."""
        seq = max(0, min(seq, self._log.last_seq))
        return self._trail.history_at(seq, self._log.first_seq)

    def _batch(self, read: LogRead[LogEvent]) -> EventBatch:
        closed = self._closed and read.last_seq >= self._log.last_seq
        return EventBatch(read.events, read.last_seq, read.missed, closed)

    def _wake(self) -> None:
        # Waiters hold the current Event; setting it and swapping in a fresh one
        # wakes all of them without a lock on the append path.
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    def emit(self, event: RealtimeSessionEvent) -> None:
        """Append an event of the host's own (``session_recovered``, a store
        failure) to the log, as the core's events are."""
        self._append(event)

    def _append(self, event: LogEvent) -> None:
        if self._outbox:  # behind events still held: keep the log's order
            self._outbox.append((event, None))
            return
        self._log_event(event)
        self._wake()

    def _log_event(self, event: LogEvent) -> None:
        # Every event reaches the log here, released from the outbox or not,
        # so the host's observer sees each one once.
        seq = self._log.append(event)
        self._trail.record(event, seq)
        self._trail.forget_before(self._log.first_seq)
        # The observer sees the SDK's events (a delta is the log's own form).
        if self._observe is not None and not isinstance(event, HistoryDelta):
            self._observe(event)

    def _emit_core_event(self, event: LogEvent) -> None:
        # The number the event will get counts the events held before it.
        waiting = (
            self._before_emit(event, self._log.last_seq + 1 + len(self._outbox))
            if self._before_emit is not None
            else None
        )
        if waiting is None:
            self._append(event)
            return
        # Start the wait now (a store flush overlaps what the session does
        # next); hold the event, and every later one, until it ends.
        self._outbox.append((event, asyncio.ensure_future(waiting)))
        if self._releasing is None:
            self._releasing = asyncio.get_running_loop().create_task(self._release_outbox())

    async def _release_outbox(self) -> None:
        try:
            while self._outbox:
                event, waiting = self._outbox[0]
                if waiting is not None:
                    try:
                        await waiting
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # the hook's own failure: report, go on
                        self._internal_error("waiting before an event", exc)
                self._outbox.popleft()
                self._log_event(event)
                self._wake()
        finally:
            if self._releasing is asyncio.current_task():
                self._releasing = None

    async def _drain_outbox(self, timeout: float) -> None:
        """Wait (bounded) for held events to be released; past ``timeout``
        append them anyway (the session is ending: they must reach readers)."""
        releasing = self._releasing
        if releasing is not None:
            # asyncio.wait: neither the task's end nor the timeout raises here.
            done, _ = await asyncio.wait({releasing}, timeout=timeout)
            if not done:
                releasing.cancel()
                self._releasing = None
        while self._outbox:
            event, waiting = self._outbox.popleft()
            if waiting is not None:
                waiting.cancel()
            self._log_event(event)
        self._wake()

    # ------------------------------------------------------- model events

    async def on_event(self, event: me.RealtimeModelEvent) -> None:
        """Feed one model event to the core and carry out what follows; never
        raises (a failure becomes an ``error`` event)."""
        try:
            await self._on_event(event)
        except Exception as exc:
            self._internal_error(f"handling a {event.type} model event", exc)

    async def _on_event(self, event: me.RealtimeModelEvent) -> None:
        if self._core is None or self._closed:
            return
        if self._reconnect["enabled"] and self._connection_signal(event):
            return
        self._core.handle_model_event(event)
        if (
            isinstance(event, me.RealtimeModelConnectionStatusEvent)
            and event.status == "disconnected"
        ):
            self._append(
                RealtimeError(
                    {"message": "the model connection closed", "type": "connection_closed"}
                )
            )
            await self._process()
            self._spawn(self.close())
            return
        await self._process()

    # -------------------------------------------------------------- output

    async def _process(self) -> None:
        # One task carries out the core's outputs at a time, in order. A call
        # that arrives while one is running (including a re-entrant one: the
        # model may report an event from inside send_event) returns at once;
        # the running loop drains what it added.
        core = self._core
        if core is None or self._processing:
            return
        self._processing = True
        try:
            while core.has_output():
                for out in core.drain():
                    if isinstance(out, EmitEvent):
                        self._emit_core_event(out.event)
                    elif isinstance(out, SendToModel):
                        if not self._closed:
                            await self._send_to_model(core, out.event)
                    elif isinstance(out, RunTool):
                        self._spawn(self._run_tool(out), self._tool_failed(out))
                    elif isinstance(out, RunHandoff):
                        self._spawn(self._run_handoff(out), self._handoff_failed(out))
                    elif isinstance(out, CheckApproval):
                        self._spawn(self._check_approval(out), self._approval_failed(out))
                    elif isinstance(out, RunGuardrails):
                        if out.final or self._guardrail_rounds < _MAX_GUARDRAIL_ROUNDS:
                            self._guardrail_rounds += 1
                            self._spawn(
                                self._run_guardrail_round(out), self._guardrails_failed(out)
                            )
                        else:
                            logger.info(
                                "session %s: guardrail round skipped (busy)", self.session_id
                            )
        finally:
            self._processing = False

    async def _send_to_model(self, core: SessionCore, event: RealtimeModelSendEvent) -> None:
        if self._restoring:
            self._hold(core, event)  # sent to the new model session
            return
        await self._deliver(core, event)

    async def _deliver(
        self, core: SessionCore, event: RealtimeModelSendEvent, *, in_recovery: bool = False
    ) -> None:
        # A failed send must not stop the loop (the outputs drained with it
        # would be lost) nor escape into whichever task runs the loop (a tool
        # task would only log it and the turn would stall): the core reports
        # it to the readers and mends the turn.
        try:
            await self._model.send_event(event)
        except Exception as exc:
            if self._closed:
                return
            if isinstance(exc, ModelConnectionError) and self._reconnect["enabled"]:
                if in_recovery:
                    raise
                # The connection is gone: the input waits for the new one.
                self._hold(core, event)
                self._begin_recovery("model_reconnect", f"{type(exc).__name__}: {exc}")
                return
            logger.info("session %s: sending %s failed: %r", self.session_id, event.type, exc)
            core.model_send_failed(
                event,
                f"{type(exc).__name__}: {exc}",
                repair=not isinstance(exc, ModelConnectionError),
            )

    def _spawn(self, coro: Any, repair: Callable[[str], bool] | None = None) -> None:
        """Run ``coro`` as a task of this session. Should it fail, readers get
        an ``error`` event and ``repair(message)`` mends what it left undone."""
        task = asyncio.get_running_loop().create_task(self._guarded(coro, repair))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    async def _guarded(self, coro: Any, repair: Callable[[str], bool] | None) -> None:
        name = getattr(coro, "__name__", "task").strip("_").replace("_", " ")
        try:
            await coro
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            logger.warning("session %s: %s failed: %s", self.session_id, name, message)
            repaired = False
            if repair is not None and self._core is not None and not self._closed:
                try:
                    # A repair reports the failure itself (a tool_error ...).
                    repaired = repair(message)
                except Exception as inner:
                    self._internal_error(f"repairing after {name}", inner)
            if not repaired:
                self._internal_error(name, exc)
            await self._process()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # _guarded lets nothing but a BaseException (SystemExit ...) through.
            self._internal_error("a session task", task.exception())

    def _internal_error(self, what: str, exc: BaseException | None) -> None:
        """Tell the readers that ``what`` failed (also after close: the log
        stays readable for a while)."""
        message = f"{what} failed: {type(exc).__name__}: {exc}"
        logger.warning("session %s: %s", self.session_id, message)
        self._append(RealtimeError({"message": message, "type": "internal_error"}))

    # What a failed task left undone, mended through the core; each returns
    # False when there was nothing left to mend (the failure came later).

    def _tool_failed(self, out: RunTool) -> Callable[[str], bool]:
        def repair(message: str) -> bool:
            # The call is answered with the error, so the model replies.
            assert self._core is not None
            return self._core.tool_completed(
                out.call.call_id, f"Error: the tool call failed: {message}", message
            )

        return repair

    def _approval_failed(self, out: CheckApproval) -> Callable[[str], bool]:
        def repair(message: str) -> bool:
            # A broken approval function must not run the tool unasked.
            assert self._core is not None
            self._core.report_error(
                {
                    "message": f"the approval function of {out.call.name!r} failed: {message}",
                    "type": "approval_check_error",
                    "tool": out.call.name,
                    "call_id": out.call.call_id,
                }
            )
            return self._core.approval_checked(out.call.call_id, True)

        return repair

    def _handoff_failed(self, out: RunHandoff) -> Callable[[str], bool]:
        def repair(message: str) -> bool:
            assert self._core is not None
            return self._core.handoff_failed(out.call.call_id, message)

        return repair

    def _guardrails_failed(self, out: RunGuardrails) -> Callable[[str], bool]:
        def repair(message: str) -> bool:
            # Guardrails never hold a turn up: report, and release a held agent_end.
            assert self._core is not None
            self._core.report_error(
                {"message": f"output guardrails failed: {message}", "type": "guardrail_error"}
            )
            self._core.guardrails_completed(out.response_id, [], final=out.final)
            return True

        return repair

    async def _check_approval(self, out: CheckApproval) -> None:
        """Ask the tool's approval function, as the SDK calls it:
        ``(context_wrapper, arguments_dict, call_id)``, sync or async."""
        agent = self._agents.get(out.agent_name, self._current)
        tool = next((t for t in agent.tools if t.name == out.call.name), None)
        needed = await needs_approval(tool, self._context, out.call)
        if self._core is None or self._closed:
            return
        self._core.approval_checked(out.call.call_id, needed)
        await self._process()

    async def _run_tool(self, out: RunTool) -> None:
        agent = self._agents.get(out.agent_name, self._current)
        tool = next((t for t in agent.tools if t.name == out.call.name), None)
        if tool is None:
            listed = self._mcp_tools.get(agent.name, [])
            tool = next((t for t in listed if t.name == out.call.name), None)
        if tool is None:
            outcome = ToolOutcome(f"Error: tool {out.call.name!r} not found", "tool not found")
        else:
            await self._hook(agent, "on_tool_start", out, tool)
            if self._sequential_tools:
                async with self._tool_lock:
                    outcome = await self._execute_tool(agent, tool, out)
            else:
                outcome = await self._execute_tool(agent, tool, out)
            if not outcome.raised:
                await self._hook(agent, "on_tool_end", out, tool, outcome.output)
        if self._core is None or self._closed:
            return
        if outcome.raised:
            # failure_error_function=None: the SDK raises the tool's exception
            # out of the session; here every reader gets it and the session ends.
            self._core.report_error(
                {
                    "message": outcome.error or "the tool raised",
                    "type": "tool_exception",
                    "tool": out.call.name,
                    "call_id": out.call.call_id,
                }
            )
            await self._process()
            self._spawn(self.close())
            return
        self._core.tool_completed(
            out.call.call_id, outcome.output, outcome.error, value=outcome.event_output
        )
        await self._process()

    async def _hook(self, agent: RealtimeAgent[Any], name: str, out: RunTool, *args: Any) -> None:
        """An agent hook around a tool call; a failing hook is reported, never fatal."""
        try:
            await call_hook(agent, name, self._context, out.call, *args)
        except Exception as exc:
            self._internal_error(f"the {name} hook of agent {agent.name!r}", exc)

    async def _execute_tool(
        self, agent: RealtimeAgent[Any], tool: FunctionTool, out: RunTool
    ) -> ToolOutcome:
        return await self._tools_exec.run_tool(
            agent,
            tool,
            call_id=out.call.call_id,
            arguments=out.call.arguments,
            context=self._context.context,
            default_timeout=self._limits["tool_timeout_seconds"],
        )

    async def _run_handoff(self, out: RunHandoff) -> None:
        core = self._core
        if core is None:
            return
        source = self._agents.get(out.from_agent, self._current)
        handoff: Handoff | None = None
        for item in source.handoffs:
            candidate = as_handoff(item)
            if candidate.tool_name == out.call.name:
                handoff = candidate
                break
        try:
            if handoff is None:
                raise LookupError(f"handoff {out.call.name!r} not found on agent {source.name!r}")
            target = await handoff.on_invoke_handoff(self._context, out.call.arguments)
            target = await self._resolver.resolve(out.to_agent, target)
            spec, mcp_errors = await self._agent_spec(target)
        except Exception as exc:
            if not self._closed:
                core.handoff_failed(out.call.call_id, f"{type(exc).__name__}: {exc}")
                await self._process()
            return
        if self._closed:
            return
        self._register_agent(target)
        self._current = target
        core.handoff_completed(out.call.call_id, spec)
        self._report_mcp_errors(mcp_errors)
        await self._process()
        if target.hooks is not None:
            try:
                await target.hooks.on_handoff(self._context, target, source)
            except Exception as exc:
                self._internal_error(f"the on_handoff hook of agent {target.name!r}", exc)
            await self._process()

    async def _run_guardrail_round(self, out: RunGuardrails) -> None:
        try:
            agent = self._agents.get(out.agent_name, self._current)
            guardrails = list(agent.output_guardrails) + self._run_guardrails
            result = await self._guards_exec.run_guardrails(
                agent,
                guardrails,
                text=out.text,
                context=self._context.context,
                timeout=self._limits["guardrail_timeout_seconds"],
            )
        finally:
            self._guardrail_rounds -= 1
        if self._core is None or self._closed:
            return
        for error in result.errors:
            self._core.report_error({"message": error, "type": "guardrail_error"})
        self._core.guardrails_completed(out.response_id, result.results, final=out.final)
        await self._process()

    async def _agent_spec(self, agent: RealtimeAgent[Any]) -> tuple[AgentSpec, list[str]]:
        """``agent`` as data, its MCP tools listed (where tools run) as it
        starts; the errors of MCP servers that could not list theirs."""
        listing = MCPToolListing()
        if agent.mcp_servers:
            listing = await self._tools_exec.list_mcp_tools(
                agent,
                context=self._context.context,
                timeout=self._limits["tool_timeout_seconds"],
            )
        spec = await agent_spec(agent, self._context, listing.tools)
        self._mcp_tools[agent.name] = listing.tools
        return spec, listing.errors

    def _report_mcp_errors(self, errors: list[str]) -> None:
        # A server that cannot list its tools leaves them out; the session goes on.
        assert self._core is not None
        for error in errors:
            self._core.report_error({"message": error, "type": "mcp_error"})

    async def _close_tools_exec(self) -> None:
        if self._own_tools_exec and isinstance(self._tools_exec, LocalToolExecutor):
            try:
                await self._tools_exec.aclose()
            except Exception:
                logger.warning("closing the MCP connections of session %s failed", self.session_id)

    def _register_agent(self, agent: RealtimeAgent[Any]) -> None:
        # Every agent reachable by handoffs, so a RunTool naming one finds it.
        stack = [agent]
        while stack:
            current = stack.pop()
            if self._agents.get(current.name) is current:
                continue
            self._agents[current.name] = current
            for item in current.handoffs:
                target = item.agent if isinstance(item, Handoff) else item
                if (
                    isinstance(target, RealtimeAgent)
                    and self._agents.get(target.name) is not target
                ):
                    stack.append(target)
