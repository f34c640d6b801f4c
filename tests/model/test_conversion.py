"""Pure conversions: settings -> session payload, items, server events -> model events.

Also home of the server-event fixture builders and the strict schema check the
other test files of this package import: every fixture is validated against
``openai.types.realtime.RealtimeServerEvent`` when it is built, so the tests
feed realistic events.
"""

from __future__ import annotations

import base64
import itertools
import re
from typing import Any

import pytest
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter

from ray_realtime.exceptions import ConfigError, ProtocolError, UserError
from ray_realtime.model.conversion import (
    audio_bytes_per_ms,
    audio_format_to_protocol,
    protocol_item_to_history_item,
    server_event_to_model_events,
    tool_output_to_item,
    user_input_to_item,
)
from ray_realtime.types.items import (
    AssistantAudio,
    AssistantMessageItem,
    AssistantText,
    InputAudio,
    InputImage,
    InputText,
    RealtimeToolCallItem,
    SystemMessageItem,
    UserMessageItem,
)
from ray_realtime.types.model_events import (
    RealtimeModelAudioDoneEvent,
    RealtimeModelAudioEvent,
    RealtimeModelErrorEvent,
    RealtimeModelInputAudioTimeoutTriggeredEvent,
    RealtimeModelInputAudioTranscriptionCompletedEvent,
    RealtimeModelItemDeletedEvent,
    RealtimeModelItemUpdatedEvent,
    RealtimeModelOtherEvent,
    RealtimeModelToolCallEvent,
    RealtimeModelTranscriptDeltaEvent,
    RealtimeModelTurnEndedEvent,
    RealtimeModelTurnStartedEvent,
)

# ---------------------------------------------------------------------------
# Schema checks shared with the other test files
# ---------------------------------------------------------------------------

CLIENT_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeClientEvent)
SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)


def assert_no_extra(value: Any, path: str = "event") -> None:
    """The openai models accept unknown fields; a field the schema does not
    know is a bug in what we send (or in a fixture), so refuse it here."""
    if isinstance(value, BaseModel):
        extra = value.model_extra or {}
        assert not extra, f"{path}: fields not in the protocol schema: {sorted(extra)}"
        for name in type(value).model_fields:
            assert_no_extra(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            assert_no_extra(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            assert_no_extra(item, f"{path}.{key}")


def check_client_event(event: dict[str, Any]) -> None:
    """Validate a client event against the GA schema (strictly)."""
    model = CLIENT_EVENT.validate_python(event)
    assert_no_extra(model, event.get("type", "event"))


def check_server_event(event: dict[str, Any]) -> dict[str, Any]:
    """Validate a server event fixture against the GA schema; return it."""
    model = SERVER_EVENT.validate_python(event)
    assert_no_extra(model, event.get("type", "event"))
    return event


# ---------------------------------------------------------------------------
# Server event fixture builders (each validated against the schema)
# ---------------------------------------------------------------------------

_event_ids = itertools.count(1)


def server_event(event_type: str, **fields: Any) -> dict[str, Any]:
    return check_server_event(
        {"type": event_type, "event_id": f"event_{next(_event_ids)}", **fields}
    )


def _response(response_id: str, status: str) -> dict[str, Any]:
    return {"id": response_id, "object": "realtime.response", "status": status, "output": []}


def response_created(response_id: str = "resp_1") -> dict[str, Any]:
    return server_event("response.created", response=_response(response_id, "in_progress"))


def response_done(response_id: str = "resp_1", status: str = "completed") -> dict[str, Any]:
    return server_event("response.done", response=_response(response_id, status))


def assistant_message(
    item_id: str,
    *,
    text: str | None = None,
    transcript: str | None = None,
    status: str = "completed",
) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "output_text", "text": text})
    if transcript is not None:
        content.append({"type": "output_audio", "transcript": transcript})
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def user_message(item_id: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": content,
    }


