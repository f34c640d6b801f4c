"""Model events: what a realtime model layer reports to the session.

One frozen dataclass per ``type``; :data:`RealtimeModelEvent` is the closed
union, so a dispatcher that ends in ``assert_never`` is told about a new one.
They hold plain data only (no exceptions, no live objects), so they cross
process boundaries and can be written to the event log as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ray_realtime.types.items import RealtimeItem

__all__ = [
    "RealtimeConnectionStatus",
    "RealtimeModelAudioDoneEvent",
    "RealtimeModelAudioEvent",
    "RealtimeModelAudioInterruptedEvent",
    "RealtimeModelCachedTokensDetails",
    "RealtimeModelConnectionStatusEvent",
    "RealtimeModelEndOfStreamEvent",
    "RealtimeModelErrorEvent",
    "RealtimeModelEvent",
    "RealtimeModelExceptionEvent",
    "RealtimeModelInputAudioTimeoutTriggeredEvent",
    "RealtimeModelInputAudioTranscriptionCompletedEvent",
    "RealtimeModelInputTokensDetails",
    "RealtimeModelItemDeletedEvent",
    "RealtimeModelItemUpdatedEvent",
    "RealtimeModelOtherEvent",
    "RealtimeModelOutputTextDeltaEvent",
    "RealtimeModelOutputTokensDetails",
    "RealtimeModelRawServerEvent",
    "RealtimeModelToolCallEvent",
    "RealtimeModelTranscriptDeltaEvent",
    "RealtimeModelTurnEndedEvent",
    "RealtimeModelTurnStartedEvent",
    "RealtimeModelUsageEvent",
]

RealtimeConnectionStatus = Literal["connecting", "connected", "disconnected"]
"""The states of a model connection."""


@dataclass(frozen=True, slots=True)
class RealtimeModelErrorEvent:
    """The model sent an error. ``error`` holds ``message`` and, when given,
    ``type``, ``code``, ``param`` and ``event_id``."""

    error: dict[str, Any]
    type: Literal["error"] = "error"


@dataclass(frozen=True, slots=True)
class RealtimeModelToolCallEvent:
    """The model called a function tool (arguments complete)."""

    name: str
    call_id: str
    arguments: str
    id: str | None = None
    previous_item_id: str | None = None
    type: Literal["function_call"] = "function_call"


@dataclass(frozen=True, slots=True)
class RealtimeModelAudioEvent:
    """A chunk of output audio, raw bytes in the session's output format."""

    data: bytes
    response_id: str
    item_id: str
    content_index: int
    type: Literal["audio"] = "audio"


@dataclass(frozen=True, slots=True)
class RealtimeModelAudioInterruptedEvent:
    """Output audio of this item was cut off (the user spoke or interrupted)."""

    item_id: str
    content_index: int
    type: Literal["audio_interrupted"] = "audio_interrupted"


@dataclass(frozen=True, slots=True)
class RealtimeModelAudioDoneEvent:
    """The model finished sending the audio of this item."""

    item_id: str
    content_index: int
    type: Literal["audio_done"] = "audio_done"


@dataclass(frozen=True, slots=True)
class RealtimeModelInputAudioTranscriptionCompletedEvent:
    """The transcript of a user audio item is ready."""

    item_id: str
    transcript: str
    type: Literal["input_audio_transcription_completed"] = "input_audio_transcription_completed"


@dataclass(frozen=True, slots=True)
class RealtimeModelInputAudioTimeoutTriggeredEvent:
    """The user's input audio stayed idle past the configured timeout."""

    item_id: str
    audio_start_ms: int
    audio_end_ms: int
    type: Literal["input_audio_timeout_triggered"] = "input_audio_timeout_triggered"


@dataclass(frozen=True, slots=True)
class RealtimeModelTranscriptDeltaEvent:
    """A piece of the transcript of the assistant's output audio."""

    item_id: str
    delta: str
    response_id: str
    type: Literal["transcript_delta"] = "transcript_delta"


@dataclass(frozen=True, slots=True)
class RealtimeModelItemUpdatedEvent:
    """An item was added to or changed in the conversation."""

    item: RealtimeItem
    type: Literal["item_updated"] = "item_updated"


