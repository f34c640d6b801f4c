"""The browser side of the gateway, without I/O: signed short-lived tokens
for ``/browser/stream`` and the messages between the page and the session.

A token is ``<expiry>.<nonce>.<signature>``: the expiry in Unix seconds, a
random nonce, and the URL-safe base64 HMAC-SHA256 of ``<expiry>.<nonce>``
keyed with the gateway's secret (``RAY_REALTIME_GATEWAY_SECRET`` or one
generated per gateway). The page fetches one from ``GET /browser/token`` on
the server that served it and opens the WebSocket with ``?token=``; a missing,
forged or expired token is refused with close code :data:`CLOSE_BAD_TOKEN`.

On the stream the page sends binary frames of PCM16 24 kHz mono microphone
audio and JSON text: ``{"type": "played", "item_id", "content_index", "ms"}``
as reply audio comes out of its speaker (fed to the call's playback tracker,
so barge-in truncation follows what was heard) and ``{"type": "interrupt"}``.
The gateway sends each reply chunk as a JSON ``audio`` header followed by the
binary PCM16, and the session's other events as JSON (:func:`event_message`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from ray_realtime.types.events import (
    RealtimeAudio,
    RealtimeAudioInterrupted,
    RealtimeError,
    RealtimeHistoryAdded,
    RealtimeHistoryUpdated,
    RealtimeRawModelEvent,
    RealtimeSessionEvent,
)
from ray_realtime.types.items import RealtimeItem

__all__ = [
    "CLOSE_BAD_TOKEN",
    "SECRET_ENV",
    "TOKEN_TTL_SECONDS",
    "Interrupt",
    "PageMessageError",
    "Played",
    "event_message",
    "make_token",
    "new_secret",
    "parse_page_message",
    "token_error",
]

SECRET_ENV = "RAY_REALTIME_GATEWAY_SECRET"
"""Environment variable holding the secret that signs browser tokens."""
TOKEN_TTL_SECONDS = 60.0
"""How long a browser token is valid."""
CLOSE_BAD_TOKEN = 4401
"""WebSocket close code for a missing, forged or expired token."""
_MAX_TOKEN_CHARS = 200
_MAX_ITEM_ID = 128


def new_secret() -> bytes:
    """A random secret for a gateway that was given none."""
    return secrets.token_bytes(32)


def _sign(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def make_token(secret: bytes, ttl: float = TOKEN_TTL_SECONDS, now: float | None = None) -> str:
    """A token valid for ``ttl`` seconds from ``now``."""
    expiry = int((time.time() if now is None else now) + ttl)
    payload = f"{expiry}.{secrets.token_urlsafe(12)}"
    return f"{payload}.{_sign(secret, payload)}"


def token_error(secret: bytes, token: str | None, now: float | None = None) -> str | None:
    """Why ``token`` is refused, or ``None`` when it is valid (signature
    compared in constant time)."""
    if not token:
        return "missing token"
    if len(token) > _MAX_TOKEN_CHARS or token.count(".") != 2:
        return "malformed token"
    payload, _, signature = token.rpartition(".")
    if not hmac.compare_digest(
        _sign(secret, payload).encode(), signature.encode("ascii", "replace")
    ):
        return "invalid token"
    expiry = payload.split(".", 1)[0]
    if not expiry.isdigit():
        return "malformed token"
    if int(expiry) < (time.time() if now is None else now):
        return "expired token"
    return None


class PageMessageError(ValueError):
    """A message from the page that is not one of ours."""


@dataclass(frozen=True, slots=True)
class Played:
    """The page played ``ms`` more milliseconds of this reply item."""

    item_id: str
    content_index: int
    ms: float


@dataclass(frozen=True, slots=True)
class Interrupt:
    """The page asks to cut the reply off."""


def parse_page_message(text: str) -> Played | Interrupt:
    """A JSON text message from the page; :class:`PageMessageError` when bad."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PageMessageError("malformed JSON") from exc
    if not isinstance(data, dict):
        raise PageMessageError("message is not an object")
    kind = data.get("type")
    if kind == "interrupt":
        return Interrupt()
    if kind == "played":
        item_id, index, ms = data.get("item_id"), data.get("content_index"), data.get("ms")
        if not (isinstance(item_id, str) and 0 < len(item_id) <= _MAX_ITEM_ID):
            raise PageMessageError("'played' without a valid item_id")
        if not (isinstance(index, int) and 0 <= index < 1024):
            raise PageMessageError("'played' without a valid content_index")
        if not (isinstance(ms, int | float) and 0 <= ms <= 60_000):
            raise PageMessageError("'played' without a valid ms")
        return Played(item_id, index, float(ms))
    raise PageMessageError(f"unknown message type {str(kind)[:40]!r}")


def _item_text(item: RealtimeItem) -> dict[str, str] | None:
    role = getattr(item, "role", None)
    if role not in ("user", "assistant"):
        return None
    parts: list[str] = []
    for part in getattr(item, "content", []):
        text = getattr(part, "transcript", None) or getattr(part, "text", None)
        if text:
            parts.append(text)
    return {"item_id": item.item_id, "role": role, "text": " ".join(parts)}


def event_message(event: RealtimeSessionEvent) -> dict[str, Any] | None:
    """The JSON message for the page about a session event (``None``: nothing
    to send; reply audio is sent by the caller of this, as binary)."""
    if isinstance(event, RealtimeAudio):
        return {
            "type": "audio",
            "item_id": event.item_id,
            "content_index": event.content_index,
            "bytes": len(event.audio.data),
        }
    if isinstance(event, RealtimeAudioInterrupted):
        return {"type": "audio_interrupted", "item_id": event.item_id}
    if isinstance(event, RealtimeHistoryUpdated | RealtimeHistoryAdded):
        items = event.history if isinstance(event, RealtimeHistoryUpdated) else [event.item]
        texts = [t for t in (_item_text(i) for i in items) if t is not None]
        return {"type": "transcript", "items": texts}
    if isinstance(event, RealtimeError):
        return {"type": "error", "message": str(event.error.get("message"))[:200]}
    if isinstance(event, RealtimeRawModelEvent):
        data: Any = event.data
        if data.type == "transcript_delta":
            return {"type": "transcript_delta", "item_id": data.item_id, "delta": data.delta}
        return None  # the raw stream is too chatty for the page
    return {"type": event.type}
