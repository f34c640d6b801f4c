"""The voice gateway at scale: K simulated Twilio callers through one
in-process :class:`~ray_realtime.gateway.server.Gateway` and the bundled
local model, on loopback.

Each caller streams real-time 20 ms μ-law frames the whole call (a 0.6 s tone
burst, then silence, ``ROUNDS`` times) and plays the reply in real time,
echoing each mark once the audio before it has played, as Twilio does. Per
K, two phases run one after the other:

* **direct**: K in-process sessions fed the same frames straight from Python
  (G.711 μ-law in and out): the model's own time, speech end (last tone frame
  sent) to the first reply audio event;
* **gateway**: K callers through the gateway: speech end to the first reply
  ``media`` frame at the caller.

Added latency is the gateway phase's percentile minus the direct phase's at
the same K (the distributions are compared; single turns cannot be paired).
A K passes when the added p99 is at most 200 ms and no frame is lost (every
caller frame reached a session, every reply millisecond sent reached its
caller). K grows over ``KS`` and stops at the first miss or at the time
budget.

The gateway and the direct sessions share one thread with its own event loop,
whose CPU time (``time.thread_time``) is read around each phase, per call and
per second of call (% of one core): in the gateway phase it holds the gateway
and each call's in-process session (the model client included); in the direct
phase the sessions and the code feeding them. The model's own CPU (its child
process) is in neither. The callers run in the main thread of the same
process (the GIL is shared: the latency figures are pessimistic), the local
model in a child process (``python -m ray_realtime.local --pace-audio``).

Not part of ``bench/suite.py`` (yet): it needs the whole machine for a few
minutes and its real-time pacing makes it sensitive to other load.

    python -m bench.bench_gateway [--ks 5,10,20,40,80,160] [--rounds 3] [--budget 300]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from bench.common import format_table, load_note, percentile
from ray_realtime import RealtimeAgent, RealtimeRunner
from ray_realtime.gateway.audio import mulaw_encode
from ray_realtime.gateway.server import Gateway
from ray_realtime.session.start import MODEL_URL_ENV
from ray_realtime.types.events import RealtimeAudio

T = TypeVar("T")
FRAME_S = 0.02
FRAME = 160  # 20 ms of μ-law at 8 kHz
TONE_S = 0.6
ROUND_S = 3.6  # a burst, its reply (~0.5 s VAD + ~0.4 s audio) and a pause
ADDED_P99_MS = 200.0
SID = "MZ" + "0" * 32


def _tone() -> list[bytes]:
    t = np.arange(int(8000 * TONE_S)) / 8000
    audio = mulaw_encode((0.4 * 32767 * np.sin(2 * np.pi * 220 * t)).astype(np.int16))
    return [audio[i : i + FRAME] for i in range(0, len(audio), FRAME)]


TONE_FRAMES = _tone()
SILENCE = mulaw_encode(np.zeros(FRAME, dtype=np.int16))


def _script(rounds: int) -> list[tuple[bytes, bool]]:
    """The frames of one call: (frame, is the last tone frame of a burst)."""
    frames: list[tuple[bytes, bool]] = []
    per_round = round(ROUND_S / FRAME_S)
    for _ in range(rounds):
        frames += [(f, i == len(TONE_FRAMES) - 1) for i, f in enumerate(TONE_FRAMES)]
        frames += [(SILENCE, False)] * (per_round - len(TONE_FRAMES))
    return frames


@dataclass
class CallStats:
    latencies_ms: list[float] = field(default_factory=list)
    frames_sent: int = 0
    late_frames: int = 0  # sent more than one frame late (the sender fell behind)
    reply_ms: float = 0.0


class _LoopThread:
    """An event loop in a thread of its own (the gateway's)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    async def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


async def _thread_cpu() -> float:
    return time.thread_time()


async def _paced(frames: list[tuple[bytes, bool]], send: Any, stats: CallStats) -> list[float]:
    """Send ``frames`` in real time; the speech-end times."""
    ends: list[float] = []
    t0 = time.perf_counter()
    for n, (frame, last_tone) in enumerate(frames):
        await send(frame)
        stats.frames_sent += 1
        now = time.perf_counter()
        if last_tone:
            ends.append(now)
        delay = t0 + (n + 1) * FRAME_S - now
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -FRAME_S:
            stats.late_frames += 1
    return ends


def _latencies(ends: list[float], replies: list[float]) -> list[float]:
    """Speech end to the first reply after it (and before the next end)."""
    out = []
    for i, end in enumerate(ends):
        nxt = ends[i + 1] if i + 1 < len(ends) else float("inf")
        first = next((r for r in replies if end < r < nxt), None)
        if first is not None:
            out.append((first - end) * 1000)
    return out


async def _direct_call(model_url: str, rounds: int) -> CallStats:
    """One session fed straight from Python (runs on the gateway's thread)."""
    stats = CallStats()
    settings: Any = {"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}
    runner = RealtimeRunner(
        RealtimeAgent(name="Bench"),
        config={"execution": "in_process", "model_settings": settings},
    )
    session = await runner.run(model_config={"url": model_url})
    replies: list[float] = []
    async with session:

        async def read() -> None:
            async for event in session:
                if isinstance(event, RealtimeAudio):
                    replies.append(time.perf_counter())
                    stats.reply_ms += len(event.audio.data) / 8

        reader = asyncio.ensure_future(read())
        try:
            ends = await _paced(_script(rounds), session.send_audio, stats)
            await asyncio.sleep(1.5)  # the last reply
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    stats.latencies_ms = _latencies(ends, replies)
    return stats


async def _twilio_call(url: str, rounds: int) -> CallStats:
    """One simulated Twilio caller (plays the reply in real time, echoes marks)."""
    stats = CallStats()
    replies: list[float] = []
    loop = asyncio.get_running_loop()
    ws: ClientConnection = await connect(url, open_timeout=30, compression=None)
    play_until = 0.0
    timers: list[asyncio.TimerHandle] = []
    sends: set[asyncio.Future[None]] = set()

    def echo(name: str) -> None:
        message = json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": name}})
        task = asyncio.ensure_future(ws.send(message))
        sends.add(task)
        task.add_done_callback(sends.discard)

    async def read() -> None:
        nonlocal play_until
        async for message in ws:
            data = json.loads(message)
            if data["event"] == "media":
                chunk = base64.b64decode(data["media"]["payload"])
                replies.append(time.perf_counter())
                stats.reply_ms += len(chunk) / 8
                play_until = max(loop.time(), play_until) + len(chunk) / 8000
            elif data["event"] == "mark":
                at = max(loop.time(), play_until)
                timers.append(loop.call_at(at, echo, data["mark"]["name"]))

    async def send(frame: bytes) -> None:
        payload = base64.b64encode(frame).decode()
        await ws.send(
            json.dumps({"event": "media", "streamSid": SID, "media": {"payload": payload}})
        )

    start = {
        "streamSid": SID,
        "callSid": "CA0",
        "tracks": ["inbound"],
        "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await ws.send(json.dumps({"event": "start", "streamSid": SID, "start": start}))
    reader = asyncio.ensure_future(read())
    try:
        ends = await _paced(_script(rounds), send, stats)
        await asyncio.sleep(1.5)  # the last reply
        await ws.send(json.dumps({"event": "stop", "streamSid": SID, "stop": {}}))
        await asyncio.wait_for(reader, 20)
    finally:
        for timer in timers:
            timer.cancel()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await ws.close()
    stats.latencies_ms = _latencies(ends, replies)
    return stats


async def _gather(calls: list[Awaitable[CallStats]]) -> list[CallStats]:
    return list(await asyncio.gather(*calls))


@dataclass
class Row:
    k: int
    direct_p50: float
    direct_p99: float
    gw_p50: float
    gw_p99: float
    added_p99: float
    lost_frames: int
    late_frames: int
    missing_turns: int
    direct_cpu_pct: float
    gw_cpu_pct: float

    @property
    def passed(self) -> bool:
        return self.added_p99 <= ADDED_P99_MS and self.lost_frames == 0 and not self.missing_turns


async def _measure(k: int, rounds: int, server: _LoopThread, gw: Gateway, model_url: str) -> Row:
    call_s = rounds * ROUND_S
    # direct: the model's own time, K sessions at once on the gateway's thread
    cpu0 = await server.run(_thread_cpu(), 10)
    t0 = time.perf_counter()
    direct = await server.run(
        _gather([_direct_call(model_url, rounds) for _ in range(k)]), call_s + 120
    )
    direct_cpu = (await server.run(_thread_cpu(), 10) - cpu0) / (time.perf_counter() - t0)
    # gateway: K Twilio callers
    frames0, reply0 = gw.frames_in, gw.reply_ms_out
    cpu0 = await server.run(_thread_cpu(), 10)
    t0 = time.perf_counter()
    url = f"ws://127.0.0.1:{gw.port}/twilio/media-stream"
    calls = await asyncio.wait_for(
        _gather([_twilio_call(url, rounds) for _ in range(k)]), call_s + 120
    )
    for _ in range(400):  # at most 20 s for the calls to end
        if not gw.active_calls:
            break
        await asyncio.sleep(0.05)
    gw_cpu = (await server.run(_thread_cpu(), 10) - cpu0) / (time.perf_counter() - t0)
    lost_in = sum(c.frames_sent for c in calls) - (gw.frames_in - frames0)
    lost_out_ms = (gw.reply_ms_out - reply0) - sum(c.reply_ms for c in calls)
    d = [x for c in direct for x in c.latencies_ms]
    g = [x for c in calls for x in c.latencies_ms]
    if not d or not g:
        raise RuntimeError(f"K={k}: no replies (direct {len(d)}, gateway {len(g)})")
    return Row(
        k=k,
        direct_p50=percentile(d, 50),
        direct_p99=percentile(d, 99),
        gw_p50=percentile(g, 50),
        gw_p99=percentile(g, 99),
        added_p99=percentile(g, 99) - percentile(d, 99),
        lost_frames=lost_in + round(lost_out_ms / 20),
        late_frames=sum(c.late_frames for c in calls),
        missing_turns=k * rounds - len(g),
        direct_cpu_pct=100 * direct_cpu / k,
        gw_cpu_pct=100 * gw_cpu / k,
    )


def _start_model() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ray_realtime.local",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--pace-audio",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"ws://\S+", line)
    if match is None:
        proc.terminate()
        raise RuntimeError(f"the local model did not start: {line!r}")
    return proc, match.group(0)


async def main(ks: list[int], rounds: int, budget: float) -> list[Row]:
    model, model_url = _start_model()
    os.environ[MODEL_URL_ENV] = model_url  # the gateway's in-process sessions
    server = _LoopThread()
    gw = Gateway(RealtimeAgent(name="Bench"), run_config={"execution": "in_process"})
    rows: list[Row] = []
    started = time.monotonic()
    try:
        await server.run(gw.start(), 30)
        for k in ks:
            if time.monotonic() - started > budget:
                print(f"time budget of {budget:.0f} s spent; stopping before K={k}")
                break
            try:
                row = await _measure(k, rounds, server, gw, model_url)
            except (TimeoutError, RuntimeError) as exc:
                # Overload (calls that do not end, no replies) is a miss, not a crash.
                print(f"K={k}: MISS ({type(exc).__name__}: {exc})", flush=True)
                break
            rows.append(row)
            print(
                f"K={k}: added p99 {row.added_p99:.0f} ms, lost {row.lost_frames}, "
                f"{'pass' if row.passed else 'MISS'}",
                flush=True,
            )
            if not row.passed:
                break
    finally:
        try:
            await server.run(gw.stop(), 60)
        finally:
            model.terminate()
            model.wait(10)
            server.stop()
    return rows


def report(rows: list[Row]) -> str:
    headers = [
        "K",
        "direct p50",
        "direct p99",
        "gateway p50",
        "gateway p99",
        "added p99",
        "lost frames",
        "late frames",
        "missing turns",
        "direct CPU/call",
        "gateway CPU/call",
        "pass",
    ]
    table = [
        [
            r.k,
            f"{r.direct_p50:.0f} ms",
            f"{r.direct_p99:.0f} ms",
            f"{r.gw_p50:.0f} ms",
            f"{r.gw_p99:.0f} ms",
            f"{r.added_p99:.0f} ms",
            r.lost_frames,
            r.late_frames,
            r.missing_turns,
            f"{r.direct_cpu_pct:.1f} %",
            f"{r.gw_cpu_pct:.1f} %",
            "yes" if r.passed else "no",
        ]
        for r in rows
    ]
    best = max((r.k for r in rows if r.passed), default=0)
    return (
        format_table(headers, table)
        + f"\nlargest K with added p99 <= {ADDED_P99_MS:.0f} ms and no lost frame: {best}\n"
        + load_note()
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", default="5,10,20,40,80,160")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=300.0, help="seconds; no new K after")
    args = parser.parse_args()
    result = asyncio.run(main([int(k) for k in args.ks.split(",")], args.rounds, args.budget))
    print(report(result))
