"""Model reconnect time: from the loss of a session's model connection to the
``session_recovered`` event at its reader.

An in-process session (``execution="in_process"``, no Ray) talks to a local
model server in this process. After a history of ``H`` items has been built,
the benchmark loses the connection and times, at the reader of ``async for
event in session``, how long until ``session_recovered`` arrives - the
driver's detection, a new WebSocket handshake, the first ``session.update``,
the replay of the history and the flush of anything held:

* **drop**: the server aborts the socket (no close frame) and stays up;
* **server close**: the server closes the socket with code 1001 (what the
  real service does after ``session_expired``);
* **server back after 1 s**: the server stops and listens again on the same
  port 1 s later; timed from the moment it listens again (what the backoff
  adds after the outage).

Each figure is the p50 / p90 / max of ``ROUNDS`` losses. Bounded: every wait
has a deadline; about half a minute in all. Not part of the test suite.
Usage: ``python bench/bench_reconnect.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from ray_realtime import RealtimeAgent, RealtimeRunner, RealtimeSession
from ray_realtime.local import LocalModelServer
from ray_realtime.local.connection import Connection

ROUNDS = 20
RESTART_ROUNDS = 5
WAIT_S = 15.0


class _Server:
    """A local model server whose live sockets the benchmark can reach."""

    def __init__(self) -> None:
        self.sockets: list[Any] = []
        sockets = self.sockets

        class Tracked(Connection):
            async def run(self) -> None:
                sockets.append(self.ws)
                try:
                    await super().run()
                finally:
                    sockets.remove(self.ws)

        self._connection = Tracked
        self.server = self._new(0)

    def _new(self, port: int) -> LocalModelServer:
        server = LocalModelServer(port=port)
        server.connection_class = self._connection
        return server

    async def restart_after(self, seconds: float) -> float:
        """Stop, wait, listen again on the same port; when it listens again."""
        port = self.server.port
        await self.server.stop()
        await asyncio.sleep(seconds)
        self.server = self._new(port)
        await self.server.start()
        return time.perf_counter()


async def _until_recovered(session: RealtimeSession) -> float:
    async def run() -> float:
        async for event in session:
            if event.type == "session_recovered":
                return time.perf_counter()
        raise RuntimeError("the session ended before it recovered")

    return await asyncio.wait_for(run(), WAIT_S)


async def _turn(session: RealtimeSession, text: str) -> None:
    await session.send_message(f"say {text}")

    async def run() -> None:
        async for event in session:
            if event.type == "agent_end":
                return

    await asyncio.wait_for(run(), WAIT_S)


async def _measure(history_items: int, rounds: int, restart_rounds: int) -> dict[str, list[float]]:
    served = _Server()
    await served.server.start()
    runner = RealtimeRunner(
        RealtimeAgent(name="Assistant"),
        config={"execution": "in_process", "model_reconnect": {"max_backoff_seconds": 1.0}},
    )
    figures: dict[str, list[float]] = {"drop": [], "server close": [], "server back after 1 s": []}
    try:
        async with await runner.run(model_config={"url": served.server.url}) as session:
            for i in range(history_items // 2):  # a turn adds two items
                await _turn(session, f"turn {i}")
            for _ in range(rounds):
                (ws,) = served.sockets
                t0 = time.perf_counter()
                ws.transport.abort()
                figures["drop"].append(await _until_recovered(session) - t0)
                (ws,) = served.sockets
                t0 = time.perf_counter()
                await ws.close(1001, "Your session hit the maximum duration of 60 minutes.")
                figures["server close"].append(await _until_recovered(session) - t0)
            for _ in range(restart_rounds):
                waiter = asyncio.ensure_future(_until_recovered(session))
                for ws in list(served.sockets):
                    ws.transport.abort()
                back = await served.restart_after(1.0)
                figures["server back after 1 s"].append(await waiter - back)
    finally:
        await served.server.stop()
    return figures


async def _main(quick: bool) -> common.Table:
    rounds = 5 if quick else ROUNDS
    restart_rounds = 2 if quick else RESTART_ROUNDS
    table = common.Table(
        "Model reconnect: loss → session_recovered at the reader (in-process)",
        ["loss", "history items", "n", "p50 ms", "p90 ms", "max ms"],
    )
    for items in (4, 200):
        figures = await _measure(items, rounds, restart_rounds)
        for loss, values in figures.items():
            s = common.Summary.of(values)
            table.add(
                loss,
                items,
                s.n,
                common.fmt_ms(s.p50 * 1000),
                common.fmt_ms(s.p90 * 1000),
                common.fmt_ms(s.max * 1000),
            )
    table.notes.append(common.load_note())
    table.notes.append(
        "'server back after 1 s' is timed from the moment the server listens again: "
        "it is what the backoff (jittered, capped at 1 s here) adds to the outage."
    )
    return table


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    args = sys.argv[1:] if argv is None else argv
    table = asyncio.run(_main("--quick" in args))
    print(table.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
