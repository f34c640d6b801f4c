"""Diagnostic, not part of the suite: a warm start, phase by phase.

Each sample replays ``ActorBackend.start`` step by step with timestamps:
``runner.run()`` (pickling), ``ensure_service``, ``place_session``,
``open_session`` (the Ray call; the data plane dials meanwhile), what is left
of the dial, then ``send_message`` + the first event. Before each sample: the
bare round trip of a ``ping`` to the router and to an idle warm session actor.

``--ab``: every other sample ships the worker lists with ``open_session`` (as
handles did before the actor held them), so both variants interleave in one
run. ``python bench/probe_start.py [--ab] [samples]``
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import BenchContext, EventStream, prepare_environment


async def _start(backend: Any, t: dict[str, float], ship_workers: bool) -> None:
    from ray_realtime.cluster.service import ensure_service

    p = time.perf_counter()
    router = await ensure_service()
    t["ensure_service"] = time.perf_counter() - p
    p = time.perf_counter()
    rc = backend._run_config
    placement = await router.place_session.remote(
        backend.session_id, rc.get("placement"), rc.get("sessions_per_actor")
    )
    t["place_session"] = time.perf_counter() - p
    backend._placement = placement
    backend._actor = placement["actor"]
    token = backend._secret
    options = {"model_url": placement["model_url"], "token": token}
    if ship_workers:
        looked_up = await router.lookup.remote(backend.session_id)
        options["tool_workers"] = looked_up["tool_workers"]
        options["guardrail_workers"] = looked_up["guardrail_workers"]
    p = time.perf_counter()
    early = asyncio.ensure_future(backend._dial(placement["data_url"], token, 0))
    info = await backend._actor.open_session.remote(backend.session_id, backend._payload, options)
    t["open_session"] = time.perf_counter() - p
    backend._payload = None
    backend._take_limits(info)
    p = time.perf_counter()
    backend._plane = await early
    t["dial_rest"] = time.perf_counter() - p


async def _sample(ctx: BenchContext, router: Any, url: str, ship: bool) -> dict[str, float]:
    from ray_realtime.actors import raylib

    t: dict[str, float] = {"shipped": float(ship)}
    busy = {r["actor_name"] for r in await router.list_sessions.remote()}
    idle = [x for x in await ctx.named_actors("rr_session_") if x not in busy]
    if idle:
        actor = raylib.get_named_actor(idle[0])
        await actor.ping.remote()
        p = time.perf_counter()
        await actor.ping.remote()
        t["rtt_actor_ping"] = time.perf_counter() - p
    p = time.perf_counter()
    await router.ping.remote()
    t["rtt_router_ping"] = time.perf_counter() - p
    t0 = time.perf_counter()
    session = await ctx.runner("actor").run(model_config={"url": url})
    t["run"] = time.perf_counter() - t0
    await _start(session._backend, t, ship)
    session._entered = True
    t["enter"] = time.perf_counter() - t0
    p = time.perf_counter()
    stream = EventStream(session)
    await session.send_message("say hi")
    await stream.next(30.0)
    t["send_first_event"] = time.perf_counter() - p
    t["total"] = time.perf_counter() - t0
    while (await stream.next(30.0)).type != "agent_end":
        pass
    await ctx.close_session(session)
    return t


def _table(rows: list[dict[str, float]], title: str) -> None:
    print(f"{title:20s} {'p50 ms':>8s} {'min':>7s} {'max':>7s}   (n={len(rows)})")
    for k in rows[-1]:
        if k == "shipped":
            continue
        vals = [r[k] * 1000 for r in rows if k in r]
        print(f"{k:20s} {statistics.median(vals):8.2f} {min(vals):7.2f} {max(vals):7.2f}")


async def main(n: int, ab: bool) -> None:
    prepare_environment()
    async with BenchContext(quick=True) as ctx:
        url = await ctx.model_url()
        router = await ctx.service()
        rows: list[dict[str, float]] = []
        for i in range(n + 2):
            await ctx.wait_warm(4, 15.0)
            await ctx.settle(max_wait=3.0)
            t = await _sample(ctx, router, url, ab and i % 2 == 1)
            if i >= 2:  # the first two warm the driver up
                rows.append(t)
        if ab:
            _table([r for r in rows if not r["shipped"]], "workers held")
            _table([r for r in rows if r["shipped"]], "workers shipped")
        else:
            _table(rows, "phase")


if __name__ == "__main__":
    args = sys.argv[1:]
    ab = "--ab" in args
    nums = [a for a in args if a.isdigit()]
    asyncio.run(main(int(nums[0]) if nums else 15, ab))
