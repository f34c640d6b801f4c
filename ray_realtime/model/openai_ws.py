"""The OpenAI Realtime model over a WebSocket (GA protocol).

:class:`OpenAIRealtimeWebSocketModel` opens one WebSocket to the Realtime API,
turns :data:`~ray_realtime.types.model_inputs.RealtimeModelSendEvent`s into client
events and server events into :data:`~ray_realtime.types.model_events.RealtimeModelEvent`s.

Beyond translation it keeps three pieces of state the protocol leaves to the
client:

* **Response sequencing.** "Only one Response can write to the default
  Conversation at a time": a ``response.create`` asked for while a response is
  active (or one is already requested) is deferred until ``response.done`` and
  sent then; further requests coalesce into that one.
* **Truncation on interruption.** "The server will produce audio faster than
  realtime", so when the user interrupts, the item is truncated with
  ``conversation.item.truncate`` at the position actually played (from the
  playback tracker), never past the audio received.
* **Secret hygiene.** The API key goes into the ``Authorization`` header and
  nowhere else: not into logs (websockets' handshake debug log is redacted),
  events, exception messages or reprs.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import inspect
import itertools
import json
import logging
import os
import re
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from ray_realtime.exceptions import (
    ConfigError,
    InputTooLargeError,
    ModelConnectionError,
    ProtocolError,
    UserError,
)
from ray_realtime.model.conversion import (
    DEFAULT_MODEL_NAME,
    parse_audio_delta,
    server_event_to_model_events,
    server_event_type,
    tool_output_to_item,
    user_input_to_item,
)
from ray_realtime.model.interface import RealtimeModel, RealtimeModelListener
from ray_realtime.model.playback import RealtimePlaybackState, ReceivedAudioTracker
from ray_realtime.model.session_settings import settings_to_session_payload
from ray_realtime.netutil import is_loopback
from ray_realtime.types.config import (
    RealtimeModelConfig,
    RealtimeSessionModelSettings,
    validate_model_config,
    validate_model_settings,
)
from ray_realtime.types.model_events import (
    RealtimeModelAudioEvent,
    RealtimeModelAudioInterruptedEvent,
    RealtimeModelConnectionStatusEvent,
    RealtimeModelErrorEvent,
    RealtimeModelEvent,
    RealtimeModelExceptionEvent,
    RealtimeModelOtherEvent,
    RealtimeModelRawServerEvent,
)
from ray_realtime.types.model_inputs import (
    RealtimeModelSendAudio,
    RealtimeModelSendEvent,
    RealtimeModelSendInterrupt,
    RealtimeModelSendRawMessage,
    RealtimeModelSendSessionUpdate,
    RealtimeModelSendToolOutput,
    RealtimeModelSendUserInput,
)

__all__ = [
    "DEFAULT_REALTIME_URL",
    "OpenAIRealtimeSIPModel",
    "OpenAIRealtimeWebSocketModel",
    "get_api_key",
]

logger = logging.getLogger(__name__)

DEFAULT_REALTIME_URL = "wss://api.openai.com/v1/realtime"
"""The Realtime API endpoint; ``?model=<name>`` is appended."""
_OPENAI_HOST = "api.openai.com"

_MIB = 1 << 20
# "The client may choose how much audio to place in each event up to a maximum
# of 15 MiB" (input_audio_buffer.append); no client event needs to be larger.
_MAX_CLIENT_EVENT_BYTES = 15 * _MIB
_RECENT_IDS = 16  # client event ids remembered to recognise errors they cause

# Deepest nesting of arrays/objects accepted in a server event. GA events nest about 6
# levels (a tool's JSON schema in session.updated adds 2 per schema level); the bound
# keeps every later step (conversion, the wire codec's 511-level packer, logging) far
# from a recursion limit.
_MAX_EVENT_DEPTH = 100
# A "\uD800".."\uDFFF" escape: the only way a lone surrogate reaches a parsed event.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# A code point of a surrogate: after json.loads, pairs have become one character, so
# any left is a lone one.
_SURROGATE = re.compile("[\ud800-\udfff]")
_LOG_TEXT = 200  # characters of a peer's error message quoted in a log line

_ALREADY_ACTIVE = "conversation_already_has_active_response"
_CANCEL_NOT_ACTIVE = "response_cancel_not_active"

ConnectionStatus = Literal["connecting", "connected", "disconnected"]


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class _RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger for websockets that removes secrets from messages.

    websockets logs every handshake header at DEBUG ("> Authorization: Bearer
    ..."); with this adapter an application that turns DEBUG on still never
    sees the key.
    """

    def __init__(self, base: logging.Logger, secrets: tuple[str, ...]) -> None:
        super().__init__(base, {})
        self._secrets = secrets

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args!r}"
        self.logger.log(level, "%s", _scrub(text, self._secrets), **kwargs)


