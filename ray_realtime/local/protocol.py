"""Wire-level helpers for the local model server: ids, errors and field validation.

Client events are plain JSON objects; these helpers validate them by hand (the
production package must not depend on the ``openai`` SDK) and raise
:class:`ProtocolError` with a specific ``code`` and the offending ``param`` path, which
the connection turns into an ``error`` server event.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ID_WIDTH",
    "MAX_JSON_DEPTH",
    "IdFactory",
    "ProtocolError",
    "ServerOptions",
    "expect_base64",
    "expect_bool",
    "expect_dict",
    "expect_int",
    "expect_list",
    "expect_number",
    "expect_str",
    "json_too_deep",
    "parse_append_event",
    "reject_unknown",
]

ID_WIDTH = 6
"""Digits of the zero-padded counters in generated ids (``item_000001``)."""

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays/objects accepted in a client event (and in JSON read from
user text). Realtime events nest about 6 levels; a tool's JSON schema adds 2 per level.
The bound keeps copying and re-serialising a value far from Python's recursion limit."""


@dataclass(frozen=True)
class ServerOptions:
    """Knobs shared by every connection of a :class:`~ray_realtime.local.LocalModelServer`."""

    audio_ms_per_char: float = 12.5
    audio_chunk_ms: int = 40
    pace_audio: bool = False
    max_event_bytes: int = 1 << 20
    max_input_audio_ms: int = 15 * 60 * 1000
    max_conversation_items: int = 4096
    max_conversation_bytes: int = 32 << 20
    max_reply_audio_ms: int = 5 * 60 * 1000
    max_session_seconds: float | None = None
    """End each session after this long, as the real service does at its cap
    (an ``error`` with code ``session_expired``, then close 1001); None: never."""


class IdFactory:
    """Deterministic per-connection ids: one zero-padded counter per prefix."""

    def __init__(self) -> None:
        self._counters: dict[str, int] = {}

    def next(self, prefix: str) -> str:
        """Return the next id for ``prefix`` (``event``, ``item``, ``resp``, ``call``, ...)."""
        n = self._counters.get(prefix, 0) + 1
        self._counters[prefix] = n
        return f"{prefix}_{n:0{ID_WIDTH}d}"

    def observe(self, used: str) -> None:
        """Move the counter past ``used`` when it has this factory's form
        (``item_000042``): a client that restores a conversation under its old
        ids must never meet them again in ids generated later."""
        prefix, _, digits = used.rpartition("_")
        if prefix and digits.isdigit() and len(digits) <= 18:
            self._counters[prefix] = max(self._counters.get(prefix, 0), int(digits))


class ProtocolError(Exception):
    """A client error reported to the client as an ``error`` event (never fatal)."""

    def __init__(
        self,
        code: str,
        message: str,
        param: str | None = None,
        *,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.error_type = error_type


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(value), "object" if isinstance(value, Mapping) else type(value).__name__
    )


def _wrong_type(param: str, expected: str, value: object) -> ProtocolError:
    return ProtocolError(
        "invalid_type",
        f"Invalid type for '{param}': expected {expected}, got {_type_name(value)}.",
        param,
    )


def expect_dict(value: object, param: str) -> dict[str, Any]:
    """``value`` as a JSON object, else an ``invalid_type`` error."""
    if not isinstance(value, dict):
        raise _wrong_type(param, "an object", value)
    return value


def expect_list(value: object, param: str, *, max_len: int | None = None) -> list[Any]:
    """``value`` as a JSON array (optionally bounded in length)."""
    if not isinstance(value, list):
        raise _wrong_type(param, "an array", value)
    if max_len is not None and len(value) > max_len:
        raise ProtocolError(
            "array_above_max_length",
            f"Invalid '{param}': array too long, expected at most {max_len} items.",
            param,
        )
    return value


