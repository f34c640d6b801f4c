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
  *received* per item. With no application tracker it is the default and,
  as the SDK does, assumes the audio plays in real time from its first chunk
  (never past what was received); with one it is still used to clamp the
  truncation point, because truncating past the end of the audio is a
  protocol error ("If the audio_end_ms is greater than the actual audio
  duration, the server will respond with an error").

A session in an actor cannot read the application's tracker, which stays in
the application's process: the session handle sends its state over
(:func:`playback_snapshot`, coalesced: one small report per interval while it
changes, and one before each ``interrupt``), and the actor's model reads a
:class:`ReportedPlaybackTracker` holding the last report.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from ray_realtime.exceptions import UserError
from ray_realtime.model.conversion import audio_bytes_per_ms

__all__ = [
    "PlaybackSnapshot",
    "RealtimePlaybackState",
    "RealtimePlaybackTracker",
    "ReceivedAudioTracker",
    "ReportedPlaybackTracker",
    "check_playback_snapshot",
    "playback_snapshot",
]

PlaybackSnapshot = tuple[str | None, int | None, float | None]
"""``(item_id, content_index, elapsed_ms)``: a tracker's state as it travels."""


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
        self._state: PlaybackSnapshot = _NOTHING_PLAYING
        # Told of every change (any thread) when a session handle reports the
        # state to a session in another process; None in-process.
        self._on_change: Callable[[], None] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The listener belongs to this process's handle: a copy never has one.
        return {"_bytes_per_ms": self._bytes_per_ms, "_state": self._state, "_on_change": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def _changed(self) -> None:
        listener = self._on_change
        if listener is not None:
            listener()

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
        self._changed()

    def on_interrupted(self) -> None:
        """Playback was cut off: nothing is playing any more."""
        self._state = _NOTHING_PLAYING
        self._changed()

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


def playback_snapshot(tracker: RealtimePlaybackTracker) -> PlaybackSnapshot:
    """The tracker's state as plain data (what a handle reports)."""
    state = tracker.get_state()
    return (
        state["current_item_id"],
        state["current_item_content_index"],
        state["elapsed_ms"],
    )


def check_playback_snapshot(value: Any) -> PlaybackSnapshot:
    """``value`` as a :data:`PlaybackSnapshot`; :class:`UserError` if it is not one."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise UserError("a playback report is [item_id, content_index, elapsed_ms]")
    item_id, content_index, elapsed = value
    if item_id is None and content_index is None and elapsed is None:
        return _NOTHING_PLAYING
    if (
        not isinstance(item_id, str)
        or type(content_index) is not int
        or content_index < 0
        or isinstance(elapsed, bool)
        or not isinstance(elapsed, (int, float))
        or not 0 <= elapsed < float("inf")
    ):
        raise UserError("a playback report is [item_id, content_index >= 0, elapsed_ms >= 0]")
    return (item_id, content_index, float(elapsed))


class ReportedPlaybackTracker(RealtimePlaybackTracker):
    """The application's tracker as last reported by the session handle
    (actor mode): the model reads it as it would read the tracker itself."""

    def report(self, snapshot: PlaybackSnapshot) -> None:
        """Take the handle's latest report (checked by :func:`check_playback_snapshot`)."""
        self._state = snapshot


class ReceivedAudioTracker:
    """Milliseconds of output audio received per item (internal).

    Used as the default playback tracker (as the SDK assumes: the audio plays
    in real time from its first chunk, so the elapsed time of the current
    item is the time since its first chunk arrived, at most what was
    received of it) and to clamp any truncation point to the audio the
    server actually sent. ``clock`` gives seconds (monotonic).

    Only the last ``max_items`` items are remembered, so a long call does not
    grow this without bound; an interruption only ever concerns recent audio.
    """

    def __init__(self, max_items: int = 16, clock: Callable[[], float] = time.monotonic) -> None:
        if max_items < 1:
            raise UserError(f"max_items must be at least 1, got {max_items}")
        self._max_items = max_items
        self._clock = clock
        self._bytes_per_ms = audio_bytes_per_ms("pcm16")
        self._received: OrderedDict[tuple[str, int], float] = OrderedDict()
        self._started: dict[tuple[str, int], float] = {}
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
            self._started[key] = self._clock()
            if len(self._received) > self._max_items:
                old, _ = self._received.popitem(last=False)
                self._started.pop(old, None)
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
        self._started.clear()
        self._current = None

    def get_state(self) -> RealtimePlaybackState:
        """Playback state assuming the audio plays in real time from its first chunk."""
        if self._current is None:
            return {"current_item_id": None, "current_item_content_index": None, "elapsed_ms": None}
        item_id, content_index = self._current
        received = self._received.get(self._current, 0.0)
        started = self._started.get(self._current)
        played = received if started is None else (self._clock() - started) * 1000.0
        return {
            "current_item_id": item_id,
            "current_item_content_index": content_index,
            "elapsed_ms": max(0.0, min(received, played)),
        }
