"""Session start: ``runner.run()`` + ``async with`` entry -> first event, from
the warm pool vs a new actor process (cold), with in-process as reference;
and how fast the router refills its warm pool.

Method. One sample: ``t0``; ``session = await runner.run(...)``; ``await
session.__aenter__()`` (placement by the router, ``open_session`` on the
actor, the actor's WebSocket to the model server and its ``session.update``)
-> *enter*; then at once ``send_message("say hi")`` and the first event the
handle receives -> *first event* (a session emits nothing before its first
input, so the first event needs one). Samples run one at a time; before each
the machine is let settle and, for warm samples, the warm pool is waited for.

Cold: a session whose run config asks for one more ``sessions_per_actor``
than the service's default (the size of its warm actors), so the router
starts a new actor process for it (the same path as a warm pool of 0; it is retired when
its session closes). Each cold sample is checked to land on an actor that
did not exist before.

Refill: with the pool full (``warm_pool_size`` actors), that many sessions
start at once and empty it; the router's status is polled every 100 ms until
the pool is full again: refill rate = actors / time to full.

Run alone: ``python bench/bench_start.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, targets
from bench.harness import SERVICE_CONFIG, BenchContext, run_standalone

__all__ = ["main", "run"]


async def _sample(ctx: BenchContext, mode: str, url: str, **config: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    opened = await ctx.open_session(mode, url, **config)
    enter = (time.perf_counter() - t0) * 1000
    try:
        await opened.session.send_message("say hi")
        await opened.stream.next(30.0)
        first = (time.perf_counter() - t0) * 1000
        actor = ""
        if mode == "actor":
            actor = (await ctx.session_actors()).get(opened.session.session_id, "")
        while True:  # finish the turn before closing
            event = await opened.stream.next(30.0)
            if event.type == "agent_end":
                break
    finally:
        await ctx.close_session(opened)
    return {"enter": enter, "first": first, "actor": actor}


async def _refill(ctx: BenchContext, url: str) -> dict[str, Any]:
    size = int(SERVICE_CONFIG["warm_pool_size"])
    await ctx.wait_warm(size, 30.0)
    await ctx.settle()
    t0 = time.perf_counter()
    sessions = await ctx.open_sessions(size, "actor", url)
    taken = time.perf_counter() - t0
    series: list[tuple[float, int]] = []
    full_at = math.nan
    try:
        deadline = t0 + 60.0
        while time.perf_counter() < deadline:
            warm = await ctx.warm_actors()
            now = time.perf_counter() - t0
            if not series or series[-1][1] != warm:
                series.append((now, warm))
            if warm >= size and now > taken:
                full_at = now
                break
            await asyncio.sleep(0.1)
    finally:
        await ctx.close_sessions(sessions)
    return {"size": size, "taken": taken, "full_at": full_at, "series": series}


async def run(ctx: BenchContext) -> common.BenchResult:
    """Measure; return tables, headline rows and target (4a)."""
    result = common.BenchResult("start", "4. Session start")
    url = await ctx.model_url()
    await ctx.service()
    n_warm = 5 if ctx.quick else 30
    n_cold = 3 if ctx.quick else 8
    samples: dict[str, list[dict[str, Any]]] = {
        "in-process": [],
        "actor, warm": [],
        "actor, cold": [],
    }
    ctx.log(f"session start: {n_warm} in-process, {n_warm} warm, {n_cold} cold")
    await _sample(ctx, "in_process", url)  # warm-up: imports, first connection
    for _ in range(n_warm):
        samples["in-process"].append(await _sample(ctx, "in_process", url))
    size = int(SERVICE_CONFIG["warm_pool_size"])
    misses = 0
    for _ in range(n_warm):
        await ctx.wait_warm(size, 15.0)
        await ctx.settle(max_wait=4.0)
        before = set(await ctx.named_actors("rr_session_"))
        sample = await _sample(ctx, "actor", url)
        misses += sample["actor"] not in before
        samples["actor, warm"].append(sample)
    known = set(await ctx.named_actors("rr_session_"))
    not_cold = 0
    cold_config = {"sessions_per_actor": await ctx.default_packing() + 1}
    for _ in range(n_cold):
        await ctx.settle(max_wait=4.0)
        sample = await _sample(ctx, "actor", url, **cold_config)
        if sample["actor"] in known:
            not_cold += 1
        known.add(sample["actor"])
        samples["actor, cold"].append(sample)

    ctx.log("warm pool refill")
    refill = await _refill(ctx, url)

    table = common.Table(
        "Session start (ms)",
        ["path", "n", "enter p50", "enter p99", "first event p50", "first event p99", "max"],
    )
    stats = {}
    for label, rows in samples.items():
        enter = common.Summary.of([r["enter"] for r in rows])
        first = common.Summary.of([r["first"] for r in rows])
        stats[label] = first
        table.add(
            label,
            first.n,
            common.fmt_ms(enter.p50),
            common.fmt_ms(enter.p99),
            common.fmt_ms(first.p50),
            common.fmt_ms(first.p99),
            common.fmt_ms(first.max),
        )
    table.notes.append(
        "enter: runner.run() + async with entry; first event: enter + send_message + the "
        "first event received. Cold: a new actor process per session."
    )
    if misses:
        table.notes.append(f"{misses} warm samples found no warm actor (a new one started).")
    if not_cold:
        table.notes.append(f"{not_cold} cold samples reused an existing actor (not cold).")
    result.tables.append(table)

    rate = (
        refill["size"] / refill["full_at"] if refill["full_at"] == refill["full_at"] else math.nan
    )
    series = ", ".join(f"{t:.2f} s: {w}" for t, w in refill["series"])
    ref = common.Table(
        "Warm pool refill",
        ["pool size", "taken in (s)", "full again after (s)", "refill rate (actors/s)"],
    )
    ref.add(
        refill["size"],
        common.fmt_num(refill["taken"], 2),
        common.fmt_num(refill["full_at"], 2),
        common.fmt_num(rate, 2),
    )
    ref.notes.append(f"warm actors over time (from the burst's start): {series}")
    result.tables.append(ref)
    result.notes.append(common.load_note())

    warm = stats["actor, warm"]
    cold = stats["actor, cold"]
    base = stats["in-process"]
    result.headline.append(
        [
            "session start p50, warm pool (ms)",
            common.fmt_ms(base.p50),
            common.fmt_ms(warm.p50),
            common.fmt_ratio(common.ratio(warm.p50, base.p50)),
        ]
    )
    result.headline.append(
        [
            "session start p50, cold (ms)",
            common.fmt_ms(base.p50),
            common.fmt_ms(cold.p50),
            common.fmt_ratio(common.ratio(cold.p50, base.p50)),
        ]
    )
    result.headline.append(["warm pool refill (actors/s)", "", common.fmt_num(rate, 2), ""])
    result.targets.append(targets.evaluate("4a", warm.p50, note="to the first event"))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run this benchmark alone."""
    return run_standalone(run, argv, __doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())
