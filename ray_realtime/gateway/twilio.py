"""Twilio Media Streams: the protocol of one call, without I/O.

Twilio's ``<Connect><Stream>`` opens a bidirectional WebSocket to the gateway
and sends JSON text messages: ``connected``, then ``start`` (the stream's and
call's sids, custom parameters and the media format: ``audio/x-mulaw``, 8000
Hz, mono), then ``media`` every 20 ms (base64 μ-law), ``dtmf`` on key presses,
``mark`` when audio sent before a mark has been played, and ``stop`` when the
call ends. The gateway sends ``media`` (base64 μ-law with the stream's sid),
``mark`` after each reply chunk, and ``clear`` to drop audio Twilio has
buffered but not yet played (the caller barged in).

:class:`TwilioStream` takes each received message in and hands commands out
(audio for the session, a barge-in, a hang-up with its reason, text to send
to Twilio); the server shell in :mod:`ray_realtime.gateway.server` performs
them. It also keeps the playback bookkeeping: which reply chunks Twilio has
confirmed as played (their marks came back), hence how much of the reply the
caller actually heard.

Also here: the ``X-Twilio-Signature`` check of the voice webhook and its
TwiML answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from xml.sax.saxutils import quoteattr

import numpy as np

from ray_realtime.gateway.audio import mulaw_decode

__all__ = [
    "AudioIn",
    "BargeIn",
    "CallStarted",
    "Command",
    "Digit",
    "Hangup",
    "Heard",
    "Send",
    "TwilioStream",
    "connect_twiml",
    "twilio_signature",
    "valid_twilio_signature",
]

MAX_MESSAGE_BYTES = 64 * 1024
"""Largest message accepted from Twilio (a 20 ms media message is ~300 bytes)."""

MAX_MEDIA_BYTES = 8_000
"""Largest decoded media payload: one second of μ-law."""

MAX_PENDING_MARKS = 4_096
"""Reply chunks awaiting their mark; older ones are forgotten beyond this."""

_MAX_SID = 128


@dataclass(frozen=True, slots=True)
class CallStarted:
    """The stream started: open a session for this call."""

    stream_sid: str
    call_sid: str
    custom_parameters: dict[str, str]


@dataclass(frozen=True, slots=True)
class AudioIn:
    """Caller audio (μ-law 8 kHz) for the session."""

    audio: bytes


@dataclass(frozen=True, slots=True)
class BargeIn:
    """The caller spoke over reply audio: interrupt the session's response."""

    heard_ms: float


@dataclass(frozen=True, slots=True)
class Heard:
    """Twilio confirmed ``ms`` more milliseconds of this reply item as played:
    feed the call's playback tracker (truncation follows what was heard)."""

    item_id: str
    content_index: int
    ms: float


