"""Loopback WebSocket tests of the local realtime model server.

Every server event received is validated against the ``openai`` SDK's
``RealtimeServerEvent`` union (plus a check that no undeclared fields are sent) and every
well-formed client event sent is validated against ``RealtimeClientEvent``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from openai.types.realtime.response_create_event_with_references_param import (
    ResponseCreateEventWithReferencesParam,
)
from pydantic import BaseModel, TypeAdapter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ray_realtime.local import LocalModelServer
from ray_realtime.local.audio import (
    AUDIO_FORMATS,
    alaw_decode,
    mulaw_decode,
    mulaw_encode,
    rms,
    synthesize_tone,
)

SERVER_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
CLIENT_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeClientEvent)
# ``RealtimeClientEvent`` lacks item references in ``response.input``; the SDK declares
# them in this separate param type.
CREATE_WITH_REFERENCES: TypeAdapter[Any] = TypeAdapter(ResponseCreateEventWithReferencesParam)
RECV_TIMEOUT_S = 5.0
MAX_EVENTS = 3000
# The real service also sends these session fields, which the SDK models leave undeclared.
ALLOWED_EXTRAS = {"RealtimeSessionCreateRequest": {"id", "object"}}
EVENT_ID_RE = re.compile(r"event_\d{6}")


# --- helpers --------------------------------------------------------------------------------


def _assert_no_extras(value: object, path: str) -> None:
    if isinstance(value, BaseModel):
        allowed = ALLOWED_EXTRAS.get(type(value).__name__, set())
        extra = set(value.__pydantic_extra__ or {}) - allowed
        assert not extra, f"undeclared fields {sorted(extra)} at {path}"
        for name in type(value).model_fields:
            _assert_no_extras(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _assert_no_extras(item, f"{path}[{i}]")


def validate_server_event(event: dict[str, Any]) -> None:
    """Validate a received event against the SDK schema (strictly: no undeclared fields)."""
    model = SERVER_EVENTS.validate_python(event)
    _assert_no_extras(model, event["type"])
    assert EVENT_ID_RE.fullmatch(event["event_id"]), event["event_id"]


class Client:
    """Thin test client: validates what it sends and receives, bounded waits."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.session: dict[str, Any] = {}

    async def send(self, event: dict[str, Any]) -> None:
        inputs = (event.get("response") or {}).get("input") or []
        if any(i.get("type") == "item_reference" for i in inputs):
            validated = CREATE_WITH_REFERENCES.validate_python(event)
            list(validated["response"]["input"])  # Iterable fields validate lazily
        else:
            CLIENT_EVENTS.validate_python(event)
        await self.ws.send(json.dumps(event))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def recv(self) -> dict[str, Any]:
        message = await asyncio.wait_for(self.ws.recv(), RECV_TIMEOUT_S)
        event = json.loads(message)
        validate_server_event(event)
        return event  # type: ignore[no-any-return]

    async def recv_until(self, event_type: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for _ in range(MAX_EVENTS):
            event = await self.recv()
            events.append(event)
            if event["type"] == event_type:
                return events
        raise AssertionError(f"no {event_type} within {MAX_EVENTS} events")

    async def expect_error(self, code: str, event_id: str | None = None) -> dict[str, Any]:
        event = await self.recv()
        assert event["type"] == "error", event
        assert event["error"]["code"] == code, event
        assert event["error"]["type"] == "invalid_request_error"
        assert event["error"]["event_id"] == event_id
        return event

    async def update(self, **session: Any) -> dict[str, Any]:
        await self.send({"type": "session.update", "session": {"type": "realtime", **session}})
        event = await self.recv()
        assert event["type"] == "session.updated", event
        self.session = event["session"]
        return event["session"]  # type: ignore[no-any-return]

    async def user_text(self, text: str, **extra: Any) -> dict[str, Any]:
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }
        await self.send({"type": "conversation.item.create", "item": item, **extra})
        events = await self.recv_until("conversation.item.done")
        assert [e["type"] for e in events] == ["conversation.item.added", "conversation.item.done"]
        return events[-1]["item"]  # type: ignore[no-any-return]

    async def respond(self, response: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        event: dict[str, Any] = {"type": "response.create"}
        if response is not None:
            event["response"] = response
        await self.send(event)
        return await self.recv_until("response.done")

    async def turn(self, text: str, response: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        await self.user_text(text)
        return await self.respond(response)

    async def append(self, samples: np.ndarray, fmt: str = "audio/pcm") -> None:
        if fmt == "audio/pcmu":
            data = mulaw_encode(samples).tobytes()
        else:
            data = samples.astype("<i2").tobytes()
        await self.send(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(data).decode()}
        )


@asynccontextmanager
async def open_client(url: str, **kwargs: Any) -> AsyncIterator[Client]:
    async with connect(url, open_timeout=5, close_timeout=2, **kwargs) as ws:
        client = Client(ws)
        created = await client.recv()
        assert created["type"] == "session.created"
        client.session = created["session"]
        yield client


def audio_reply(events: list[dict[str, Any]]) -> tuple[str, bytes, dict[str, Any]]:
    """Check the exact event order of an audio reply; return transcript, audio, response."""
    types = [e["type"] for e in events]
    body = types[types.index("response.created") :]
    assert body[:4] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    assert body[-6:] == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    middle = body[4:-6]
    assert set(middle) <= {"response.output_audio.delta", "response.output_audio_transcript.delta"}
    assert "response.output_audio.delta" in middle
    deltas = [e for e in events if e["type"] == "response.output_audio_transcript.delta"]
    transcript = "".join(e["delta"] for e in deltas)
    done = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
    assert done["transcript"] == transcript
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    return transcript, audio, events[-1]["response"]


def text_reply(events: list[dict[str, Any]]) -> str:
    return audio_reply(events)[0]


def silence(ms: int, rate: int = 24_000) -> np.ndarray:
    return np.zeros(rate * ms // 1000, dtype=np.int16)


def tone(ms: int, rate: int = 24_000) -> np.ndarray:
    return synthesize_tone(ms, rate, fade_ms=0)


async def append_chunks(
    client: Client, samples: np.ndarray, rate: int, fmt: str = "audio/pcm"
) -> None:
    step = rate // 10  # 100 ms appends, like a streaming microphone
    for i in range(0, samples.size, step):
        await client.append(samples[i : i + step], fmt)


WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}


@pytest.fixture
async def server() -> AsyncIterator[LocalModelServer]:
    async with LocalModelServer() as srv:
        yield srv


@pytest.fixture
async def paced_server() -> AsyncIterator[LocalModelServer]:
    async with LocalModelServer(pace_audio=True, audio_ms_per_char=10, audio_chunk_ms=20) as srv:
        yield srv


@pytest.fixture
async def client(server: LocalModelServer) -> AsyncIterator[Client]:
    async with open_client(server.url) as c:
        yield c


# --- session ----------------------------------------------------------------------------------


async def test_session_created_and_updated(server: LocalModelServer) -> None:
    assert server.url == f"ws://127.0.0.1:{server.port}/v1/realtime"
    headers = {"Authorization": "Bearer sk-anything"}
    async with open_client(server.url + "?model=my-local-model", additional_headers=headers) as c:
        s = c.session
        assert s["model"] == "my-local-model"
        assert s["id"] == "sess_000001"
        assert s["output_modalities"] == ["audio"]
        assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert s["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        updated = await c.update(
            instructions="Be terse.",
            tools=[WEATHER_TOOL],
            tool_choice="auto",
            output_modalities=["text"],
            max_output_tokens=100,
            audio={
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "turn_detection": None,
                    "transcription": {"model": "whisper-1", "language": "en"},
                    "noise_reduction": {"type": "near_field"},
                },
                "output": {"format": {"type": "audio/pcma"}, "voice": "cedar", "speed": 1.25},
            },
        )
        assert updated["instructions"] == "Be terse."
        assert updated["tools"] == [WEATHER_TOOL]
        assert updated["output_modalities"] == ["text"]
        assert updated["max_output_tokens"] == 100
        assert updated["audio"]["input"]["turn_detection"] is None
        assert updated["audio"]["input"]["transcription"] == {
            "model": "whisper-1",
            "language": "en",
        }
        assert updated["audio"]["output"] == {
            "format": {"type": "audio/pcma"},
            "voice": "cedar",
            "speed": 1.25,
        }
        # Partial updates leave the other fields alone; semantic_vad is accepted.
        again = await c.update(audio={"input": {"turn_detection": {"type": "semantic_vad"}}})
        assert again["instructions"] == "Be terse."
        assert again["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"


async def test_voice_is_locked_after_audio_output(client: Client) -> None:
    await client.update(audio={"output": {"voice": "alloy"}})
    await client.turn("hi")
    await client.send(
        {
            "type": "session.update",
            "event_id": "evt_voice",
            "session": {"type": "realtime", "audio": {"output": {"voice": "echo"}}},
        }
    )
    await client.expect_error("cannot_update_voice", "evt_voice")
    assert (await client.update(audio={"output": {"voice": "alloy"}}))["audio"]["output"][
        "voice"
    ] == "alloy"


# --- text turns ------------------------------------------------------------------------------


async def test_text_turn_streams_audio_and_transcript_in_order(client: Client) -> None:
    user_item = await client.user_text("hello there")
    assert user_item["id"] == "item_000001"
    assert user_item["status"] == "completed"
    events = await client.respond()
    transcript, audio, response = audio_reply(events)
    assert transcript == "You said: hello there"
    # 21 chars x 12.5 ms = 262.5 ms of 24 kHz PCM16.
    assert len(audio) == 6300 * 2
    samples = np.frombuffer(audio, dtype="<i2")
    assert 0.05 < rms(samples) < 0.08
    assert response["id"] == "resp_000001"
    assert response["status"] == "completed"
    assert response["conversation_id"] == "conv_000001"
    assert response["usage"]["output_tokens"] > 0
    [item] = response["output"]
    assert item["id"] == "item_000002"
    assert item["status"] == "completed"
    assert item["content"] == [{"type": "output_audio", "transcript": transcript}]
    added = next(e for e in events if e["type"] == "conversation.item.added")
    assert added["previous_item_id"] == "item_000001"
    # 40 ms chunks: 6 full chunks and a remainder.
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    assert [len(base64.b64decode(d["delta"])) for d in deltas] == [1920] * 6 + [540 * 2]
    words = [e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"]
    assert words == ["You", " said:", " hello", " there"]
    ids = [int(e["event_id"].split("_")[1]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # A second turn keeps counting and replies to the newest message.
    assert text_reply(await client.turn("say Goodbye!")) == "Goodbye!"


async def test_text_modality_and_response_options(client: Client) -> None:
    await client.update(output_modalities=["text"], instructions="Always reply: forced")
    events = await client.turn("ignored")
    assert [e["type"] for e in events] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    assert events[-1]["response"]["output"][0]["content"] == [
        {"type": "output_text", "text": "forced"}
    ]
    # Per-response overrides: instructions, out-of-band input, metadata, token limit.
    events = await client.respond(
        {
            "instructions": "no override here",
            "conversation": "none",
            "metadata": {"topic": "oob"},
            "max_output_tokens": 2,
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "one two three"}],
                }
            ],
        }
    )
    assert "conversation.item.added" not in [e["type"] for e in events]
    response = events[-1]["response"]
    assert response["conversation_id"] is None
    assert response["metadata"] == {"topic": "oob"}
    assert response["status"] == "incomplete"
    assert response["status_details"] == {"type": "incomplete", "reason": "max_output_tokens"}
    assert response["output"][0]["content"][0]["text"] == "You said:"
    assert response["output"][0]["status"] == "incomplete"
    # An item reference resolves against the conversation.
    first_user = "item_000001"
    events = await client.respond(
        {
            "instructions": "",
            "conversation": "none",
            "input": [{"type": "item_reference", "id": first_user}],
        }
    )
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "You said: ignored"


