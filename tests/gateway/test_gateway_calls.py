"""Calls through a real Gateway (websockets on loopback) into sessions on the
bundled local model, driven by the Twilio simulator."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from ray_realtime.demo import build_demo_agent
from ray_realtime.gateway.server import Gateway
from ray_realtime.gateway.twilio import twilio_signature
from tests.gateway.sim import TwilioCaller, silence_ulaw, tone_ulaw

TOKEN = "test-auth-token"


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest_asyncio.fixture(params=["passthrough", "resample"])
async def gateway(request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    gw = Gateway(
        build_demo_agent(),
        # Slow speech: the local model's short reply lasts ~1.2 s, long
        # enough to barge in while it plays.
        run_config={"execution": "in_process", "model_settings": {"speed": 0.25}},
        audio_mode=request.param,
        twilio_auth_token=TOKEN,
        start_timeout=1.0,
    )
    async with gw:
        yield gw
    assert gw.open_sessions == 0


def _url(gw: Gateway) -> str:
    return f"ws://127.0.0.1:{gw.port}/twilio/media-stream"


async def _speak_and_hear(caller: TwilioCaller) -> None:
    await caller.start()
    await caller.speak(tone_ulaw(0.6) + silence_ulaw(0.8))
    await _until(lambda: len(caller.audio) > 0, 15, "reply audio")


@pytest.mark.asyncio
async def test_speak_then_hear_mulaw_reply_with_marks(gateway: Gateway) -> None:
    async with TwilioCaller(_url(gateway)) as caller:
        await _speak_and_hear(caller)
        await _until(lambda: len(caller.marks_echoed) >= 1, 15, "marks")
        kinds = [m["event"] for m in caller.received]
        # Every reply chunk is followed by its mark.
        assert kinds[0] == "media" and kinds[1] == "mark"
        assert kinds.count("media") == kinds.count("mark")
        # The reply is a tone (the local model's voice), not silence.
        assert caller.reply_rms() > 500
        assert gateway.open_sessions == 1
    await _until(lambda: gateway.open_sessions == 0, 10, "the session to close")


@pytest.mark.asyncio
async def test_barge_in_during_the_reply_gets_clear(gateway: Gateway) -> None:
    async with TwilioCaller(_url(gateway)) as caller:
        await _speak_and_hear(caller)
        # The reply is still playing (the simulator plays in real time).
        assert caller._play_until > asyncio.get_running_loop().time() + 0.3
        t0 = time.perf_counter()
        await caller.speak(tone_ulaw(0.3))
        await _until(lambda: caller.clears >= 1, 5, "clear")
        assert caller.clear_at is not None and caller.clear_at - t0 < 0.5


@pytest.mark.asyncio
async def test_hang_up_mid_reply_closes_the_session(gateway: Gateway) -> None:
    async with TwilioCaller(_url(gateway)) as caller:
        await _speak_and_hear(caller)
        await caller.stop()
        await asyncio.wait_for(caller.closed.wait(), 10)
    await _until(lambda: gateway.open_sessions == 0 and gateway.active_calls == 0, 10, "closed")
    # A dropped connection (no 'stop') mid-reply also closes the session.
    async with TwilioCaller(_url(gateway)) as caller:
        await _speak_and_hear(caller)
    await _until(lambda: gateway.open_sessions == 0 and gateway.active_calls == 0, 10, "closed")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "bad",
    [
        '{"event": "media", "media": {"payload": "@@@"}}',
        '{"event": "teleport"}',
        "not json",
        '{"event": "media", "media": {"payload": "' + "A" * 40_000 + '"}}',
    ],
)
async def test_bad_frames_close_the_call_and_the_next_call_works(
    gateway: Gateway, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ray_realtime.gateway")
    async with TwilioCaller(_url(gateway)) as caller:
        await caller.start()
        await _until(lambda: gateway.open_sessions == 1, 10, "the session")
        assert caller.ws is not None
        await caller.ws.send(bad)
        await asyncio.wait_for(caller.closed.wait(), 10)
        assert caller.ws.close_code == 1008
    await _until(lambda: gateway.open_sessions == 0, 10, "the session to close")
    assert any("closing call" in r.getMessage() for r in caplog.records)
    async with TwilioCaller(_url(gateway)) as caller:
        await _speak_and_hear(caller)


@pytest.mark.asyncio
async def test_wrong_encoding_and_missing_start_close_the_call(gateway: Gateway) -> None:
    async with TwilioCaller(_url(gateway)) as caller:
        await caller.start(encoding="audio/l16", sampleRate=16000)
        await asyncio.wait_for(caller.closed.wait(), 10)
        assert caller.ws is not None and caller.ws.close_code == 1008
    t0 = time.perf_counter()
    async with TwilioCaller(_url(gateway)) as caller:  # never sends start
        await asyncio.wait_for(caller.closed.wait(), 10)
        assert caller.ws is not None and caller.ws.close_code == 1008
    assert 0.9 < time.perf_counter() - t0 < 5
    assert gateway.open_sessions == 0


async def _post(port: int, path: str, body: str, headers: dict[str, str]) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {path} HTTP/1.1\r\nHost: voice.example.com\r\n"
    head += "Content-Type: application/x-www-form-urlencoded\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body.encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status_line, _, rest = data.decode().partition("\r\n")
    return int(status_line.split()[1]), rest.split("\r\n\r\n", 1)[1]


@pytest.mark.asyncio
async def test_voice_webhook_checks_the_signature(gateway: Gateway) -> None:
    params = {"CallSid": "CA1", "From": "+15550100", "To": "+15550199", "AccountSid": "AC1"}
    body = urlencode(params)
    url = "https://voice.example.com/twilio/voice"
    good = twilio_signature(TOKEN, url, params)
    status, twiml = await _post(gateway.port, "/twilio/voice", body, {"X-Twilio-Signature": good})
    assert status == 200
    assert twiml == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://voice.example.com/twilio/media-stream"/></Connect></Response>'
    )
    bad = twilio_signature("other-token", url, params)
    status, _ = await _post(gateway.port, "/twilio/voice", body, {"X-Twilio-Signature": bad})
    assert status == 403
    status, _ = await _post(gateway.port, "/twilio/voice", body, {})
    assert status == 403
    # A tampered body with the good signature.
    tampered = urlencode({**params, "From": "+15550666"})
    status, _ = await _post(gateway.port, "/twilio/voice", tampered, {"X-Twilio-Signature": good})
    assert status == 403
    # Too large a body: refused, and the gateway still serves.
    status, _ = await _post(gateway.port, "/twilio/voice", "a=" + "b" * 10_000, {})
    assert status == 400
    async with connect(f"ws://127.0.0.1:{gateway.port}/twilio/media-stream") as ws:
        await ws.send(json.dumps({"event": "connected"}))


@pytest.mark.asyncio
async def test_stopping_the_gateway_ends_calls_and_closes_their_sessions() -> None:
    gw = Gateway(build_demo_agent(), run_config={"execution": "in_process"})
    await gw.start()
    try:
        async with TwilioCaller(_url(gw)) as caller:
            await caller.start()
            await _until(lambda: gw.open_sessions == 1, 10, "the session")
            await asyncio.wait_for(gw.stop(), 10)
            await asyncio.wait_for(caller.closed.wait(), 10)
    finally:
        await gw.stop()
    assert gw.open_sessions == 0 and gw.active_calls == 0


@pytest.mark.asyncio
async def test_a_call_whose_session_fails_is_closed_and_the_next_is_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "ray_realtime.gateway")
    calls = 0

    def flaky_agent() -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("agent factory broke")
        return build_demo_agent()

    async with Gateway(flaky_agent, run_config={"execution": "in_process"}) as gw:
        async with TwilioCaller(_url(gw)) as caller:
            await caller.start()
            await asyncio.wait_for(caller.closed.wait(), 10)
            assert caller.ws is not None and caller.ws.close_code == 1011
        assert any("agent factory broke" in r.getMessage() for r in caplog.records)
        async with TwilioCaller(_url(gw)) as caller:
            await _speak_and_hear(caller)