@dataclass(frozen=True, slots=True)
class Digit:
    """The caller pressed a key."""

    digit: str


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call; ``error`` says whether it ends because of bad input."""

    reason: str
    error: bool


@dataclass(frozen=True, slots=True)
class Send:
    """A text message for Twilio."""

    text: str


Command = CallStarted | AudioIn | BargeIn | Digit | Hangup | Heard | Send
ReplyItem = tuple[str, int]
"""``(item_id, content_index)`` of the reply a chunk of audio belongs to."""
State = Literal["connecting", "streaming", "closed"]


class TwilioStream:
    """The state of one Twilio Media Stream (one phone call).

    ``barge_in_rms`` and ``barge_in_frames``: caller audio louder than this
    (int16 RMS) for this many consecutive frames while reply audio is still
    playing is a barge-in; ``None`` leaves barge-in to the model's own voice
    activity detection (its ``audio_interrupted``).
    """

    def __init__(
        self,
        *,
        barge_in_rms: float | None = 1_000.0,
        barge_in_frames: int = 3,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.state: State = "connecting"
        self.stream_sid = ""
        self.call_sid = ""
        self._barge_in_rms = barge_in_rms
        self._barge_in_frames = barge_in_frames
        self._loud_frames = 0
        self._max_message_bytes = max_message_bytes
        # mark name -> milliseconds of reply audio sent before it (since the
        # last mark) and the reply item it belongs to (None: unknown)
        self._pending: OrderedDict[str, tuple[float, ReplyItem | None]] = OrderedDict()
        self._mark_counter = 0
        self.sent_ms = 0.0
        """Reply audio sent to Twilio, in milliseconds."""
        self.heard_ms = 0.0
        """Reply audio Twilio confirmed as played (marks echoed), in milliseconds."""
        self.media_frames = 0
        """Caller media frames received."""

    @property
    def playing(self) -> bool:
        """Whether Twilio may still be playing reply audio (marks outstanding)."""
        return bool(self._pending)

    # -- from Twilio ------------------------------------------------------------

    def receive(self, message: str | bytes) -> list[Command]:
        """Commands for one message received from Twilio."""
        if self.state == "closed":
            return []
        if isinstance(message, bytes):
            return self._hangup("binary frame (Twilio sends JSON text)")
        if len(message) > self._max_message_bytes:
            return self._hangup(
                f"message of {len(message)} chars exceeds {self._max_message_bytes}"
            )
        try:
            data = json.loads(message)
        except ValueError:
            return self._hangup("malformed JSON")
        if not isinstance(data, dict) or not isinstance(data.get("event"), str):
            return self._hangup("message without an event name")
        event = data["event"]
        if event == "connected":
            return []
        if event == "start":
            return self._start(data)
        if self.state != "streaming":
            return self._hangup(f"{event!r} before 'start'")
        if event == "media":
            return self._media(data)
        if event == "mark":
            return self._mark(data)
        if event == "dtmf":
            digit = _field(data, "dtmf", "digit")
            if not isinstance(digit, str) or len(digit) != 1:
                return self._hangup("dtmf without a digit")
            return [Digit(digit)]
        if event == "stop":
            self.state = "closed"
            return [Hangup("the caller hung up", error=False)]
        return self._hangup(f"unknown event {event[:40]!r}")

    def _start(self, data: dict[str, Any]) -> list[Command]:
        if self.state != "connecting":
            return self._hangup("a second 'start'")
        start = data.get("start")
        if not isinstance(start, dict):
            return self._hangup("'start' without its body")
        stream_sid = start.get("streamSid", data.get("streamSid"))
        call_sid = start.get("callSid", "")
        if not (isinstance(stream_sid, str) and 0 < len(stream_sid) <= _MAX_SID):
            return self._hangup("'start' without a valid streamSid")
        if not (isinstance(call_sid, str) and len(call_sid) <= _MAX_SID):
            return self._hangup("'start' with an invalid callSid")
        fmt = start.get("mediaFormat")
        if not isinstance(fmt, dict) or (
            fmt.get("encoding"),
            _as_int(fmt.get("sampleRate")),
            _as_int(fmt.get("channels", 1)),
        ) != ("audio/x-mulaw", 8000, 1):
            return self._hangup(
                f"unsupported media format {str(fmt)[:80]} (want audio/x-mulaw 8000 Hz mono)"
            )
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            return self._hangup("customParameters is not an object")
        custom = {str(k)[:256]: str(v)[:1024] for k, v in list(params.items())[:64]}
        self.stream_sid, self.call_sid, self.state = stream_sid, call_sid, "streaming"
        return [CallStarted(stream_sid, call_sid, custom)]

    def _media(self, data: dict[str, Any]) -> list[Command]:
        media = data.get("media")
        if not isinstance(media, dict):
            return self._hangup("'media' without its body")
        track = media.get("track", "inbound")
        if track not in ("inbound", "inbound_track"):
            return []  # only the caller's track is ours to hear
        payload = media.get("payload")
        if not isinstance(payload, str):
            return self._hangup("'media' without a payload")
        if len(payload) > (MAX_MEDIA_BYTES * 4) // 3 + 4:
            return self._hangup(f"media payload of {len(payload)} chars is too large")
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return self._hangup("media payload is not base64")
        self.media_frames += 1
        commands: list[Command] = [AudioIn(audio)]
        if self._barge_in_rms is not None and self.playing and audio:
            samples = mulaw_decode(audio).astype(np.float64)
            loud = float(np.sqrt(np.mean(samples * samples))) >= self._barge_in_rms
            self._loud_frames = self._loud_frames + 1 if loud else 0
            if self._loud_frames >= self._barge_in_frames:
                commands.extend(self._barge_in())
        else:
            self._loud_frames = 0
        return commands

    def _mark(self, data: dict[str, Any]) -> list[Command]:
        name = _field(data, "mark", "name")
        if not isinstance(name, str):
            return self._hangup("'mark' without a name")
        # Marks arrive in the order sent; one coming back means everything
        # sent before it has played. Unknown names (cleared ones) are ignored.
        heard: list[Command] = []
        if name in self._pending:
            while self._pending:
                key, (ms, item) = self._pending.popitem(last=False)
                heard.extend(self._heard(ms, item))
                if key == name:
                    break
        return heard

    def _heard(self, ms: float, item: ReplyItem | None) -> list[Command]:
        self.heard_ms += ms
        return [] if item is None else [Heard(item[0], item[1], ms)]

    def _barge_in(self) -> list[Command]:
        self._loud_frames = 0
        commands: list[Command] = [Send(self.clear_message()), BargeIn(self.heard_ms)]
        self._pending.clear()
        return commands

    def _hangup(self, reason: str) -> list[Command]:
        self.state = "closed"
        return [Hangup(reason, error=True)]

    # -- to Twilio --------------------------------------------------------------

    def reply_audio(self, mulaw: bytes, ms: float, item: ReplyItem | None = None) -> list[Command]:
        """A chunk of reply audio (``ms`` long, of reply ``item``): its ``media``
        message and a ``mark``; when the mark comes back, a :class:`Heard`."""
        if self.state != "streaming" or not mulaw:
            return []
        self._mark_counter += 1
        name = f"r{self._mark_counter}"
        commands: list[Command] = []
        if len(self._pending) >= MAX_PENDING_MARKS:
            _, (ms_old, item_old) = self._pending.popitem(last=False)
            commands.extend(self._heard(ms_old, item_old))
        self._pending[name] = (ms, item)
        self.sent_ms += ms
        payload = base64.b64encode(mulaw).decode("ascii")
        media = {"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}}
        mark = {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}
        return [*commands, Send(json.dumps(media)), Send(json.dumps(mark))]

    def interrupted(self) -> list[Command]:
        """The session cut its reply off (``audio_interrupted``): drop what
        Twilio still has buffered."""
        if self.state != "streaming" or not self.playing:
            return []
        self._pending.clear()
        self._loud_frames = 0
        return [Send(self.clear_message())]

    def clear_message(self) -> str:
        """The ``clear`` message of this stream."""
        return json.dumps({"event": "clear", "streamSid": self.stream_sid})


def _field(data: dict[str, Any], section: str, name: str) -> Any:
    body = data.get(section)
    return body.get(name) if isinstance(body, dict) else None


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# -- the voice webhook ------------------------------------------------------------


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Twilio's request signature: HMAC-SHA1 (keyed with the account's auth
    token) of the full URL followed by each POST parameter's name and value,
    sorted by name; base64."""
    data = url + "".join(k + params[k] for k in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def valid_twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str], signature: str | None
) -> bool:
    """Whether ``signature`` (the ``X-Twilio-Signature`` header) is valid."""
    if not signature:
        return False
    expected = twilio_signature(auth_token, url, params)
    return hmac.compare_digest(expected.encode(), signature.encode())


def connect_twiml(stream_url: str, parameters: Mapping[str, str] | None = None) -> str:
    """TwiML connecting the call to a bidirectional Media Stream at ``stream_url``."""
    inner = "".join(
        f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>"
        for k, v in (parameters or {}).items()
    )
    stream = f"<Stream url={quoteattr(stream_url)}" + (f">{inner}</Stream>" if inner else "/>")
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect>{stream}</Connect></Response>'
