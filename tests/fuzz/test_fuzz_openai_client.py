"""Fuzzing the OpenAI client's receive path with hostile server frames.

Each example starts a tiny WebSocket server on loopback that plays a realtime model:
it accepts the real :class:`OpenAIRealtimeWebSocketModel`, sends it fuzzed frames and
then a sentinel transcript delta. Every event the client reports must be one of the
model event types, every exception event a ``ProtocolError``, the sentinel must arrive
(the read loop goes on), everything must cross the wire codec (as in actor mode), and
nothing may be logged at ERROR.
"""

from __future__ import annotations

import asyncio
import time
import typing
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve

from ray_realtime import wire
from ray_realtime.model import OpenAIRealtimeWebSocketModel, RealtimeModelEvent
from ray_realtime.model.conversion import SERVER_EVENT_ALIASES

from .common import KEY, TEXT, ErrorRecords, deep_json_text, dumps, json_values

EXAMPLE_SECONDS = 5.0
MODEL_EVENT_TYPES = typing.get_args(RealtimeModelEvent)
SENTINEL = {
    "type": "response.output_audio_transcript.delta",
    "event_id": "sentinel",
    "item_id": "item_sentinel",
    "response_id": "resp_sentinel",
    "output_index": 0,
    "content_index": 0,
    "delta": "SENTINEL",
}
SERVER_TYPES = [
    "error",
    "session.created",
    "session.updated",
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.created",
    "conversation.item.retrieved",
    "conversation.item.deleted",
    "conversation.item.input_audio_transcription.completed",
    "input_audio_buffer.timeout_triggered",
    "input_audio_buffer.speech_started",
    "response.created",
    "response.done",
    "response.output_item.done",
    "response.output_audio.delta",
    "response.output_audio.done",
    "response.output_audio_transcript.delta",
    "response.output_text.delta",
    *SERVER_EVENT_ALIASES,
]
IDS = st.one_of(st.sampled_from(["item_1", "resp_1", "call_1", ""]), TEXT)
ITEM = st.fixed_dictionaries(
    {},
    optional={
        "id": IDS,
        "type": st.sampled_from(["message", "function_call", "function_call_output", "mcp"]),
        "role": st.sampled_from(["user", "assistant", "system", "tool"]),
        "status": st.sampled_from(["completed", "incomplete", "in_progress", "odd"]),
        "content": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "type": st.sampled_from(
                            ["input_text", "input_audio", "output_text", "output_audio", "x"]
                        ),
                        "text": json_values(2),
                        "transcript": json_values(2),
                    },
                ),
                max_size=3,
            ),
            json_values(3),
        ),
        "name": TEXT,
        "call_id": IDS,
        "arguments": TEXT,
    },
)
FIELDS = {
    "item_id": IDS,
    "response_id": IDS,
    "content_index": st.one_of(st.integers(-5, 5), st.just(2**64), json_values(1)),
    "delta": st.one_of(TEXT, st.sampled_from(["AAAA", "AA==", "!!", ""])),
    "transcript": TEXT,
    "item": st.one_of(ITEM, json_values(3)),
    "previous_item_id": IDS,
    "response": st.one_of(
        st.fixed_dictionaries({}, optional={"id": IDS, "status": TEXT}), json_values(2)
    ),
    "error": st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "message": TEXT,
                "type": TEXT,
                "code": st.sampled_from(
                    ["conversation_already_has_active_response", "response_cancel_not_active"]
                ),
                "event_id": TEXT,
            },
        ),
        json_values(2),
    ),
    "audio_start_ms": json_values(1),
    "audio_end_ms": json_values(1),
}
EVENT = st.builds(
    lambda t, fields, extra: {"type": t, **fields, **extra},
    st.one_of(st.sampled_from(SERVER_TYPES), TEXT),
    st.fixed_dictionaries({}, optional=FIELDS),
    st.dictionaries(KEY, json_values(), max_size=3),
)
FRAMES = st.one_of(
    EVENT.map(dumps),
    json_values().map(dumps),
    TEXT.map(lambda t: t.encode("utf-8", "replace").decode("utf-8")),
    st.binary(max_size=64),
    st.builds(deep_json_text, st.integers(1, 3000), st.sampled_from(["[", "{"])),
    st.builds(
        lambda depth: '{"type": "response.done", "response": ' + deep_json_text(depth, "{") + "}",
        st.integers(50, 1500),
    ),
)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.sentinel = asyncio.Event()

    async def on_event(self, event: Any) -> None:
        self.events.append(event)
        if getattr(event, "delta", None) == "SENTINEL":
            self.sentinel.set()


async def _play(frames: list[str | bytes]) -> Recorder:
    async def handler(conn: ServerConnection) -> None:
        async for _ in conn:  # the client's session.update comes first
            for frame in frames:
                await conn.send(frame)
            await conn.send(dumps(SENTINEL))
            await conn.wait_closed()
            return

    recorder = Recorder()
    async with serve(handler, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        model = OpenAIRealtimeWebSocketModel(emit_raw_server_events=True)
        model.add_listener(recorder)  # type: ignore[arg-type]
        await model.connect({"url": f"ws://127.0.0.1:{port}/v1/realtime"})
        try:
            await asyncio.wait_for(recorder.sentinel.wait(), EXAMPLE_SECONDS)
        finally:
            await model.close()
    return recorder


@given(frames=st.lists(FRAMES, min_size=1, max_size=6))
def test_hostile_server_frames(error_records: ErrorRecords, frames: list[str | bytes]) -> None:
    start = time.monotonic()
    recorder = asyncio.run(_play(frames))
    assert time.monotonic() - start < EXAMPLE_SECONDS + 2
    for event in recorder.events:
        assert isinstance(event, MODEL_EVENT_TYPES), event
        if event.type == "exception":
            assert event.exception_type in ("ProtocolError", "ModelConnectionError"), event
    # Actor mode sends every event through the codec: none may fail it.
    data = wire.encode_batch(recorder.events, len(recorder.events), 0, False)
    decoded = wire.decode_batch(data)[0]
    assert [type(e) for e in decoded] == [type(e) for e in recorder.events]
    # Compared as bytes, not values: a server may send NaN, which equals nothing.
    assert wire.encode_batch(decoded, len(decoded), 0, False) == data
    assert not error_records.records, [r.getMessage() for r in error_records.records]
