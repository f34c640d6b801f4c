"""Finding the session's model must not block the caller's event loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import UNIT

ROOT = Path(__file__).resolve().parents[2]

# A fresh process: the embedded model server is not running yet, so the first
# in-process session has to start it (a thread, a socket, imports).
_SCRIPT = r"""
import asyncio, json

from ray_realtime import RealtimeAgent, RealtimeRunner


async def main() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    runner = RealtimeRunner(RealtimeAgent(name="a"), config={"execution": "in_process"})
    session = await runner.run()
    during = ticks - before
    task.cancel()
    from ray_realtime.local.embedded import embedded_server_url
    print(json.dumps({"ticks": during, "url": embedded_server_url()}))


asyncio.run(main())
"""


def test_in_process_run_starts_the_local_model_off_the_loop() -> None:
    env = dict(os.environ)
    for name in ("OPENAI_API_KEY", "RAY_REALTIME_MODEL_URL", "RAY_ADDRESS"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=60 * UNIT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["url"].startswith("ws://127.0.0.1:")
    # While the server started, other tasks ran (a blocked loop gives 0).
    assert out["ticks"] > 0, out
