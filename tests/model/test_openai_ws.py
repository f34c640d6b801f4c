"""OpenAIRealtimeWebSocketModel against a scripted fake peer on loopback.

The peer is a real websockets server bound to 127.0.0.1: it records every
client event it receives (each validated against the GA client schema) and
sends the server events a test scripts (each validated against the GA server
schema when built, see ``test_conversion``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

from ray_realtime.exceptions import (
    ConfigError,
    InputTooLargeError,
    ModelConnectionError,
    ProtocolError,
    UserError,
)
from ray_realtime.model import (
    OpenAIRealtimeWebSocketModel,
    RealtimeModelAudioInterruptedEvent,
    RealtimeModelConnectionStatusEvent,
    RealtimeModelEvent,
    RealtimeModelListener,
    RealtimeModelSendAudio,
    RealtimeModelSendInterrupt,
    RealtimeModelSendRawMessage,
    RealtimeModelSendSessionUpdate,
    RealtimeModelSendToolOutput,
    RealtimeModelSendUserInput,
    RealtimeModelToolCallEvent,
    RealtimePlaybackTracker,
)
from ray_realtime.model.conversion import server_event_to_model_events
from ray_realtime.types.config import RealtimeModelConfig

from .test_conversion import (
    assistant_message,
    audio_delta,
    check_client_event,
    error_event,
    function_call,
    item_added,
    item_done,
    output_item_done,
    response_created,
    response_done,
    speech_started,
    text_delta,
    transcript_delta,
)

TIMEOUT = 3.0
SECRET = "sk-test-SECRET-0123456789abcdef"


async def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait until ``predicate()`` holds (polling, bounded in time)."""
    # Polling, not an Event: the state watched changes on either side (peer or
    # model) and the helper stays generic; the timeout bounds it.
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


