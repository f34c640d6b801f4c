"""Model inputs: what the session asks a realtime model layer to send.

One frozen dataclass per ``type``; :data:`RealtimeModelSendEvent` is the closed
union. Audio is raw bytes here; base64 happens only at the model's socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from typing_extensions import TypedDict

from ray_realtime.types.config import RealtimeSessionModelSettings
from ray_realtime.types.model_events import RealtimeModelToolCallEvent

__all__ = [
    "RealtimeModelInputTextContent",
    "RealtimeModelRawClientMessage",
    "RealtimeModelSendAudio",
    "RealtimeModelSendEvent",
    "RealtimeModelSendInterrupt",
    "RealtimeModelSendRawMessage",
    "RealtimeModelSendSessionUpdate",
    "RealtimeModelSendToolOutput",
    "RealtimeModelSendUserInput",
    "RealtimeModelUserInput",
    "RealtimeModelUserInputMessage",
]

RealtimeModelInputTextContent = dict[str, Any]
"""``{"type": "input_text", "text": ...}`` (or ``input_image`` with ``image_url``)."""


class RealtimeModelUserInputMessage(TypedDict):
    """A user message as the model layer takes it."""

    type: Literal["message"]
    role: Literal["user"]
    content: list[RealtimeModelInputTextContent]


RealtimeModelUserInput = str | RealtimeModelUserInputMessage | dict[str, Any]
"""A user message: plain text, or ``{"type": "message", "role": "user",
"content": [RealtimeModelInputTextContent, ...]}``."""

RealtimeModelRawClientMessage = dict[str, Any]
"""A client event: the SDK's shape ``{"type": ..., "other_data": {...}}``
(``other_data`` is merged into the event's body), or the event as the
protocol spells it (``{"type": ..., ...}``)."""


@dataclass(frozen=True, slots=True)
class RealtimeModelSendRawMessage:
    """Send a protocol client event as it is."""

    message: RealtimeModelRawClientMessage
    type: Literal["send_raw_message"] = "send_raw_message"


@dataclass(frozen=True, slots=True)
class RealtimeModelSendUserInput:
    """Add a user message to the conversation and ask for a response."""

    user_input: RealtimeModelUserInput
    type: Literal["send_user_input"] = "send_user_input"


@dataclass(frozen=True, slots=True)
class RealtimeModelSendAudio:
    """Append input audio; ``commit`` ends the user's turn (no server VAD)."""

    audio: bytes
    commit: bool = False
    type: Literal["send_audio"] = "send_audio"


@dataclass(frozen=True, slots=True)
class RealtimeModelSendToolOutput:
    """Return a tool call's output; ``start_response`` asks for a reply."""

    tool_call: RealtimeModelToolCallEvent
    output: str
    start_response: bool = True
    type: Literal["send_tool_output"] = "send_tool_output"


@dataclass(frozen=True, slots=True)
class RealtimeModelSendInterrupt:
    """Stop the current response and truncate its audio at the played point."""

    force_response_cancel: bool = False
    type: Literal["send_interrupt"] = "send_interrupt"


@dataclass(frozen=True, slots=True)
class RealtimeModelSendSessionUpdate:
    """Update the session's model settings (instructions, tools, audio...)."""

    session_settings: RealtimeSessionModelSettings = field(
        default_factory=lambda: RealtimeSessionModelSettings()
    )
    type: Literal["send_session_update"] = "send_session_update"


RealtimeModelSendEvent = (
    RealtimeModelSendRawMessage
    | RealtimeModelSendUserInput
    | RealtimeModelSendAudio
    | RealtimeModelSendToolOutput
    | RealtimeModelSendInterrupt
    | RealtimeModelSendSessionUpdate
)
"""Everything the session can ask a model layer to send."""