def function_call(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def item_added(item: dict[str, Any], previous_item_id: str | None = None) -> dict[str, Any]:
    return server_event("conversation.item.added", item=item, previous_item_id=previous_item_id)


def item_done(item: dict[str, Any], previous_item_id: str | None = None) -> dict[str, Any]:
    return server_event("conversation.item.done", item=item, previous_item_id=previous_item_id)


def output_item_done(item: dict[str, Any], response_id: str = "resp_1") -> dict[str, Any]:
    return server_event(
        "response.output_item.done", item=item, output_index=0, response_id=response_id
    )


def audio_delta(
    item_id: str, data: bytes, response_id: str = "resp_1", content_index: int = 0
) -> dict[str, Any]:
    return server_event(
        "response.output_audio.delta",
        response_id=response_id,
        item_id=item_id,
        output_index=0,
        content_index=content_index,
        delta=base64.b64encode(data).decode("ascii"),
    )


def audio_done(item_id: str, response_id: str = "resp_1", content_index: int = 0) -> dict[str, Any]:
    return server_event(
        "response.output_audio.done",
        response_id=response_id,
        item_id=item_id,
        output_index=0,
        content_index=content_index,
    )


def transcript_delta(item_id: str, delta: str, response_id: str = "resp_1") -> dict[str, Any]:
    return server_event(
        "response.output_audio_transcript.delta",
        response_id=response_id,
        item_id=item_id,
        output_index=0,
        content_index=0,
        delta=delta,
    )


def text_delta(item_id: str, delta: str, response_id: str = "resp_1") -> dict[str, Any]:
    return server_event(
        "response.output_text.delta",
        response_id=response_id,
        item_id=item_id,
        output_index=0,
        content_index=0,
        delta=delta,
    )


def error_event(
    message: str,
    *,
    code: str | None = None,
    event_id: str | None = None,
    error_type: str = "invalid_request_error",
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if code is not None:
        error["code"] = code
    if event_id is not None:
        error["event_id"] = event_id
    return server_event("error", error=error)


def speech_started(item_id: str = "item_user", audio_start_ms: int = 1000) -> dict[str, Any]:
    return server_event(
        "input_audio_buffer.speech_started", item_id=item_id, audio_start_ms=audio_start_ms
    )


def transcription_completed(item_id: str, transcript: str) -> dict[str, Any]:
    return server_event(
        "conversation.item.input_audio_transcription.completed",
        item_id=item_id,
        content_index=0,
        transcript=transcript,
        usage={"type": "duration", "seconds": 1.5},
    )


def timeout_triggered(item_id: str, start: int, end: int) -> dict[str, Any]:
    return server_event(
        "input_audio_buffer.timeout_triggered",
        item_id=item_id,
        audio_start_ms=start,
        audio_end_ms=end,
    )


def item_deleted(item_id: str) -> dict[str, Any]:
    return server_event("conversation.item.deleted", item_id=item_id)


def session_created() -> dict[str, Any]:
    return server_event(
        "session.created",
        session={"type": "realtime", "model": "gpt-realtime", "output_modalities": ["audio"]},
    )


def convert_one(event: dict[str, Any]) -> Any:
    events = server_event_to_model_events(event)
    assert len(events) == 1
    return events[0]


# ---------------------------------------------------------------------------
# Audio formats
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "protocol", "per_ms"),
    [
        ("pcm16", {"type": "audio/pcm", "rate": 24000}, 48.0),
        ("g711_ulaw", {"type": "audio/pcmu"}, 8.0),
        ("g711_alaw", {"type": "audio/pcma"}, 8.0),
        ("audio/pcmu", {"type": "audio/pcmu"}, 8.0),
        ({"type": "audio/pcm", "rate": 24000}, {"type": "audio/pcm", "rate": 24000}, 48.0),
        (None, {"type": "audio/pcm", "rate": 24000}, 48.0),
    ],
)
def test_audio_formats(fmt: Any, protocol: dict[str, Any], per_ms: float) -> None:
    assert audio_format_to_protocol(fmt) == protocol
    assert audio_bytes_per_ms(fmt) == per_ms


def test_unknown_audio_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown audio format"):
        audio_bytes_per_ms("mp3")


# ---------------------------------------------------------------------------
# Client items
# ---------------------------------------------------------------------------


def test_user_text_to_item() -> None:
    item = user_input_to_item("hello")
    assert item == {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "hello"}],
    }
    check_client_event({"type": "conversation.item.create", "item": item})


def test_user_message_with_image_to_item() -> None:
    item = user_input_to_item(
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "what is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
            ],
        }
    )
    assert item["content"][1] == {
        "type": "input_image",
        "image_url": "data:image/png;base64,AAAA",
        "detail": "low",
    }
    check_client_event({"type": "conversation.item.create", "item": item})


@pytest.mark.parametrize(
    "bad",
    [
        42,
        {"type": "message", "role": "assistant", "content": [{"type": "input_text", "text": "x"}]},
        {"type": "message", "role": "user", "content": []},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": 3}]},
        {"type": "message", "role": "user", "content": [{"type": "input_audio"}]},
        {"type": "message", "role": "user", "content": ["text"]},
    ],
)
def test_bad_user_input_is_refused(bad: Any) -> None:
    with pytest.raises(UserError):
        user_input_to_item(bad)


