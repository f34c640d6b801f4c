"""Every client event we produce is valid GA protocol.

Each event is validated against ``TypeAdapter(openai.types.realtime.RealtimeClientEvent)``
and, since the openai models accept unknown fields, also checked for fields the
schema does not know. Server fixtures are held to the same standard against
``RealtimeServerEvent`` (see ``test_conversion``).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ray_realtime.model import (
    OpenAIRealtimeWebSocketModel,
    RealtimeModelSendAudio,
    RealtimeModelSendEvent,
    RealtimeModelSendInterrupt,
    RealtimeModelSendRawMessage,
    RealtimeModelSendSessionUpdate,
    RealtimeModelSendToolOutput,
    RealtimeModelSendUserInput,
    RealtimeModelToolCallEvent,
)
from ray_realtime.model.conversion import (
    tool_output_to_item,
    user_input_to_item,
)
from ray_realtime.model.session_settings import settings_to_session_payload
from ray_realtime.types.config import RealtimeSessionModelSettings

from .test_conversion import (
    assistant_message,
    audio_delta,
    audio_done,
    check_client_event,
    error_event,
    function_call,
    item_added,
    item_deleted,
    item_done,
    output_item_done,
    response_created,
    response_done,
    session_created,
    speech_started,
    text_delta,
    timeout_triggered,
    transcript_delta,
    transcription_completed,
    user_message,
)
from .test_openai_ws import FakePeer, Recorder

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather of a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

SETTINGS_CASES: dict[str, RealtimeSessionModelSettings] = {
    "empty": {},
    "model_and_instructions": {"model_name": "gpt-realtime", "instructions": "Be brief."},
    "pcm16": {"input_audio_format": "pcm16", "output_audio_format": "pcm16"},
    "g711_ulaw": {"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"},
    "g711_alaw": {"input_audio_format": "g711_alaw", "output_audio_format": "g711_alaw"},
    "mixed_formats": {"input_audio_format": "g711_alaw", "output_audio_format": "pcm16"},
    "turn_detection_off": {"turn_detection": None},
    "server_vad_full": {
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
            "create_response": True,
            "interrupt_response": True,
            "idle_timeout_ms": 6000,
        }
    },
    "server_vad_untyped": {"turn_detection": {"silence_duration_ms": 200}},
    "semantic_vad_full": {
        "turn_detection": {
            "type": "semantic_vad",
            "eagerness": "low",
            "create_response": False,
            "interrupt_response": False,
        }
    },
    "transcription": {
        "input_audio_transcription": {
            "model": "gpt-4o-mini-transcribe",
            "language": "en",
            "prompt": "Expect words about weather.",
        }
    },
    "tools": {"tools": [WEATHER_TOOL], "tool_choice": "auto"},
    "no_tools": {"tools": [], "tool_choice": "none"},
    "tool_required": {"tools": [WEATHER_TOOL], "tool_choice": "required"},
    "tool_forced_by_name": {"tools": [WEATHER_TOOL], "tool_choice": "get_weather"},
    "max_tokens_int": {"max_output_tokens": 256},
    "max_tokens_inf": {"max_output_tokens": "inf"},
    "legacy_modalities": {"modalities": ["text", "audio"]},
    "legacy_text_modality": {"modalities": ["text"]},
    "text_output": {"output_modalities": ["text"]},
    "voice_and_speed": {"voice": "marin", "speed": 1.25},
    "everything": {
        "model_name": "gpt-realtime",
        "instructions": "You are a helpful assistant.",
        "output_modalities": ["audio"],
        "voice": "cedar",
        "speed": 1.0,
        "input_audio_format": "g711_ulaw",
        "output_audio_format": "g711_ulaw",
        "input_audio_transcription": {"model": "gpt-4o-transcribe"},
        "turn_detection": {"type": "semantic_vad", "eagerness": "auto"},
        "tools": [WEATHER_TOOL],
        "tool_choice": "get_weather",
        "max_output_tokens": "inf",
    },
}

_ids = itertools.count(1)


def _session_update(settings: RealtimeSessionModelSettings) -> dict[str, Any]:
    return {
        "type": "session.update",
        "event_id": f"evt_{next(_ids)}",
        "session": settings_to_session_payload(settings),
    }


def test_the_strict_check_refuses_unknown_fields() -> None:
    with pytest.raises(AssertionError, match="bogus"):
        check_client_event({"type": "response.cancel", "bogus": 1})
    with pytest.raises(AssertionError, match="turn_detectoin"):
        check_client_event(
            {"type": "session.update", "session": {"type": "realtime", "turn_detectoin": None}}
        )


@pytest.mark.parametrize("case", sorted(SETTINGS_CASES))
def test_session_update_conforms(case: str) -> None:
    check_client_event(_session_update(SETTINGS_CASES[case]))


@pytest.mark.parametrize(
    "user_input",
    [
        "hello",
        "",
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "what is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
                {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "high"},
            ],
        },
    ],
)
def test_user_item_conforms(user_input: Any) -> None:
    check_client_event({"type": "conversation.item.create", "item": user_input_to_item(user_input)})


def test_tool_output_item_conforms() -> None:
    check_client_event(
        {"type": "conversation.item.create", "item": tool_output_to_item("call_1", "")}
    )


def test_server_fixtures_are_valid() -> None:
    # Each builder validates what it builds against RealtimeServerEvent; build
    # one of each so a schema change shows here first.
    call = function_call("item_f", "call_1", "get_weather", '{"city": "Paris"}')
    built = [
        session_created(),
        response_created(),
        response_done(status="cancelled"),
        item_added(assistant_message("item_a", status="in_progress"), "item_0"),
        item_done(assistant_message("item_a", text="hi", transcript="hi")),
        item_added(user_message("item_u", [{"type": "input_audio", "transcript": "hi"}])),
        output_item_done(call),
        audio_delta("item_a", b"\x00\x00"),
        audio_done("item_a"),
        transcript_delta("item_a", "x"),
        text_delta("item_a", "x"),
        error_event("bad", code="invalid_value", event_id="evt_1"),
        speech_started(),
        transcription_completed("item_u", "hi"),
        timeout_triggered("item_u", 0, 5000),
        item_deleted("item_a"),
    ]
    assert len({e["event_id"] for e in built}) == len(built)


@pytest.fixture
async def peer() -> AsyncIterator[FakePeer]:
    fake = FakePeer()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.mark.parametrize("case", ["everything", "turn_detection_off", "g711_alaw", "empty"])
async def test_every_input_over_the_wire_conforms(peer: FakePeer, case: str) -> None:
    model = OpenAIRealtimeWebSocketModel()
    recorder = Recorder()
    model.add_listener(recorder)
    try:
        await model.connect({"url": peer.url, "initial_model_settings": SETTINGS_CASES[case]})
        tool_call = RealtimeModelToolCallEvent(
            name="get_weather", call_id="call_1", arguments='{"city": "Paris"}', id="item_f"
        )
        inputs: list[RealtimeModelSendEvent] = [
            RealtimeModelSendUserInput("hello"),
            RealtimeModelSendUserInput(
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "and this?"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                    ],
                }
            ),
            RealtimeModelSendAudio(b"\x01\x02" * 240),
            RealtimeModelSendAudio(b"\x01\x02" * 240, commit=True),
            RealtimeModelSendAudio(b"", commit=True),
            RealtimeModelSendToolOutput(tool_call, '{"temp": 21}'),
            RealtimeModelSendToolOutput(tool_call, "", start_response=False),
            RealtimeModelSendInterrupt(force_response_cancel=True),
            RealtimeModelSendRawMessage({"type": "input_audio_buffer.clear"}),
            RealtimeModelSendRawMessage({"type": "output_audio_buffer.clear"}),
            RealtimeModelSendRawMessage({"type": "conversation.item.retrieve", "item_id": "i"}),
            RealtimeModelSendRawMessage({"type": "conversation.item.delete", "item_id": "i"}),
        ]
        inputs += [RealtimeModelSendSessionUpdate(s) for s in SETTINGS_CASES.values()]
        for event in inputs:
            await model.send_event(event)

        # Audio playing, then an interrupt: response.cancel and truncate.
        await peer.send(response_created("resp_1"), audio_delta("item_a", b"\x00\x00" * 2400))
        await recorder.wait_count("audio")
        await model.send_event(RealtimeModelSendInterrupt())
        await peer.send(response_done("resp_1", "cancelled"))
        await recorder.wait_count("turn_ended")
        await peer.wait_count("conversation.item.truncate", 1)
        await peer.wait_count("conversation.item.delete", 1)
    finally:
        await model.close()

    assert peer.invalid == [], peer.invalid
    produced = set(peer.types())
    assert produced >= {
        "session.update",
        "conversation.item.create",
        "response.create",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "response.cancel",
        "conversation.item.truncate",
        "input_audio_buffer.clear",
        "output_audio_buffer.clear",
        "conversation.item.retrieve",
        "conversation.item.delete",
    }
    # Every event was checked by the peer; count them to be sure none slipped by.
    assert len(peer.received) >= len(inputs) + 3
