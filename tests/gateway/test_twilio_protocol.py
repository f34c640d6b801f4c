"""TwilioStream (the protocol of one call, no I/O) and the webhook signature."""

from __future__ import annotations

import base64
import json

import pytest

from ray_realtime.gateway.twilio import (
    AudioIn,
    BargeIn,
    CallStarted,
    Digit,
    Hangup,
    Heard,
    Send,
    TwilioStream,
    connect_twiml,
    twilio_signature,
    valid_twilio_signature,
)
from tests.gateway.sim import silence_ulaw, tone_ulaw

SID = "MZ1"


def _start(**fmt: object) -> str:
    media_format = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1, **fmt}
    return json.dumps(
        {
            "event": "start",
            "streamSid": SID,
            "start": {
                "streamSid": SID,
                "callSid": "CA1",
                "customParameters": {"a": "b"},
                "mediaFormat": media_format,
            },
        }
    )


def _media(audio: bytes) -> str:
    return json.dumps(
        {
            "event": "media",
            "streamSid": SID,
            "media": {"track": "inbound", "payload": base64.b64encode(audio).decode()},
        }
    )


def _started() -> TwilioStream:
    stream = TwilioStream()
    assert stream.receive(json.dumps({"event": "connected", "protocol": "Call"})) == []
    assert stream.receive(_start()) == [CallStarted(SID, "CA1", {"a": "b"})]
    return stream


def test_media_becomes_audio_and_stop_hangs_up_cleanly() -> None:
    stream = _started()
    frame = silence_ulaw(0.02)
    assert stream.receive(_media(frame)) == [AudioIn(frame)]
    assert stream.receive(json.dumps({"event": "dtmf", "dtmf": {"digit": "5"}})) == [Digit("5")]
    assert stream.receive(json.dumps({"event": "stop", "stop": {}})) == [
        Hangup("the caller hung up", error=False)
    ]
    assert stream.receive(_media(frame)) == []  # closed


@pytest.mark.parametrize(
    "message",
    [
        b"\x00binary",
        "{not json",
        "[1, 2]",
        json.dumps({"event": "media", "media": {"payload": "AAAA"}}),  # before start
        json.dumps({"event": "telepathy"}),
        "x" * 70_000,
    ],
)
def test_bad_messages_before_start_close_the_call(message: str | bytes) -> None:
    commands = TwilioStream().receive(message)
    assert len(commands) == 1 and isinstance(commands[0], Hangup) and commands[0].error


@pytest.mark.parametrize(
    "message",
    [
        json.dumps({"event": "media", "media": {"payload": "not base64!"}}),
        json.dumps({"event": "media", "media": {}}),
        json.dumps({"event": "media", "media": {"payload": "A" * 20_000}}),
        json.dumps({"event": "mark", "mark": {}}),
        json.dumps({"event": "dtmf", "dtmf": {"digit": 5}}),
        json.dumps({"event": "unknown"}),
        _start(),  # a second start
    ],
)
def test_bad_messages_while_streaming_close_the_call(message: str) -> None:
    stream = _started()
    commands = stream.receive(message)
    assert len(commands) == 1 and isinstance(commands[0], Hangup) and commands[0].error
    assert stream.state == "closed"


@pytest.mark.parametrize("fmt", [{"encoding": "audio/l16"}, {"sampleRate": 16000}, {"channels": 2}])
def test_wrong_encodings_are_refused(fmt: dict[str, object]) -> None:
    commands = TwilioStream().receive(_start(**fmt))
    assert isinstance(commands[0], Hangup) and "media format" in commands[0].reason


