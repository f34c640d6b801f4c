"""Session events: what ``async for event in session`` yields.

One frozen dataclass per ``type``, closed in :data:`RealtimeSessionEvent`.
Events name agents, tools and guardrails by reference objects that carry only
the name (``event.agent.name``, ``event.tool.name`` read as they do in the
SDK), never live objects, so every event can cross a process boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ray_realtime.types.guardrails import GuardrailFunctionOutput
from ray_realtime.types.items import RealtimeItem
from ray_realtime.types.model_events import RealtimeModelAudioEvent, RealtimeModelEvent

__all__ = [
    "AgentRef",
    "GuardrailRef",
    "OutputGuardrailResult",
    "RealtimeAgentEndEvent",
    "RealtimeAgentStartEvent",
    "RealtimeAudio",
    "RealtimeAudioEnd",
    "RealtimeAudioInterrupted",
    "RealtimeError",
    "RealtimeEventsLost",
    "RealtimeGuardrailTripped",
    "RealtimeHandoffEvent",
    "RealtimeHistoryAdded",
    "RealtimeHistoryUpdated",
    "RealtimeInputAudioTimeoutTriggered",
    "RealtimeRawModelEvent",
    "RealtimeSessionEvent",
    "RealtimeSessionRecovered",
    "RealtimeToolApprovalRequired",
    "RealtimeToolEnd",
    "RealtimeToolStart",
    "RealtimeUsageUpdated",
    "SessionUsage",
    "ToolRef",
    "UsageTotals",
]


@dataclass(frozen=True, slots=True)
class AgentRef:
    """An agent, by name."""

    name: str


@dataclass(frozen=True, slots=True)
class ToolRef:
    """A tool, by name."""

    name: str


@dataclass(frozen=True, slots=True)
class GuardrailRef:
    """An output guardrail, by name."""

    name: str

    def get_name(self) -> str:
        """The guardrail's name, as the SDK's ``OutputGuardrail.get_name()``."""
        return self.name


@dataclass(frozen=True, slots=True)
class OutputGuardrailResult:
    """The outcome of one output guardrail check, with the SDK's fields:
    ``guardrail`` (by name), ``agent`` (by name), ``agent_output`` (the text
    checked) and ``output`` (the guardrail function's
    :class:`GuardrailFunctionOutput`).

    ``output_info`` is the guardrail's own data; it is kept when it is plain
    data (str, numbers, lists, dicts) and replaced by its ``repr`` otherwise.
    ``tripwire_triggered`` and ``output_info`` are also readable here directly.
    """

    guardrail: GuardrailRef
    agent: AgentRef
    agent_output: str
    tripwire_triggered: bool
    output_info: Any = None

    @property
    def output(self) -> GuardrailFunctionOutput:
        """The guardrail function's output, as the SDK's result carries it."""
        return GuardrailFunctionOutput(self.output_info, self.tripwire_triggered)


@dataclass(frozen=True, slots=True)
class RealtimeAgentStartEvent:
    """An agent started a response (a turn)."""

    agent: AgentRef
    type: Literal["agent_start"] = "agent_start"


@dataclass(frozen=True, slots=True)
class RealtimeAgentEndEvent:
    """An agent finished a response."""

    agent: AgentRef
    type: Literal["agent_end"] = "agent_end"


@dataclass(frozen=True, slots=True)
class RealtimeHandoffEvent:
    """The session handed off from one agent to another."""

    from_agent: AgentRef
    to_agent: AgentRef
    type: Literal["handoff"] = "handoff"


@dataclass(frozen=True, slots=True)
class RealtimeToolStart:
    """A tool call started."""

    agent: AgentRef
    tool: ToolRef
    arguments: str
    call_id: str = ""
    type: Literal["tool_start"] = "tool_start"


@dataclass(frozen=True, slots=True)
class RealtimeToolEnd:
    """A tool call ended. ``output`` is the tool's return value when the wire
    codec can carry it (plain data), else the text the model was given (also
    for a call that failed)."""

    agent: AgentRef
    tool: ToolRef
    output: Any
    arguments: str = ""
    call_id: str = ""
    type: Literal["tool_end"] = "tool_end"


@dataclass(frozen=True, slots=True)
class RealtimeToolApprovalRequired:
    """A tool that needs approval was called; answer with
    ``session.approve_tool_call(call_id)`` or ``reject_tool_call(call_id)``."""

    agent: AgentRef
    tool: ToolRef
    arguments: str
    call_id: str
    type: Literal["tool_approval_required"] = "tool_approval_required"


@dataclass(frozen=True, slots=True)
class RealtimeRawModelEvent:
    """A model event as the model layer reported it (off unless the run
    config sets ``emit_raw_model_events``)."""

    data: RealtimeModelEvent
    type: Literal["raw_model_event"] = "raw_model_event"


@dataclass(frozen=True, slots=True)
class RealtimeAudio:
    """A chunk of output audio; ``audio.data`` holds the bytes."""

    audio: RealtimeModelAudioEvent
    item_id: str
    content_index: int
    type: Literal["audio"] = "audio"


@dataclass(frozen=True, slots=True)
class RealtimeAudioEnd:
    """The output audio of an item is complete."""

    item_id: str
    content_index: int
    type: Literal["audio_end"] = "audio_end"


@dataclass(frozen=True, slots=True)
class RealtimeAudioInterrupted:
    """Output audio was cut off; stop playing what is buffered."""

    item_id: str
    content_index: int
    type: Literal["audio_interrupted"] = "audio_interrupted"


@dataclass(frozen=True, slots=True)
class RealtimeError:
    """An error: from the model, a tool, a guardrail or bad input.

    ``error`` has ``message`` and, when known, ``type``, ``code``, ``param``.
    """

    error: dict[str, Any]
    type: Literal["error"] = "error"


@dataclass(frozen=True, slots=True)
class RealtimeHistoryUpdated:
    """The history changed; ``history`` is the whole history now."""

    history: list[RealtimeItem] = field(default_factory=list)
    type: Literal["history_updated"] = "history_updated"


@dataclass(frozen=True, slots=True)
class RealtimeHistoryAdded:
    """An item was added to the history."""

    item: RealtimeItem
    type: Literal["history_added"] = "history_added"


@dataclass(frozen=True, slots=True)
class RealtimeGuardrailTripped:
    """An output guardrail tripped; the response was interrupted."""

    guardrail_results: list[OutputGuardrailResult]
    message: str
    type: Literal["guardrail_tripped"] = "guardrail_tripped"


@dataclass(frozen=True, slots=True)
class RealtimeInputAudioTimeoutTriggered:
    """The user's input audio stayed idle past the configured timeout."""

    item_id: str = ""
    audio_start_ms: int = 0
    audio_end_ms: int = 0
    type: Literal["input_audio_timeout_triggered"] = "input_audio_timeout_triggered"