# --- tools -------------------------------------------------------------------------------------


async def test_tool_turn_then_function_output(client: Client) -> None:
    await client.update(tools=[WEATHER_TOOL])
    events = await client.turn("Could you get weather in Paris for 3 days?")
    types = [e["type"] for e in events]
    assert types[:3] == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
    ]
    assert types[-4:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    assert set(types[3:-4]) == {"response.function_call_arguments.delta"}
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    deltas = "".join(
        e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"
    )
    assert deltas == done["arguments"]
    assert json.loads(done["arguments"]) == {"city": "Paris", "days": 3}
    [call] = events[-1]["response"]["output"]
    assert call["type"] == "function_call"
    assert call["name"] == "get_weather"
    assert call["call_id"] == "call_000001" == done["call_id"]
    assert call["status"] == "completed"

    await client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": call["call_id"],
                "output": "sunny, 21C",
            },
        }
    )
    await client.recv_until("conversation.item.done")
    assert text_reply(await client.respond()) == "The tool get_weather returned: sunny, 21C"


async def test_handoff_tool_call(client: Client) -> None:
    handoff = {
        "type": "function",
        "name": "transfer_to_billing_agent",
        "description": "Handoff to the billing agent",
        "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
    }
    await client.update(tools=[WEATHER_TOOL, handoff])
    events = await client.turn("I need to transfer to billing agent about the weather")
    [call] = events[-1]["response"]["output"]
    assert call["name"] == "transfer_to_billing_agent"
    assert call["arguments"] == "{}"
    # tool_choice "none" disables calls in a response.
    events = await client.turn("transfer to billing agent", {"tool_choice": "none"})
    assert text_reply(events) == "You said: transfer to billing agent"


