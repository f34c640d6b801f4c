"""A driver process that opens a session and then idles, for the lease tests.

Usage: ``python tests/actors/lease_opener.py ADDRESS ORPHAN_TIMEOUT DATA_PLANE``

Joins the Ray cluster at ADDRESS, opens an actor session with the run config's
``orphan_timeout_seconds`` and ``data_plane`` (``1`` / ``0``), prints one JSON
line (session id, ticket, pid) and then holds the session without reading it
until the test kills it (SIGKILL: no close, no detach). It exits by itself
after a bounded time so a failed test leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import ray

from ray_realtime import RealtimeAgent, RealtimeRunner

LIFETIME = 120.0


async def main(timeout: float, data_plane: bool) -> None:
    agent: RealtimeAgent[None] = RealtimeAgent(name="Assistant", instructions="Be brief.")
    runner = RealtimeRunner(
        agent,
        config={
            "execution": "actor",
            "orphan_timeout_seconds": timeout,
            "data_plane": data_plane,
        },
    )
    session = await asyncio.wait_for(runner.run(), 60.0)
    await asyncio.wait_for(session.enter(), 60.0)
    line = {"session_id": session.session_id, "ticket": session.ticket, "pid": os.getpid()}
    print(json.dumps(line), flush=True)
    await asyncio.sleep(LIFETIME)  # idle: the test kills this process


if __name__ == "__main__":
    ray.init(address=sys.argv[1], namespace="ray_realtime", log_to_driver=False)
    try:
        asyncio.run(main(float(sys.argv[2]), sys.argv[3] == "1"))
    finally:
        ray.shutdown()
