"""The realtime model layer: the model seam and the OpenAI Realtime WebSocket
implementation; the model's events and inputs (plain data in
:mod:`ray_realtime.types`) are re-exported here."""

from typing import TYPE_CHECKING, Any

from ray_realtime.model.interface import RealtimeModel, RealtimeModelListener
from ray_realtime.model.playback import RealtimePlaybackState, RealtimePlaybackTracker
from ray_realtime.types.model_events import (
    RealtimeModelAudioDoneEvent,
    RealtimeModelAudioEvent,
    RealtimeModelAudioInterruptedEvent,
    RealtimeModelConnectionStatusEvent,
    RealtimeModelErrorEvent,
    RealtimeModelEvent,
    RealtimeModelExceptionEvent,
    RealtimeModelInputAudioTimeoutTriggeredEvent,
    RealtimeModelInputAudioTranscriptionCompletedEvent,
    RealtimeModelItemDeletedEvent,
    RealtimeModelItemUpdatedEvent,
    RealtimeModelOtherEvent,
    RealtimeModelRawServerEvent,
    RealtimeModelToolCallEvent,
    RealtimeModelTranscriptDeltaEvent,
    RealtimeModelTurnEndedEvent,
    RealtimeModelTurnStartedEvent,
)
from ray_realtime.types.model_inputs import (
    RealtimeModelInputTextContent,
    RealtimeModelRawClientMessage,
    RealtimeModelSendAudio,
    RealtimeModelSendEvent,
    RealtimeModelSendInterrupt,
    RealtimeModelSendRawMessage,
    RealtimeModelSendSessionUpdate,
    RealtimeModelSendToolOutput,
    RealtimeModelSendUserInput,
    RealtimeModelUserInput,
)

if TYPE_CHECKING:
    from ray_realtime.model.openai_ws import (
        OpenAIRealtimeSIPModel,
        OpenAIRealtimeWebSocketModel,
        get_api_key,
    )

_LAZY = frozenset({"OpenAIRealtimeSIPModel", "OpenAIRealtimeWebSocketModel", "get_api_key"})


def __getattr__(name: str) -> Any:
    # Imported on first use so that the I/O-free core, which needs the event
    # classes above, does not pull in websockets.
    if name in _LAZY:
        from ray_realtime.model import openai_ws

        return getattr(openai_ws, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "OpenAIRealtimeSIPModel",
    "OpenAIRealtimeWebSocketModel",
    "RealtimeModel",
    "RealtimeModelAudioDoneEvent",
    "RealtimeModelAudioEvent",
    "RealtimeModelAudioInterruptedEvent",
    "RealtimeModelConnectionStatusEvent",
    "RealtimeModelErrorEvent",
    "RealtimeModelEvent",
    "RealtimeModelExceptionEvent",
    "RealtimeModelInputAudioTimeoutTriggeredEvent",
    "RealtimeModelInputAudioTranscriptionCompletedEvent",
    "RealtimeModelInputTextContent",
    "RealtimeModelItemDeletedEvent",
    "RealtimeModelItemUpdatedEvent",
    "RealtimeModelListener",
    "RealtimeModelOtherEvent",
    "RealtimeModelRawClientMessage",
    "RealtimeModelRawServerEvent",
    "RealtimeModelSendAudio",
    "RealtimeModelSendEvent",
    "RealtimeModelSendInterrupt",
    "RealtimeModelSendRawMessage",
    "RealtimeModelSendSessionUpdate",
    "RealtimeModelSendToolOutput",
    "RealtimeModelSendUserInput",
    "RealtimeModelToolCallEvent",
    "RealtimeModelTranscriptDeltaEvent",
    "RealtimeModelTurnEndedEvent",
    "RealtimeModelTurnStartedEvent",
    "RealtimeModelUserInput",
    "RealtimePlaybackState",
    "RealtimePlaybackTracker",
    "get_api_key",
]