# --- input audio -------------------------------------------------------------------------------


async def test_vad_audio_turn(client: Client) -> None:
    await client.update(
        audio={
            "input": {
                "transcription": {"model": "whisper-1"},
                "turn_detection": {
                    "type": "server_vad",
                    "silence_duration_ms": 300,
                    "prefix_padding_ms": 200,
                },
            }
        }
    )
    await append_chunks(client, np.concatenate([silence(500), tone(600), silence(600)]), 24_000)
    events = await client.recv_until("response.done")
    types = [e["type"] for e in events]
    assert types[:6] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
    ]
    started, stopped, committed, added, _, transcribed = events[:6]
    assert started["audio_start_ms"] == 300  # 500 ms onset - 200 ms padding
    assert 1400 <= stopped["audio_end_ms"] <= 1420  # speech end 1100 ms + 300 ms silence
    item_id = started["item_id"]
    assert stopped["item_id"] == committed["item_id"] == added["item"]["id"] == item_id
    assert added["item"]["role"] == "user"
    assert added["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    heard = stopped["audio_end_ms"] - started["audio_start_ms"]
    assert transcribed["transcript"] == f"<speech {heard} ms>"
    assert text_reply(events) == f"I heard {heard} ms of audio."
    # Continued silence produces nothing more; a retrieve shows the transcript.
    await append_chunks(client, silence(300), 24_000)
    await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
    retrieved = await client.recv()
    assert retrieved["type"] == "conversation.item.retrieved"
    assert retrieved["item"]["content"][0]["transcript"] == f"<speech {heard} ms>"


async def test_manual_commit_and_clear(client: Client) -> None:
    await client.update(audio={"input": {"turn_detection": None}})
    await client.send({"type": "input_audio_buffer.commit", "event_id": "evt_c"})
    await client.expect_error("input_audio_buffer_commit_empty", "evt_c")
    await append_chunks(client, tone(250), 24_000)
    await client.send({"type": "input_audio_buffer.commit"})
    events = await client.recv_until("conversation.item.done")
    assert [e["type"] for e in events] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert text_reply(await client.respond()) == "I heard 250 ms of audio."
    await client.append(tone(100))
    await client.send({"type": "input_audio_buffer.clear"})
    assert (await client.recv())["type"] == "input_audio_buffer.cleared"
    await client.send({"type": "input_audio_buffer.commit"})
    await client.expect_error("input_audio_buffer_commit_empty")
    # A user message carrying inline audio is "heard" too.
    audio = base64.b64encode(tone(120).astype("<i2").tobytes()).decode()
    item = {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]}
    await client.send({"type": "conversation.item.create", "item": item})
    await client.recv_until("conversation.item.done")
    assert text_reply(await client.respond()) == "I heard 120 ms of audio."


