"""How much of the assistant's audio the user has heard.

When the user interrupts, the model must forget the audio it generated but the
user never heard. The protocol does this with ``conversation.item.truncate``
("This will synchronize the server's understanding of the audio with the
client's playback"), which needs the item, the content index and the position
in milliseconds.

Two trackers give that position:

* :class:`RealtimePlaybackTracker`, for applications that play the audio
  themselves and know how much of it actually came out of the speaker. They
  call :meth:`~RealtimePlaybackTracker.on_play_bytes` (or ``on_play_ms``) as
  they play and pass the tracker in the model config (``playback_tracker``).
* :class:`ReceivedAudioTracker`, the model layer's own bookkeeping of the audio
  *received* per item. With no application tracker it is the default and
  assumes audio is heard as soon as it arrives; with one it is still used to
  clamp the truncation point, because truncating past the end of the audio is
  a protocol error ("If the audio_end_ms is greater than the actual audio
  duration, the server will respond with an error").
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from ray_realtime.exceptions import UserError
from ray_realtime.model.conversion import audio_bytes_per_ms

__all__ = ["RealtimePlaybackState", "RealtimePlaybackTracker", "ReceivedAudioTracker"]


class RealtimePlaybackState(TypedDict):
    """Where playback is: the item and content part being played and how many
    milliseconds of it have been played. All ``None`` when nothing plays."""

    current_item_id: str | None
    current_item_content_index: int | None
    elapsed_ms: float | None


_NOTHING_PLAYING: tuple[str | None, int | None, float | None] = (None, None, None)


class RealtimePlaybackTracker:
    """Tracks the audio the application has actually played to the user.

    Call :meth:`on_play_bytes` or :meth:`on_play_ms` as audio is played,
    :meth:`on_interrupted` when playback is cut off, and pass the tracker as
    ``playback_tracker`` in the model config. The model layer reads
    :meth:`get_state` when it has to truncate an interrupted item.

    The state is kept as one tuple that is replaced, never mutated, so a reader
    on the event loop sees a consistent state even when an audio thread (a
    sound card callback, say) is the writer.
    """

    def __init__(self) -> None:
        self._bytes_per_ms = audio_bytes_per_ms("pcm16")
        self._state = _NOTHING_PLAYING

    def set_audio_format(self, format: Any) -> None:
        """Set the format of the audio played (``"pcm16"``, ``"g711_ulaw"``,
        ``"g711_alaw"``); it converts bytes to milliseconds."""
        self._bytes_per_ms = audio_bytes_per_ms(format)

    def on_play_bytes(self, item_id: str, item_content_index: int, bytes: bytes) -> None:
        """Record that ``bytes`` of this item's audio were played."""
        self.on_play_ms(item_id, item_content_index, len(bytes) / self._bytes_per_ms)

    def on_play_ms(self, item_id: str, item_content_index: int, ms: float) -> None:
        """Record that ``ms`` milliseconds of this item's audio were played.

        Playing a different item (or content part) starts counting afresh.
        """
        if ms < 0:
            raise UserError(f"played milliseconds must not be negative, got {ms}")
        current_id, current_index, elapsed = self._state
        if current_id == item_id and current_index == item_content_index and elapsed is not None:
            self._state = (item_id, item_content_index, elapsed + ms)
        else:
            self._state = (item_id, item_content_index, float(ms))

    def on_interrupted(self) -> None:
        """Playback was cut off: nothing is playing any more."""
        self._state = _NOTHING_PLAYING

    def get_state(self) -> RealtimePlaybackState:
        """The current playback position."""
        item_id, content_index, elapsed = self._state
        return {
            "current_item_id": item_id,
            "current_item_content_index": content_index,
            "elapsed_ms": elapsed,
        }

    def __repr__(self) -> str:
        item_id, content_index, elapsed = self._state
        return (
            f"RealtimePlaybackTracker(item_id={item_id!r}, "
            f"content_index={content_index!r}, elapsed_ms={elapsed!r})"
        )


class ReceivedAudioTracker:
    """Milliseconds of output audio received per item (internal).

    Used as the default playback tracker ("heard as soon as it arrives": the
    elapsed time of the current item is what has been received of it) and to
    clamp any truncation point to the audio the server actually sent.

    Only the last ``max_items`` items are remembered, so a long call does not
    grow this without bound; an interruption only ever concerns recent audio.
    """

    def __init__(self, max_items: int = 16) -> None:
        if max_items < 1:
            raise UserError(f"max_items must be at least 1, got {max_items}")
        self._max_items = max_items
        self._bytes_per_ms = audio_bytes_per_ms("pcm16")
        self._received: OrderedDict[tuple[str, int], float] = OrderedDict()
        self._current: tuple[str, int] | None = None

    def set_audio_format(self, format: Any) -> None:
        """Set the format of the output audio (bytes to milliseconds)."""
        self._bytes_per_ms = audio_bytes_per_ms(format)

    def on_audio(self, item_id: str, content_index: int, num_bytes: int) -> None:
        """Record ``num_bytes`` of audio received for this item."""
        key = (item_id, content_index)
        ms = num_bytes / self._bytes_per_ms
        received = self._received.get(key)
        if received is None:
            self._received[key] = ms
            if len(self._received) > self._max_items:
                self._received.popitem(last=False)
        else:
            self._received[key] = received + ms
            self._received.move_to_end(key)
        self._current = key

    def received_ms(self, item_id: str, content_index: int) -> float | None:
        """Milliseconds received of this item, or ``None`` if it is unknown."""
        return self._received.get((item_id, content_index))

    def on_interrupted(self) -> None:
        """Playback was cut off: no item is current any more."""
        self._current = None

    def reset(self) -> None:
        """Forget everything (a new connection)."""
        self._received.clear()
        self._current = None

    def get_state(self) -> RealtimePlaybackState:
        """Playback state assuming audio is heard as soon as it arrives."""
        if self._current is None:
            return {"current_item_id": None, "current_item_content_index": None, "elapsed_ms": None}
        item_id, content_index = self._current
        return {
            "current_item_id": item_id,
            "current_item_content_index": content_index,
            "elapsed_ms": self._received.get(self._current, 0.0),
        }