def _too_deep(value: Any, limit: int = _MAX_EVENT_DEPTH) -> bool:
    """Whether parsed JSON nests arrays/objects deeper than ``limit`` (iterative, linear
    in the number of containers)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > limit:
            return True
        for child in container.values() if isinstance(container, dict) else container:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def _without_lone_surrogates(value: Any) -> Any:
    """``value`` with every lone UTF-16 surrogate in its strings (keys included) replaced
    by U+FFFD: such a string cannot be encoded as UTF-8, so it could not be logged,
    printed or sent over the wire codec."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_lone_surrogates(v) for v in value]
    return value


# Below this a frame is parsed whole: splitting the delta out pays off on audio.
_SPLIT_MIN_CHARS = 512


def _too_large(event_type: Any, size: int) -> InputTooLargeError:
    return InputTooLargeError(
        f"client event {event_type!r} is {size} bytes, over the "
        f"{_MAX_CLIENT_EVENT_BYTES}-byte limit",
        size,
        _MAX_CLIENT_EVENT_BYTES,
    )


def _safe_url(url: str, secrets: tuple[str, ...]) -> str:
    """The URL without its query (which may hold credentials), for messages."""
    parts = urlsplit(url)
    return _scrub(f"{parts.scheme}://{parts.netloc}{parts.path}", secrets)


def _is_openai(scheme: str, host: str | None) -> bool:
    """Whether the URL is OpenAI's own endpoint (the only place the
    environment's ``OPENAI_API_KEY`` is sent)."""
    return scheme == "wss" and (host or "").lower() == _OPENAI_HOST


async def get_api_key(key: str | Callable[[], Any] | None) -> str | None:
    """The API key: ``key`` itself, what a (sync or async) callable returns,
    or, for ``None``, the ``OPENAI_API_KEY`` environment variable."""
    return await _resolve_api_key(key, from_env=True)


async def _resolve_api_key(value: Any, *, from_env: bool) -> str | None:
    """The API key from the config value (string, or sync/async callable), else
    (``from_env``) from ``OPENAI_API_KEY``."""
    if value is None or value == "":
        return (os.environ.get("OPENAI_API_KEY") or None) if from_env else None
    if isinstance(value, str):
        return value
    if callable(value):
        result = value()
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, str):
            raise ConfigError(
                f"the api_key callable must return a string, not {type(result).__name__}"
            )
        return result or None
    raise ConfigError(f"api_key must be a string or a callable, not {type(value).__name__}")