async def test_appends_in_odd_shapes_are_parsed_as_json_says(client: Client) -> None:
    """The server's append fast path (type first, then plain base64 audio) and the
    whole parse agree on every shape: escapes in the audio, a later duplicate audio
    key (the last one counts), fields in another order."""
    await client.update(audio={"input": {"turn_detection": None}})
    pcm = base64.b64encode(tone(100).astype("<i2").tobytes()).decode()
    escaped = "".join(f"\\u{ord(c):04x}" for c in pcm)
    head = '{"type":"input_audio_buffer.append","audio":"'
    shapes = [
        (head + pcm + '","event_id":"evt_1"}', 100),
        (head + escaped + '"}', 100),  # escapes: the whole parse decodes them
        (head + pcm + '","audio":""}', 0),  # the last key counts: nothing appended
        (head + pcm + '","audi\\u006f":""}', 0),
        # The last type counts: a clear, which takes no audio.
        (head + pcm + '","type":"input_audio_buffer.clear"}', 0),
        ('{"audio":"' + pcm + '","type":"input_audio_buffer.append"}', 100),
    ]
    for message, expected_ms in shapes:
        await client.send_raw(message)
        if '"input_audio_buffer.clear"' in message:
            await client.expect_error("unknown_parameter")
        await client.send({"type": "input_audio_buffer.commit"})
        if expected_ms == 0:
            error = await client.expect_error("input_audio_buffer_commit_empty")
            assert "only has 0.00ms" in error["error"]["message"], message[:80]
            continue
        events = await client.recv_until("conversation.item.done")
        assert events[-1]["item"]["content"][0]["type"] == "input_audio", message[:80]
        assert text_reply(await client.respond()) == f"I heard {expected_ms} ms of audio."
    # Not base64, or a control character in the audio: the same errors as before.
    await client.send_raw(head + "AB" + '"}')
    await client.expect_error("invalid_value")
    await client.send_raw(head + "AB\nC" + '"}')
    await client.expect_error("invalid_json")


