"""Pure conversions between ray-realtime values and the OpenAI Realtime (GA) protocol.

No I/O here. The server-event converter is on the hot path (one call per audio
delta), so it checks fields by hand instead of building pydantic models: a
missing or wrong-typed field raises :class:`~ray_realtime.exceptions.ProtocolError`
naming the event type and the field; an event type it does not know becomes a
:class:`~ray_realtime.types.model_events.RealtimeModelOtherEvent`.

Events whose handling needs connection state (``response.created`` /
``response.done`` for response sequencing, ``input_audio_buffer.speech_started``
for truncation, audio deltas for playback bookkeeping) are converted here
statelessly; :mod:`ray_realtime.model.openai_ws` adds the stateful part.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

from ray_realtime.exceptions import ConfigError, ProtocolError, UserError
from ray_realtime.types.items import (
    AssistantAudio,
    AssistantMessageItem,
    AssistantText,
    InputAudio,
    InputImage,
    InputText,
    RealtimeItem,
    RealtimeToolCallItem,
    SystemMessageItem,
    UserMessageItem,
)
from ray_realtime.types.model_events import (
    RealtimeModelAudioDoneEvent,
    RealtimeModelAudioEvent,
    RealtimeModelCachedTokensDetails,
    RealtimeModelErrorEvent,
    RealtimeModelEvent,
    RealtimeModelInputAudioTimeoutTriggeredEvent,
    RealtimeModelInputAudioTranscriptionCompletedEvent,
    RealtimeModelInputTokensDetails,
    RealtimeModelItemDeletedEvent,
    RealtimeModelItemUpdatedEvent,
    RealtimeModelOtherEvent,
    RealtimeModelOutputTokensDetails,
    RealtimeModelToolCallEvent,
    RealtimeModelTranscriptDeltaEvent,
    RealtimeModelTurnEndedEvent,
    RealtimeModelTurnStartedEvent,
    RealtimeModelUsageEvent,
)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "SERVER_EVENT_ALIASES",
    "audio_bytes_per_ms",
    "audio_format_to_protocol",
    "parse_audio_delta",
    "protocol_item_to_history_item",
    "server_event_to_model_events",
    "server_event_type",
    "tool_output_to_item",
    "usage_event",
    "user_input_to_item",
]

DEFAULT_MODEL_NAME = "gpt-realtime-2.1"
"""The model used when the settings name none (the SDK's default)."""

# ---------------------------------------------------------------------------
# Audio formats
# ---------------------------------------------------------------------------

# Our format names (the SDK's) and the GA format objects. "Only a 24kHz sample
# rate is supported" for audio/pcm; G.711 is 8 kHz, one byte per sample.
_FORMAT_TO_PROTOCOL: dict[str, dict[str, Any]] = {
    "pcm16": {"type": "audio/pcm", "rate": 24000},
    "g711_ulaw": {"type": "audio/pcmu"},
    "g711_alaw": {"type": "audio/pcma"},
}
# GA type names are accepted too, so settings written against the GA protocol work.
_FORMAT_ALIASES: dict[str, str] = {
    "pcm16": "pcm16",
    "audio/pcm": "pcm16",
    "g711_ulaw": "g711_ulaw",
    "audio/pcmu": "g711_ulaw",
    "g711_alaw": "g711_alaw",
    "audio/pcma": "g711_alaw",
}
# 24,000 samples/s x 2 bytes = 48 bytes per ms; 8,000 samples/s x 1 byte = 8.
_BYTES_PER_MS: dict[str, float] = {"pcm16": 48.0, "g711_ulaw": 8.0, "g711_alaw": 8.0}


def _format_name(format: Any) -> str:
    """Our name of an audio format given as our name, a GA type string or a GA
    format object; ``None`` is the protocol default (PCM16)."""
    if format is None:
        return "pcm16"
    if isinstance(format, Mapping):
        format = format.get("type", "audio/pcm")
    if isinstance(format, str):
        name = _FORMAT_ALIASES.get(format)
        if name is not None:
            return name
    raise ConfigError(f"unknown audio format {format!r}: use 'pcm16', 'g711_ulaw' or 'g711_alaw'")


def audio_format_to_protocol(format: Any) -> dict[str, Any]:
    """The GA ``audio.*.format`` object of an audio format."""
    return dict(_FORMAT_TO_PROTOCOL[_format_name(format)])


def audio_bytes_per_ms(format: Any) -> float:
    """Bytes of audio per millisecond in ``format`` (48 for PCM16 at 24 kHz,
    8 for G.711)."""
    return _BYTES_PER_MS[_format_name(format)]


# ---------------------------------------------------------------------------
# Client items
# ---------------------------------------------------------------------------


def _user_content_part(part: Any, index: int) -> dict[str, Any]:
    if not isinstance(part, Mapping):
        raise UserError(f"user input content[{index}] must be a dict, not {type(part).__name__}")
    kind = part.get("type")
    if kind == "input_text":
        text = part.get("text")
        if not isinstance(text, str):
            raise UserError(f"user input content[{index}].text must be a string")
        return {"type": "input_text", "text": text}
    if kind == "input_image":
        image_url = part.get("image_url")
        if not isinstance(image_url, str):
            raise UserError(f"user input content[{index}].image_url must be a string")
        result: dict[str, Any] = {"type": "input_image", "image_url": image_url}
        detail = part.get("detail")
        if detail is not None:
            result["detail"] = detail
        return result
    raise UserError(
        f"user input content[{index}].type must be 'input_text' or 'input_image', got {kind!r}"
    )


def user_input_to_item(user_input: Any) -> dict[str, Any]:
    """The ``conversation.item.create`` item of a user message (plain text, or
    ``{"type": "message", "role": "user", "content": [...]}``)."""
    if isinstance(user_input, str):
        return {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": user_input}],
        }
    if not isinstance(user_input, Mapping):
        raise UserError(f"user input must be a string or a dict, not {type(user_input).__name__}")
    if user_input.get("type", "message") != "message" or user_input.get("role", "user") != "user":
        raise UserError("user input must be a message with role 'user'")
    content = user_input.get("content")
    if not isinstance(content, (list, tuple)) or not content:
        raise UserError("user input content must be a non-empty list")
    return {
        "type": "message",
        "role": "user",
        "content": [_user_content_part(part, i) for i, part in enumerate(content)],
    }


def tool_output_to_item(call_id: str, output: str) -> dict[str, Any]:
    """The ``function_call_output`` item answering the call ``call_id``."""
    return {"type": "function_call_output", "call_id": call_id, "output": output}


# ---------------------------------------------------------------------------
# Field extraction (hand-checked; raises ProtocolError)
# ---------------------------------------------------------------------------


def _where(event_type: str, key: str) -> str:
    return f"server event {event_type!r}: field {key!r}"


def _req_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if isinstance(value, str):
        return value
    if value is None:
        raise ProtocolError(f"{_where(where, key)} is missing")
    raise ProtocolError(f"{_where(where, key)} must be a string, got {type(value).__name__}")


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ProtocolError(f"{_where(where, key)} must be a string, got {type(value).__name__}")


def _req_int(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    # bool is an int subclass; a boolean here is a protocol error, not 0 or 1.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if value is None:
        raise ProtocolError(f"{_where(where, key)} is missing")
    raise ProtocolError(f"{_where(where, key)} must be an integer, got {type(value).__name__}")


def _req_dict(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if isinstance(value, Mapping):
        return value
    if value is None:
        raise ProtocolError(f"{_where(where, key)} is missing")
    raise ProtocolError(f"{_where(where, key)} must be an object, got {type(value).__name__}")


# ---------------------------------------------------------------------------
# Protocol items -> history items
# ---------------------------------------------------------------------------


def _content_list(item: Mapping[str, Any], where: str) -> list[Mapping[str, Any]]:
    content = item.get("content")
    if content is None:
        return []
    if not isinstance(content, list):
        raise ProtocolError(f"{where}: item content must be a list, got {type(content).__name__}")
    for i, part in enumerate(content):
        if not isinstance(part, Mapping):
            raise ProtocolError(
                f"{where}: item content[{i}] must be an object, got {type(part).__name__}"
            )
    return content


def _system_item(
    item: Mapping[str, Any], item_id: str, previous: str | None, where: str
) -> SystemMessageItem:
    content = [
        InputText(text=_opt_str(part, "text", where))
        for part in _content_list(item, where)
        if part.get("type", "input_text") == "input_text"
    ]
    return SystemMessageItem(item_id=item_id, previous_item_id=previous, content=content)


def _user_item(
    item: Mapping[str, Any], item_id: str, previous: str | None, where: str
) -> UserMessageItem:
    content: list[InputText | InputAudio | InputImage] = []
    for part in _content_list(item, where):
        kind = part.get("type")
        if kind == "input_text":
            content.append(InputText(text=_opt_str(part, "text", where)))
        elif kind == "input_audio":
            # Audio bytes are never kept in history; the transcript is.
            content.append(InputAudio(transcript=_opt_str(part, "transcript", where)))
        elif kind == "input_image":
            content.append(
                InputImage(
                    image_url=_opt_str(part, "image_url", where),
                    detail=_opt_str(part, "detail", where),
                )
            )
        # Content types this version does not know are left out rather than
        # failing the whole item.
    return UserMessageItem(item_id=item_id, previous_item_id=previous, content=content)


_MESSAGE_STATUSES = ("in_progress", "completed", "incomplete")


def _assistant_item(
    item: Mapping[str, Any], item_id: str, previous: str | None, where: str
) -> AssistantMessageItem:
    content: list[AssistantText | AssistantAudio] = []
    for part in _content_list(item, where):
        kind = part.get("type")
        if kind is None:
            # "type" is optional in the schema; a transcript means audio.
            kind = "output_audio" if "transcript" in part or "audio" in part else "output_text"
        if kind in ("output_text", "text"):
            content.append(AssistantText(text=_opt_str(part, "text", where)))
        elif kind in ("output_audio", "audio"):
            content.append(AssistantAudio(transcript=_opt_str(part, "transcript", where)))
    status = _opt_str(item, "status", where)
    return AssistantMessageItem(
        item_id=item_id,
        previous_item_id=previous,
        status=status if status in _MESSAGE_STATUSES else None,  # type: ignore[arg-type]
        content=content,
    )


def protocol_item_to_history_item(
    item: Mapping[str, Any], previous_item_id: str | None = None, *, where: str = "item"
) -> RealtimeItem | None:
    """The history item of a protocol conversation item.

    Messages (system, user, assistant) and function calls become history items;
    ``function_call_output`` and item types this layer does not track (MCP)
    give ``None``: a tool's output is attached to its call item by the session.
    """
    if not isinstance(item, Mapping):
        raise ProtocolError(f"{where}: item must be an object, got {type(item).__name__}")
    kind = _req_str(item, "type", where)
    if kind == "message":
        item_id = _req_str(item, "id", where)
        role = _req_str(item, "role", where)
        if role == "assistant":
            return _assistant_item(item, item_id, previous_item_id, where)
        if role == "user":
            return _user_item(item, item_id, previous_item_id, where)
        if role == "system":
            return _system_item(item, item_id, previous_item_id, where)
        raise ProtocolError(f"{where}: unknown message role {role!r}")
    if kind == "function_call":
        status = _opt_str(item, "status", where)
        return RealtimeToolCallItem(
            item_id=_req_str(item, "id", where),
            previous_item_id=previous_item_id,
            call_id=_opt_str(item, "call_id", where),
            # An "incomplete" call is over too: it will not be completed later.
            status="in_progress" if status in (None, "in_progress") else "completed",
            arguments=_opt_str(item, "arguments", where) or "",
            name=_opt_str(item, "name", where) or "",
        )
    return None


# ---------------------------------------------------------------------------
# Server events -> model events
# ---------------------------------------------------------------------------

SERVER_EVENT_ALIASES: dict[str, str] = {
    # Beta (preview) names of the same events, still sent by some deployments.
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.text.delta": "response.output_text.delta",
}
"""Event names accepted as synonyms of their GA names."""

_Converter = Callable[[Mapping[str, Any], str], list[RealtimeModelEvent]]


def _error(event: Mapping[str, Any], t: str) -> list[RealtimeModelEvent]:
    error = _req_dict(event, "error", t)
    details: dict[str, Any] = {"message": _req_str(error, "message", t)}
    for key in ("type", "code", "param", "event_id"):
        value = _opt_str(error, key, t)
        if value is not None:
            details[key] = value
    return [RealtimeModelErrorEvent(error=details)]


def _item_updated(event: Mapping[str, Any], t: str) -> list[RealtimeModelEvent]:
    item = _req_dict(event, "item", t)
    history_item = protocol_item_to_history_item(
        item, _opt_str(event, "previous_item_id", t), where=f"server event {t!r}"
    )
    if history_item is None:
        return [RealtimeModelOtherEvent(data=dict(event))]
    return [RealtimeModelItemUpdatedEvent(item=history_item)]


def _item_deleted(event: Mapping[str, Any], t: str) -> list[RealtimeModelEvent]:
    return [RealtimeModelItemDeletedEvent(item_id=_req_str(event, "item_id", t))]


def _transcription_completed(event: Mapping[str, Any], t: str) -> list[RealtimeModelEvent]:
    return [
        RealtimeModelInputAudioTranscriptionCompletedEvent(
            item_id=_req_str(event, "item_id", t), transcript=_req_str(event, "transcript", t)
        )
    ]


def _timeout_triggered(event: Mapping[str, Any], t: str) -> list[RealtimeModelEvent]:
    return [
        RealtimeModelInputAudioTimeoutTriggeredEvent(
            item_id=_req_str(event, "item_id", t),
            audio_start_ms=_req_int(event, "audio_start_ms", t),
            audio_end_ms=_req_int(event, "audio_end_ms", t),
        )
    ]


def _response_created(event: Mapping[str, Any], t: str) -> list[RealtimeModelEvent]:
    response = _req_dict(event, "response", t)
    return [RealtimeModelTurnStartedEvent(response_id=_opt_str(response, "id", t) or "")]


def _response_done(event: Mapping[str, Any], t: str) -> list[RealtimeModelEvent]:
    response = _req_dict(event, "response", t)
    ended = RealtimeModelTurnEndedEvent(
        response_id=_opt_str(response, "id", t) or "",
        status=_opt_str(response, "status", t) or "completed",
    )
    usage = response.get("usage")
    if not isinstance(usage, Mapping):
        return [ended]
    # Usage comes before the turn's end (as in the SDK), so a reader has the
    # turn's usage when it sees agent_end.
    return [usage_event(usage), ended]


def _tokens(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_event(usage: Mapping[str, Any]) -> RealtimeModelUsageEvent:
    """The usage event of a ``response.done``'s ``usage`` object. Lenient: a
    count that is missing or not an integer is left out (usage is reported,
    never a reason to fail a response)."""
    inputs = _tokens(usage, "input_tokens") or 0
    outputs = _tokens(usage, "output_tokens") or 0
    total = _tokens(usage, "total_tokens")
    in_details = usage.get("input_token_details")
    out_details = usage.get("output_token_details")
    input_details = None
    if isinstance(in_details, Mapping):
        cached = in_details.get("cached_tokens_details")
        input_details = RealtimeModelInputTokensDetails(
            text_tokens=_tokens(in_details, "text_tokens"),
            audio_tokens=_tokens(in_details, "audio_tokens"),
            image_tokens=_tokens(in_details, "image_tokens"),
            cached_tokens=_tokens(in_details, "cached_tokens"),
            cached_tokens_details=(
                RealtimeModelCachedTokensDetails(
                    text_tokens=_tokens(cached, "text_tokens"),
                    audio_tokens=_tokens(cached, "audio_tokens"),
                    image_tokens=_tokens(cached, "image_tokens"),
                )
                if isinstance(cached, Mapping)
                else None
            ),
        )
    output_details = None
    if isinstance(out_details, Mapping):
        output_details = RealtimeModelOutputTokensDetails(
            text_tokens=_tokens(out_details, "text_tokens"),
            audio_tokens=_tokens(out_details, "audio_tokens"),
        )
    return RealtimeModelUsageEvent(
        usage={
            "requests": 1,
            "input_tokens": inputs,
            "output_tokens": outputs,
            "total_tokens": total if total is not None else inputs + outputs,
        },
        input_tokens_details=input_details,
        output_tokens_details=output_details,
    )


def _output_item_done(event: Mapping[str, Any], t: str) -> list[RealtimeModelEvent]:
    item = _req_dict(event, "item", t)
    if item.get("type") != "function_call":
        return [RealtimeModelOtherEvent(data=dict(event))]
    # A call cut off mid-arguments ("incomplete", e.g. the response was
    # cancelled) must not run: its arguments may be truncated JSON.
    if _opt_str(item, "status", t) not in (None, "completed"):
        return [RealtimeModelOtherEvent(data=dict(event))]
    return [
        RealtimeModelToolCallEvent(
            name=_req_str(item, "name", t),
            call_id=_req_str(item, "call_id", t),
            arguments=_req_str(item, "arguments", t),
            id=_opt_str(item, "id", t),
        )
    ]


def _audio_delta(event: Mapping[str, Any], t: str) -> list[RealtimeModelEvent]:
    delta = _req_str(event, "delta", t)
    try:
        # Strict decoding accepts only what validate=True accepts, decoded alike, and
        # costs less (no regular expression pass first); the slower check decides the rest.
        data = binascii.a2b_base64(delta, strict_mode=True)
    except (binascii.Error, ValueError):
        try:
            data = base64.b64decode(delta, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(f"{_where(t, 'delta')} is not valid base64") from None
    return [_audio_event(event, t, data)]


def _audio_event(event: Mapping[str, Any], t: str, data: bytes) -> RealtimeModelAudioEvent:
    return RealtimeModelAudioEvent(
        data=data,
        response_id=_req_str(event, "response_id", t),
        item_id=_req_str(event, "item_id", t),
        content_index=_req_int(event, "content_index", t),
    )


def _audio_done(event: Mapping[str, Any], t: str) -> list[RealtimeModelEvent]:
    return [
        RealtimeModelAudioDoneEvent(
            item_id=_req_str(event, "item_id", t),
            content_index=_req_int(event, "content_index", t),
        )
    ]


def _transcript_delta(event: Mapping[str, Any], t: str) -> list[RealtimeModelEvent]:
    return [
        RealtimeModelTranscriptDeltaEvent(
            item_id=_req_str(event, "item_id", t),
            delta=_req_str(event, "delta", t),
            response_id=_req_str(event, "response_id", t),
        )
    ]


_DELTA_KEY = '"delta":'
_MAX_REST_CHARS = 4096


def parse_audio_delta(message: str) -> tuple[dict[str, Any], bytes] | None:
    """``(json.loads(message), the delta decoded)`` for a server event whose ``delta``
    is base64 text (an audio delta), without scanning the delta as JSON; ``None`` when
    the message is not of that shape (the caller parses it whole).

    The delta is taken as the raw text between the quote after ``"delta":`` and the
    next quote. That is its parsed value when it is valid base64 (no backslash, so no
    escape, and no control character inside); the rest of the message (the delta cut
    out) must hold no backslash either (no escape can spell another ``delta`` key or a
    lone surrogate) and no second ``"delta"``, and parse to an object whose ``delta``
    is the empty string: the key found is then that object's own ``delta``, and the
    two parses differ only in its value. The rest is bounded (``_MAX_REST_CHARS``): the
    cost is the base64 decoding the delta needs anyway plus a small parse.
    """
    key = message.find(_DELTA_KEY)
    if key < 0:
        return None
    start = key + len(_DELTA_KEY)
    # Compact JSON, or one space after the colon (Python's default); anything else is
    # left to the whole parse.
    if message.startswith(' "', start):
        start += 1
    elif not message.startswith('"', start):
        return None
    start += 1
    end = message.find('"', start)
    if end < 0:
        return None
    rest = message[:start] + message[end:]
    if len(rest) > _MAX_REST_CHARS or "\\" in rest or rest.count('"delta"') != 1:
        return None
    delta = message[start:end]
    try:
        audio = binascii.a2b_base64(delta, strict_mode=True)
        data = json.loads(rest)
    except (binascii.Error, ValueError, RecursionError):
        return None  # the whole parse decides
    if not isinstance(data, dict) or data.get("delta") != "":
        return None
    data["delta"] = delta
    return data, audio


_CONVERTERS: dict[str, _Converter] = {
    "error": _error,
    "conversation.item.added": _item_updated,
    "conversation.item.done": _item_updated,
    "conversation.item.created": _item_updated,
    "conversation.item.retrieved": _item_updated,
    "conversation.item.deleted": _item_deleted,
    "conversation.item.input_audio_transcription.completed": _transcription_completed,
    "input_audio_buffer.timeout_triggered": _timeout_triggered,
    "response.created": _response_created,
    "response.done": _response_done,
    "response.output_item.done": _output_item_done,
    "response.output_audio.delta": _audio_delta,
    "response.output_audio.done": _audio_done,
    "response.output_audio_transcript.delta": _transcript_delta,
    "response.output_text.delta": _transcript_delta,
}


def server_event_type(event: Mapping[str, Any]) -> str:
    """The GA type of a decoded server event (beta aliases resolved)."""
    if not isinstance(event, Mapping):
        raise ProtocolError(f"server event must be a JSON object, got {type(event).__name__}")
    kind = event.get("type")
    if not isinstance(kind, str):
        if kind is None:
            raise ProtocolError("server event has no 'type' field")
        raise ProtocolError(f"server event 'type' must be a string, got {type(kind).__name__}")
    return SERVER_EVENT_ALIASES.get(kind, kind)


def server_event_to_model_events(
    event: Mapping[str, Any], audio: bytes | None = None
) -> list[RealtimeModelEvent]:
    """The model events of one decoded server event.

    ``audio``: the event's ``delta`` already decoded (see :func:`parse_audio_delta`),
    used when the event is an audio delta. Raises :class:`ProtocolError` when a field
    the conversion needs is missing or of the wrong type. Unknown event types become
    ``RealtimeModelOtherEvent``.
    """
    kind = server_event_type(event)
    if audio is not None and kind == "response.output_audio.delta":
        return [_audio_event(event, kind, audio)]
    converter = _CONVERTERS.get(kind)
    if converter is None:
        return [RealtimeModelOtherEvent(data=dict(event))]
    return converter(event, kind)
