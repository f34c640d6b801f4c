"""`ray-realtime serve --gateway-port P` as a user runs it (a subprocess, no
test-only environment): a simulated Twilio call is answered by a session in
the cluster."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading

import pytest

from tests.cluster.test_serve import ROOT, user_env
from tests.gateway.sim import TwilioCaller, silence_ulaw, tone_ulaw
from tests.gateway.test_gateway_calls import _post, _until


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_serve(port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ray_realtime.cli",
            "serve",
            "--warm-pool",
            "1",
            "--gateway-port",
            str(port),
        ],
        cwd=str(ROOT),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.mark.asyncio
async def test_serve_with_a_gateway_answers_a_phone_call() -> None:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="rr-gw-") as tmp:
        env = user_env(tmp)
        env.pop("TWILIO_AUTH_TOKEN", None)
        proc = _start_serve(port, env)
        lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if "Ctrl-C to stop" in line:
                    ready.set()
            ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert await asyncio.to_thread(ready.wait, 180), "".join(lines)
            text = "".join(lines)
            assert f"ws://127.0.0.1:{port}/twilio/media-stream" in text, text
            status, twiml = await _post(port, "/twilio/voice", "CallSid=CA1", {})
            assert status == 200 and "<Connect><Stream" in twiml
            async with TwilioCaller(f"ws://127.0.0.1:{port}/twilio/media-stream") as caller:
                await caller.start()
                await caller.speak(tone_ulaw(0.6) + silence_ulaw(0.8))
                await _until(lambda: len(caller.audio) > 0, 60, "reply audio")
                await _until(lambda: len(caller.marks_echoed) >= 1, 20, "marks")
                assert caller.reply_rms() > 500
                kinds = [m["event"] for m in caller.received]
                assert kinds.count("media") == kinds.count("mark")
                await caller.stop()
                await asyncio.wait_for(caller.closed.wait(), 20)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGINT)
                try:
                    await asyncio.to_thread(proc.wait, 60)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            await asyncio.to_thread(reader.join, 10)
            assert proc.stdout is not None
            proc.stdout.close()
        assert proc.returncode == 0, "".join(lines)[-3000:]