async def test_paced_audio_is_cancelled_within_its_pause() -> None:
    """A cancel wakes a paced response from its pause between chunks at once."""
    async with (
        LocalModelServer(pace_audio=True, audio_chunk_ms=3000) as server,
        open_client(server.url) as client,
    ):
        await client.user_text("say " + "word " * 400)
        await client.send({"type": "response.create"})
        events = await client.recv_until("response.output_audio.delta")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await client.send({"type": "response.cancel", "response_id": events[0]["response"]["id"]})
        events = await client.recv_until("response.done")
        assert events[-1]["response"]["status"] == "cancelled"
        assert loop.time() - started < 1.5  # the pause is 3 s


async def test_g711_input_with_vad(client: Client) -> None:
    await client.update(
        audio={
            "input": {
                "format": {"type": "audio/pcmu"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 200},
            }
        }
    )
    rate = 8_000
    await append_chunks(
        client,
        np.concatenate([silence(400, rate), tone(400, rate), silence(400, rate)]),
        rate,
        "audio/pcmu",
    )
    events = await client.recv_until("response.done")
    started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
    stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
    assert started["audio_start_ms"] == 100
    assert stopped["audio_end_ms"] == 1000
    assert text_reply(events) == "I heard 900 ms of audio."


@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcma"])
async def test_g711_output(client: Client, fmt: str) -> None:
    await client.update(audio={"output": {"format": {"type": fmt}}})
    events = await client.turn("hello there")
    transcript, audio, response = audio_reply(events)
    assert transcript == "You said: hello there"
    assert len(audio) == 2100  # 262.5 ms at 8 kHz, one byte per sample
    decoded = mulaw_decode(audio) if fmt == "audio/pcmu" else alaw_decode(audio)
    assert 0.05 < rms(decoded) < 0.08
    assert response["audio"]["output"]["format"] == AUDIO_FORMATS[fmt].wire()


# --- cancellation and truncation -----------------------------------------------------------------