def test_tool_output_item() -> None:
    item = tool_output_to_item("call_1", '{"ok": true}')
    check_client_event({"type": "conversation.item.create", "item": item})


# ---------------------------------------------------------------------------
# Protocol items -> history items
# ---------------------------------------------------------------------------


def test_assistant_message_to_history() -> None:
    item = protocol_item_to_history_item(
        assistant_message("item_a", transcript="Hi there", text="Hi"), "item_prev"
    )
    assert item == AssistantMessageItem(
        item_id="item_a",
        previous_item_id="item_prev",
        status="completed",
        content=[AssistantText(text="Hi"), AssistantAudio(transcript="Hi there")],
    )


def test_user_message_to_history_drops_audio_bytes() -> None:
    item = protocol_item_to_history_item(
        user_message(
            "item_u",
            [
                {"type": "input_text", "text": "look"},
                {"type": "input_audio", "audio": "AAAA", "transcript": "look at this"},
                {"type": "input_image", "image_url": "https://example.com/a.png"},
            ],
        )
    )
    assert isinstance(item, UserMessageItem)
    assert item.content == [
        InputText(text="look"),
        InputAudio(transcript="look at this"),
        InputImage(image_url="https://example.com/a.png"),
    ]
    assert item.content[1].audio is None  # type: ignore[union-attr]


def test_system_message_to_history() -> None:
    item = protocol_item_to_history_item(
        {
            "id": "item_s",
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": "rules"}],
        }
    )
    assert item == SystemMessageItem(item_id="item_s", content=[InputText(text="rules")])


def test_function_call_to_history() -> None:
    item = protocol_item_to_history_item(function_call("item_f", "call_1", "add", '{"a": 1}'))
    assert item == RealtimeToolCallItem(
        item_id="item_f", call_id="call_1", name="add", arguments='{"a": 1}', status="completed"
    )
    in_progress = protocol_item_to_history_item(
        function_call("item_f", "call_1", "add", "", status="in_progress")
    )
    assert isinstance(in_progress, RealtimeToolCallItem)
    assert in_progress.status == "in_progress"