class OpenAIRealtimeWebSocketModel(RealtimeModel):
    """A :class:`RealtimeModel` speaking the OpenAI Realtime (GA) protocol over
    a WebSocket.

    ``emit_raw_server_events`` also reports every decoded server event as a
    :class:`RealtimeModelRawServerEvent` (before its converted events).
    ``max_message_bytes`` and ``max_queue`` bound what the socket buffers from
    the server; ``open_timeout`` and ``close_timeout`` bound the handshakes.
    """

    def __init__(
        self,
        *,
        emit_raw_server_events: bool = False,
        max_message_bytes: int = 16 * _MIB,
        max_queue: int = 32,
        open_timeout: float = 10.0,
        close_timeout: float = 5.0,
    ) -> None:
        if max_message_bytes <= 0 or max_queue <= 0 or open_timeout <= 0 or close_timeout <= 0:
            raise ConfigError("socket bounds and timeouts must be positive")
        self._emit_raw = emit_raw_server_events
        self._max_message_bytes = max_message_bytes
        self._max_queue = max_queue
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout

        self._listeners: list[RealtimeModelListener] = []
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._status: ConnectionStatus | None = None
        self._settings: dict[str, Any] = {}
        # The GA session object last sent: the effective audio settings.
        self._session: dict[str, Any] = {}

        self._playback_tracker: Any | None = None
        self._received = ReceivedAudioTracker()

        # Response sequencing (see the module docstring).
        # Ids of responses created and not done, oldest first (a dict as an ordered set,
        # bounded: a server that never sends response.done cannot grow it).
        self._active_responses: dict[str, None] = {}
        self._create_in_flight: str | None = None
        self._create_deferred = False
        # Set when the server reported an active response we never saw created;
        # cleared by the next response.done.
        self._unseen_response_active = False
        self._recent_creates: deque[str] = deque(maxlen=_RECENT_IDS)
        self._recent_cancels: deque[str] = deque(maxlen=_RECENT_IDS)

        self._id_prefix = uuid.uuid4().hex[:8]
        self._id_counter = itertools.count(1)

    def __repr__(self) -> str:
        return f"OpenAIRealtimeWebSocketModel(status={self._status!r})"

    # -- listeners ---------------------------------------------------------

    def add_listener(self, listener: RealtimeModelListener) -> None:
        """Start delivering events to ``listener`` (once, however often added)."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def remove_listener(self, listener: RealtimeModelListener) -> None:
        """Stop delivering events to ``listener``."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    async def _emit(self, event: RealtimeModelEvent) -> None:
        # A listener "must not raise"; if one does, the others still get the
        # event, the reader goes on, and the failing listener is told (once)
        # with an exception event, so its readers hear of it, not a log only.
        for listener in tuple(self._listeners):
            try:
                await listener.on_event(event)
            except Exception as exc:
                logger.exception(
                    "realtime model listener %r failed on a %s event", listener, event.type
                )
                if isinstance(event, RealtimeModelExceptionEvent):
                    continue  # it fails on reports too: do not loop
                report = RealtimeModelExceptionEvent(
                    message=f"{type(exc).__name__}: {exc}",
                    exception_type=type(exc).__name__,
                    context=f"a listener handling a {event.type} event",
                )
                with contextlib.suppress(Exception):
                    await listener.on_event(report)

    async def _set_status(self, status: ConnectionStatus) -> None:
        if self._status == status:
            return
        self._status = status
        await self._emit(RealtimeModelConnectionStatusEvent(status=status))

    # -- connection --------------------------------------------------------

    async def connect(self, options: RealtimeModelConfig) -> None:
        """Open the WebSocket, send ``session.update`` with
        ``options["initial_model_settings"]`` and start reading events.

        Raises :class:`ConfigError` for a bad config (or no API key) and
        :class:`ModelConnectionError` when the connection cannot be opened.
        """
        if self._ws is not None:
            if self._reader is not None and not self._reader.done():
                raise UserError("the model is already connected; close() it first")
            await self.close()  # the server closed the last connection: clean up
        config = validate_model_config(options)
        settings: dict[str, Any] = dict(config.get("initial_model_settings") or {})
        # Build the first session.update before connecting: a settings error is
        # the caller's to fix and should not cost a connection.
        call_id = config.get("call_id")
        session_payload = settings_to_session_payload(settings, default_formats=not call_id)
        # As the SDK: traces are on ("auto") unless the settings say otherwise.
        session_payload.setdefault("tracing", "auto")

        if call_id:
            # A call attached by id (SIP): its model and formats are the call's.
            default_url = f"{DEFAULT_REALTIME_URL}?call_id={quote(call_id, safe='')}"
        else:
            model_name = str(settings.get("model_name") or DEFAULT_MODEL_NAME)
            default_url = f"{DEFAULT_REALTIME_URL}?model={quote(model_name, safe='')}"
        url = config.get("url") or default_url
        parts = urlsplit(url)
        loopback = is_loopback(parts.hostname)
        headers, secrets = await self._auth_headers(config, parts.scheme, parts.hostname, loopback)

        self._closing = False
        await self._set_status("connecting")
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                # PCM audio does not compress and deflate costs CPU per frame.
                compression=None,
                max_size=self._max_message_bytes,
                max_queue=self._max_queue,
                open_timeout=self._open_timeout,
                close_timeout=self._close_timeout,
                proxy=None if loopback else True,
                logger=_RedactingLogger(logging.getLogger("websockets.client"), secrets),
            )
        except (OSError, TimeoutError, WebSocketException) as exc:
            await self._set_status("disconnected")
            message = _scrub(
                f"could not connect to the realtime model at {_safe_url(url, secrets)}: "
                f"{type(exc).__name__}: {exc}",
                secrets,
            )
            # "from None": the original exception may reference the request,
            # headers included.
            raise ModelConnectionError(message) from None

        self._ws = ws
        self._settings = settings
        self._session = session_payload
        self._reset_connection_state()
        self._playback_tracker = config.get("playback_tracker")
        self._set_output_format(session_payload["audio"]["output"].get("format", "pcm16"))
        logger.info("connected to the realtime model at %s", _safe_url(url, secrets))

        try:
            await self._send({"type": "session.update", "session": session_payload})
        except ModelConnectionError:
            await self.close()
            raise
        await self._set_status("connected")
        self._reader = asyncio.create_task(self._read_loop(ws), name="realtime-model-reader")

    async def _auth_headers(
        self, config: RealtimeModelConfig, scheme: str, host: str | None, loopback: bool
    ) -> tuple[dict[str, str], tuple[str, ...]]:
        """The handshake headers and the secrets they hold.

        Credentials (an API key or explicit headers) never travel over plain
        ``ws://`` except to a loopback host, and the environment's
        ``OPENAI_API_KEY`` goes to OpenAI's own endpoint only: a custom ``url``
        gets a key only when ``api_key`` (or ``headers``) says so.
        """
        plaintext = scheme == "ws" and not loopback
        if "headers" in config:
            # Exactly the headers given (Azure: {"api-key": ...}); all values
            # are treated as secrets.
            headers = dict(config["headers"])
            if headers and plaintext:
                raise ConfigError(
                    f"refusing to send headers unencrypted to {host!r}: use a wss:// URL"
                )
            return headers, tuple(v for v in headers.values() if len(v) >= 4)
        key = await _resolve_api_key(config.get("api_key"), from_env=_is_openai(scheme, host))
        if key is None:
            if scheme == "ws" and loopback:
                return {}, ()  # a local test or proxy server needs no key
            if not _is_openai(scheme, host):
                raise ConfigError(
                    f"no credentials for {host!r}: pass api_key or headers in the model "
                    "config (headers={} for an endpoint that needs none); the "
                    "OPENAI_API_KEY environment variable is sent only to OpenAI's own "
                    "endpoint"
                )
            raise ConfigError(
                "no OpenAI API key: pass it as api_key in the model config "
                "(a string or a function returning one) or set the OPENAI_API_KEY "
                "environment variable"
            )
        if plaintext:
            raise ConfigError(
                f"refusing to send the API key unencrypted to {host!r}: use a wss:// URL"
            )
        return {"Authorization": f"Bearer {key}"}, (key,)

    def _reset_connection_state(self) -> None:
        self._received.reset()
        self._active_responses.clear()
        self._create_in_flight = None
        self._create_deferred = False
        self._unseen_response_active = False
        self._recent_creates.clear()
        self._recent_cancels.clear()

    def _set_output_format(self, fmt: Any) -> None:
        # Both trackers turn bytes into milliseconds, which depends on the format.
        self._received.set_audio_format(fmt)
        if self._playback_tracker is not None:
            self._playback_tracker.set_audio_format(fmt)

    async def close(self) -> None:
        """Close the connection and stop the reader; idempotent."""
        self._closing = True
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            # Closing the socket ends the reader; it is cancelled only if it
            # does not end in time (e.g. a listener that hangs).
            done, _ = await asyncio.wait({reader}, timeout=self._close_timeout)
            if not done:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        if self._status is not None:
            await self._set_status("disconnected")

    # -- sending -----------------------------------------------------------

    def _next_event_id(self) -> str:
        return f"evt_rr{self._id_prefix}{next(self._id_counter)}"

    async def _send(self, event: dict[str, Any]) -> str:
        """Send one client event (given an ``event_id`` if it has none);
        returns its ``event_id``."""
        event_id = event.get("event_id")
        if not isinstance(event_id, str):
            event_id = self._next_event_id()
            event = {**event, "event_id": event_id}
        text = json.dumps(event, separators=(",", ":"))
        if len(text) > _MAX_CLIENT_EVENT_BYTES:  # ASCII JSON: characters == bytes
            raise _too_large(event.get("type"), len(text))
        await self._send_text(text)
        return event_id

    async def _send_text(self, text: str) -> None:
        """Send one client event already serialised (within the size limit)."""
        ws = self._ws
        if ws is None:
            raise ModelConnectionError("the realtime model is not connected")
        try:
            await ws.send(text)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else "none"
            raise ModelConnectionError(
                f"the connection to the realtime model is closed (close code {code})"
            ) from None

    def _response_busy(self) -> bool:
        return (
            bool(self._active_responses)
            or self._create_in_flight is not None
            or self._unseen_response_active
        )

    async def _request_response(self) -> None:
        """Send ``response.create`` now, or defer it until the active response
        is done (never two responses at once; deferred requests coalesce)."""
        if self._response_busy():
            self._create_deferred = True
            return
        self._create_deferred = False
        event_id = self._next_event_id()
        # State first, then await: a concurrent caller sees the request in flight.
        self._create_in_flight = event_id
        self._recent_creates.append(event_id)
        try:
            await self._send({"type": "response.create", "event_id": event_id})
        except Exception:
            self._forget_create(event_id)
            raise

    def _forget_create(self, event_id: str) -> None:
        # A request that never went out must not leave the slot busy: every
        # later response would be deferred behind it and the session stall.
        if self._create_in_flight == event_id:
            self._create_in_flight = None

    async def _flush_deferred_response(self) -> None:
        if self._create_deferred and not self._response_busy():
            await self._request_response()

    async def send_event(self, event: RealtimeModelSendEvent) -> None:
        """Send one input to the model (see the module docstring for the rules)."""
        if isinstance(event, RealtimeModelSendAudio):
            await self._send_audio(event)
        elif isinstance(event, RealtimeModelSendUserInput):
            await self._send(
                {"type": "conversation.item.create", "item": user_input_to_item(event.user_input)}
            )
            await self._request_response()
        elif isinstance(event, RealtimeModelSendToolOutput):
            item = tool_output_to_item(event.tool_call.call_id, event.output)
            await self._send({"type": "conversation.item.create", "item": item})
            if event.start_response:
                await self._request_response()
        elif isinstance(event, RealtimeModelSendInterrupt):
            await self._interrupt(cancel=event.force_response_cancel or self._response_busy())
        elif isinstance(event, RealtimeModelSendSessionUpdate):
            await self._update_session(event.session_settings)
        elif isinstance(event, RealtimeModelSendRawMessage):
            await self._send_raw(event.message)
        else:
            raise UserError(f"unknown model input {type(event).__name__}")

    async def _send_audio(self, event: RealtimeModelSendAudio) -> None:
        encoded_size = 4 * ((len(event.audio) + 2) // 3)
        if encoded_size > _MAX_CLIENT_EVENT_BYTES:
            raise InputTooLargeError(
                f"audio chunk of {len(event.audio)} bytes is over the protocol's 15 MiB "
                "(base64) limit per input_audio_buffer.append",
                len(event.audio),
                _MAX_CLIENT_EVENT_BYTES * 3 // 4,
            )
        if event.audio:
            # base64 happens here and only here: audio is raw bytes everywhere else. The
            # event is written by hand (one per audio chunk): base64 text and our own
            # event id need no escaping, and json.dumps would scan the audio again.
            audio = binascii.b2a_base64(event.audio, newline=False).decode("ascii")
            text = (
                '{"type":"input_audio_buffer.append","audio":"'
                f'{audio}","event_id":"{self._next_event_id()}"}}'
            )
            if len(text) > _MAX_CLIENT_EVENT_BYTES:
                raise _too_large("input_audio_buffer.append", len(text))
            await self._send_text(text)
        if event.commit:
            await self._send({"type": "input_audio_buffer.commit"})
            # Turn detection off: "the client must manually trigger model response".
            if self._turn_detection() is None:
                await self._request_response()

    async def _update_session(self, new_settings: RealtimeSessionModelSettings) -> None:
        checked = validate_model_settings(new_settings)
        payload = settings_to_session_payload(checked)
        await self._send({"type": "session.update", "session": payload})
        # "Only the fields that are present in the `session.update` are updated."
        self._settings.update(checked)
        self._session = payload
        self._set_output_format(payload["audio"]["output"].get("format", "pcm16"))

    def _turn_detection(self) -> Any:
        """The turn detection in effect (``None``: off; the server's own
        default before any session.update)."""
        audio_input = self._session.get("audio", {}).get("input", {})
        return audio_input.get("turn_detection", {})

    async def _send_raw(self, message: Mapping[str, Any]) -> None:
        if not isinstance(message, Mapping) or not isinstance(message.get("type"), str):
            raise UserError("a raw client message must be a dict with a string 'type'")
        if "other_data" in message:
            # The SDK's shape: {"type": ..., "other_data": {...}}, merged into the body.
            other = message["other_data"]
            if not isinstance(other, Mapping):
                raise UserError("'other_data' of a raw client message must be a dict")
            message = {**{k: v for k, v in message.items() if k != "other_data"}, **other}
        if message["type"] == "response.create" and not self._response_busy():
            # Sent as is, but remembered so our own requests wait for it.
            event_id = message.get("event_id")
            if not isinstance(event_id, str):
                event_id = self._next_event_id()
            self._create_in_flight = event_id
            try:
                await self._send({**message, "event_id": event_id})
            except Exception:
                self._forget_create(event_id)
                raise
            return
        await self._send(dict(message))

    def _playback_state(self) -> RealtimePlaybackState:
        if self._playback_tracker is not None:
            state: RealtimePlaybackState = self._playback_tracker.get_state()
            return state
        return self._received.get_state()

    async def _interrupt(self, *, cancel: bool) -> None:
        """Cancel the response (if ``cancel``) and truncate the playing item at
        the played position."""
        # Read and reset the playback state before any await, so a concurrent
        # interruption (speech_started arriving meanwhile) does not truncate twice.
        state = self._playback_state()
        self._received.on_interrupted()
        if self._playback_tracker is not None:
            self._playback_tracker.on_interrupted()

        if cancel:
            self._recent_cancels.append(await self._send({"type": "response.cancel"}))

        item_id = state.get("current_item_id")
        content_index = state.get("current_item_content_index")
        elapsed = state.get("elapsed_ms")
        if item_id is None or content_index is None or elapsed is None:
            return
        received = self._received.received_ms(item_id, content_index)
        end_ms = elapsed if received is None else min(elapsed, received)
        # Whole milliseconds, rounded down: "If the audio_end_ms is greater than
        # the actual audio duration, the server will respond with an error."
        await self._send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": content_index,
                "audio_end_ms": max(0, int(end_ms)),
            }
        )
        await self._emit(
            RealtimeModelAudioInterruptedEvent(item_id=item_id, content_index=content_index)
        )

    # -- reading -----------------------------------------------------------

    async def _read_loop(self, ws: ClientConnection) -> None:
        close_error: str | None = None
        try:
            while True:
                try:
                    message = await ws.recv()
                except ConnectionClosed as exc:
                    if exc.rcvd is not None and exc.rcvd.code not in (1000, 1001):
                        close_error = f"code {exc.rcvd.code}, reason {exc.rcvd.reason!r}"
                    elif exc.rcvd is None:
                        close_error = "closed without a close frame"
                    break
                try:
                    await self._handle_message(message)
                except Exception as exc:
                    # Nothing a peer sends may stop the reader: report and go on.
                    if self._closing:
                        continue  # e.g. a truncate racing close(): not worth reporting
                    if isinstance(exc, (ProtocolError, ModelConnectionError)):
                        # The peer's fault, not ours: one line, no traceback.
                        logger.warning(
                            "bad realtime server event: %s", str(exc)[:_LOG_TEXT].rstrip()
                        )
                    else:
                        logger.exception("unexpected error handling a realtime server event")
                    await self._emit(
                        RealtimeModelExceptionEvent(
                            message=str(exc),
                            exception_type=type(exc).__name__,
                            context="handling a server event",
                        )
                    )
        finally:
            if not self._closing:
                if close_error is not None:
                    await self._emit(
                        RealtimeModelExceptionEvent(
                            message=f"the realtime model closed the connection ({close_error})",
                            exception_type="ModelConnectionError",
                            context="reading server events",
                        )
                    )
                await self._set_status("disconnected")

    async def _handle_message(self, message: str | bytes) -> None:
        """Parse one frame and handle its event.

        Anything a server sends is bounded here before it goes further: a frame that
        is not a JSON object, or nests deeper than ``_MAX_EVENT_DEPTH``, raises
        :class:`ProtocolError` (the reader reports it as an exception event with one
        warning line and goes on); lone UTF-16 surrogates in strings become U+FFFD, so
        every event can be printed and cross the wire codec.
        """
        if isinstance(message, bytes):
            raise ProtocolError(
                f"unexpected binary frame ({len(message)} bytes); server events are JSON text"
            )
        split = parse_audio_delta(message) if len(message) >= _SPLIT_MIN_CHARS else None
        if split is not None:
            data, audio = split
            # No backslash anywhere (see parse_audio_delta): no lone surrogate to replace.
            if _too_deep(data):
                raise ProtocolError(
                    f"server event nests deeper than {_MAX_EVENT_DEPTH} arrays/objects"
                )
            if self._emit_raw:
                await self._emit(RealtimeModelRawServerEvent(data=data))
            await self._handle_server_event(data, audio)
            return
        try:
            data = json.loads(message)
        except RecursionError:
            raise ProtocolError(
                f"server event nests deeper than {_MAX_EVENT_DEPTH} arrays/objects"
            ) from None
        except ValueError as exc:
            raise ProtocolError(f"malformed JSON from the server: {exc}") from None
        if not isinstance(data, dict):
            raise ProtocolError(f"server event must be a JSON object, got {type(data).__name__}")
        if _too_deep(data):
            raise ProtocolError(f"server event nests deeper than {_MAX_EVENT_DEPTH} arrays/objects")
        if "\\u" in message and _SURROGATE_ESCAPE.search(message):
            data = _without_lone_surrogates(data)
        if self._emit_raw:
            await self._emit(RealtimeModelRawServerEvent(data=data))
        await self._handle_server_event(data)

    async def _handle_server_event(self, data: dict[str, Any], audio: bytes | None = None) -> None:
        kind = server_event_type(data)
        if kind == "input_audio_buffer.speech_started":
            # The user started speaking over the assistant. "If `true` then the
            # response will be cancelled" (interrupt_response): the server
            # cancels; the client only truncates what was not heard.
            turn_detection = self._turn_detection()
            if not (
                isinstance(turn_detection, Mapping)
                and turn_detection.get("interrupt_response") is False
            ):
                await self._interrupt(cancel=False)

        # Sequencing state is updated before conversion (with lenient field
        # access) so a malformed response event cannot leave it stuck busy.
        if kind == "response.created":
            self._create_in_flight = None
            self._active_responses[self._response_id(data)] = None
            if len(self._active_responses) > _RECENT_IDS:
                del self._active_responses[next(iter(self._active_responses))]
        elif kind == "response.done":
            self._active_responses.pop(self._response_id(data), None)
            self._unseen_response_active = False

        try:
            events = server_event_to_model_events(data, audio)
        except ProtocolError:
            if kind == "response.done":
                await self._flush_deferred_response()
            raise

        if kind == "error":
            if self._handle_response_error(events):
                events = [RealtimeModelOtherEvent(data=data)]
            for event in events:
                await self._emit(event)
            # A failed response.create frees the slot for a deferred one.
            await self._flush_deferred_response()
            return
        for event in events:
            if isinstance(event, RealtimeModelAudioEvent):
                self._received.on_audio(event.item_id, event.content_index, len(event.data))
            await self._emit(event)
        if kind == "response.done":
            await self._flush_deferred_response()

    @staticmethod
    def _response_id(data: Mapping[str, Any]) -> str:
        response = data.get("response")
        response_id = response.get("id") if isinstance(response, Mapping) else None
        return response_id if isinstance(response_id, str) else ""

    def _handle_response_error(self, events: list[RealtimeModelEvent]) -> bool:
        """Update sequencing state for an error; True when the error was an
        expected race we handled (it is then reported as an other event)."""
        error = events[0].error if events and isinstance(events[0], RealtimeModelErrorEvent) else {}
        event_id = error.get("event_id")
        code = error.get("code")
        if event_id is None:
            return False
        if event_id == self._create_in_flight:
            # The request failed: no response.created will come for it.
            self._create_in_flight = None
        if code == _ALREADY_ACTIVE and event_id in self._recent_creates:
            # A response we did not see coming (server VAD) beat ours; ask
            # again once it is done. Not flushed now: the server says one is
            # active, and its response.done will flush.
            self._create_deferred = True
            self._unseen_response_active = True
            return True
        # Cancelling a response that has just finished is a harmless race.
        return code == _CANCEL_NOT_ACTIVE and event_id in self._recent_cancels


class OpenAIRealtimeSIPModel(OpenAIRealtimeWebSocketModel):
    """The OpenAI Realtime model attached to a SIP-originated call by its id:
    the model config must carry ``call_id`` (the call's model and audio
    formats are the call's). In actor mode pass ``call_id`` in the run's
    ``model_config``: the session actor opens the same connection."""

    async def connect(self, options: RealtimeModelConfig) -> None:
        """Attach to the call ``options["call_id"]``; a :class:`ConfigError`
        without one."""
        if not options.get("call_id"):
            raise ConfigError("OpenAIRealtimeSIPModel needs call_id in the model config")
        await super().connect(options)