async def test_cancel_mid_response(paced_server: LocalModelServer) -> None:
    async with open_client(paced_server.url) as client:
        await client.user_text("say " + "word " * 40)
        await client.send({"type": "response.create"})
        events = await client.recv_until("response.output_audio.delta")
        response_id = events[0]["response"]["id"]
        await client.send({"type": "response.create", "event_id": "evt_dup"})
        await client.expect_error("conversation_already_has_active_response", "evt_dup")
        await client.send({"type": "response.cancel", "response_id": "resp_other"})
        await client.expect_error("response_cancel_not_active")
        await client.send({"type": "response.cancel", "response_id": response_id})
        events = await client.recv_until("response.done")
        types = [e["type"] for e in events]
        assert types[-6:] == [
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
        response = events[-1]["response"]
        assert response["status"] == "cancelled"
        assert response["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        [item] = response["output"]
        assert item["status"] == "incomplete"
        partial = item["content"][0]["transcript"]
        assert len(partial) < len("word " * 40)
        await client.send({"type": "response.cancel", "event_id": "evt_none"})
        await client.expect_error("response_cancel_not_active", "evt_none")
        # The connection is still fine.
        assert text_reply(await client.turn("say ok")) == "ok"


async def test_speech_interrupts_response(paced_server: LocalModelServer) -> None:
    async with open_client(paced_server.url) as client:
        await client.update(
            audio={"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 200}}}
        )
        await client.user_text("say " + "long answer " * 20)
        await client.send({"type": "response.create"})
        await client.recv_until("response.output_audio.delta")
        await client.append(tone(200))
        events = await client.recv_until("response.done")
        assert "input_audio_buffer.speech_started" in [e["type"] for e in events]
        response = events[-1]["response"]
        assert response["status"] == "cancelled"
        assert response["status_details"]["reason"] == "turn_detected"
        await client.append(silence(300))
        events = await client.recv_until("response.done")
        assert [e["type"] for e in events][:2] == [
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
        ]
        assert events[-1]["response"]["status"] == "completed"
        assert text_reply(events).startswith("I heard ")


async def test_truncate(client: Client) -> None:
    events = await client.turn("hello there")
    assistant = events[-1]["response"]["output"][0]
    user_id = "item_000001"
    await client.send(
        {
            "type": "conversation.item.truncate",
            "item_id": assistant["id"],
            "content_index": 0,
            "audio_end_ms": 10_000,
            "event_id": "t1",
        }
    )
    await client.expect_error("invalid_value", "t1")
    await client.send(
        {
            "type": "conversation.item.truncate",
            "item_id": user_id,
            "content_index": 0,
            "audio_end_ms": 0,
        }
    )
    await client.expect_error("invalid_value")
    await client.send(
        {
            "type": "conversation.item.truncate",
            "item_id": assistant["id"],
            "content_index": 3,
            "audio_end_ms": 0,
        }
    )
    await client.expect_error("invalid_value")
    await client.send(
        {
            "type": "conversation.item.truncate",
            "item_id": "item_nope",
            "content_index": 0,
            "audio_end_ms": 0,
        }
    )
    await client.expect_error("item_not_found")
    await client.send(
        {
            "type": "conversation.item.truncate",
            "item_id": assistant["id"],
            "content_index": 0,
            "audio_end_ms": 131,
        }
    )
    truncated = await client.recv()
    assert truncated == {
        "type": "conversation.item.truncated",
        "event_id": truncated["event_id"],
        "item_id": assistant["id"],
        "content_index": 0,
        "audio_end_ms": 131,
    }
    await client.send({"type": "conversation.item.retrieve", "item_id": assistant["id"]})
    retrieved = await client.recv()
    # 131 of 262 ms heard: the first half (10 of 21 characters) of the transcript remains.
    assert retrieved["item"]["content"][0]["transcript"] == "You said: "
    # The item is now 131 ms long.
    await client.send(
        {
            "type": "conversation.item.truncate",
            "item_id": assistant["id"],
            "content_index": 0,
            "audio_end_ms": 132,
        }
    )
    await client.expect_error("invalid_value")


# --- conversation management ---------------------------------------------------------------------


async def test_item_ordering_delete_and_retrieve(client: Client) -> None:
    first = await client.user_text("first")
    second = await client.user_text("second", previous_item_id="root")
    await client.send(
        {
            "type": "conversation.item.create",
            "previous_item_id": first["id"],
            "item": {
                "id": "my_item",
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "sys"}],
            },
        }
    )
    added, _ = await client.recv_until("conversation.item.done")
    assert added["previous_item_id"] == first["id"]
    assert added["item"]["id"] == "my_item"
    await client.send(
        {
            "type": "conversation.item.create",
            "event_id": "dup",
            "item": {
                "id": "my_item",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "x"}],
            },
        }
    )
    await client.expect_error("duplicate_item_id", "dup")
    # Order is now: second, first, my_item -> the reply anchors on "first".
    assert text_reply(await client.respond()) == "You said: first"
    await client.send({"type": "conversation.item.delete", "item_id": first["id"]})
    deleted = await client.recv()
    assert deleted["type"] == "conversation.item.deleted"
    assert deleted["item_id"] == first["id"]
    assert text_reply(await client.respond()) == "You said: second"
    await client.send(
        {"type": "conversation.item.retrieve", "item_id": first["id"], "event_id": "r1"}
    )
    await client.expect_error("item_not_found", "r1")
    assert second["id"] == "item_000002"