def test_reply_audio_is_followed_by_a_mark_and_marks_count_heard_audio() -> None:
    stream = _started()
    out1 = stream.reply_audio(b"\xff" * 800, 100.0)
    out2 = stream.reply_audio(b"\xff" * 800, 100.0)
    media, mark = (json.loads(c.text) for c in out1 if isinstance(c, Send))
    assert media == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": base64.b64encode(b"\xff" * 800).decode()},
    }
    assert mark["event"] == "mark" and mark["streamSid"] == SID
    assert stream.playing and stream.sent_ms == 200.0
    stream.receive(json.dumps({"event": "mark", "mark": {"name": mark["mark"]["name"]}}))
    assert stream.heard_ms == 100.0 and stream.playing
    name2 = json.loads(out2[1].text)["mark"]["name"]  # type: ignore[union-attr]
    stream.receive(json.dumps({"event": "mark", "mark": {"name": name2}}))
    assert stream.heard_ms == 200.0 and not stream.playing
    assert stream.interrupted() == []  # nothing playing: no clear


def test_echoed_marks_report_heard_audio_per_reply_item() -> None:
    stream = _started()
    m1 = json.loads(stream.reply_audio(b"\xff" * 400, 50.0, ("item_a", 0))[1].text)  # type: ignore[union-attr]
    stream.reply_audio(b"\xff" * 800, 100.0, ("item_a", 0))
    m3 = json.loads(stream.reply_audio(b"\xff" * 800, 100.0, ("item_b", 1))[1].text)  # type: ignore[union-attr]
    first = stream.receive(json.dumps({"event": "mark", "mark": {"name": m1["mark"]["name"]}}))
    assert first == [Heard("item_a", 0, 50.0)]
    # A later mark covers every chunk sent before it, in order.
    rest = stream.receive(json.dumps({"event": "mark", "mark": {"name": m3["mark"]["name"]}}))
    assert rest == [Heard("item_a", 0, 100.0), Heard("item_b", 1, 100.0)]
    # A chunk of no known item counts as heard but reports nothing.
    m4 = json.loads(stream.reply_audio(b"\xff" * 80, 10.0)[1].text)  # type: ignore[union-attr]
    assert stream.receive(json.dumps({"event": "mark", "mark": {"name": m4["mark"]["name"]}})) == []
    assert stream.heard_ms == 260.0


def test_interrupted_clears_only_while_playing() -> None:
    stream = _started()
    stream.reply_audio(b"\xff" * 800, 100.0)
    assert [json.loads(c.text) for c in stream.interrupted() if isinstance(c, Send)] == [
        {"event": "clear", "streamSid": SID}
    ]
    assert stream.interrupted() == []


def test_loud_caller_over_playing_reply_is_a_barge_in() -> None:
    stream = _started()
    stream.reply_audio(b"\xff" * 8000, 1000.0)
    loud = tone_ulaw(0.02)
    assert stream.receive(_media(loud)) == [AudioIn(loud)]
    assert stream.receive(_media(loud)) == [AudioIn(loud)]
    commands = stream.receive(_media(loud))
    assert commands[0] == AudioIn(loud)
    assert isinstance(commands[1], Send) and json.loads(commands[1].text)["event"] == "clear"
    assert commands[2] == BargeIn(0.0)
    assert not stream.playing
    # Quiet audio over a reply is not a barge-in.
    stream.reply_audio(b"\xff" * 8000, 1000.0)
    for _ in range(10):
        assert stream.receive(_media(silence_ulaw(0.02))) == [AudioIn(silence_ulaw(0.02))]


def test_signature_as_twilio_documents_it() -> None:
    # Twilio's documented example (docs/usage/security): this token, URL and
    # parameters give this signature.
    token = "12345"
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    assert twilio_signature(token, url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert valid_twilio_signature(token, url, params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not valid_twilio_signature(
        token, url, {**params, "Digits": "9"}, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    )
    assert not valid_twilio_signature(token, url, params, None)


def test_twiml_connects_a_stream() -> None:
    assert connect_twiml("wss://h/twilio/media-stream") == (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Response><Connect><Stream url="wss://h/twilio/media-stream"/></Connect></Response>'
    )
