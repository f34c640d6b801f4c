"""The session core: a realtime session's logic, with no I/O.

Feed it model events (:meth:`SessionCore.handle_model_event`), user commands
(``send_message``, ``send_audio``, ``interrupt``, ``update_agent``,
``approve_tool_call`` ...) and the results of work it asked for
(``tool_completed``, ``handoff_completed``, ``guardrails_completed``); then
:meth:`SessionCore.drain` what it wants done, in order: session events to emit,
inputs to send to the model, tools / handoffs / guardrails to run. The shell
(in-process session or session actor) does the I/O.

Rules it owns:

- Settings precedence (the SDK's): the run config's ``model_settings``, then
  the model config's ``initial_model_settings`` over them, then the active
  agent's prompt, instructions and tools (tools + handoffs) over both; the
  first ``session.update`` applies ``initial_model_settings`` once more over
  the agent's values. ``tracing_disabled`` sends ``tracing: null``.
- History merging (see :mod:`ray_realtime.core.history`): transcript deltas
  and input transcriptions update history and emit ``history_updated``.
- Tool calls: a repeated ``call_id`` is ignored; an unknown tool or arguments
  that are not a JSON object get an error output (the model is told) and an
  ``error`` event, never an exception; at most ``max_pending_tool_calls`` run.
- Approvals: a tool that needs approval emits ``tool_approval_required`` and
  waits; a tool with an approval function is first checked (``CheckApproval``).
  ``always=True`` on an approval or rejection applies to the tool's later
  calls in this session; a rejection answers the model with its message or
  the SDK's "Tool execution was not approved."
- Handoffs: the ``session.update`` for the new agent is sent before the
  handoff's tool output, so the reply comes from the new agent.
- Output guardrails run on the full transcript so far each time it grows by
  ``debounce_text_length`` characters, and once more when the response ends;
  the first trip of a response emits ``guardrail_tripped``, interrupts and
  sends the model a feedback message; later trips of that response are ignored.
  The response's ``agent_end`` waits for its final check (answered by
  ``guardrails_completed(..., final=True)``, also when the check failed), so
  the final verdict comes before ``agent_end``, as in the SDK.
- After an ``audio_interrupted`` for an item, late audio of that item is dropped.
- Model connection loss (:meth:`SessionCore.model_connection_lost`): a
  response cut by it ends visibly (an ``error`` with code
  ``response_interrupted``, its item marked ``incomplete``, ``agent_end``).
  :meth:`SessionCore.prepare_replay` plans the replay of the history into the
  new model session (:mod:`ray_realtime.core.recovery`); the new session's
  echoes of replayed items are not news, and an id the new session reuses
  for a new item moves the old item of that id aside (ids are unique per
  model session only).
- Usage (:mod:`ray_realtime.core.usage`): each model ``usage`` event is summed
  (in total and for the active agent) and emits ``usage`` with the session's
  totals; audio sent and received and tool calls started are summed as they go.
- Inputs are checked before anything is queued (the ``check_*`` functions,
  shared with the session front and the actor handle); PCM16 audio must be
  whole samples. An input the model could not take is reported as an
  ``error`` event and the turn is mended (:meth:`SessionCore.model_send_failed`).
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from typing import Any, assert_never

from ray_realtime.core import history as hist
from ray_realtime.core.history_log import HistoryDelta, LogEvent
from ray_realtime.core.outputs import (
    CheckApproval,
    CoreOutput,
    EmitEvent,
    RunGuardrails,
    RunHandoff,
    RunTool,
    SendToModel,
)
from ray_realtime.core.recovery import ReplayLedger, ReplayPlan, mark_incomplete, plan_replay
from ray_realtime.core.specs import AgentSpec
from ray_realtime.core.usage import UsageMeter
from ray_realtime.exceptions import InputTooLargeError, UserError
from ray_realtime.types import model_events as me
from ray_realtime.types.config import (
    DEFAULT_APPROVAL_REJECTION_MESSAGE,
    DEFAULT_LIMITS,
    RealtimeSessionModelSettings,
    SessionLimits,
    input_audio_format_name,
    output_audio_format_name,
)
from ray_realtime.types.events import (
    AgentRef,
    OutputGuardrailResult,
    RealtimeAgentEndEvent,
    RealtimeAgentStartEvent,
    RealtimeAudio,
    RealtimeAudioEnd,
    RealtimeAudioInterrupted,
    RealtimeError,
    RealtimeGuardrailTripped,
    RealtimeHandoffEvent,
    RealtimeHistoryAdded,
    RealtimeHistoryUpdated,
    RealtimeInputAudioTimeoutTriggered,
    RealtimeRawModelEvent,
    RealtimeSessionRecovered,
    RealtimeToolApprovalRequired,
    RealtimeToolEnd,
    RealtimeToolStart,
    RealtimeUsageUpdated,
    SessionUsage,
    ToolRef,
)
from ray_realtime.types.items import AssistantMessageItem, RealtimeItem, RealtimeToolCallItem
from ray_realtime.types.model_inputs import (
    RealtimeModelSendAudio,
    RealtimeModelSendEvent,
    RealtimeModelSendInterrupt,
    RealtimeModelSendSessionUpdate,
    RealtimeModelSendToolOutput,
    RealtimeModelSendUserInput,
)

__all__ = [
    "SessionCore",
    "check_audio_chunk",
    "check_call_id",
    "check_flag",
    "check_rejection_message",
    "check_user_message",
    "guardrail_feedback_message",
]

# Remembered ids are bounded: a long call must not grow these without limit.
_SEEN_CALLS_KEPT = 4096
_INTERRUPTED_ITEMS_KEPT = 64
_PENDING_TRANSCRIPTS_KEPT = 64
_GUARDED_RESPONSES_KEPT = 256
_SAME: Any = object()  # tool_completed: tool_end shows the output text


def check_user_message(message: Any, limit: int | None = None) -> str | dict[str, Any]:
    """A user message as it will be sent, or a :class:`UserError`: the wrong
    type, a dict that is not a user message, an empty message, or (an
    :class:`InputTooLargeError`) more than ``limit`` characters (``None``: the
    size is not checked here). The same rules as the model's conversion, so a
    message that passes is never refused later on the way to the model.
    Shared by the session front, the core and handles that send messages
    without a round trip."""
    if isinstance(message, str):
        size = len(message)
        result: str | dict[str, Any] = message
    elif isinstance(message, Mapping):
        if message.get("type", "message") != "message" or message.get("role", "user") != "user":
            raise UserError("a message dict needs type 'message' and role 'user'")
        content = message.get("content")
        if not isinstance(content, (list, tuple)):
            raise UserError("a message dict needs a list 'content'")
        size = 0
        parts: list[dict[str, Any]] = []
        for index, part in enumerate(content):
            checked, part_size = _check_content_part(part, index)
            parts.append(checked)
            size += part_size
        result = {"type": "message", "role": "user", "content": parts}
    else:
        raise UserError(f"send_message takes a str or a message dict, not {type(message).__name__}")
    if size == 0:
        raise UserError("the message is empty")
    if limit is not None and size > limit:
        raise InputTooLargeError(
            f"message of {size} characters is over the limit of {limit}", size, limit
        )
    return result


def _check_content_part(part: Any, index: int) -> tuple[dict[str, Any], int]:
    """One content part of a message dict, copied as plain data, and its size."""
    if not isinstance(part, Mapping):
        raise UserError(f"message content[{index}] must be a dict, not {type(part).__name__}")
    kind = part.get("type")
    if kind == "input_text":
        text = part.get("text")
        if not isinstance(text, str):
            raise UserError(f"message content[{index}].text must be a string")
        return {"type": "input_text", "text": text}, len(text)
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise UserError(f"message content[{index}].image_url must be a non-empty string")
        checked: dict[str, Any] = {"type": "input_image", "image_url": url}
        detail = part.get("detail")
        if detail is not None:
            if not isinstance(detail, str):
                raise UserError(f"message content[{index}].detail must be a string")
            checked["detail"] = detail
        return checked, len(url)
    raise UserError(
        f"message content[{index}].type must be 'input_text' or 'input_image', got {kind!r}"
    )


# Bytes per sample of each input format: a PCM16 chunk of odd length would
# split a sample and shift every later one by a byte (noise to the model).
_BYTES_PER_SAMPLE = {"pcm16": 2, "g711_ulaw": 1, "g711_alaw": 1}


def check_audio_chunk(audio: Any, limit: int | None = None, audio_format: Any = None) -> bytes:
    """An audio chunk as bytes, or a :class:`UserError`: not bytes-like, not a
    whole number of samples of ``audio_format`` (an odd length in PCM16), or
    (an :class:`InputTooLargeError`) over ``limit`` bytes. ``None`` skips the
    size or the sample check (where the bound or format is not known)."""
    if not isinstance(audio, (bytes, bytearray, memoryview)):
        raise UserError(f"send_audio takes bytes, not {type(audio).__name__}")
    size = audio.nbytes if isinstance(audio, memoryview) else len(audio)
    if limit is not None and size > limit:
        raise InputTooLargeError(
            f"audio chunk of {size} bytes is over the limit of {limit}", size, limit
        )
    width = _BYTES_PER_SAMPLE.get(audio_format, 1) if isinstance(audio_format, str) else 1
    if size % width:
        raise UserError(
            f"audio chunk of {size} bytes is not a whole number of {audio_format} samples "
            f"({width} bytes each); send whole samples"
        )
    return audio if isinstance(audio, bytes) else bytes(audio)


def check_flag(value: Any, name: str) -> bool:
    """``value`` if it is a bool, else a :class:`UserError` naming ``name``."""
    if not isinstance(value, bool):
        raise UserError(f"{name} must be True or False, not {type(value).__name__}")
    return value


# Call ids come from the model ("call_..."); anything longer is not one.
_MAX_CALL_ID_CHARS = 512


def check_call_id(call_id: Any) -> str:
    """A tool call id (a non-empty string), or a :class:`UserError`."""
    if not isinstance(call_id, str) or not call_id or len(call_id) > _MAX_CALL_ID_CHARS:
        shown = type(call_id).__name__ if not isinstance(call_id, str) else f"{len(call_id)} chars"
        raise UserError(
            f"a tool call id must be a non-empty string of at most {_MAX_CALL_ID_CHARS} "
            f"characters (got {shown})"
        )
    return call_id


def check_rejection_message(message: Any, limit: int | None = None) -> str | None:
    """The text a rejected tool call answers with (``None``: the default), or a
    :class:`UserError` (an :class:`InputTooLargeError` past ``limit`` characters)."""
    if message is None:
        return None
    if not isinstance(message, str):
        raise UserError(f"a rejection message must be a str or None, not {type(message).__name__}")
    if limit is not None and len(message) > limit:
        raise InputTooLargeError(
            f"rejection message of {len(message)} characters is over the limit of {limit}",
            len(message),
            limit,
        )
    return message


def guardrail_feedback_message(names: Iterable[str]) -> str:
    """The message the model receives after an output guardrail trips: the
    SDK's text, so a model prompted for the SDK's sessions reads the same."""
    return f"guardrail triggered: {', '.join(names)}"


class _GuardState:
    __slots__ = ("checked_len", "item_id", "next_threshold")

    def __init__(self, item_id: str, threshold: int) -> None:
        self.item_id = item_id
        self.next_threshold = threshold
        self.checked_len = 0


class SessionCore:
    """The I/O-free state machine of one realtime session.

    With ``history_deltas`` a change of the history comes out as a
    :class:`~ray_realtime.core.history_log.HistoryDelta` (what a session's
    event log keeps; readers turn it back into ``history_updated``) instead of
    ``history_updated`` with the whole list."""

    def __init__(
        self,
        agent: AgentSpec,
        *,
        run_model_settings: Mapping[str, Any] | None = None,
        initial_model_settings: Mapping[str, Any] | None = None,
        limits: SessionLimits | None = None,
        run_guardrail_names: Iterable[str] = (),
        emit_raw_model_events: bool = False,
        history: Iterable[RealtimeItem] = (),
        tracing_disabled: bool = False,
        history_deltas: bool = False,
    ) -> None:
        self._agent = agent
        self._run_settings = dict(run_model_settings or {})
        self._initial_settings = dict(initial_model_settings or {})
        self._limits: SessionLimits = limits or DEFAULT_LIMITS
        self._run_guardrails = tuple(run_guardrail_names)
        self._emit_raw = emit_raw_model_events
        self._tracing_disabled = tracing_disabled
        self._always_approved: set[str] = set()
        self._always_rejected: dict[str, str] = {}
        self._out: deque[CoreOutput] = deque()
        self._history: list[RealtimeItem] = []
        # With history_deltas, history changes are emitted as HistoryDelta
        # events (what a session's log keeps); the ops since the last one,
        # silent changes (an item moved aside) included, go with the next.
        self._deltas = history_deltas
        self._ops: list[tuple[str, int, Any]] = []
        self._seen_calls: OrderedDict[str, None] = OrderedDict()
        self._pending_tools: dict[str, tuple[me.RealtimeModelToolCallEvent, str]] = {}
        self._awaiting_approval: dict[str, tuple[me.RealtimeModelToolCallEvent, str]] = {}
        self._checking_approval: dict[str, tuple[me.RealtimeModelToolCallEvent, str]] = {}
        self._pending_handoffs: dict[str, me.RealtimeModelToolCallEvent] = {}
        self._interrupted_items: deque[str] = deque(maxlen=_INTERRUPTED_ITEMS_KEPT)
        self._pending_transcripts: OrderedDict[str, str] = OrderedDict()
        self._guards: OrderedDict[str, _GuardState] = OrderedDict()
        self._tripped_responses: OrderedDict[str, None] = OrderedDict()
        # agent_end of responses whose final guardrail check is running.
        self._held_ends: OrderedDict[str, str] = OrderedDict()
        self._repaired_calls: OrderedDict[str, None] = OrderedDict()
        self._closed = False
        # Recovery: the response in progress (a connection loss cuts it) and
        # the ids the current model session knows.
        self._active_response: str | None = None
        self._ledger = ReplayLedger()
        for item in history:  # a restored session's history
            self._history.append(item)
            if isinstance(item, RealtimeToolCallItem) and item.call_id:
                self._seen_calls[item.call_id] = None
        while len(self._seen_calls) > _SEEN_CALLS_KEPT:
            self._seen_calls.popitem(last=False)
        settings = {**self._run_settings, **self._initial_settings}
        self._usage = UsageMeter(
            input_audio_format_name(settings), output_audio_format_name(settings)
        )

    # ----------------------------------------------------------------- state

    @property
    def agent(self) -> AgentSpec:
        """The active agent."""
        return self._agent

    @property
    def history(self) -> list[RealtimeItem]:
        """A copy of the history."""
        return list(self._history)

    @property
    def limits(self) -> SessionLimits:
        """The bounds this session keeps."""
        return self._limits

    @property
    def usage(self) -> SessionUsage:
        """The session's usage so far (tokens, audio seconds, tool calls)."""
        return self._usage.snapshot()

    @property
    def pending_tool_calls(self) -> int:
        """Tool calls (running or awaiting approval) and handoffs not yet answered."""
        return (
            len(self._pending_tools)
            + len(self._pending_handoffs)
            + len(self._awaiting_approval)
            + len(self._checking_approval)
        )

    def awaiting_approval(self, call_id: str) -> str | None:
        """The name of the tool whose call ``call_id`` waits for approval, if any."""
        entry = self._awaiting_approval.get(call_id)
        return entry[0].name if entry is not None else None

    def drain(self) -> list[CoreOutput]:
        """Everything the core wants done, oldest first; empties the queue."""
        out = list(self._out)
        self._out.clear()
        return out

    def has_output(self) -> bool:
        """Whether :meth:`drain` would return anything."""
        return bool(self._out)

    def model_settings(
        self, agent: AgentSpec | None = None, *, starting: bool = False
    ) -> RealtimeSessionModelSettings:
        """The session settings for ``agent`` (default: the active one);
        ``starting``: those of the first ``session.update``, where
        ``initial_model_settings`` win over the agent's values too."""
        agent = agent or self._agent
        settings: dict[str, Any] = dict(self._run_settings)
        settings.update(self._initial_settings)
        if agent.prompt is not None:
            settings["prompt"] = agent.prompt
        settings["instructions"] = agent.instructions or ""
        settings["tools"] = agent.tool_definitions()
        if starting:
            settings.update(self._initial_settings)
        if self._tracing_disabled:
            settings["tracing"] = None
        return settings  # type: ignore[return-value]

    @property
    def input_audio_format(self) -> str:
        """The name of the user's audio format (initial settings over run ones)."""
        return input_audio_format_name({**self._run_settings, **self._initial_settings})

    def statistics(self) -> dict[str, int]:
        """A snapshot of the core's sizes, for monitoring."""
        return {
            "history_items": len(self._history),
            "pending_tool_calls": len(self._pending_tools),
            "pending_handoffs": len(self._pending_handoffs),
            "awaiting_approval": len(self._awaiting_approval),
            "queued_outputs": len(self._out),
        }

    # ------------------------------------------------------------- commands

    def send_message(self, message: str | Mapping[str, Any]) -> None:
        """Queue a user message; raises a :class:`UserError` on bad input."""
        checked = check_user_message(message, self._limits["max_message_chars"])
        self._send(RealtimeModelSendUserInput(checked))

    def send_audio(self, audio: bytes, *, commit: bool = False) -> None:
        """Queue input audio; raises a :class:`UserError` on bad input."""
        chunk = check_audio_chunk(
            audio, self._limits["max_audio_chunk_bytes"], self.input_audio_format
        )
        self._send(RealtimeModelSendAudio(chunk, commit=check_flag(commit, "commit")))
        self._usage.add_audio_in(self._agent.name, len(chunk))

    def interrupt(self) -> None:
        """Queue an interrupt of the current response."""
        self._send(RealtimeModelSendInterrupt())

    def restore_history(self, items: Iterable[RealtimeItem]) -> None:
        """Start from ``items`` (a session restored from the store): no event
        is emitted for them, readers already had them."""
        self._history = list(items)
        self._record("reset", 0, list(self._history))

    def update_agent(self, agent: AgentSpec) -> None:
        """Switch the active agent (no handoff event) and update the session."""
        self._agent = agent
        self._send(RealtimeModelSendSessionUpdate(self.model_settings()))

    def approve_tool_call(self, call_id: str, *, always: bool = False) -> bool:
        """Run a tool call that was waiting for approval; False if none was.
        ``always``: later calls of the same tool run without asking."""
        always = check_flag(always, "always")
        entry = self._awaiting_approval.pop(check_call_id(call_id), None)
        if entry is None:
            return False
        call, agent_name = entry
        if always:
            self._always_approved.add(call.name)
            self._always_rejected.pop(call.name, None)
        self._start_tool(call, agent_name)
        return True

    def reject_tool_call(
        self, call_id: str, message: str | None = None, *, always: bool = False
    ) -> bool:
        """Refuse a tool call that was waiting for approval; False if none was.
        The model receives ``message`` (default: the SDK's "Tool execution was
        not approved."). ``always``: later calls of the same tool are refused
        with the same text, without asking."""
        message = check_rejection_message(message, self._limits["max_message_chars"])
        always = check_flag(always, "always")
        entry = self._awaiting_approval.pop(check_call_id(call_id), None)
        if entry is None:
            return False
        call, agent_name = entry
        output = DEFAULT_APPROVAL_REJECTION_MESSAGE if message is None else message
        if always:
            self._always_rejected[call.name] = output
            self._always_approved.discard(call.name)
        self._reject(call, agent_name, output)
        return True

    def approval_checked(self, call_id: str, needed: bool) -> bool:
        """The answer to a :class:`CheckApproval`: ask the user (``needed``) or
        run the call. False if the call was not being checked."""
        entry = self._checking_approval.pop(call_id, None)
        if entry is None:
            return False
        call, agent_name = entry
        self._decide_approval(call, agent_name, needed=needed)
        return True

    # ------------------------------------------------------------- recovery

    def pending_call_ids(self) -> frozenset[str]:
        """Call ids of tool calls and handoffs not yet answered."""
        return (
            frozenset(self._pending_tools)
            | frozenset(self._pending_handoffs)
            | frozenset(self._awaiting_approval)
        )

    def model_connection_lost(self, detail: str) -> bool:
        """The model connection is gone (``detail`` says how). A response in
        progress ends visibly: an ``error`` (code ``response_interrupted``),
        its unfinished items marked ``incomplete``, ``agent_end``. True when a
        response was cut."""
        response_id, self._active_response = self._active_response, None
        if response_id is None:
            return False
        self._guards.pop(response_id, None)
        changed = mark_incomplete(self._history)
        if changed:
            self._record_sets(changed)
            self._emit_history()
        self._emit(
            RealtimeError(
                {
                    "message": f"the response was cut off by a model connection loss ({detail})",
                    "type": "model_reconnect",
                    "code": "response_interrupted",
                }
            )
        )
        self._emit(RealtimeAgentEndEvent(AgentRef(self._agent.name)))
        return True

    def prepare_replay(self, *, max_items: int, max_chars: int) -> ReplayPlan:
        """Plan the replay of the history into a new model session and expect
        its echoes (see :func:`~ray_realtime.core.recovery.plan_replay`)."""
        plan = plan_replay(
            self._history,
            max_items=max_items,
            max_chars=max_chars,
            pending_calls=self.pending_call_ids(),
        )
        self._ledger.replayed(self._history, plan)
        self._active_response = None
        return plan

    def recovered(self, reason: Any, items_restored: int, events_lost: int = 0) -> None:
        """Tell the readers the session came back (one ``session_recovered``)."""
        self._emit(RealtimeSessionRecovered(reason, items_restored, events_lost))

    def report_error(self, error: Mapping[str, Any]) -> None:
        """Emit an ``error`` event for a failure the shell saw (a guardrail
        that raised, a worker that died) without changing any state."""
        self._emit(RealtimeError(dict(error)))

    def model_send_failed(
        self, event: RealtimeModelSendEvent, error: str, *, repair: bool = True
    ) -> None:
        """An input could not be sent to the model (``error`` says why): emit
        an ``error`` event and mend the turn, so it never stalls silently.

        ``repair`` means nothing of ``event`` reached the model (it was refused
        before sending, e.g. over the protocol's size limit). A tool output is
        then replaced, once, by a short error output, so the model answers and
        the turn ends; when it cannot be replaced (the replacement failed too,
        or the connection is gone) ``agent_end`` ends the turn for readers.
        Other inputs are reported only: the model keeps its previous state.
        """
        report: dict[str, Any] = {
            "message": f"could not send {event.type} to the model: {error}",
            "type": "model_send_failed",
            "input": event.type,
        }
        if isinstance(event, RealtimeModelSendToolOutput):
            call = event.tool_call
            report.update(tool=call.name, call_id=call.call_id)
            self._emit(RealtimeError(report))
            if repair and call.call_id not in self._repaired_calls:
                self._repaired_calls[call.call_id] = None
                while len(self._repaired_calls) > _SEEN_CALLS_KEPT:
                    self._repaired_calls.popitem(last=False)
                self._answer_call(
                    call, f"Error: the output of tool {call.name} could not be delivered: {error}"
                )
            elif event.start_response:
                self._emit(RealtimeAgentEndEvent(AgentRef(self._agent.name)))
            return
        self._emit(RealtimeError(report))

    # ------------------------------------------------------- work answered

    def tool_completed(
        self, call_id: str, output: str, error: str | None = None, *, value: Any = _SAME
    ) -> bool:
        """A tool call finished; ``error`` set means it failed and ``output``
        is the error text the model should see; ``value`` is what
        ``tool_end.output`` shows (default: ``output``). False if the call
        was not pending (already answered)."""
        entry = self._pending_tools.pop(call_id, None)
        if entry is None:
            return False
        call, agent_name = entry
        if error is not None:
            self._emit(
                RealtimeError(
                    {"message": error, "type": "tool_error", "tool": call.name, "call_id": call_id}
                )
            )
        self._emit(
            RealtimeToolEnd(
                AgentRef(agent_name),
                ToolRef(call.name),
                output if value is _SAME else value,
                call.arguments,
                call_id,
            )
        )
        self._answer_call(call, output)
        return True

    def handoff_completed(self, call_id: str, agent: AgentSpec) -> None:
        """A handoff resolved to ``agent``: switch, update, then answer the call."""
        call = self._pending_handoffs.pop(call_id, None)
        if call is None:
            return
        previous = self._agent
        self._agent = agent
        self._emit(RealtimeHandoffEvent(AgentRef(previous.name), AgentRef(agent.name)))
        # The protocol applies session.update before the next response, so the
        # reply to the tool output below already comes from the new agent.
        self._send(RealtimeModelSendSessionUpdate(self.model_settings()))
        self._answer_call(call, json.dumps({"assistant": agent.name}))

    def handoff_failed(self, call_id: str, message: str) -> bool:
        """A handoff could not be resolved; the model is told, the agent stays.
        False if the handoff was not pending (already answered)."""
        call = self._pending_handoffs.pop(call_id, None)
        if call is None:
            return False
        self._emit(RealtimeError({"message": message, "type": "handoff_error", "tool": call.name}))
        self._answer_call(call, f"Handoff failed: {message}")
        return True

    def guardrails_completed(
        self, response_id: str, results: list[OutputGuardrailResult], *, final: bool = False
    ) -> None:
        """Results of a :class:`RunGuardrails`; the first trip of a response acts.
        ``final``: the answer to the check at the end of the response (pass it
        also when that check failed, with no results), which releases the
        response's ``agent_end``."""
        self._guardrail_verdict(response_id, results)
        if final:
            agent_name = self._held_ends.pop(response_id, None)
            if agent_name is not None:
                self._emit(RealtimeAgentEndEvent(AgentRef(agent_name)))

    def _guardrail_verdict(self, response_id: str, results: list[OutputGuardrailResult]) -> None:
        tripped = [r for r in results if r.tripwire_triggered]
        if not tripped or response_id in self._tripped_responses:
            return
        self._tripped_responses[response_id] = None
        while len(self._tripped_responses) > _GUARDED_RESPONSES_KEPT:
            self._tripped_responses.popitem(last=False)
        message = tripped[0].agent_output
        self._emit(RealtimeGuardrailTripped(tripped, message))
        self._send(RealtimeModelSendInterrupt(force_response_cancel=True))
        self._send(
            RealtimeModelSendUserInput(
                guardrail_feedback_message(r.guardrail.name for r in tripped)
            )
        )

    # ---------------------------------------------------------- model side

    def handle_model_event(self, event: me.RealtimeModelEvent) -> None:
        """Update the state for one model event and queue what follows."""
        if self._emit_raw:
            self._emit(RealtimeRawModelEvent(event))
        if isinstance(event, me.RealtimeModelAudioEvent):
            self._usage.add_audio_out(self._agent.name, len(event.data))
            if event.item_id not in self._interrupted_items:
                self._emit(RealtimeAudio(event, event.item_id, event.content_index))
        elif isinstance(event, me.RealtimeModelTranscriptDeltaEvent):
            self._on_transcript_delta(event)
        elif isinstance(event, me.RealtimeModelItemUpdatedEvent):
            if not self._ledger.is_echo(event.item.item_id):
                self._on_item_updated(event.item)
        elif isinstance(event, me.RealtimeModelToolCallEvent):
            self._on_tool_call(event)
        elif isinstance(event, me.RealtimeModelTurnStartedEvent):
            self._active_response = event.response_id
            self._emit(RealtimeAgentStartEvent(AgentRef(self._agent.name)))
        elif isinstance(event, me.RealtimeModelTurnEndedEvent):
            self._active_response = None
            self._on_turn_ended(event)
        elif isinstance(event, me.RealtimeModelAudioDoneEvent):
            if event.item_id not in self._interrupted_items:
                self._emit(RealtimeAudioEnd(event.item_id, event.content_index))
        elif isinstance(event, me.RealtimeModelAudioInterruptedEvent):
            if event.item_id not in self._interrupted_items:
                self._interrupted_items.append(event.item_id)
            self._emit(RealtimeAudioInterrupted(event.item_id, event.content_index))
        elif isinstance(event, me.RealtimeModelInputAudioTranscriptionCompletedEvent):
            self._on_input_transcript(event.item_id, event.transcript)
        elif isinstance(event, me.RealtimeModelItemDeletedEvent):
            index = hist.find_index(self._history, event.item_id)
            if index >= 0:
                del self._history[index]
                self._record("remove", index, None)
                self._emit_history()
        elif isinstance(event, me.RealtimeModelErrorEvent):
            self._emit(RealtimeError(dict(event.error)))
        elif isinstance(event, me.RealtimeModelExceptionEvent):
            error: dict[str, Any] = {"message": event.message, "type": "exception"}
            if event.exception_type:
                error["exception_type"] = event.exception_type
            if event.context:
                error["context"] = event.context
            self._emit(RealtimeError(error))
        elif isinstance(event, me.RealtimeModelInputAudioTimeoutTriggeredEvent):
            self._emit(
                RealtimeInputAudioTimeoutTriggered(
                    event.item_id, event.audio_start_ms, event.audio_end_ms
                )
            )
        elif isinstance(
            event,
            me.RealtimeModelConnectionStatusEvent
            | me.RealtimeModelOtherEvent
            | me.RealtimeModelRawServerEvent
            | me.RealtimeModelEndOfStreamEvent
            | me.RealtimeModelOutputTextDeltaEvent,
        ):
            pass
        elif isinstance(event, me.RealtimeModelUsageEvent):
            self._usage.add_response(self._agent.name, event)
            self._emit(RealtimeUsageUpdated(self._usage.snapshot()))
        else:  # pragma: no cover - exhaustive over the closed union
            assert_never(event)

    # ------------------------------------------------------------ internals

    def _emit(self, event: LogEvent) -> None:
        self._out.append(EmitEvent(event))

    def _send(self, event: Any) -> None:
        self._out.append(SendToModel(event))

    def _record(self, kind: str, index: int, value: Any) -> None:
        if self._deltas:
            self._ops.append((kind, index, value))

    def _record_sets(self, indices: Iterable[int]) -> None:
        for index in indices:
            self._record("set", index, self._history[index])

    def _set_item(self, index: int, item: RealtimeItem) -> None:
        self._history[index] = item
        self._record("set", index, item)

    def _claim(self, item_id: str) -> None:
        # Moving an old item aside emits nothing: the next history event
        # carries it (the whole list, or with its ops).
        self._record_sets(self._ledger.claim(self._history, item_id))

    def _emit_history(self) -> None:
        if not self._deltas:
            self._emit(RealtimeHistoryUpdated(list(self._history)))
            return
        ops, self._ops = self._ops, []
        self._emit(HistoryDelta(ops))

    def _add_item(self, item: RealtimeItem) -> None:
        index = hist.insertion_index(self._history, item)
        self._history.insert(index, item)
        if not self._deltas:
            self._emit(RealtimeHistoryAdded(item))
            return
        if not self._ops:
            # history_added is a delta already (its place follows from the
            # history before it), and what the store journal waits on.
            self._emit(RealtimeHistoryAdded(item))
            return
        ops, self._ops = self._ops, []
        ops.append(("insert", index, item))
        self._emit(HistoryDelta(ops, added=True))

    def _on_item_updated(self, item: RealtimeItem) -> None:
        self._claim(item.item_id)
        index = hist.find_index(self._history, item.item_id)
        pending = self._pending_transcripts.pop(item.item_id, None)
        if pending is not None:
            item = hist.set_input_transcript(item, pending)
        if index >= 0:
            self._set_item(index, hist.merge_item(self._history[index], item))
            self._emit_history()
        else:
            self._add_item(item)

    def _on_input_transcript(self, item_id: str, transcript: str) -> None:
        self._claim(item_id)
        index = hist.find_index(self._history, item_id)
        if index < 0:
            # The transcript can race ahead of its item; keep it for the item.
            self._pending_transcripts[item_id] = transcript
            while len(self._pending_transcripts) > _PENDING_TRANSCRIPTS_KEPT:
                self._pending_transcripts.popitem(last=False)
            return
        self._set_item(index, hist.set_input_transcript(self._history[index], transcript))
        self._emit_history()

    def _on_transcript_delta(self, event: me.RealtimeModelTranscriptDeltaEvent) -> None:
        if event.item_id in self._interrupted_items:
            return
        self._claim(event.item_id)
        index = hist.find_index(self._history, event.item_id)
        if index < 0:
            placeholder = AssistantMessageItem(item_id=event.item_id, status="in_progress")
            self._add_item(placeholder)
            index = hist.find_index(self._history, event.item_id)
        updated = hist.append_transcript_delta(self._history[index], event.delta)
        self._set_item(index, updated)
        self._emit_history()
        self._maybe_guard(
            event.response_id, event.item_id, hist.transcript_of(updated), final=False
        )

    def _guardrails_active(self) -> bool:
        return bool(self._run_guardrails or self._agent.guardrail_names)

    def _maybe_guard(self, response_id: str, item_id: str, text: str, *, final: bool) -> bool:
        """Queue a guardrail check when one is due; whether one was queued.
        The final check always runs on a non-empty text: a periodic check of
        the same text may still be running, and its verdict must not come
        after ``agent_end``."""
        if not self._guardrails_active() or response_id in self._tripped_responses:
            return False
        state = self._guards.get(response_id)
        if state is None:
            state = _GuardState(item_id, self._limits["debounce_text_length"])
            self._guards[response_id] = state
            while len(self._guards) > _GUARDED_RESPONSES_KEPT:
                self._guards.popitem(last=False)
        state.item_id = item_id
        due = final or len(text) >= state.next_threshold
        if not due or not text:
            return False
        step = self._limits["debounce_text_length"]
        state.next_threshold = (len(text) // step + 1) * step
        state.checked_len = len(text)
        self._out.append(RunGuardrails(response_id, item_id, text, self._agent.name, final))
        return True

    def _on_turn_ended(self, event: me.RealtimeModelTurnEndedEvent) -> None:
        state = self._guards.pop(event.response_id, None)
        held = False
        if state is not None:
            index = hist.find_index(self._history, state.item_id)
            if index >= 0:
                text = hist.transcript_of(self._history[index])
                self._guards[event.response_id] = state
                held = self._maybe_guard(event.response_id, state.item_id, text, final=True)
                self._guards.pop(event.response_id, None)
        if not held:
            self._emit(RealtimeAgentEndEvent(AgentRef(self._agent.name)))
            return
        self._held_ends[event.response_id] = self._agent.name
        while len(self._held_ends) > _GUARDED_RESPONSES_KEPT:
            # Never reached while checks are bounded by their timeout; a bound all the same.
            _, name = self._held_ends.popitem(last=False)
            self._emit(RealtimeAgentEndEvent(AgentRef(name)))

    def _on_tool_call(self, call: me.RealtimeModelToolCallEvent) -> None:
        if call.call_id in self._seen_calls:
            return
        self._seen_calls[call.call_id] = None
        while len(self._seen_calls) > _SEEN_CALLS_KEPT:
            self._seen_calls.popitem(last=False)
        agent = self._agent
        handoff = agent.handoff(call.name)
        tool = agent.tool(call.name) if handoff is None else None
        if handoff is None and tool is None:
            message = f"Tool {call.name!r} is not available to agent {agent.name!r}."
            self._emit(
                RealtimeError({"message": message, "type": "unknown_tool", "tool": call.name})
            )
            self._answer_call(call, f"Error: {message}")
            return
        problem = _arguments_problem(call.arguments)
        if problem is not None:
            message = f"Invalid arguments for {call.name!r}: {problem}"
            self._emit(
                RealtimeError(
                    {"message": message, "type": "invalid_tool_arguments", "tool": call.name}
                )
            )
            self._answer_call(call, f"Error: {message}")
            return
        if self.pending_tool_calls >= self._limits["max_pending_tool_calls"]:
            message = (
                f"Too many tool calls in flight (limit {self._limits['max_pending_tool_calls']}); "
                f"{call.name!r} was not run."
            )
            self._emit(RealtimeError({"message": message, "type": "tool_limit", "tool": call.name}))
            self._answer_call(call, f"Error: {message}")
            return
        if handoff is not None:
            self._pending_handoffs[call.call_id] = call
            self._out.append(RunHandoff(call, agent.name, handoff.agent_name))
            return
        assert tool is not None
        if tool.approval_check and not self._decided(call.name):
            self._checking_approval[call.call_id] = (call, agent.name)
            self._out.append(CheckApproval(call, agent.name))
            return
        self._decide_approval(call, agent.name, needed=tool.needs_approval)

    def _decided(self, tool_name: str) -> bool:
        return tool_name in self._always_approved or tool_name in self._always_rejected

    def _decide_approval(
        self, call: me.RealtimeModelToolCallEvent, agent_name: str, *, needed: bool
    ) -> None:
        # An "always" answer given earlier stands over the tool's own policy.
        rejection = self._always_rejected.get(call.name)
        if rejection is not None:
            self._reject(call, agent_name, rejection)
        elif needed and call.name not in self._always_approved:
            self._awaiting_approval[call.call_id] = (call, agent_name)
            self._emit(
                RealtimeToolApprovalRequired(
                    AgentRef(agent_name), ToolRef(call.name), call.arguments, call.call_id
                )
            )
        else:
            self._start_tool(call, agent_name)

    def _reject(self, call: me.RealtimeModelToolCallEvent, agent_name: str, output: str) -> None:
        self._emit(
            RealtimeToolEnd(
                AgentRef(agent_name), ToolRef(call.name), output, call.arguments, call.call_id
            )
        )
        self._answer_call(call, output)

    def _start_tool(self, call: me.RealtimeModelToolCallEvent, agent_name: str) -> None:
        self._pending_tools[call.call_id] = (call, agent_name)
        self._usage.add_tool_call(agent_name)
        self._emit(
            RealtimeToolStart(
                AgentRef(agent_name), ToolRef(call.name), call.arguments, call.call_id
            )
        )
        self._out.append(RunTool(call, agent_name))

    def _answer_call(self, call: me.RealtimeModelToolCallEvent, output: str) -> None:
        index = hist.tool_call_index(self._history, call.call_id)
        if hist.set_tool_output(self._history, call.call_id, output):
            self._record_sets([index])
            self._emit_history()
        self._send(RealtimeModelSendToolOutput(call, output, start_response=True))


def _arguments_problem(arguments: str) -> str | None:
    if not arguments or not arguments.strip():
        return None
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError as exc:
        return f"not valid JSON ({exc.msg})"
    if not isinstance(value, dict):
        return "not a JSON object"
    return None