async def test_conversation_is_bounded() -> None:
    async with LocalModelServer(max_conversation_items=3) as srv, open_client(srv.url) as client:
        await client.update(audio={"input": {"turn_detection": None}})
        for text in ["one", "two", "three"]:
            await client.user_text(text)
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "four"}],
                },
            }
        )
        events = await client.recv_until("conversation.item.deleted")
        assert events[-1]["item_id"] == "item_000001"
        assert text_reply(await client.respond()) == "You said: four"


async def test_input_audio_buffer_is_bounded() -> None:
    async with LocalModelServer(max_input_audio_ms=500) as srv, open_client(srv.url) as client:
        await client.update(audio={"input": {"turn_detection": None}})
        await client.append(silence(400))
        await client.send(
            {
                "type": "input_audio_buffer.append",
                "event_id": "big",
                "audio": base64.b64encode(silence(200).tobytes()).decode(),
            }
        )
        await client.expect_error("input_audio_buffer_too_large", "big")
        await client.send({"type": "input_audio_buffer.commit"})
        await client.recv_until("conversation.item.done")
        assert text_reply(await client.respond()) == "I heard 400 ms of audio."


# --- bad input ---------------------------------------------------------------------------------

VALID_ITEM = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}


def _session(**fields: Any) -> str:
    return json.dumps({"type": "session.update", "session": {"type": "realtime", **fields}})


def _event(event_type: str, **fields: Any) -> str:
    return json.dumps({"type": event_type, **fields})


BAD_INPUTS: list[tuple[str, str | bytes, str, str | None]] = [
    ("malformed_json", "{not json", "invalid_json", None),
    ("deeply_nested_json", "[" * 100_000, "nesting_too_deep", None),
    ("json_array", "[1, 2]", "invalid_event", None),
    ("json_string", '"hello"', "invalid_event", None),
    ("unknown_type", _event("nope.event", event_id="e1"), "unknown_event", "e1"),
    ("missing_type", '{"event_id": "e2"}', "missing_required_parameter", "e2"),
    ("type_not_string", '{"type": 5}', "invalid_type", None),
    ("event_id_not_string", _event("response.create", event_id=7), "invalid_type", None),
    ("unknown_field", _event("response.create", event_id="e3", bogus=1), "unknown_parameter", "e3"),
    (
        "audio_not_base64",
        _event("input_audio_buffer.append", audio="***", event_id="e4"),
        "invalid_value",
        "e4",
    ),
    ("audio_not_string", _event("input_audio_buffer.append", audio=12), "invalid_type", None),
    (
        "item_id_not_string",
        _event("conversation.item.delete", item_id=42, event_id="e5"),
        "invalid_type",
        "e5",
    ),
    ("unknown_item", _event("conversation.item.delete", item_id="missing"), "item_not_found", None),
    (
        "bad_role",
        _event(
            "conversation.item.create", item={"type": "message", "role": "robot", "content": []}
        ),
        "invalid_value",
        None,
    ),
    ("item_not_object", _event("conversation.item.create", item="x"), "invalid_type", None),
    (
        "bad_previous",
        _event("conversation.item.create", previous_item_id="zz", item=VALID_ITEM),
        "item_not_found",
        None,
    ),
    (
        "truncate_wrong_type",
        _event("conversation.item.truncate", item_id=5, content_index=0, audio_end_ms=1),
        "invalid_type",
        None,
    ),
    (
        "session_missing_type",
        _event("session.update", session={}),
        "missing_required_parameter",
        None,
    ),
    (
        "session_bad_format",
        _session(audio={"output": {"format": {"type": "audio/ogg"}}}),
        "invalid_value",
        None,
    ),
    ("session_unknown_field", _session(bogus=1), "unknown_parameter", None),
    (
        "session_bad_threshold",
        _session(audio={"input": {"turn_detection": {"type": "server_vad", "threshold": 3}}}),
        "invalid_value",
        None,
    ),
    ("mcp_tool", _session(tools=[{"type": "mcp", "server_label": "x"}]), "unsupported_tool", None),
    (
        "both_modalities",
        _event("response.create", response={"output_modalities": ["audio", "text"]}),
        "invalid_value",
        None,
    ),
    (
        "cancel_nothing",
        _event("response.cancel", event_id="e6"),
        "response_cancel_not_active",
        "e6",
    ),
    ("commit_empty", _event("input_audio_buffer.commit"), "input_audio_buffer_commit_empty", None),
    ("binary_frame", b"\x00\x01\x02", "binary_not_supported", None),
    (
        "too_large",
        _event("input_audio_buffer.append", audio="A" * (1 << 20)),
        "event_too_large",
        None,
    ),
]


