"""A Twilio Media Streams simulator: the caller's side of a call, as Twilio
speaks it (a WebSocket client), with real-time playback of the reply audio
so that marks come back when the audio "has played"."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from ray_realtime.gateway.audio import mulaw_decode, mulaw_encode

FRAME = 160  # 20 ms of μ-law at 8 kHz


def tone_ulaw(seconds: float, freq: float = 220.0, amplitude: float = 0.4) -> bytes:
    """A tone burst in μ-law 8 kHz."""
    t = np.arange(int(8000 * seconds)) / 8000
    return mulaw_encode((amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16))


def silence_ulaw(seconds: float) -> bytes:
    return mulaw_encode(np.zeros(int(8000 * seconds), dtype=np.int16))


class TwilioCaller:
    """One simulated call.

    ``playout_delay``: seconds between reply audio arriving and it starting to
    play (a phone network's latency and jitter buffer); marks come back once
    the audio before them has played. ``heard_ms`` counts the reply audio
    played so far (as of the last echoed mark).
    """

    def __init__(
        self,
        url: str,
        stream_sid: str = "MZ00000000000000000000000000000001",
        playout_delay: float = 0.0,
    ) -> None:
        self.url = url
        self.playout_delay = playout_delay
        self.heard_ms = 0.0
        self._mark_at_ms: dict[str, float] = {}
        self.stream_sid = stream_sid
        self.ws: ClientConnection | None = None
        self.received: list[dict[str, Any]] = []
        self.audio = bytearray()
        self.marks_echoed: list[str] = []
        self.clears = 0
        self.first_media_at: float | None = None
        self.clear_at: float | None = None
        self.heard_at_clear: float | None = None
        self._play_until = 0.0
        self._timers: list[asyncio.TimerHandle] = []
        self._seq = 0
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self._sends: set[asyncio.Future[None]] = set()

    async def __aenter__(self) -> TwilioCaller:
        self.ws = await connect(self.url, open_timeout=10, compression=None)
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None
        await self.ws.close()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 10)
        for timer in self._timers:
            timer.cancel()

    async def send_json(self, data: dict[str, Any]) -> None:
        assert self.ws is not None
        self._seq += 1
        await self.ws.send(json.dumps({"sequenceNumber": str(self._seq), **data}))

    async def start(self, **media_format: Any) -> None:
        await self.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        fmt = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1, **media_format}
        await self.send_json(
            {
                "event": "start",
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": "AC0",
                    "streamSid": self.stream_sid,
                    "callSid": "CA0000000000000000000000000000001",
                    "tracks": ["inbound"],
                    "customParameters": {"caller": "+15550100"},
                    "mediaFormat": fmt,
                },
            }
        )

    async def speak(self, audio: bytes, realtime: bool = True) -> None:
        """Send ``audio`` as 20 ms media frames, paced like a phone line."""
        t0 = time.perf_counter()
        for n, i in enumerate(range(0, len(audio), FRAME)):
            payload = base64.b64encode(audio[i : i + FRAME]).decode()
            await self.send_json(
                {
                    "event": "media",
                    "streamSid": self.stream_sid,
                    "media": {
                        "track": "inbound",
                        "chunk": str(n + 1),
                        "timestamp": str(n * 20),
                        "payload": payload,
                    },
                }
            )
            if realtime:
                delay = t0 + (n + 1) * 0.02 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)

    async def stop(self) -> None:
        await self.send_json(
            {
                "event": "stop",
                "streamSid": self.stream_sid,
                "stop": {"accountSid": "AC0", "callSid": "CA0"},
            }
        )

    async def _read(self) -> None:
        assert self.ws is not None
        loop = asyncio.get_running_loop()
        try:
            async for message in self.ws:
                data = json.loads(message)
                self.received.append(data)
                event = data.get("event")
                now = loop.time()
                if event == "media":
                    assert data["streamSid"] == self.stream_sid
                    chunk = base64.b64decode(data["media"]["payload"])
                    if self.first_media_at is None:
                        self.first_media_at = time.perf_counter()
                    self.audio += chunk
                    start = max(now + self.playout_delay, self._play_until)
                    self._play_until = start + len(chunk) / 8000
                elif event == "mark":
                    name = data["mark"]["name"]
                    self._mark_at_ms[name] = len(self.audio) / 8
                    at = max(now, self._play_until)
                    self._timers.append(loop.call_at(at, self._echo_mark, name))
                elif event == "clear":
                    self.clears += 1
                    self.clear_at = time.perf_counter()
                    self.heard_at_clear = self.heard_ms
                    self._mark_at_ms.clear()
                    for timer in self._timers:
                        timer.cancel()
                    self._timers.clear()
                    self._play_until = now
        except Exception:
            pass
        finally:
            self.closed.set()

    def _echo_mark(self, name: str) -> None:
        self.marks_echoed.append(name)
        self.heard_ms = self._mark_at_ms.pop(name, self.heard_ms)
        task = asyncio.ensure_future(self._send_mark(name))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send_mark(self, name: str) -> None:
        try:
            await self.send_json(
                {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}
            )
        except Exception:
            pass

    def reply_rms(self) -> float:
        samples = mulaw_decode(bytes(self.audio)).astype(np.float64)
        return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0
