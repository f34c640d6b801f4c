"""Recovery of a session whose actor died, and what the session store costs.

1. Recovery time: one session on the embedded Ray with the warm pool on; each
   round runs a turn, waits for a warm actor, SIGKILLs the session actor's
   process and times kill -> the first event the same handle reads after it
   (``session_recovered``). p50 / p99 over ``--kills`` rounds (default 20).
2. The store's cost: turn latency (``send_message`` -> ``agent_end``, a
   10-chunk reply from an unpaced local model server), time to the first
   audio chunk, and events/s (one long unpaced reply) with the store on
   (embedded) and off (``store: "off"``), the service redeployed between the
   two; then the same turns against a model server that paces its audio in
   real time (400 ms a reply, as a real model streams), without the long reply.

Every wait is bounded. Run alone: ``python bench/bench_recovery.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.pop("OPENAI_API_KEY", None)

from ray_realtime import (
    RealtimeAgent,
    RealtimeAgentEndEvent,
    RealtimeAudio,
    RealtimeRunner,
    RealtimeSession,
    RealtimeSessionRecovered,
)
from ray_realtime.actors import raylib
from ray_realtime.cluster.connect import connect
from ray_realtime.cluster.service import ensure_service, service_status, shutdown_service
from ray_realtime.local.server import LocalModelServer

SERVICE = {
    "warm_pool_size": 2,
    "tool_workers_per_node": 1,
    "guardrail_workers_per_node": 1,
    "local_model": False,
    "health_interval_seconds": 1.0,
}
TURN_TEXT = "say " + "x" * 32  # 400 ms of audio: 10 chunks of 40 ms
LONG_TEXT = "say " + "y" * 2000  # 25 s of audio, unpaced


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def _next_event(it: Any, timeout: float) -> Any:
    return await asyncio.wait_for(it.__anext__(), timeout)


async def _turn(
    session: RealtimeSession, it: Any, text: str, first_audio: list[float] | None = None
) -> tuple[float, int]:
    """One turn: its latency (ms) and how many events it produced; the time
    to its first audio chunk (ms) goes to ``first_audio``."""
    start = time.perf_counter()
    await session.send_message(text)
    count = 0
    while True:
        event = await _next_event(it, 60.0)
        count += 1
        if first_audio is not None and isinstance(event, RealtimeAudio):
            first_audio.append((time.perf_counter() - start) * 1000)
            first_audio = None
        if isinstance(event, RealtimeAgentEndEvent):
            return (time.perf_counter() - start) * 1000, count


async def _redeploy_clean() -> None:
    """Stop this runtime's service and wait (bounded) until its router's name is free."""
    await shutdown_service()
    deadline = time.monotonic() + 30
    while raylib.get_named_actor(raylib.ROUTER_NAME) is not None:
        if time.monotonic() > deadline:
            raise TimeoutError("the router did not stop")
        await asyncio.sleep(0.1)


async def _warm(minimum: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await service_status()
        if sum(n["warm"] for n in status["nodes"]) >= minimum:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the warm pool did not refill")


async def _actor_pid(router: Any, session_id: str) -> int:
    placement = await asyncio.wait_for(router.lookup.remote(session_id), 10)
    info = await asyncio.wait_for(placement["actor"].ping.remote(), 10)
    return int(info["pid"])


async def measure_recovery(url: str, kills: int) -> list[float]:
    """Seconds from SIGKILL to the first event read after it, per kill."""
    router = await ensure_service(SERVICE)
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Bench", instructions="Answer.")
    session = await RealtimeRunner(agent, config={"execution": "actor"}).run(
        model_config={"url": url}
    )
    times: list[float] = []
    async with session:
        it = session.__aiter__()
        for n in range(kills):
            await _turn(session, it, TURN_TEXT)
            await _warm(1)
            pid = await _actor_pid(router, session.session_id)
            start = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            # Events the dead actor pushed before the kill may still be
            # buffered here: the first event of the recovered session is
            # session_recovered.
            stale = 0
            while not isinstance(await _next_event(it, 20.0), RealtimeSessionRecovered):
                stale += 1
                if stale > 100:
                    raise AssertionError(f"kill {n}: no session_recovered")
            times.append(time.perf_counter() - start)
    return times


async def measure_store_cost(
    url: str, store: Any, turns: int, long_reply: bool = True
) -> tuple[list[float], list[float], float]:
    """Turn latencies (ms), times to the first audio (ms) and events/s of a
    long reply (nan without ``long_reply``), with ``store``."""
    await ensure_service({**SERVICE, "store": store})
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Bench", instructions="Answer.")
    latencies: list[float] = []
    first_audio: list[float] = []
    rates: list[float] = []
    done = 0
    while done < turns:
        session = await RealtimeRunner(agent, config={"execution": "actor"}).run(
            model_config={"url": url}
        )
        async with session:
            it = session.__aiter__()
            for _ in range(3):  # warm-up
                await _turn(session, it, TURN_TEXT)
            for _ in range(min(20, turns - done)):
                latencies.append((await _turn(session, it, TURN_TEXT, first_audio))[0])
                done += 1
            if long_reply:
                start = time.perf_counter()
                _, events = await _turn(session, it, LONG_TEXT)
                rates.append(events / (time.perf_counter() - start))
    return latencies, first_audio, statistics.median(rates) if rates else float("nan")


async def main(quick: bool, kills: int, only: str = "") -> None:
    """Run both measurements and print the figures."""
    # An embedded Ray of this process's own, before anything touches Ray: a
    # bare Ray call would auto-join whatever cluster runs on this host, and
    # the redeploys below would stop that cluster's service.
    if not connect("local"):
        raise SystemExit("Ray is already initialised in this process")
    async with LocalModelServer() as server, LocalModelServer(pace_audio=True) as paced:
        turns = 40 if quick else 200
        modes = (("on", "embedded"), ("off", "off"), ("on (again)", "embedded"))
        for label, store in modes if only in ("", "cost") else ():
            await _redeploy_clean()
            lat, first, rate = await measure_store_cost(server.url, store, turns)
            print(
                f"store {label:10}: turn p50 {_pct(lat, 50):6.2f} ms  p99 {_pct(lat, 99):6.2f} ms"
                f"  first audio p50 {_pct(first, 50):6.2f} ms  p99 {_pct(first, 99):6.2f} ms"
                f"  events/s {rate:8.0f}  ({len(lat)} turns)",
                flush=True,
            )
        for label, store in modes if only in ("", "cost") else ():
            await _redeploy_clean()
            lat, first, _ = await measure_store_cost(paced.url, store, 20, long_reply=False)
            print(
                f"paced, store {label:10}: turn p50 {_pct(lat, 50):7.2f} ms"
                f"  p99 {_pct(lat, 99):7.2f} ms  first audio p50 {_pct(first, 50):6.2f} ms"
                f"  p99 {_pct(first, 99):6.2f} ms  ({len(lat)} turns)",
                flush=True,
            )
        if only == "cost":
            return
        await _redeploy_clean()
        times = await measure_recovery(server.url, kills)
        print(
            f"recovery: {len(times)} kills, kill -> first event p50 {_pct(times, 50):.3f} s, "
            f"p99 {_pct(times, 99):.3f} s, max {max(times):.3f} s",
            flush=True,
        )
        await shutdown_service()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--only", choices=("cost", "recovery"), default="")
    args = parser.parse_args()
    asyncio.run(asyncio.wait_for(main(args.quick, max(1, args.kills), args.only), 900))