def test_function_call_output_and_unknown_items_give_none() -> None:
    assert (
        protocol_item_to_history_item(
            {"id": "x", "type": "function_call_output", "call_id": "c", "output": "1"}
        )
        is None
    )
    assert protocol_item_to_history_item({"id": "x", "type": "mcp_list_tools"}) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "message", "role": "user", "content": []},  # no id
        {"id": 7, "type": "message", "role": "user", "content": []},
        {"id": "x", "type": "message", "role": "robot", "content": []},
        {"id": "x", "type": "message", "role": "user", "content": "hello"},
        {"id": "x", "type": "message", "role": "user", "content": [5]},
        {
            "id": "x",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": 1}],
        },
        {"id": "x", "type": "function_call", "name": 3},
        {"type": 3},
    ],
)
def test_malformed_items_raise_protocol_error(bad: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        protocol_item_to_history_item(bad)


# ---------------------------------------------------------------------------
# Server events -> model events
# ---------------------------------------------------------------------------


def test_error_event() -> None:
    event = convert_one(error_event("bad thing", code="invalid_value", event_id="evt_1"))
    assert event == RealtimeModelErrorEvent(
        error={
            "message": "bad thing",
            "type": "invalid_request_error",
            "code": "invalid_value",
            "event_id": "evt_1",
        }
    )


@pytest.mark.parametrize(
    "event_type",
    [
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.created",
        "conversation.item.retrieved",
    ],
)
def test_item_events_become_item_updated(event_type: str) -> None:
    fields: dict[str, Any] = {"item": assistant_message("item_a", text="hi")}
    if event_type != "conversation.item.retrieved":
        fields["previous_item_id"] = "item_0"
    event = convert_one(server_event(event_type, **fields))
    assert isinstance(event, RealtimeModelItemUpdatedEvent)
    assert isinstance(event.item, AssistantMessageItem)
    assert event.item.item_id == "item_a"
    if event_type != "conversation.item.retrieved":
        assert event.item.previous_item_id == "item_0"


def test_function_call_output_item_event_is_other() -> None:
    event = convert_one(
        item_added(
            {
                "id": "item_o",
                "object": "realtime.item",
                "type": "function_call_output",
                "call_id": "call_1",
                "output": "3",
            }
        )
    )
    assert isinstance(event, RealtimeModelOtherEvent)


def test_simple_mappings() -> None:
    assert convert_one(item_deleted("item_a")) == RealtimeModelItemDeletedEvent(item_id="item_a")
    assert convert_one(
        transcription_completed("item_u", "hello")
    ) == RealtimeModelInputAudioTranscriptionCompletedEvent(item_id="item_u", transcript="hello")
    assert convert_one(
        timeout_triggered("item_u", 100, 5100)
    ) == RealtimeModelInputAudioTimeoutTriggeredEvent(
        item_id="item_u", audio_start_ms=100, audio_end_ms=5100
    )
    assert convert_one(response_created("resp_9")) == RealtimeModelTurnStartedEvent(
        response_id="resp_9"
    )
    assert convert_one(response_done("resp_9", "cancelled")) == RealtimeModelTurnEndedEvent(
        response_id="resp_9", status="cancelled"
    )
    assert convert_one(audio_done("item_a")) == RealtimeModelAudioDoneEvent(
        item_id="item_a", content_index=0
    )
    assert convert_one(transcript_delta("item_a", "Hel")) == RealtimeModelTranscriptDeltaEvent(
        item_id="item_a", delta="Hel", response_id="resp_1"
    )
    assert convert_one(text_delta("item_a", "lo")) == RealtimeModelTranscriptDeltaEvent(
        item_id="item_a", delta="lo", response_id="resp_1"
    )


def test_audio_delta_is_decoded() -> None:
    pcm = bytes(range(256)) * 3
    assert convert_one(audio_delta("item_a", pcm)) == RealtimeModelAudioEvent(
        data=pcm, response_id="resp_1", item_id="item_a", content_index=0
    )


def test_function_call_output_item_done_becomes_tool_call() -> None:
    event = convert_one(output_item_done(function_call("item_f", "call_1", "add", '{"a":1}')))
    assert event == RealtimeModelToolCallEvent(
        name="add", call_id="call_1", arguments='{"a":1}', id="item_f"
    )


def test_incomplete_function_call_is_not_a_tool_call() -> None:
    event = convert_one(
        output_item_done(function_call("item_f", "call_1", "add", '{"a":', status="incomplete"))
    )
    assert isinstance(event, RealtimeModelOtherEvent)


def test_message_output_item_done_is_other() -> None:
    assert isinstance(
        convert_one(output_item_done(assistant_message("item_a", text="x"))),
        RealtimeModelOtherEvent,
    )


def test_unknown_and_unmapped_types_are_other() -> None:
    created = session_created()
    assert convert_one(created) == RealtimeModelOtherEvent(data=created)
    assert isinstance(convert_one(speech_started()), RealtimeModelOtherEvent)
    assert convert_one({"type": "future.event", "x": 1}) == RealtimeModelOtherEvent(
        data={"type": "future.event", "x": 1}
    )


def test_beta_event_names_are_aliases() -> None:
    event = convert_one(
        {
            "type": "response.audio_transcript.delta",
            "event_id": "e",
            "response_id": "r",
            "item_id": "i",
            "output_index": 0,
            "content_index": 0,
            "delta": "hi",
        }
    )
    assert event == RealtimeModelTranscriptDeltaEvent(item_id="i", delta="hi", response_id="r")


@pytest.mark.parametrize(
    ("event", "match"),
    [
        ({"no_type": True}, "no 'type'"),
        ({"type": 5}, "'type' must be a string"),
        ({**transcript_delta("i", "x"), "delta": 5}, "'delta' must be a string, got int"),
        ({**transcript_delta("i", "x"), "item_id": None}, "'item_id' is missing"),
        ({**audio_delta("i", b"ab"), "delta": "***"}, "not valid base64"),
        ({**audio_delta("i", b"ab"), "content_index": True}, "must be an integer, got bool"),
        ({**audio_done("i"), "content_index": "0"}, "must be an integer, got str"),
        ({"type": "error", "event_id": "e", "error": "oops"}, "'error' must be an object"),
        ({"type": "error", "event_id": "e", "error": {"type": "x"}}, "'message' is missing"),
        ({"type": "response.created", "event_id": "e"}, "'response' is missing"),
        (
            {
                **output_item_done(function_call("f", "c", "n", "{}")),
                "item": {"type": "function_call"},
            },
            "'name' is missing",
        ),
        ({**item_added(assistant_message("a")), "item": []}, "'item' must be an object"),
        ({**timeout_triggered("i", 1, 2), "audio_end_ms": 2.5}, "must be an integer, got float"),
    ],
)
def test_bad_fields_raise_protocol_error(event: dict[str, Any], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        server_event_to_model_events(event)


def test_protocol_error_names_the_event_type() -> None:
    with pytest.raises(ProtocolError, match=re.escape("response.output_audio_transcript.delta")):
        server_event_to_model_events({**transcript_delta("i", "x"), "delta": 5})


def test_non_object_event_raises_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        server_event_to_model_events([1, 2])  # type: ignore[arg-type]
