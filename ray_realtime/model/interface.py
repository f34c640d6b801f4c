"""The realtime model seam: the interface every model layer implements.

A model layer holds one connection to a realtime model. The session connects
it, registers itself as a listener, sends :data:`RealtimeModelSendEvent`s and
receives :data:`RealtimeModelEvent`s. :class:`OpenAIRealtimeWebSocketModel`
implements it over the OpenAI Realtime WebSocket protocol; a custom model can
implement it for another provider.
"""

from __future__ import annotations

import abc

from ray_realtime.types.config import RealtimeModelConfig
from ray_realtime.types.model_events import RealtimeModelEvent
from ray_realtime.types.model_inputs import RealtimeModelSendEvent

__all__ = ["RealtimeModel", "RealtimeModelListener"]


class RealtimeModelListener(abc.ABC):
    """Receives the events of a model layer."""

    @abc.abstractmethod
    async def on_event(self, event: RealtimeModelEvent) -> None:
        """Handle one model event. Must not raise; the model layer logs and
        goes on if it does."""


class RealtimeModel(abc.ABC):
    """One connection to a realtime model."""

    @abc.abstractmethod
    async def connect(self, options: RealtimeModelConfig) -> None:
        """Open the connection and apply ``options["initial_model_settings"]``."""

    @abc.abstractmethod
    def add_listener(self, listener: RealtimeModelListener) -> None:
        """Start delivering events to ``listener``."""

    @abc.abstractmethod
    def remove_listener(self, listener: RealtimeModelListener) -> None:
        """Stop delivering events to ``listener``."""

    @abc.abstractmethod
    async def send_event(self, event: RealtimeModelSendEvent) -> None:
        """Send one input to the model."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection; idempotent."""