@dataclass(frozen=True, slots=True)
class RealtimeEventsLost:
    """This reader fell behind the session's bounded event log and missed
    ``missed`` events (ray-realtime addition; the session goes on)."""

    missed: int
    type: Literal["events_lost"] = "events_lost"


@dataclass(frozen=True, slots=True)
class RealtimeSessionRecovered:
    """The session came back after a fault (ray-realtime addition): its
    history was replayed into a new model session and it goes on.

    ``reason`` is ``"model_reconnect"`` (the model connection dropped, was
    closed, or hit the service's session-length cap), ``"actor_died"`` (its
    actor's process died; restored on another actor from the session store),
    ``"node_lost"`` (its node left the cluster) or ``"drained"`` (an operator
    drained its node and the drain moved it to another node, the same way).
    ``items_restored``: history items replayed into the model.
    ``events_lost``: the events this reader will never receive (for a
    restored session, the gap between the last sequence number it read and
    this event's).
    """

    reason: Literal["actor_died", "node_lost", "model_reconnect", "drained"]
    items_restored: int = 0
    events_lost: int = 0
    type: Literal["session_recovered"] = "session_recovered"


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Usage summed over responses: the model's token counts from each
    ``response.done`` (``requests`` is the number of responses that reported
    usage), the seconds of audio sent to the model and received from it
    (from the byte counts and the session's audio formats), and the tool
    calls started (approved or needing no approval; handoffs not counted)."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    input_image_tokens: int = 0
    cached_tokens: int = 0
    cached_text_tokens: int = 0
    cached_audio_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0
    audio_in_seconds: float = 0.0
    audio_out_seconds: float = 0.0
    tool_calls: int = 0


@dataclass(frozen=True, slots=True)
class SessionUsage(UsageTotals):
    """A session's usage so far (the :class:`UsageTotals` fields, summed over
    the whole session), and ``by_agent``: the same per agent name, each
    response, audio chunk and tool call counted for the agent active then."""

    by_agent: dict[str, UsageTotals] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RealtimeUsageUpdated:
    """The session's usage after a model response reported its token usage
    (ray-realtime addition: the SDK only sums usage into its context).
    ``usage`` is cumulative; the newest is also ``session.usage``."""

    usage: SessionUsage
    type: Literal["usage"] = "usage"


RealtimeSessionEvent = (
    RealtimeAgentStartEvent
    | RealtimeAgentEndEvent
    | RealtimeHandoffEvent
    | RealtimeToolStart
    | RealtimeToolEnd
    | RealtimeToolApprovalRequired
    | RealtimeRawModelEvent
    | RealtimeAudio
    | RealtimeAudioEnd
    | RealtimeAudioInterrupted
    | RealtimeError
    | RealtimeHistoryUpdated
    | RealtimeHistoryAdded
    | RealtimeGuardrailTripped
    | RealtimeInputAudioTimeoutTriggered
    | RealtimeEventsLost
    | RealtimeSessionRecovered
    | RealtimeUsageUpdated
)
"""Every event a session yields."""