class FakePeer:
    """A scripted Realtime server: records client events, sends server events."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.invalid: list[str] = []
        self.headers: Headers | None = None
        self.path: str | None = None
        self.connections = 0
        self._conn: ServerConnection | None = None
        self._server: Server | None = None
        self.url = ""
        # Replies sent automatically after a received event of this type.
        self.auto_reply: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {}

    async def start(self) -> None:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, conn: ServerConnection) -> None:
        self._conn = conn
        self.connections += 1
        assert conn.request is not None
        self.headers = conn.request.headers
        self.path = conn.request.path
        try:
            async for message in conn:
                event = json.loads(message)
                try:
                    check_client_event(event)
                except Exception as exc:
                    self.invalid.append(f"{event.get('type')}: {exc}")
                self.received.append(event)
                reply = self.auto_reply.get(event.get("type", ""))
                if reply is not None:
                    for server_event in reply(event):
                        await conn.send(json.dumps(server_event))
        except ConnectionClosed:
            pass

    async def send(self, *events: dict[str, Any]) -> None:
        await eventually(lambda: self._conn is not None)
        assert self._conn is not None
        for event in events:
            await self._conn.send(json.dumps(event))

    async def send_raw(self, data: str | bytes) -> None:
        await eventually(lambda: self._conn is not None)
        assert self._conn is not None
        await self._conn.send(data)

    async def close_connection(self, code: int, reason: str) -> None:
        assert self._conn is not None
        await self._conn.close(code, reason)

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e.get("type") == event_type]

    def types(self) -> list[str]:
        return [e["type"] for e in self.received]

    async def wait_count(self, event_type: str, count: int) -> list[dict[str, Any]]:
        await eventually(lambda: len(self.of_type(event_type)) >= count)
        return self.of_type(event_type)


class Recorder(RealtimeModelListener):
    """Collects model events."""

    def __init__(self) -> None:
        self.events: list[RealtimeModelEvent] = []

    async def on_event(self, event: RealtimeModelEvent) -> None:
        self.events.append(event)

    def of_type(self, event_type: str) -> list[Any]:
        return [e for e in self.events if e.type == event_type]

    async def wait_count(self, event_type: str, count: int = 1) -> list[Any]:
        await eventually(lambda: len(self.of_type(event_type)) >= count)
        return self.of_type(event_type)


class Raiser(RealtimeModelListener):
    def __init__(self) -> None:
        self.calls = 0

    async def on_event(self, event: RealtimeModelEvent) -> None:
        self.calls += 1
        raise RuntimeError("listener bug")


@pytest.fixture
async def peer() -> AsyncIterator[FakePeer]:
    fake = FakePeer()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()
    assert fake.invalid == [], fake.invalid


Connected = tuple[OpenAIRealtimeWebSocketModel, Recorder]
Connect = Callable[..., Awaitable[Connected]]


@pytest.fixture
async def connected(peer: FakePeer) -> AsyncIterator[Connect]:
    """Connect models to the peer; closes them at the end."""
    models: list[OpenAIRealtimeWebSocketModel] = []

    async def _connect(config: dict[str, Any] | None = None, **model_kwargs: Any) -> Connected:
        model = OpenAIRealtimeWebSocketModel(**model_kwargs)
        recorder = Recorder()
        model.add_listener(recorder)
        models.append(model)
        options: RealtimeModelConfig = {"url": peer.url, **(config or {})}  # type: ignore[typeddict-item]
        await model.connect(options)
        await peer.wait_count("session.update", 1)
        return model, recorder

    try:
        yield _connect
    finally:
        for model in models:
            await model.close()


# ---------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------


async def test_connect_sends_session_update_and_reports_status(
    peer: FakePeer, connected: Connect
) -> None:
    model, recorder = await connected(
        {
            "initial_model_settings": {
                "instructions": "Be brief.",
                "voice": "marin",
                "output_audio_format": "pcm16",
                "turn_detection": {"type": "semantic_vad"},
            }
        }
    )
    (update,) = peer.of_type("session.update")
    # What the settings leave out comes from DEFAULT_MODEL_SETTINGS, and
    # tracing is "auto" unless set, as the SDK sends it.
    pcm = {"type": "audio/pcm", "rate": 24000}
    assert update["session"] == {
        "type": "realtime",
        "instructions": "Be brief.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": pcm,
                "transcription": {"model": "gpt-4o-mini-transcribe"},
                "turn_detection": {"type": "semantic_vad"},
            },
            "output": {"format": pcm, "voice": "marin"},
        },
        "tools": [],
        "tracing": "auto",
    }
    assert update["event_id"]
    assert [e.status for e in recorder.of_type("connection_status")] == ["connecting", "connected"]
    assert peer.headers is not None and "Authorization" not in peer.headers
    assert peer.headers.get("Sec-WebSocket-Extensions") is None  # compression off
    await model.close()
    assert [e.status for e in recorder.of_type("connection_status")] == [
        "connecting",
        "connected",
        "disconnected",
    ]


async def test_close_is_idempotent_and_leaves_no_task(connected: Connect) -> None:
    model, recorder = await connected()
    await model.close()
    await model.close()
    assert [e.status for e in recorder.of_type("connection_status")].count("disconnected") == 1
    names = [t.get_name() for t in asyncio.all_tasks()]
    assert "realtime-model-reader" not in names
    with pytest.raises(ModelConnectionError, match="not connected"):
        await model.send_event(RealtimeModelSendUserInput("hi"))


async def test_a_listener_may_close_the_model(peer: FakePeer, connected: Connect) -> None:
    model, recorder = await connected()

    class Closer(RealtimeModelListener):
        async def on_event(self, event: RealtimeModelEvent) -> None:
            if event.type == "turn_started":
                await model.close()

    model.add_listener(Closer())
    await peer.send(response_created("resp_1"))
    await recorder.wait_count("connection_status", 3)
    assert recorder.events[-1] == RealtimeModelConnectionStatusEvent(status="disconnected")
    await eventually(
        lambda: "realtime-model-reader" not in {t.get_name() for t in asyncio.all_tasks()}
    )


async def test_close_before_connect_is_a_no_op() -> None:
    model = OpenAIRealtimeWebSocketModel()
    await model.close()
    assert "status=None" in repr(model)


async def test_connect_twice_is_refused(connected: Connect, peer: FakePeer) -> None:
    model, _ = await connected()
    with pytest.raises(UserError, match="already connected"):
        await model.connect({"url": peer.url})


async def test_server_close_reports_exception_and_disconnect(
    peer: FakePeer, connected: Connect
) -> None:
    model, recorder = await connected()
    await peer.close_connection(1011, "internal error")
    await recorder.wait_count("connection_status", 3)
    (exc,) = recorder.of_type("exception")
    assert exc.exception_type == "ModelConnectionError"
    assert "1011" in exc.message
    assert recorder.events[-1] == RealtimeModelConnectionStatusEvent(status="disconnected")
    with pytest.raises(ModelConnectionError):
        await model.send_event(RealtimeModelSendUserInput("hi"))


async def test_reconnect_after_server_close(peer: FakePeer, connected: Connect) -> None:
    model, recorder = await connected()
    await peer.close_connection(1000, "bye")
    await recorder.wait_count("connection_status", 3)
    assert recorder.of_type("exception") == []  # a normal close is not an error
    await model.connect({"url": peer.url})
    await peer.wait_count("session.update", 2)
    assert peer.connections == 2


# ---------------------------------------------------------------------------
# Event mapping
# ---------------------------------------------------------------------------


async def test_text_turn(peer: FakePeer, connected: Connect) -> None:
    model, recorder = await connected({"initial_model_settings": {"output_modalities": ["text"]}})
    await model.send_event(RealtimeModelSendUserInput("What is 2+2?"))
    await peer.wait_count("response.create", 1)
    (create_item,) = peer.of_type("conversation.item.create")
    assert create_item["item"]["content"] == [{"type": "input_text", "text": "What is 2+2?"}]
    assert peer.types()[-2:] == ["conversation.item.create", "response.create"]

    message = assistant_message("item_a", status="in_progress")
    await peer.send(
        response_created("resp_1"),
        item_added(message, previous_item_id="item_u"),
        text_delta("item_a", "Four"),
        text_delta("item_a", "."),
        item_done(assistant_message("item_a", text="Four.")),
        response_done("resp_1"),
    )
    await recorder.wait_count("turn_ended")
    types = [e.type for e in recorder.events if e.type != "connection_status"]
    assert types == [
        "turn_started",
        "item_updated",
        "transcript_delta",
        "transcript_delta",
        "item_updated",
        "turn_ended",
    ]
    assert [e.delta for e in recorder.of_type("transcript_delta")] == ["Four", "."]
    final = recorder.of_type("item_updated")[-1].item
    assert final.content[0].text == "Four."
    assert recorder.of_type("turn_started")[0].response_id == "resp_1"
    assert recorder.of_type("turn_ended")[0].status == "completed"


async def test_audio_turn_with_transcript(peer: FakePeer, connected: Connect) -> None:
    _, recorder = await connected()
    await peer.send(
        response_created("resp_1"),
        audio_delta("item_a", b"\x01\x00" * 2400),
        transcript_delta("item_a", "Hello"),
        response_done("resp_1"),
    )
    await recorder.wait_count("turn_ended")
    (audio,) = recorder.of_type("audio")
    assert audio.data == b"\x01\x00" * 2400
    assert (audio.item_id, audio.content_index, audio.response_id) == ("item_a", 0, "resp_1")
    assert recorder.of_type("transcript_delta")[0].delta == "Hello"


async def test_tool_call_and_output(peer: FakePeer, connected: Connect) -> None:
    model, recorder = await connected()
    call = function_call("item_f", "call_1", "get_weather", '{"city": "Paris"}')
    await peer.send(response_created("resp_1"), output_item_done(call), response_done("resp_1"))
    await recorder.wait_count("turn_ended")
    (tool_call,) = recorder.of_type("function_call")
    assert tool_call == RealtimeModelToolCallEvent(
        name="get_weather", call_id="call_1", arguments='{"city": "Paris"}', id="item_f"
    )
    await model.send_event(RealtimeModelSendToolOutput(tool_call, '{"temp": 21}'))
    await peer.wait_count("response.create", 1)
    (output,) = peer.of_type("conversation.item.create")
    assert output["item"] == {
        "type": "function_call_output",
        "call_id": "call_1",
        "output": '{"temp": 21}',
    }
    await model.send_event(RealtimeModelSendToolOutput(tool_call, "again", start_response=False))
    await peer.wait_count("conversation.item.create", 2)
    await asyncio.sleep(0.05)
    assert len(peer.of_type("response.create")) == 1


async def test_raw_server_events_when_asked(peer: FakePeer, connected: Connect) -> None:
    _, recorder = await connected(emit_raw_server_events=True)
    event = response_created("resp_1")
    await peer.send(event)
    await recorder.wait_count("turn_started")
    (raw,) = recorder.of_type("raw_server_event")
    assert raw.data == event
    assert recorder.events.index(raw) < recorder.events.index(recorder.of_type("turn_started")[0])


async def test_audio_deltas_in_any_shape_give_what_the_whole_parse_gives(
    peer: FakePeer, connected: Connect
) -> None:
    """Audio-sized deltas skip the whole-message JSON parse; every shape of frame
    still gives the events (and raw events) of ``json.loads`` + conversion."""
    _, recorder = await connected(emit_raw_server_events=True)
    pcm = bytes(range(256)) * 8
    b64 = base64.b64encode(pcm).decode("ascii")
    compact = json.dumps(audio_delta("item_a", pcm), separators=(",", ":"))
    escaped = compact.replace(b64[:8], "".join(f"\\u{ord(c):04x}" for c in b64[:8]))
    frames = [
        compact,  # the usual shape: the fast path
        json.dumps(audio_delta("item_a", pcm)),  # spaces after the colons
        escaped,  # escapes in the delta: parsed whole, same audio
        compact[:-1] + ',"delta":"AAAA"}',  # a later duplicate: the last one counts
        compact[:-1] + ',"x":"\\"delta\\":\\"AAAA"}',  # the key inside a string
        compact.replace('"item_id":"item_a"', '"item_id":"item_\\u0062"'),
        compact.replace('"content_index":0', '"content_index":"0"'),  # wrong type
        compact.replace(b64, b64[:-1]),  # not base64
    ]
    for frame in frames:
        await peer.send_raw(frame)
    await peer.send(transcript_delta("item_a", "end"))
    await recorder.wait_count("transcript_delta")
    expected: list[Any] = []
    for frame in frames:
        data = json.loads(frame)
        expected.append(("raw_server_event", data))
        try:
            expected += [(e.type, e) for e in server_event_to_model_events(data)]
        except ProtocolError as exc:
            expected.append(("exception", str(exc)))
    got: list[Any] = []
    for event in recorder.events:
        if event.type == "raw_server_event":
            if event.data.get("type") != "response.output_audio.delta":
                continue
            got.append((event.type, event.data))
        elif event.type == "exception":
            got.append((event.type, event.message))
        elif event.type == "audio":
            got.append((event.type, event))
    assert got == expected
    audio = [e for kind, e in got if kind == "audio"]
    assert [a.data for a in audio] == [pcm, pcm, pcm, b"\x00\x00\x00", pcm, pcm]
    assert audio[5].item_id == "item_b"


# ---------------------------------------------------------------------------
# Interruption and truncation
# ---------------------------------------------------------------------------

HUNDRED_MS = b"\x00\x01" * 2400  # 100 ms of 24 kHz PCM16


async def _play_audio(peer: FakePeer, recorder: Recorder, chunks: int) -> None:
    await peer.send(response_created("resp_1"))
    for _ in range(chunks):
        await peer.send(audio_delta("item_a", HUNDRED_MS))
    await recorder.wait_count("audio", chunks)


async def _played(ms: float) -> None:
    """Let ``ms`` of audio play: with no app tracker the client assumes real-time
    playback from the first chunk (as the SDK), never past what it received."""
    await asyncio.sleep(ms / 1000 + 0.05)


async def test_interrupt_cancels_and_truncates_at_received_audio(
    peer: FakePeer, connected: Connect
) -> None:
    model, recorder = await connected()
    await _play_audio(peer, recorder, 2)
    await _played(200)
    await model.send_event(RealtimeModelSendInterrupt())
    (truncate,) = await peer.wait_count("conversation.item.truncate", 1)
    assert peer.of_type("response.cancel")
    assert truncate["item_id"] == "item_a"
    assert truncate["content_index"] == 0
    assert truncate["audio_end_ms"] == 200
    (interrupted,) = recorder.of_type("audio_interrupted")
    assert interrupted == RealtimeModelAudioInterruptedEvent(item_id="item_a", content_index=0)

    # Playback state was reset: a second interrupt truncates nothing.
    await peer.send(response_done("resp_1", "cancelled"))
    await recorder.wait_count("turn_ended")
    await model.send_event(RealtimeModelSendInterrupt())
    await model.send_event(RealtimeModelSendRawMessage({"type": "input_audio_buffer.clear"}))
    await peer.wait_count("input_audio_buffer.clear", 1)
    assert len(peer.of_type("conversation.item.truncate")) == 1
    assert len(peer.of_type("response.cancel")) == 1  # idle: nothing to cancel


async def test_without_a_tracker_audio_plays_in_real_time_from_its_first_chunk(
    peer: FakePeer, connected: Connect
) -> None:
    # Audio arrives far faster than it plays: an interrupt at once truncates
    # near the start, not after everything received (the SDK's assumption).
    model, recorder = await connected()
    await peer.send(response_created("resp_1"))
    await peer.send(*[audio_delta("item_a", HUNDRED_MS) for _ in range(50)])  # 5 s
    await recorder.wait_count("audio", 50)
    await model.send_event(RealtimeModelSendInterrupt())
    (truncate,) = await peer.wait_count("conversation.item.truncate", 1)
    assert 0 <= truncate["audio_end_ms"] < 2500


async def test_interrupt_uses_the_app_playback_tracker(peer: FakePeer, connected: Connect) -> None:
    tracker = RealtimePlaybackTracker()
    model, recorder = await connected({"playback_tracker": tracker})
    await _play_audio(peer, recorder, 3)
    tracker.on_play_bytes("item_a", 0, HUNDRED_MS[:2400])  # the user heard 50 ms
    await model.send_event(RealtimeModelSendInterrupt())
    (truncate,) = await peer.wait_count("conversation.item.truncate", 1)
    assert truncate["audio_end_ms"] == 50
    assert tracker.get_state()["current_item_id"] is None  # reset on interrupt


async def test_truncation_is_clamped_to_audio_received(peer: FakePeer, connected: Connect) -> None:
    tracker = RealtimePlaybackTracker()
    model, recorder = await connected({"playback_tracker": tracker})
    await _play_audio(peer, recorder, 2)
    tracker.on_play_ms("item_a", 0, 5000)  # the app over-reports
    await model.send_event(RealtimeModelSendInterrupt())
    (truncate,) = await peer.wait_count("conversation.item.truncate", 1)
    assert truncate["audio_end_ms"] == 200


async def test_g711_milliseconds(peer: FakePeer, connected: Connect) -> None:
    model, recorder = await connected(
        {"initial_model_settings": {"output_audio_format": "g711_ulaw"}}
    )
    await peer.send(response_created("resp_1"), audio_delta("item_a", b"\xff" * 800))
    await recorder.wait_count("audio")
    await _played(100)
    await model.send_event(RealtimeModelSendInterrupt())
    (truncate,) = await peer.wait_count("conversation.item.truncate", 1)
    assert truncate["audio_end_ms"] == 100


async def test_session_update_changes_the_millisecond_count(
    peer: FakePeer, connected: Connect
) -> None:
    model, recorder = await connected()
    await model.send_event(RealtimeModelSendSessionUpdate({"output_audio_format": "g711_alaw"}))
    (_, update) = await peer.wait_count("session.update", 2)
    assert update["session"]["audio"]["output"]["format"] == {"type": "audio/pcma"}
    await peer.send(response_created("resp_1"), audio_delta("item_a", b"\xd5" * 400))
    await recorder.wait_count("audio")
    await _played(50)
    await model.send_event(RealtimeModelSendInterrupt())
    (truncate,) = await peer.wait_count("conversation.item.truncate", 1)
    assert truncate["audio_end_ms"] == 50


async def test_forced_cancel_when_idle(peer: FakePeer, connected: Connect) -> None:
    model, recorder = await connected()
    await model.send_event(RealtimeModelSendInterrupt(force_response_cancel=True))
    await peer.wait_count("response.cancel", 1)
    assert peer.of_type("conversation.item.truncate") == []
    assert recorder.of_type("audio_interrupted") == []


async def test_cancel_race_error_is_not_reported_as_error(
    peer: FakePeer, connected: Connect
) -> None:
    model, recorder = await connected()
    await model.send_event(RealtimeModelSendInterrupt(force_response_cancel=True))
    (cancel,) = await peer.wait_count("response.cancel", 1)
    await peer.send(
        error_event(
            "Cancellation failed: no active response found",
            code="response_cancel_not_active",
            event_id=cancel["event_id"],
        ),
        error_event("something else", code="invalid_value", event_id="evt_other"),
    )
    (error,) = await recorder.wait_count("error")
    assert error.error["code"] == "invalid_value"
    assert any(
        e.data.get("type") == "error" for e in recorder.of_type("other")
    )  # the race is still visible


async def test_speech_started_truncates_playing_audio(peer: FakePeer, connected: Connect) -> None:
    _, recorder = await connected()
    await _play_audio(peer, recorder, 3)
    await _played(300)
    await peer.send(speech_started())
    (truncate,) = await peer.wait_count("conversation.item.truncate", 1)
    assert truncate["audio_end_ms"] == 300
    await recorder.wait_count("audio_interrupted")
    # The server cancels the response itself (interrupt_response).
    assert peer.of_type("response.cancel") == []
    # Nothing plays any more: another speech_started truncates nothing.
    await peer.send(speech_started("item_user2"))
    await eventually(lambda: len(recorder.of_type("other")) >= 2)
    assert len(peer.of_type("conversation.item.truncate")) == 1


async def test_speech_started_without_audio_truncates_nothing(
    peer: FakePeer, connected: Connect
) -> None:
    _, recorder = await connected()
    await peer.send(speech_started())
    await recorder.wait_count("other")
    assert peer.of_type("conversation.item.truncate") == []
    assert recorder.of_type("audio_interrupted") == []


async def test_speech_started_respects_interrupt_response_false(
    peer: FakePeer, connected: Connect
) -> None:
    _, recorder = await connected(
        {
            "initial_model_settings": {
                "turn_detection": {"type": "server_vad", "interrupt_response": False}
            }
        }
    )
    await _play_audio(peer, recorder, 1)
    await peer.send(speech_started())
    await recorder.wait_count("other")
    assert peer.of_type("conversation.item.truncate") == []


# ---------------------------------------------------------------------------
# Response sequencing
# ---------------------------------------------------------------------------


async def test_second_response_create_waits_for_response_done(
    peer: FakePeer, connected: Connect
) -> None:
    model, recorder = await connected()
    await model.send_event(RealtimeModelSendUserInput("one"))
    await model.send_event(RealtimeModelSendUserInput("two"))
    await model.send_event(RealtimeModelSendUserInput("three"))
    await peer.wait_count("conversation.item.create", 3)
    assert len(peer.of_type("response.create")) == 1

    await peer.send(response_created("resp_1"))
    await recorder.wait_count("turn_started")
    await asyncio.sleep(0.05)
    assert len(peer.of_type("response.create")) == 1

    await peer.send(response_done("resp_1"))
    await peer.wait_count("response.create", 2)
    # The deferred requests coalesced into one.
    await peer.send(response_created("resp_2"), response_done("resp_2"))
    await recorder.wait_count("turn_ended", 2)
    await asyncio.sleep(0.05)
    assert len(peer.of_type("response.create")) == 2


async def test_server_vad_response_defers_ours(peer: FakePeer, connected: Connect) -> None:
    model, recorder = await connected()
    await peer.send(response_created("resp_vad"))
    await recorder.wait_count("turn_started")
    await model.send_event(RealtimeModelSendUserInput("hi"))
    await peer.wait_count("conversation.item.create", 1)
    await asyncio.sleep(0.05)
    assert peer.of_type("response.create") == []
    await peer.send(response_done("resp_vad"))
    await peer.wait_count("response.create", 1)


async def test_already_active_error_is_retried_after_response_done(
    peer: FakePeer, connected: Connect
) -> None:
    model, recorder = await connected()
    await model.send_event(RealtimeModelSendUserInput("hi"))
    (create,) = await peer.wait_count("response.create", 1)
    # A server VAD response raced ours and won.
    await peer.send(
        error_event(
            "Conversation already has an active response in progress: resp_vad.",
            code="conversation_already_has_active_response",
            event_id=create["event_id"],
        )
    )
    await eventually(lambda: any(e.data.get("type") == "error" for e in recorder.of_type("other")))
    assert recorder.of_type("error") == []
    await asyncio.sleep(0.05)
    assert len(peer.of_type("response.create")) == 1  # not retried while one is active

    await peer.send(response_created("resp_vad"), response_done("resp_vad"))
    await peer.wait_count("response.create", 2)
    await peer.send(response_created("resp_2"), response_done("resp_2"))
    await recorder.wait_count("turn_ended", 2)
    await asyncio.sleep(0.05)
    assert len(peer.of_type("response.create")) == 2


async def test_failed_response_create_frees_the_slot(peer: FakePeer, connected: Connect) -> None:
    model, recorder = await connected()
    await model.send_event(RealtimeModelSendUserInput("one"))
    (create,) = await peer.wait_count("response.create", 1)
    await model.send_event(RealtimeModelSendUserInput("two"))  # deferred
    await peer.wait_count("conversation.item.create", 2)
    await peer.send(error_event("bad", code="invalid_value", event_id=create["event_id"]))
    await recorder.wait_count("error")
    await peer.wait_count("response.create", 2)  # the deferred one went out


async def test_malformed_response_done_still_frees_the_slot(
    peer: FakePeer, connected: Connect
) -> None:
    model, recorder = await connected()
    await peer.send(response_created("resp_1"))
    await recorder.wait_count("turn_started")
    await model.send_event(RealtimeModelSendUserInput("hi"))  # deferred
    await peer.wait_count("conversation.item.create", 1)
    await peer.send_raw(
        json.dumps({**response_done("resp_1"), "response": {"id": "resp_1", "status": 5}})
    )
    (exc,) = await recorder.wait_count("exception")
    assert "'status' must be a string" in exc.message
    await peer.wait_count("response.create", 1)


async def test_audio_commit_requests_a_response_only_without_turn_detection(
    peer: FakePeer, connected: Connect
) -> None:
    model, _ = await connected()
    await model.send_event(RealtimeModelSendAudio(b"\x00\x00" * 480, commit=True))
    await peer.wait_count("input_audio_buffer.commit", 1)
    (append,) = peer.of_type("input_audio_buffer.append")
    assert append["audio"] == "AAAA" * 320
    await asyncio.sleep(0.05)
    assert peer.of_type("response.create") == []

    await model.send_event(RealtimeModelSendSessionUpdate({"turn_detection": None}))
    (_, update) = await peer.wait_count("session.update", 2)
    assert update["session"]["audio"]["input"]["turn_detection"] is None
    await model.send_event(RealtimeModelSendAudio(b"\x00\x00" * 480, commit=True))
    await peer.wait_count("response.create", 1)
    assert peer.types()[-3:] == [
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "response.create",
    ]


async def test_audio_too_large_is_refused(connected: Connect) -> None:
    model, _ = await connected()
    with pytest.raises(InputTooLargeError):
        await model.send_event(RealtimeModelSendAudio(b"\x00" * (12 * 1024 * 1024)))


async def test_raw_message_gets_an_event_id(peer: FakePeer, connected: Connect) -> None:
    model, _ = await connected()
    await model.send_event(RealtimeModelSendRawMessage({"type": "input_audio_buffer.clear"}))
    await model.send_event(
        RealtimeModelSendRawMessage({"type": "input_audio_buffer.clear", "event_id": "mine"})
    )
    first, second = await peer.wait_count("input_audio_buffer.clear", 2)
    assert first["event_id"] and second["event_id"] == "mine"
    with pytest.raises(UserError):
        await model.send_event(RealtimeModelSendRawMessage({"no": "type"}))


async def test_raw_message_in_the_sdk_shape(peer: FakePeer, connected: Connect) -> None:
    model, _ = await connected()
    # The SDK's RealtimeModelRawClientMessage: other_data merged into the body.
    await model.send_event(
        RealtimeModelSendRawMessage(
            {"type": "conversation.item.retrieve", "other_data": {"item_id": "item_7"}}
        )
    )
    (sent,) = await peer.wait_count("conversation.item.retrieve", 1)
    assert sent["item_id"] == "item_7" and "other_data" not in sent
    with pytest.raises(UserError):
        await model.send_event(
            RealtimeModelSendRawMessage({"type": "input_audio_buffer.clear", "other_data": 3})
        )


async def test_every_client_event_has_a_unique_event_id(peer: FakePeer, connected: Connect) -> None:
    model, _ = await connected()
    await model.send_event(RealtimeModelSendUserInput("a"))
    await model.send_event(RealtimeModelSendAudio(b"\x00\x00", commit=True))
    await peer.wait_count("input_audio_buffer.commit", 1)
    ids = [e.get("event_id") for e in peer.received]
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == len(ids)


# ---------------------------------------------------------------------------
# Robustness
# ---------------------------------------------------------------------------


async def test_bad_server_input_is_reported_and_the_loop_goes_on(
    peer: FakePeer, connected: Connect
) -> None:
    _, recorder = await connected()
    await peer.send_raw("{not json")
    await peer.send_raw("[1, 2, 3]")
    await peer.send_raw(b"\x00\x01\x02")
    await peer.send_raw(json.dumps({"type": "future.event", "x": 1}))
    await peer.send_raw(json.dumps({**transcript_delta("item_a", "x"), "delta": 5}))
    await peer.send_raw(json.dumps({"event_id": "no type"}))
    await peer.send(transcript_delta("item_a", "good"))
    (delta,) = await recorder.wait_count("transcript_delta")
    assert delta.delta == "good"
    exceptions = recorder.of_type("exception")
    assert len(exceptions) == 5
    assert all(e.exception_type == "ProtocolError" for e in exceptions)
    messages = " | ".join(e.message for e in exceptions)
    assert "malformed JSON" in messages
    assert "got list" in messages
    assert "binary frame" in messages
    assert "'delta' must be a string, got int" in messages
    assert "no 'type'" in messages
    (other,) = recorder.of_type("other")
    assert other.data == {"type": "future.event", "x": 1}


async def test_a_raising_listener_does_not_stop_the_loop(
    peer: FakePeer, connected: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="ray_realtime.model.openai_ws")
    model, recorder = await connected()
    raiser = Raiser()
    model.remove_listener(recorder)
    model.add_listener(raiser)
    model.add_listener(raiser)  # added once only
    model.add_listener(recorder)
    await peer.send(response_created("resp_1"), response_done("resp_1"))
    await recorder.wait_count("turn_ended")
    # Two events, each followed by one exception event telling the listener
    # of its own failure (a failure reaches readers, not only the log).
    assert raiser.calls == 4
    assert "listener bug" in caplog.text
    model.remove_listener(raiser)
    model.remove_listener(raiser)  # removing twice is fine


# ---------------------------------------------------------------------------
# API key handling
# ---------------------------------------------------------------------------


def _assert_secret_absent(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text


async def test_api_key_is_sent_and_never_logged(
    peer: FakePeer,
    connected: Connect,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="websockets.client")
    caplog.set_level(logging.DEBUG, logger="ray_realtime")
    model, recorder = await connected({"api_key": SECRET}, emit_raw_server_events=True)
    assert peer.headers is not None
    assert peer.headers["Authorization"] == f"Bearer {SECRET}"
    await peer.send(error_event("bad"), response_created("resp_1"))
    await recorder.wait_count("turn_started")
    await model.close()
    # The handshake was logged, redacted.
    assert "Authorization: Bearer ***" in caplog.text
    _assert_secret_absent(
        SECRET,
        caplog.text,
        *(r.getMessage() for r in caplog.records),
        repr(recorder.events),
        repr(model),
        repr(vars(model)),
    )


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_api_key_from_a_callable(
    peer: FakePeer, connected: Connect, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    def sync_key() -> str:
        return SECRET

    async def async_key() -> str:
        return SECRET

    await connected({"api_key": sync_key if kind == "sync" else async_key})
    assert peer.headers is not None
    assert peer.headers["Authorization"] == f"Bearer {SECRET}"


async def test_api_key_callable_must_return_a_string(peer: FakePeer) -> None:
    model = OpenAIRealtimeWebSocketModel()
    with pytest.raises(ConfigError, match="must return a string"):
        await model.connect({"url": peer.url, "api_key": lambda: 42})


async def test_headers_override(peer: FakePeer, connected: Connect) -> None:
    await connected({"api_key": SECRET, "headers": {"api-key": "azure-key-123"}})
    assert peer.headers is not None
    assert peer.headers["api-key"] == "azure-key-123"
    assert "Authorization" not in peer.headers


async def test_no_key_for_a_remote_url_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = OpenAIRealtimeWebSocketModel()
    recorder = Recorder()
    model.add_listener(recorder)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        await model.connect({})
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        await model.connect({"url": "ws://realtime.example.com/v1/realtime"})
    assert recorder.events == []  # nothing was attempted


async def test_key_is_not_sent_unencrypted_to_a_remote_host() -> None:
    model = OpenAIRealtimeWebSocketModel()
    with pytest.raises(ConfigError, match="wss://") as info:
        await model.connect({"url": "ws://realtime.example.com/v1/realtime", "api_key": SECRET})
    assert SECRET not in str(info.value)


async def test_env_key_is_not_sent_to_a_custom_url(
    peer: FakePeer, connected: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OPENAI_API_KEY goes to OpenAI's own endpoint only; a custom url gets a
    # key when the config says so (api_key or headers).
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    await connected()
    assert peer.headers is not None
    assert "Authorization" not in peer.headers
    model = OpenAIRealtimeWebSocketModel()
    with pytest.raises(ConfigError, match="no credentials") as info:
        await model.connect({"url": "wss://realtime.example.com/v1/realtime"})
    assert SECRET not in str(info.value)


async def test_in_process_session_sends_no_env_key_to_a_custom_url(
    peer: FakePeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The in-process runner agrees with actor mode: the environment's key is
    # not handed to a url the caller chose.
    from ray_realtime import RealtimeAgent, RealtimeRunner

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    runner = RealtimeRunner(RealtimeAgent(name="a"), config={"execution": "in_process"})
    session = await runner.run(model_config={"url": peer.url})
    async with session:
        await peer.wait_count("session.update", 1)
    assert peer.headers is not None
    assert "Authorization" not in peer.headers


async def test_headers_are_not_sent_unencrypted_to_a_remote_host() -> None:
    model = OpenAIRealtimeWebSocketModel()
    recorder = Recorder()
    model.add_listener(recorder)
    with pytest.raises(ConfigError, match="wss://") as info:
        await model.connect(
            {"url": "ws://realtime.example.com/v1/realtime", "headers": {"api-key": SECRET}}
        )
    assert SECRET not in str(info.value)
    assert recorder.events == []  # nothing was attempted


async def test_bad_initial_settings_fail_before_connecting(peer: FakePeer) -> None:
    model = OpenAIRealtimeWebSocketModel()
    with pytest.raises(ConfigError):
        await model.connect(
            {
                "url": peer.url,
                "initial_model_settings": {
                    "turn_detection": {"type": "server_vad", "eagerness": "low"}
                },
            }
        )
    assert peer.connections == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_connection_refused_is_a_model_connection_error_without_the_key() -> None:
    model = OpenAIRealtimeWebSocketModel(open_timeout=2.0)
    recorder = Recorder()
    model.add_listener(recorder)
    url = f"ws://127.0.0.1:{_free_port()}/v1/realtime"
    with pytest.raises(ModelConnectionError) as info:
        await model.connect({"url": url, "api_key": SECRET})
    exc = info.value
    assert "could not connect" in str(exc)
    _assert_secret_absent(SECRET, str(exc), repr(exc), repr(exc.args))
    assert exc.__cause__ is None and exc.__suppress_context__
    assert [getattr(e, "status", None) for e in recorder.events] == ["connecting", "disconnected"]


async def test_handshake_rejected_is_a_model_connection_error() -> None:
    async def reject(conn: ServerConnection) -> None:
        await conn.close()

    def refuse(conn: ServerConnection, request: Any) -> Any:
        return conn.respond(401, "invalid api key\n")

    async with serve(reject, "127.0.0.1", 0, process_request=refuse) as server:
        port = server.sockets[0].getsockname()[1]
        model = OpenAIRealtimeWebSocketModel()
        with pytest.raises(ModelConnectionError, match="401") as info:
            await model.connect({"url": f"ws://127.0.0.1:{port}/", "api_key": SECRET})
        assert SECRET not in str(info.value)