def expect_str(
    value: object, param: str, *, max_len: int | None = None, pattern: str | None = None
) -> str:
    """``value`` as a string, optionally bounded in length and matching ``pattern``."""
    if not isinstance(value, str):
        raise _wrong_type(param, "a string", value)
    if max_len is not None and len(value) > max_len:
        raise ProtocolError(
            "string_above_max_length",
            f"Invalid '{param}': string too long, expected at most {max_len} characters.",
            param,
        )
    if pattern is not None and not re.fullmatch(pattern, value):
        raise ProtocolError(
            "invalid_value", f"Invalid '{param}': does not match pattern {pattern}.", param
        )
    return value


def expect_int(
    value: object, param: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an integer (booleans and non-integral floats are rejected)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(param, "an integer", value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ProtocolError(
            "invalid_value",
            f"Invalid '{param}': {value} is outside [{minimum}, {maximum}].",
            param,
        )
    return value


def expect_number(
    value: object, param: str, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    """``value`` as a finite number within bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong_type(param, "a number", value)
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ProtocolError("invalid_value", f"Invalid '{param}': not a finite number.", param)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ProtocolError(
            "invalid_value",
            f"Invalid '{param}': {number} is outside [{minimum}, {maximum}].",
            param,
        )
    return number


def expect_bool(value: object, param: str) -> bool:
    """``value`` as a boolean."""
    if not isinstance(value, bool):
        raise _wrong_type(param, "a boolean", value)
    return value


def expect_base64(value: object, param: str) -> bytes:
    """Decode a standard base64 string strictly (no stray characters)."""
    text = expect_str(value, param)
    try:
        # The strict decoder accepts only what the check below accepts, decoded alike,
        # and costs less (no regular expression pass over the text first).
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(
            "invalid_value", f"Invalid '{param}': not valid base64-encoded data.", param
        ) from None


def reject_unknown(obj: Mapping[str, Any], allowed: Iterable[str], prefix: str) -> None:
    """Reject keys of ``obj`` outside ``allowed`` with an ``unknown_parameter`` error."""
    allowed_set = set(allowed)
    for key in obj:
        if key not in allowed_set:
            param = f"{prefix}.{key}" if prefix else key
            raise ProtocolError("unknown_parameter", f"Unknown parameter: '{param}'.", param)


def json_too_deep(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` (parsed JSON) nests arrays/objects more than ``limit`` levels.

    Iterative and linear in the number of containers (scalars are never visited), so it
    is safe on any input ``json.loads`` accepted.
    """
    if not isinstance(value, (dict, list)):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > limit:
            return True
        children = container.values() if isinstance(container, dict) else container
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


_APPEND_HEAD = '{"type":"input_audio_buffer.append","audio":"'


def parse_append_event(message: str) -> tuple[dict[str, Any], bytes] | None:
    """``(json.loads(message), its audio decoded)`` for an
    ``input_audio_buffer.append`` written the usual way (``type`` first, then
    ``audio``), without scanning the audio as JSON; ``None`` for any other message
    (the full parser takes it).

    The audio is the raw text up to the next quote. That is its parsed value when it is
    valid base64 (no backslash, so no escape, and no control character); the rest of
    the message, parsed with the audio cut out, must hold no backslash either (no
    escape can spell another ``"audio"`` key) and no second ``"audio"`` key.
    """
    if not message.startswith(_APPEND_HEAD):
        return None
    start = len(_APPEND_HEAD)
    end = message.find('"', start)
    if end < 0:
        return None
    tail = message[end:]
    if len(tail) > 4096 or "\\" in tail or '"audio"' in tail:
        return None
    text = message[start:end]
    try:
        audio = binascii.a2b_base64(text, strict_mode=True)
        event = json.loads(_APPEND_HEAD + tail)
    except (binascii.Error, ValueError, RecursionError):
        return None  # the full parser decides
    if not isinstance(event, dict) or event.get("audio") != "" or json_too_deep(event):
        return None
    event["audio"] = text
    return event, audio
