"""Per-connection state machine of the local model server.

One :class:`Connection` per WebSocket: it owns the session config, the conversation, the
input audio buffer with its VAD, and at most one active response task. Client events are
handled strictly in arrival order; a bad event yields an ``error`` event and the
connection keeps going.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .audio import decode_to_pcm16
from .conversation import (
    Conversation,
    StoredItem,
    parse_client_item,
    set_transcript,
    user_audio_item,
)
from .protocol import (
    MAX_JSON_DEPTH,
    IdFactory,
    ProtocolError,
    ServerOptions,
    expect_base64,
    expect_int,
    expect_str,
    json_too_deep,
    parse_append_event,
    reject_unknown,
)
from .responder import ResponseParams, ResponseRunner, parse_response_params
from .rules import Tool, decide
from .session import SessionConfig
from .vad import EnergyVad

__all__ = ["MIN_COMMIT_MS", "Connection"]

logger = logging.getLogger("ray_realtime.local")

MIN_COMMIT_MS = 100
"""A manual ``input_audio_buffer.commit`` needs at least this much audio (as the real API)."""

# A ``\uD800``-``\uDFFF`` escape: the only way a lone surrogate gets into a parsed event
# (websockets has already rejected text frames that are not valid UTF-8).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

_EVENT_KEYS: dict[str, tuple[str, ...]] = {
    "session.update": ("session",),
    "input_audio_buffer.append": ("audio",),
    "input_audio_buffer.commit": (),
    "input_audio_buffer.clear": (),
    "conversation.item.create": ("previous_item_id", "item"),
    "conversation.item.delete": ("item_id",),
    "conversation.item.retrieve": ("item_id",),
    "conversation.item.truncate": ("item_id", "content_index", "audio_end_ms"),
    "response.create": ("response",),
    "response.cancel": ("response_id",),
    "output_audio_buffer.clear": (),
}


def _reject_lone_surrogates(event: dict[str, Any]) -> None:
    """Raise ``invalid_unicode`` if a string of ``event`` holds a lone UTF-16 surrogate.

    Such a string cannot be encoded as UTF-8, so it could never be echoed back (in an
    error message, a reply or a session). Paired surrogates were already combined by
    the JSON parser; the event's depth is bounded, so re-serialising it is safe.
    """
    try:
        json.dumps(event, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(
            "invalid_unicode",
            "The event contains a lone UTF-16 surrogate (a \\uD800-\\uDFFF escape that is "
            "not part of a pair); strings must be valid Unicode.",
        ) from None


class Connection:
    """Serves one client WebSocket until it closes."""

    def __init__(self, ws: ServerConnection, options: ServerOptions, model: str) -> None:
        self.ws = ws
        self.options = options
        self.ids = IdFactory()
        self.session = SessionConfig(id=self.ids.next("sess"), model=model)
        self.conversation_id = self.ids.next("conv")
        self.conversation = Conversation(
            max_items=options.max_conversation_items, max_bytes=options.max_conversation_bytes
        )
        self.active: ResponseRunner | None = None
        self._voice_locked = False
        # Input audio buffer: PCM16 at the input format's rate, positioned on the session
        # audio timeline (ms of input audio received so far).
        self._buffer = bytearray()
        self._buffer_start_ms = 0.0
        self._timeline_ms = 0.0
        self._odd_byte = b""
        self._vad: EnergyVad | None = None
        self._speech_item_id: str | None = None
        self._speech_start_ms = 0.0
        self._rebuild_vad()
        # The serialised ids of the audio part being streamed (see emit_audio_delta).
        self._audio_head: tuple[tuple[Any, ...], str] = ((), "")
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.delete": self._on_item_delete,
            "conversation.item.retrieve": self._on_item_retrieve,
            "conversation.item.truncate": self._on_item_truncate,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
            "output_audio_buffer.clear": self._on_output_audio_clear,
        }

    # --- plumbing -------------------------------------------------------------------------

    async def emit(self, event_type: str, **fields: Any) -> None:
        """Send one server event (``event_id`` assigned here, in send order)."""
        event = {"type": event_type, "event_id": self.ids.next("event"), **fields}
        try:
            await self.ws.send(json.dumps(event, separators=(",", ":"), ensure_ascii=False))
        except UnicodeEncodeError:
            # A lone surrogate cannot be UTF-8 encoded; inputs carrying one are rejected
            # on arrival, so this is only a safety net: escape it rather than fail.
            await self.ws.send(json.dumps(event, separators=(",", ":")))

    async def emit_audio_delta(self, delta: str, ids: dict[str, Any]) -> None:
        """Send a ``response.output_audio.delta`` (the same event as ``emit`` would).

        The hot path of a speaking server, so the JSON is put together by hand: the
        delta is base64 (no character needs escaping) and the ids are serialised once
        per audio part, not once per chunk.
        """
        key = tuple(ids.items())
        if self._audio_head[0] != key:
            self._audio_head = (key, json.dumps(ids, separators=(",", ":"))[1:-1])
        await self.ws.send(
            f'{{"type":"response.output_audio.delta","event_id":"{self.ids.next("event")}",'
            f'{self._audio_head[1]},"delta":"{delta}"}}'
        )

    async def error(self, exc: ProtocolError, client_event_id: str | None) -> None:
        """Report a client error without closing the connection."""
        await self.emit(
            "error",
            error={
                "type": exc.error_type,
                "code": exc.code,
                "message": exc.message,
                "param": exc.param,
                "event_id": client_event_id,
            },
        )

    async def run(self) -> None:
        """Send ``session.created`` and process client events until the socket closes."""
        expiry: asyncio.Task[None] | None = None
        try:
            await self.emit("session.created", session=self.session.wire())
            if self.options.max_session_seconds is not None:
                expiry = asyncio.create_task(self._expire_after(self.options.max_session_seconds))
            async for message in self.ws:
                await self.handle_message(message)
        except ConnectionClosed:
            pass
        finally:
            if expiry is not None:
                expiry.cancel()
            await self.close()

    async def _expire_after(self, seconds: float) -> None:
        """End the session at its length cap the way the real service does: an
        ``error`` event (code ``session_expired``), then close code 1001 with the
        same message as the reason."""
        await asyncio.sleep(seconds)
        await self.close()  # the response in progress stops here
        amount, unit = (seconds, "second") if seconds < 60 else (seconds / 60, "minute")
        shown = f"{amount:g} {unit}{'' if amount == 1 else 's'}"
        message = f"Your session hit the maximum duration of {shown}."
        try:
            await self.emit(
                "error",
                error={
                    "type": "invalid_request_error",
                    "code": "session_expired",
                    "message": message,
                    "param": None,
                    "event_id": None,
                },
            )
            await self.ws.close(1001, message)
        except ConnectionClosed:
            pass

    async def close(self) -> None:
        """Hard-stop the active response task (the peer is gone; nothing more is sent)."""
        runner, self.active = self.active, None
        if runner is not None and runner.task is not None and not runner.task.done():
            runner.task.cancel()
            await asyncio.gather(runner.task, return_exceptions=True)

    async def handle_message(self, message: str | bytes) -> None:
        """Parse, validate and dispatch one WebSocket message."""
        client_event_id: str | None = None
        try:
            if isinstance(message, bytes):
                raise ProtocolError(
                    "binary_not_supported",
                    "Binary frames are not supported; send JSON text events.",
                )
            if len(message) > self.options.max_event_bytes or (
                len(message) * 4 > self.options.max_event_bytes
                and len(message.encode("utf-8", "surrogatepass")) > self.options.max_event_bytes
            ):
                raise ProtocolError(
                    "event_too_large",
                    f"Event exceeds the maximum size of {self.options.max_event_bytes} bytes.",
                )
            audio: bytes | None = None
            split = parse_append_event(message)
            if split is not None:
                event, audio = split
            else:
                try:
                    event = json.loads(message)
                except RecursionError:
                    raise self._too_deep() from None
                except ValueError:
                    raise ProtocolError("invalid_json", "The event is not valid JSON.") from None
                if not isinstance(event, dict):
                    raise ProtocolError("invalid_event", "An event must be a JSON object.")
                if json_too_deep(event):
                    raise self._too_deep()
                if "\\u" in message and _SURROGATE_ESCAPE.search(message):
                    _reject_lone_surrogates(event)
            raw_id = event.get("event_id")
            if raw_id is not None:
                client_event_id = expect_str(raw_id, "event_id", max_len=512)
            event_type = event.get("type")
            if event_type is None:
                raise ProtocolError(
                    "missing_required_parameter", "Missing required parameter: 'type'.", "type"
                )
            event_type = expect_str(event_type, "type", max_len=128)
            handler = self._handlers.get(event_type)
            if handler is None:
                raise ProtocolError("unknown_event", f"Unknown event type: '{event_type}'.", "type")
            reject_unknown(event, ("type", "event_id", *_EVENT_KEYS[event_type]), "")
            if audio is not None and event_type == "input_audio_buffer.append":
                await self._append(audio)  # decoded already, by parse_append_event
            else:
                await handler(event)
        except ProtocolError as exc:
            await self.error(exc, client_event_id)
        except ConnectionClosed:
            raise
        except Exception:  # a bug must not take the connection (or the server) down
            logger.exception("local model: internal error while handling an event")
            await self.error(
                ProtocolError(
                    "internal_error", "Internal server error.", error_type="server_error"
                ),
                client_event_id,
            )

    @staticmethod
    def _too_deep() -> ProtocolError:
        return ProtocolError(
            "nesting_too_deep",
            f"The event nests arrays/objects deeper than {MAX_JSON_DEPTH} levels.",
        )

    async def add_item(
        self, item: StoredItem, previous_item_id: str | None, *, done: bool
    ) -> str | None:
        """Insert an item and announce it (``done``: it is already complete).

        Complete items trigger eviction right away; items still being generated by a
        response are only accounted for once the response is done, so evictions never
        interleave with a response's event sequence.
        """
        previous = self.conversation.add(item, previous_item_id)
        await self.emit("conversation.item.added", previous_item_id=previous, item=item.wire)
        if done:
            await self.emit("conversation.item.done", previous_item_id=previous, item=item.wire)
            await self._evict(frozenset({item.id}))
        return previous

    async def _evict(self, protect: frozenset[str] = frozenset()) -> None:
        """Drop the oldest items beyond the conversation bounds, announcing each."""
        if self.active is not None:
            protect |= self.active.active_item_ids
        for evicted in self.conversation.evict(protect):
            await self.emit("conversation.item.deleted", item_id=evicted)

    # --- session ----------------------------------------------------------------------------

    async def _on_session_update(self, event: dict[str, Any]) -> None:
        old = self.session
        self.session = old.updated(event.get("session"), voice_locked=self._voice_locked)
        if self.session.input_format != old.input_format:
            # Buffered bytes of the old format cannot be mixed with the new one.
            self._reset_buffer()
        if (
            self.session.input_format != old.input_format
            or self.session.turn_detection != old.turn_detection
        ):
            self._rebuild_vad()
        await self.emit("session.updated", session=self.session.wire())

    def _rebuild_vad(self) -> None:
        td = self.session.turn_detection
        self._speech_item_id = None
        if td is None:
            self._vad = None
            return
        self._vad = EnergyVad(
            sample_rate=self.session.input_format.sample_rate,
            threshold=td.threshold,
            prefix_padding_ms=td.prefix_padding_ms,
            silence_duration_ms=td.silence_duration_ms,
            start_ms=self._timeline_ms,
        )

    # --- input audio buffer -------------------------------------------------------------------

    @property
    def _rate(self) -> int:
        return self.session.input_format.sample_rate

    def _buffered_ms(self) -> float:
        return len(self._buffer) // 2 * 1000.0 / self._rate

    def _offset(self, timeline_ms: float) -> int:
        """Byte offset in the buffer of a timeline position (clamped to the buffer)."""
        samples = round((timeline_ms - self._buffer_start_ms) * self._rate / 1000.0)
        return min(len(self._buffer), max(0, samples * 2))

    def _reset_buffer(self) -> None:
        self._buffer = bytearray()
        self._buffer_start_ms = self._timeline_ms
        self._odd_byte = b""
        self._speech_item_id = None
        if self._vad is not None:
            self._vad.reset()

    async def _on_append(self, event: dict[str, Any]) -> None:
        await self._append(expect_base64(event.get("audio"), "audio"))

    async def _append(self, data: bytes) -> None:
        fmt = self.session.input_format
        if fmt.bytes_per_sample == 2:
            # Keep a trailing odd byte so a sample split across appends is not lost.
            if self._odd_byte:
                data = self._odd_byte + data
            self._odd_byte = data[len(data) - len(data) % 2 :]
            if self._odd_byte:
                data = data[:-1]
            # Little-endian PCM16 as it is: a read-only view, no copy.
            samples = np.frombuffer(data, dtype="<i2")
        else:
            samples = decode_to_pcm16(data, fmt)
        added_ms = samples.size * 1000.0 / self._rate
        if self._buffered_ms() + added_ms > self.options.max_input_audio_ms:
            raise ProtocolError(
                "input_audio_buffer_too_large",
                f"The input audio buffer would exceed {self.options.max_input_audio_ms} ms; "
                "commit or clear it first.",
                "audio",
            )
        self._buffer += data if fmt.bytes_per_sample == 2 else samples.astype("<i2").tobytes()
        self._timeline_ms += added_ms
        if self._vad is None:
            return
        for decision in self._vad.feed(samples):
            if decision.kind == "speech_started":
                await self._speech_started(decision.audio_ms)
            else:
                await self._speech_stopped(decision.audio_ms)
        if not self._vad.in_speech:
            # While idle only the prefix padding can still become speech: drop the rest so
            # an open microphone streaming silence does not grow the buffer.
            cut = self._offset(self._vad.keep_from_ms())
            if cut:
                del self._buffer[:cut]
                self._buffer_start_ms += cut // 2 * 1000.0 / self._rate

    async def _speech_started(self, audio_start_ms: int) -> None:
        self._speech_item_id = self.ids.next("item")
        self._speech_start_ms = float(audio_start_ms)
        await self.emit(
            "input_audio_buffer.speech_started",
            audio_start_ms=audio_start_ms,
            item_id=self._speech_item_id,
        )
        td = self.session.turn_detection
        if td is not None and td.interrupt_response and self.active is not None:
            await self._cancel_active("turn_detected")

    async def _speech_stopped(self, audio_end_ms: int) -> None:
        item_id = self._speech_item_id or self.ids.next("item")
        self._speech_item_id = None
        await self.emit(
            "input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms, item_id=item_id
        )
        start, end = self._offset(self._speech_start_ms), self._offset(audio_end_ms)
        segment_ms = (end - start) // 2 * 1000.0 / self._rate
        del self._buffer[:end]
        self._buffer_start_ms += end // 2 * 1000.0 / self._rate
        await self._commit(item_id, segment_ms)
        td = self.session.turn_detection
        if td is not None and td.create_response and self.active is None:
            # With interrupt_response false and a response still running, no new response
            # is created (the real service may likewise skip it).
            self._start_response(parse_response_params(None, self.session, self.conversation))

    async def _commit(self, item_id: str, audio_ms: float) -> None:
        previous = self.conversation.last_id()
        await self.emit("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        item = user_audio_item(item_id, round(audio_ms))
        await self.add_item(item, None, done=True)
        if self.session.transcription is not None:
            transcript = set_transcript(item)
            await self.emit(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript=transcript,
                usage={"type": "duration", "seconds": round(audio_ms / 1000.0, 3)},
            )

    async def _on_commit(self, event: dict[str, Any]) -> None:
        audio_ms = self._buffered_ms()
        if audio_ms < MIN_COMMIT_MS:
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {audio_ms:.2f}ms of audio.",
            )
        item_id = self._speech_item_id or self.ids.next("item")
        self._reset_buffer()
        await self._commit(item_id, audio_ms)

    async def _on_clear(self, event: dict[str, Any]) -> None:
        self._reset_buffer()
        await self.emit("input_audio_buffer.cleared")

    # --- conversation ---------------------------------------------------------------------------

    def _require_item(self, event: dict[str, Any]) -> StoredItem:
        item_id = expect_str(event.get("item_id"), "item_id", max_len=512)
        item = self.conversation.get(item_id)
        if item is None:
            raise ProtocolError("item_not_found", f"Item with id '{item_id}' not found.", "item_id")
        return item

    async def _on_item_create(self, event: dict[str, Any]) -> None:
        previous = event.get("previous_item_id")
        if previous is not None:
            previous = expect_str(previous, "previous_item_id", max_len=512)
            if previous != "root" and previous not in self.conversation:
                raise ProtocolError(
                    "item_not_found",
                    f"Previous item with id '{previous}' not found.",
                    "previous_item_id",
                )
        item = parse_client_item(event.get("item"), "", self.session.input_format)
        if not item.wire["id"]:
            item.wire["id"] = self.ids.next("item")
        elif item.id in self.conversation:
            raise ProtocolError(
                "duplicate_item_id", f"Item with id '{item.id}' already exists.", "item.id"
            )
        else:
            self.ids.observe(item.id)
        await self.add_item(item, previous, done=True)

    async def _on_item_delete(self, event: dict[str, Any]) -> None:
        item = self._require_item(event)
        if self.active is not None and item.id in self.active.active_item_ids:
            raise ProtocolError(
                "item_in_progress",
                "Cannot delete an item while its response is in progress.",
                "item_id",
            )
        self.conversation.delete(item.id)
        await self.emit("conversation.item.deleted", item_id=item.id)

    async def _on_item_retrieve(self, event: dict[str, Any]) -> None:
        item = self._require_item(event)
        await self.emit("conversation.item.retrieved", item=item.wire)

    async def _on_item_truncate(self, event: dict[str, Any]) -> None:
        item = self._require_item(event)
        content_index = expect_int(event.get("content_index"), "content_index", minimum=0)
        audio_end_ms = expect_int(event.get("audio_end_ms"), "audio_end_ms", minimum=0)
        wire = item.wire
        content = wire.get("content") or []
        if (
            wire.get("role") != "assistant"
            or content_index >= len(content)
            or (content[content_index].get("type") != "output_audio")
        ):
            raise ProtocolError(
                "invalid_value", "Only assistant audio content can be truncated.", "content_index"
            )
        if wire.get("status") == "in_progress":
            raise ProtocolError(
                "item_in_progress",
                "Cannot truncate an item while its response is in progress.",
                "item_id",
            )
        if audio_end_ms > item.audio_ms:
            raise ProtocolError(
                "invalid_value",
                f"audio_end_ms ({audio_end_ms}) is longer than the audio ({item.audio_ms} ms).",
                "audio_end_ms",
            )
        # Keep the part of the transcript that was heard, proportionally to the audio.
        part = content[content_index]
        transcript = part.get("transcript") or ""
        if item.audio_ms > 0:
            part["transcript"] = transcript[: len(transcript) * audio_end_ms // item.audio_ms]
        item.audio_ms = audio_end_ms
        item.measure()
        await self.emit(
            "conversation.item.truncated",
            item_id=item.id,
            content_index=content_index,
            audio_end_ms=audio_end_ms,
        )

    # --- responses ------------------------------------------------------------------------------

    async def _on_response_create(self, event: dict[str, Any]) -> None:
        if self.active is not None:
            raise ProtocolError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self.active.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        self._start_response(
            parse_response_params(event.get("response"), self.session, self.conversation)
        )

    def _start_response(self, params: ResponseParams) -> None:
        items = params.input_items if params.input_items is not None else list(self.conversation)
        entries = [item.entry() for item in items]
        decision = decide(
            entries,
            [Tool.from_wire(t) for t in params.tools],
            tool_choice=params.tool_choice,
            instructions=params.instructions,
        )
        runner = ResponseRunner(self, params, decision, entries, self.conversation_id)
        if params.output_modalities == ["audio"]:
            self._voice_locked = True
        self.active = runner
        runner.task = asyncio.create_task(
            self._run_response(runner), name=f"local-model-{runner.id}"
        )

    async def _run_response(self, runner: ResponseRunner) -> None:
        try:
            await runner.run()
            if self.active is runner:
                self.active = None
            await self._evict()
        except ConnectionClosed:
            pass
        except Exception:  # keep the connection usable even if generation has a bug
            logger.exception("local model: response %s failed", runner.id)
        finally:
            if self.active is runner:
                self.active = None

    async def _cancel_active(self, reason: str) -> None:
        runner = self.active
        if runner is None or runner.task is None:
            return
        runner.request_cancel(reason)
        # The runner closes the response itself; wait so later events see it finished.
        await asyncio.gather(runner.task, return_exceptions=True)

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        response_id = event.get("response_id")
        if response_id is not None:
            response_id = expect_str(response_id, "response_id", max_len=512)
        if self.active is None or (response_id is not None and response_id != self.active.id):
            raise ProtocolError(
                "response_cancel_not_active", "Cancellation failed: no active response found."
            )
        await self._cancel_active("client_cancelled")

    async def _on_output_audio_clear(self, event: dict[str, Any]) -> None:
        # Over WebSocket the client owns playback; there is no server-side output buffer.
        return None
