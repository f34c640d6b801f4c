"""A second driver process for the attach test.

Usage: ``RAY_REALTIME_TICKET=... python tests/actors/attach_reader.py ADDRESS [MESSAGE]``

Joins the Ray cluster at ADDRESS, attaches to the running session with the
ticket from the environment (not the command line, which other users of the
machine can read), sends
MESSAGE, reads events until ``agent_end``, detaches (the session keeps
running) and prints one JSON line: the session id, the event types it saw,
the reply text and its own pid. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import ray

from ray_realtime import AssistantMessageItem, RealtimeSession

TIMEOUT = 60.0


async def main(ticket: str, message: str) -> dict[str, object]:
    session = await asyncio.wait_for(RealtimeSession.attach(ticket), TIMEOUT)
    types: list[str] = []
    try:
        await asyncio.wait_for(session.send_message(message), TIMEOUT)

        async def read() -> None:
            async for event in session:
                types.append(event.type)
                if event.type == "agent_end":
                    return

        await asyncio.wait_for(read(), TIMEOUT)
        history = await asyncio.wait_for(session.get_history(), TIMEOUT)
    finally:
        await session.detach()
    replies = [
        getattr(part, "transcript", None) or getattr(part, "text", None)
        for item in history
        if isinstance(item, AssistantMessageItem)
        for part in item.content
    ]
    return {
        "session_id": session.session_id,
        "types": types,
        "reply": replies[-1] if replies else None,
        "pid": os.getpid(),
    }


if __name__ == "__main__":
    address = sys.argv[1]
    text = sys.argv[2] if len(sys.argv) > 2 else "hello from another process"
    ray.init(address=address, namespace="ray_realtime", log_to_driver=False)
    try:
        print(json.dumps(asyncio.run(main(os.environ["RAY_REALTIME_TICKET"], text))), flush=True)
    finally:
        ray.shutdown()
