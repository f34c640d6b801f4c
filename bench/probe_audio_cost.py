"""Probe: CPU per audio chunk of the in-process audio path and of the model
server, for one or two checkouts side by side.

What one run measures. A model server process (``bench.model_server``,
paced) and a driver process: ``K`` in-process sessions
(``execution="in_process"``) against it, each sent one ``say X`` whose reply
lasts ``D`` seconds while it streams 40 ms chunks of silence in with
``send_audio`` at real time, its handle reading every event. Over the
streaming window: the CPU seconds of the driver and of the server process
(``psutil``), the chunks out (received) and in (sent), and the hop of each
stamped chunk (server send -> handle). CPU per chunk = CPU seconds / (chunks
in + chunks out): each process handles each chunk once in its direction.

The driver process holds what a session actor holds for its sessions (the
model client, the session core and driver, the event log) plus the handle
that reads the events; it has no data plane. ``--mode model`` runs the model
client alone instead (``OpenAIRealtimeWebSocketModel``, no session).

``--root`` names the checkouts to compare (each a directory with
``ray_realtime`` and ``bench``); the runs alternate between them
``--rounds`` times, so a change of machine load falls on both.

Run: ``python bench/probe_audio_cost.py --root /tmp/base --root . -k 50``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

CHUNK_MS = 40
SILENCE = bytes(24_000 * 2 * CHUNK_MS // 1000)
_STAMP = struct.Struct("<4sId")
_FILLER = "the quick brown fox jumps over the lazy dog and keeps running "


def _say(chars: int) -> str:
    body = (_FILLER * (chars // len(_FILLER) + 2))[:chars]
    return f"say {body[0].upper()}{body[1:-1]}."


def _pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


class _ModelSession:
    """The model client alone (``--mode model``) behind the few calls the probe makes
    of a session: ``send_audio``, ``send_message`` and an event iterator."""

    def __init__(self, url: str) -> None:
        from ray_realtime.model import OpenAIRealtimeWebSocketModel

        self.url = url
        self.model = OpenAIRealtimeWebSocketModel()
        self.events: asyncio.Queue[Any] = asyncio.Queue()

    async def on_event(self, event: Any) -> None:
        if event.type in ("audio", "turn_ended"):
            self.events.put_nowait(event)

    async def __aenter__(self) -> _ModelSession:
        self.model.add_listener(self)
        await self.model.connect({"url": self.url})
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.model.close()

    async def send_audio(self, audio: bytes) -> None:
        from ray_realtime.types.model_inputs import RealtimeModelSendAudio

        await self.model.send_event(RealtimeModelSendAudio(audio))

    async def send_message(self, text: str) -> None:
        from ray_realtime.types.model_inputs import RealtimeModelSendUserInput

        await self.model.send_event(RealtimeModelSendUserInput(text))

    def __aiter__(self) -> _ModelSession:
        return self

    async def __anext__(self) -> Any:
        event = await self.events.get()
        return _Event("agent_end") if event.type == "turn_ended" else _Event("audio", event)


class _Event:
    def __init__(self, kind: str, audio: Any = None) -> None:
        self.type = kind
        self.audio = audio


async def _driver(
    url: str, server_pid: int, k: int, seconds: float, mode: str = "session"
) -> dict[str, Any]:
    import psutil

    from ray_realtime import RealtimeAgent, RealtimeRunner

    agent: RealtimeAgent[Any] = RealtimeAgent(name="Probe", instructions="probe")
    sessions: list[Any] = []
    for _ in range(k):
        if mode == "model":
            session: Any = _ModelSession(url)
        else:
            session = await RealtimeRunner(agent, config={"execution": "in_process"}).run(
                model_config={"url": url}
            )
        await asyncio.wait_for(session.__aenter__(), 30)
        sessions.append(session)
    await asyncio.sleep(1.0)
    text = _say(int(seconds * 1000 / 12.5))
    hops: list[float] = []
    counts = {"out": 0, "in": 0, "late": 0}

    async def stream_in(session: Any) -> None:
        t0 = time.perf_counter()
        for i in range(int(seconds * 1000 / CHUNK_MS)):
            delay = t0 + i * CHUNK_MS / 1000 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -CHUNK_MS / 1000:
                counts["late"] += 1
            await session.send_audio(SILENCE)
            counts["in"] += 1

    async def one(session: Any) -> None:
        sender = asyncio.create_task(stream_in(session))
        await session.send_message(text)
        it = session.__aiter__()
        deadline = time.monotonic() + seconds * 3 + 20
        while True:
            event = await asyncio.wait_for(it.__anext__(), deadline - time.monotonic())
            if event.type == "audio":
                counts["out"] += 1
                data = event.audio.data
                if data[:4] == b"RRTS":
                    hops.append((time.monotonic() - _STAMP.unpack_from(data)[2]) * 1000)
            elif event.type == "agent_end":
                break
        await sender

    me = psutil.Process()
    server = psutil.Process(server_pid)
    c0, s0, w0 = me.cpu_times(), server.cpu_times(), time.perf_counter()
    await asyncio.gather(*(one(s) for s in sessions))
    c1, s1, w1 = me.cpu_times(), server.cpu_times(), time.perf_counter()
    for session in sessions:
        await session.__aexit__(None, None, None)
    return {
        "wall_s": w1 - w0,
        "driver_cpu_s": (c1.user + c1.system) - (c0.user + c0.system),
        "server_cpu_s": (s1.user + s1.system) - (s0.user + s0.system),
        "chunks_out": counts["out"],
        "chunks_in": counts["in"],
        "late_in": counts["late"],
        "hop_p50": _pct(hops, 50),
        "hop_p99": _pct(hops, 99),
    }


def _one_run(
    root: Path,
    k: int,
    seconds: float,
    profile: str = "",
    profile_delay: float = 0.0,
    mode: str = "session",
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.model_server", "--port", "0", "--pace-audio"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        driver = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--driver",
                url,
                "--server-pid",
                str(server.pid),
                "-k",
                str(k),
                "--seconds",
                str(seconds),
                "--mode",
                mode,
            ],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        spies = []
        if profile:
            # Sample both processes once the sessions stream (opening takes a while).
            time.sleep(profile_delay)
            for name, pid in (("driver", driver.pid), ("server", server.pid)):
                target = f"{profile}/{root.name}-{name}.txt"
                spies.append(
                    subprocess.Popen(
                        [
                            "py-spy",
                            "record",
                            "-p",
                            str(pid),
                            "-d",
                            str(int(seconds * 0.7)),
                            "-f",
                            "raw",
                            "-o",
                            target,
                            "-r",
                            "250",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        stdout, stderr = driver.communicate(timeout=seconds * 4 + 120)
        for spy in spies:
            spy.wait(30)
        if driver.returncode != 0:
            raise RuntimeError(stderr[-2000:])
        result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
        return result
    finally:
        server.terminate()
        server.wait(10)


def main(argv: list[str] | None = None) -> int:
    """Compare the roots; print one line per run and a summary."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", action="append", default=[])
    parser.add_argument("-k", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", default="", help="directory for py-spy raw profiles")
    parser.add_argument("--profile-delay", type=float, default=5.0)
    parser.add_argument(
        "--mode",
        choices=["session", "model"],
        default="session",
        help="session: in-process sessions; model: the model client alone",
    )
    parser.add_argument("--driver", default="")
    parser.add_argument("--server-pid", type=int, default=0)
    args = parser.parse_args(argv)
    if args.driver:
        result = _driver(args.driver, args.server_pid, args.k, args.seconds, args.mode)
        print(json.dumps(asyncio.run(result)))
        return 0
    roots = [Path(r).resolve() for r in (args.root or ["."])]
    results: dict[Path, list[dict[str, Any]]] = {r: [] for r in roots}
    for _ in range(args.rounds):
        for root in roots:
            load = os.getloadavg()[0]
            r = _one_run(root, args.k, args.seconds, args.profile, args.profile_delay, args.mode)
            chunks = r["chunks_in"] + r["chunks_out"]
            r["driver_us"] = r["driver_cpu_s"] / chunks * 1e6
            r["server_us"] = r["server_cpu_s"] / chunks * 1e6
            r["load"] = load
            results[root].append(r)
            print(
                f"{root.name:>12} K={args.k} load={load:.2f} out={r['chunks_out']} "
                f"in={r['chunks_in']} late_in={r['late_in']} "
                f"driver {r['driver_cpu_s'] / r['wall_s']:.2f} cores "
                f"{r['driver_us']:.0f} us/chunk, server {r['server_cpu_s'] / r['wall_s']:.2f} "
                f"cores {r['server_us']:.0f} us/chunk, hop p50 {r['hop_p50']:.1f} "
                f"p99 {r['hop_p99']:.1f} ms",
                flush=True,
            )
    for root, runs in results.items():
        print(
            f"{root.name:>12} median driver {statistics.median(x['driver_us'] for x in runs):.0f}"
            f" us/chunk, server {statistics.median(x['server_us'] for x in runs):.0f} us/chunk"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
