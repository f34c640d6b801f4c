"""The browser page and its signed-token WebSocket: tokens (pure), the
stream's refusal of bad tokens (real gateway on loopback) and a spoken
conversation in a real headless Chromium (fake microphone from a WAV made
here; skipped, saying why, when Chromium is not installed)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ray_realtime.demo import build_demo_agent
from ray_realtime.gateway.browser import (
    CLOSE_BAD_TOKEN,
    Interrupt,
    PageMessageError,
    Played,
    make_token,
    parse_page_message,
    token_error,
)
from ray_realtime.gateway.server import Gateway
from tests.gateway.cdp import Chromium, find_chromium

SECRET = b"s" * 32


def test_tokens_are_signed_and_expire() -> None:
    token = make_token(SECRET, ttl=60, now=1_000.0)
    assert token_error(SECRET, token, now=1_030.0) is None
    assert token_error(SECRET, token, now=1_061.0) == "expired token"
    assert token_error(b"other" * 8, token, now=1_030.0) == "invalid token"
    expiry, nonce, sig = token.split(".")
    # A longer expiry under the old signature is forged.
    assert token_error(SECRET, f"{int(expiry) + 999}.{nonce}.{sig}", now=1_030.0) == (
        "invalid token"
    )
    assert token_error(SECRET, None) == "missing token"
    assert token_error(SECRET, "a.b") == "malformed token"
    assert token_error(SECRET, "x" * 500) == "malformed token"
    assert token_error(SECRET, "a.b.\u00e9") == "invalid token"


def test_page_messages_are_checked() -> None:
    played = '{"type": "played", "item_id": "i", "content_index": 0, "ms": 20}'
    assert parse_page_message(played) == Played("i", 0, 20.0)
    assert parse_page_message('{"type": "interrupt"}') == Interrupt()
    for bad in ["nope", "[]", '{"type": "x"}', '{"type": "played", "item_id": "i", "ms": -1}']:
        with pytest.raises(PageMessageError):
            parse_page_message(bad)


@pytest.mark.asyncio
async def test_stream_refuses_missing_forged_and_expired_tokens() -> None:
    async with Gateway(build_demo_agent(), browser_secret=SECRET) as gw:
        base = f"127.0.0.1:{gw.port}"
        forged = make_token(b"wrong" * 8)
        expired = make_token(SECRET, ttl=-10)
        for query, reason in [
            ("", "missing token"),
            (f"?token={forged}", "invalid token"),
            (f"?token={expired}", "expired token"),
        ]:
            async with connect(f"ws://{base}/browser/stream{query}") as ws:
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                assert ws.close_code == CLOSE_BAD_TOKEN and ws.close_reason == reason
        assert gw.open_sessions == 0


def _tone_burst_wav(path: Path) -> None:
    """0.6 s of a 220 Hz tone, then 5 s of silence (24 kHz mono 16-bit)."""
    rate = 24_000
    t = np.arange(int(rate * 0.6)) / rate
    tone = 0.4 * 32767 * np.sin(2 * np.pi * 220 * t)
    samples = np.concatenate([tone, np.zeros(rate * 5)]).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


def _chromium() -> str:
    path = find_chromium()
    if path is None:
        try:
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "chromium"],
                check=True,
                capture_output=True,
                timeout=300,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"chromium is not installed and could not be installed: {exc}")
        path = find_chromium()
    if path is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


async def _counters(browser: Chromium) -> dict[str, Any]:
    value: Any = await browser.eval(
        "JSON.stringify({sent: $('sent-frames').textContent, chunks: $('audio-chunks')"
        ".textContent, played: $('played-ms').textContent, status: $('status').textContent,"
        " transcript: $('transcript').innerText, events: $('events').innerText})"
    )
    return dict(json.loads(value))


@pytest.mark.asyncio
async def test_a_spoken_conversation_in_headless_chromium(tmp_path: Path) -> None:
    executable = _chromium()
    wav = tmp_path / "caller.wav"
    _tone_burst_wav(wav)
    profile = tmp_path / "profile"
    profile.mkdir()
    gw = Gateway(build_demo_agent(), run_config={"execution": "in_process"})
    async with gw, Chromium(executable, profile, fake_audio=wav) as browser:
        await browser.goto(f"http://127.0.0.1:{gw.port}/")
        await browser.eval("document.getElementById('call').click()")
        state: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = await _counters(browser)
            if int(state["played"]) >= 200 and "assistant: " in state["transcript"]:
                break
            await asyncio.sleep(0.2)
        (tmp_path / "browser_call.png").write_bytes(await browser.screenshot())
        assert int(state["sent"]) > 50, state  # the microphone reached the gateway
        assert int(state["chunks"]) > 0 and int(state["played"]) >= 200, state
        reply = [ln for ln in state["transcript"].splitlines() if ln.startswith("assistant: ")]
        assert reply and len(reply[0]) > len("assistant: "), state
        assert "agent_start" in state["events"], state
        assert (tmp_path / "browser_call.png").stat().st_size > 1000
        await browser.eval("document.getElementById('call').click()")  # hang up
        assert gw.open_sessions <= 1
    assert gw.open_sessions == 0