@pytest.mark.parametrize(
    ("payload", "code", "event_id"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
async def test_bad_input_yields_error_and_connection_survives(
    client: Client, payload: str | bytes, code: str, event_id: str | None
) -> None:
    await client.send_raw(payload)
    error = await client.expect_error(code, event_id)
    assert error["error"]["message"]
    assert text_reply(await client.turn("still alive?")) == "You said: still alive?"


async def test_oversized_frame_closes_only_that_connection() -> None:
    async with LocalModelServer(max_frame_bytes=64 << 10, max_event_bytes=16 << 10) as srv:
        async with open_client(srv.url) as bystander, open_client(srv.url) as victim:
            await victim.send_raw(
                json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (20 << 10)})
            )
            await victim.expect_error("event_too_large")
            await victim.send_raw("x" * (100 << 10))
            with pytest.raises(ConnectionClosed) as closed:
                await victim.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            assert text_reply(await bystander.turn("fine")) == "You said: fine"


async def test_connections_are_independent(server: LocalModelServer) -> None:
    async with open_client(server.url) as a, open_client(server.url) as b:
        await a.send_raw("garbage")
        await a.expect_error("invalid_json")
        await a.user_text("say " + "x " * 500)
        await a.send({"type": "response.create"})
        await a.recv()  # response.created: a is mid-response when it vanishes
        await a.ws.close()
        events = await b.turn("hi")
        # Ids are per connection, so b's ids do not depend on a's activity.
        assert events[-1]["response"]["id"] == "resp_000001"
        assert text_reply(events) == "You said: hi"
    for _ in range(100):
        if server.connection_count == 0:
            break
        await asyncio.sleep(0.01)
    assert server.connection_count == 0


# --- transport ------------------------------------------------------------------------------


async def test_http_errors_and_connection_limit() -> None:
    async with LocalModelServer(max_connections=1) as srv:
        with pytest.raises(InvalidStatus) as not_found:
            async with connect(f"ws://127.0.0.1:{srv.port}/elsewhere", open_timeout=5):
                pass
        assert not_found.value.response.status_code == 404
        async with open_client(srv.url):
            with pytest.raises(InvalidStatus) as busy:
                async with connect(srv.url, open_timeout=5):
                    pass
            assert busy.value.response.status_code == 503


async def test_authorization_is_never_logged(
    server: LocalModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-super-secret-value"
    with caplog.at_level(logging.DEBUG, logger="ray_realtime.local"):
        async with open_client(
            server.url, additional_headers={"Authorization": f"Bearer {secret}"}
        ) as c:
            await c.turn("hi")
    assert secret not in caplog.text
    assert "[redacted]" in caplog.text


async def test_openai_sdk_client_interoperates(server: LocalModelServer) -> None:
    from openai import AsyncOpenAI

    sdk = AsyncOpenAI(api_key="sk-test", websocket_base_url=f"ws://127.0.0.1:{server.port}/v1")
    try:
        async with sdk.realtime.connect(model="gpt-realtime") as conn:
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "say from the sdk"}],
                }
            )
            await conn.response.create()
            text = None
            for _ in range(100):
                event = await asyncio.wait_for(conn.recv(), RECV_TIMEOUT_S)
                if event.type == "response.done":
                    assert event.response.output is not None
                    text = event.response.output[0].content[0].text  # type: ignore[union-attr]
                    break
            assert text == "from the sdk"
    finally:
        await sdk.close()


def test_command_line_server_runs_until_sigterm() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray_realtime.local", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/v1/realtime", url), url

        async def one_turn() -> str:
            async with open_client(url) as c:
                return text_reply(await c.turn("cli"))

        assert asyncio.run(one_turn()) == "You said: cli"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