@dataclass(frozen=True, slots=True)
class RealtimeModelItemDeletedEvent:
    """An item was removed from the conversation."""

    item_id: str
    type: Literal["item_deleted"] = "item_deleted"


@dataclass(frozen=True, slots=True)
class RealtimeModelConnectionStatusEvent:
    """The connection to the model changed state."""

    status: RealtimeConnectionStatus
    type: Literal["connection_status"] = "connection_status"


@dataclass(frozen=True, slots=True)
class RealtimeModelTurnStartedEvent:
    """The model started a response (a turn)."""

    response_id: str = ""
    type: Literal["turn_started"] = "turn_started"


@dataclass(frozen=True, slots=True)
class RealtimeModelTurnEndedEvent:
    """The model finished a response; ``status`` is the response's final status."""

    response_id: str = ""
    status: str = "completed"
    type: Literal["turn_ended"] = "turn_ended"


@dataclass(frozen=True, slots=True)
class RealtimeModelOtherEvent:
    """A server event the session has no specific use for."""

    data: dict[str, Any] = field(default_factory=dict)
    type: Literal["other"] = "other"


@dataclass(frozen=True, slots=True)
class RealtimeModelExceptionEvent:
    """The model layer hit an exception; it is described, not carried, so the
    event stays serialisable."""

    message: str
    exception_type: str = ""
    context: str | None = None
    type: Literal["exception"] = "exception"


@dataclass(frozen=True, slots=True)
class RealtimeModelRawServerEvent:
    """A server event as received (decoded JSON), before conversion."""

    data: dict[str, Any] = field(default_factory=dict)
    type: Literal["raw_server_event"] = "raw_server_event"


@dataclass(frozen=True, slots=True)
class RealtimeModelEndOfStreamEvent:
    """The model's event stream ended (no more events will come)."""

    type: Literal["end_of_stream"] = "end_of_stream"


@dataclass(frozen=True, slots=True)
class RealtimeModelOutputTextDeltaEvent:
    """A piece of the response's text output (text modality)."""

    item_id: str
    delta: str
    response_id: str
    type: Literal["output_text_delta"] = "output_text_delta"


@dataclass(frozen=True, slots=True)
class RealtimeModelCachedTokensDetails:
    """Cached input tokens, by kind."""

    text_tokens: int | None = None
    audio_tokens: int | None = None
    image_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class RealtimeModelInputTokensDetails:
    """Input tokens of a response, by kind."""

    text_tokens: int | None = None
    audio_tokens: int | None = None
    image_tokens: int | None = None
    cached_tokens: int | None = None
    cached_tokens_details: RealtimeModelCachedTokensDetails | None = None


@dataclass(frozen=True, slots=True)
class RealtimeModelOutputTokensDetails:
    """Output tokens of a response, by kind."""

    text_tokens: int | None = None
    audio_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class RealtimeModelUsageEvent:
    """Token usage of a response. ``usage`` holds ``requests``,
    ``input_tokens``, ``output_tokens`` and ``total_tokens`` as plain numbers
    (the SDK's ``Usage`` object does not cross processes)."""

    usage: dict[str, Any]
    input_tokens_details: RealtimeModelInputTokensDetails | None = None
    output_tokens_details: RealtimeModelOutputTokensDetails | None = None
    type: Literal["usage"] = "usage"


RealtimeModelEvent = (
    RealtimeModelErrorEvent
    | RealtimeModelToolCallEvent
    | RealtimeModelAudioEvent
    | RealtimeModelAudioInterruptedEvent
    | RealtimeModelAudioDoneEvent
    | RealtimeModelInputAudioTranscriptionCompletedEvent
    | RealtimeModelInputAudioTimeoutTriggeredEvent
    | RealtimeModelTranscriptDeltaEvent
    | RealtimeModelItemUpdatedEvent
    | RealtimeModelItemDeletedEvent
    | RealtimeModelConnectionStatusEvent
    | RealtimeModelTurnStartedEvent
    | RealtimeModelTurnEndedEvent
    | RealtimeModelOtherEvent
    | RealtimeModelExceptionEvent
    | RealtimeModelRawServerEvent
    | RealtimeModelEndOfStreamEvent
    | RealtimeModelOutputTextDeltaEvent
    | RealtimeModelUsageEvent
)
"""Every event a model layer can report."""
