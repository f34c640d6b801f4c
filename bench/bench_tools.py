"""Tool fan-out: a tool call inline (in-process) vs on the tool worker pool
(actor mode); and 100 concurrent calls across the pool.

Method, two views:

* *call -> result*: the session's own tool executors, driven directly from
  this process with the bench agent's ``lookup_order`` tool (microseconds of
  work): ``LocalToolExecutor`` (what an in-process session uses) and
  ``PoolExecutor`` over the service's tool workers (what a session actor
  uses: the agent and context travel once by object reference, each call is
  one actor call to the least busy worker). Sequential calls give the added
  latency; rounds of 100 concurrent calls give throughput and latency under
  fan-out. The caller is this driver process rather than a session actor;
  both are Ray core workers, so the call path is the same.
* *as the handle sees it*: in a session of each mode, tool turns (the model
  calls the tool, the session runs it, the model answers): the time between
  the handle receiving ``tool_start`` and ``tool_end``, and the whole tool
  turn (``send_message`` -> second ``agent_end``). In actor mode both events
  may arrive in one batch, so the gap is a lower bound.

Run alone: ``python bench/bench_tools.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, targets
from bench.agents import TOOL_NAME, tool_text
from bench.harness import BenchContext, run_standalone, run_turn

__all__ = ["main", "run"]

FANOUT = 100


async def _executors(ctx: BenchContext) -> tuple[Any, Any, int]:
    from ray_realtime.actors import raylib
    from ray_realtime.actors.pool import PoolExecutor, SessionObjects, WorkerPool, WorkerSlot
    from ray_realtime.cluster.fleet import ActorKind
    from ray_realtime.session.driver import LocalToolExecutor

    names = await ctx.named_actors(ActorKind.TOOL.prefix)
    slots = []
    for name in names:
        handle = raylib.get_named_actor(name)
        if handle is not None:
            info = await handle.ping.remote()
            node = info.get("node_id", "") if isinstance(info, dict) else str(info)
            slots.append(WorkerSlot(name, node, handle))
    pool = WorkerPool(raylib.current_node_id(), slots)
    objects = SessionObjects(raylib.dumps(None, "context"), [])
    return LocalToolExecutor(), PoolExecutor(pool, objects), len(slots)


async def _call(executor: Any, agent: Any, tool: Any, i: int) -> float:
    t0 = time.perf_counter()
    outcome = await executor.run_tool(
        agent,
        tool,
        call_id=f"call_{i}",
        arguments='{"order_id":"A17"}',
        context=None,
        default_timeout=30.0,
    )
    elapsed = (time.perf_counter() - t0) * 1000
    if outcome.error:
        raise RuntimeError(f"tool call failed: {outcome.error}")
    return elapsed


async def run(ctx: BenchContext) -> common.BenchResult:
    """Measure; return tables, headline rows and targets (5a, 5b)."""
    result = common.BenchResult("tools", "5. Tool fan-out")
    url = await ctx.model_url()
    await ctx.service()
    agent = ctx.agent
    tool = next(t for t in agent.tools if t.name == TOOL_NAME)
    local, pool, workers = await _executors(ctx)
    n_seq = 100 if ctx.quick else 500
    rounds = 3 if ctx.quick else 10
    ctx.log(
        f"tools: {n_seq} sequential calls, {rounds} rounds of {FANOUT} concurrent, "
        f"{workers} workers"
    )
    seq: dict[str, list[float]] = {}
    fan: dict[str, tuple[list[float], list[float]]] = {}
    for label, executor in (("inline", local), ("worker pool", pool)):
        for i in range(10):  # warm-up: first fetch of the agent by the workers
            await _call(executor, agent, tool, i)
        await ctx.settle(max_wait=4.0)
        seq[label] = [await _call(executor, agent, tool, i) for i in range(n_seq)]
        lat: list[float] = []
        walls: list[float] = []
        for r in range(rounds):
            t0 = time.perf_counter()
            lat.extend(
                await asyncio.gather(
                    *(_call(executor, agent, tool, r * FANOUT + i) for i in range(FANOUT))
                )
            )
            walls.append(time.perf_counter() - t0)
        fan[label] = (lat, walls)

    table = common.Table(
        "Tool call -> result (ms)",
        [
            "executor",
            "sequential p50",
            "sequential p99",
            f"{FANOUT} concurrent p50",
            f"{FANOUT} concurrent p99",
            "calls/s (fan-out)",
        ],
    )
    for label in seq:
        s = common.Summary.of(seq[label])
        lat, walls = fan[label]
        f = common.Summary.of(lat)
        rate = FANOUT * len(walls) / sum(walls)
        table.add(
            label,
            common.fmt_ms(s.p50, 3),
            common.fmt_ms(s.p99, 3),
            common.fmt_ms(f.p50),
            common.fmt_ms(f.p99),
            common.fmt_num(rate, 0),
        )
    added = common.percentile(seq["worker pool"], 50) - common.percentile(seq["inline"], 50)
    added99 = common.percentile(seq["worker pool"], 99) - common.percentile(seq["inline"], 99)
    table.add("added by the pool", common.fmt_ms(added, 3), common.fmt_ms(added99, 3), "", "", "")
    table.notes.append(
        f"{n_seq} sequential calls; {rounds} rounds of {FANOUT} concurrent calls; "
        f"{workers} tool workers (the service's tool_workers_per_node)."
    )
    result.tables.append(table)

    # as the handle sees it
    turns = 10 if ctx.quick else 40
    ctx.log(f"tools: {turns} tool turns per mode")
    seen = common.Table(
        "Tool turns as the handle sees them (ms)",
        ["path", "turns", "tool_start->tool_end p50", "p99", "tool turn p50", "tool turn p99"],
    )
    handle: dict[str, tuple[list[float], list[float]]] = {}
    for label, mode in (("in-process", "in_process"), ("actor", "actor")):
        opened = await ctx.open_session(mode, url)
        gaps: list[float] = []
        whole: list[float] = []
        try:
            await run_turn(opened.session, opened.stream, tool_text(), agent_ends=2)
            await ctx.settle(max_wait=4.0)
            for i in range(turns):
                turn = await run_turn(
                    opened.session, opened.stream, tool_text(f"B{i}"), agent_ends=2
                )
                if turn.ok and turn.tool_gap_ms is not None:
                    gaps.append(turn.tool_gap_ms)
                    whole.append(turn.latency_ms)
        finally:
            await ctx.close_session(opened)
        handle[label] = (gaps, whole)
        g, w = common.Summary.of(gaps), common.Summary.of(whole)
        seen.add(
            label,
            g.n,
            common.fmt_ms(g.p50),
            common.fmt_ms(g.p99),
            common.fmt_ms(w.p50),
            common.fmt_ms(w.p99),
        )
    seen.notes.append("a tool turn: the call, the tool, and the model's spoken answer.")
    seen.notes.append(common.load_note())
    result.tables.append(seen)

    inline50 = common.percentile(seq["inline"], 50)
    pool50 = common.percentile(seq["worker pool"], 50)
    result.headline.append(
        [
            "tool call p50, inline vs worker pool (ms)",
            common.fmt_ms(inline50, 3),
            common.fmt_ms(pool50, 3),
            f"+{common.fmt_ms(added, 2)} ms",
        ]
    )
    gap_in = common.percentile(handle["in-process"][0], 50)
    gap_actor = common.percentile(handle["actor"][0], 50)
    result.headline.append(
        [
            "tool_start -> tool_end at the handle p50 (ms)",
            common.fmt_ms(gap_in),
            common.fmt_ms(gap_actor),
            f"+{common.fmt_ms(gap_actor - gap_in)} ms",
        ]
    )
    f_inline = common.percentile(fan["inline"][0], 99)
    f_pool = common.percentile(fan["worker pool"][0], 99)
    result.headline.append(
        [
            f"{FANOUT} concurrent tool calls p99 (ms)",
            common.fmt_ms(f_inline),
            common.fmt_ms(f_pool),
            common.fmt_ratio(common.ratio(f_pool, f_inline)),
        ]
    )
    result.targets.append(targets.evaluate("5a", added))
    result.targets.append(targets.evaluate("5b", common.ratio(f_pool, f_inline)))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run this benchmark alone."""
    return run_standalone(run, argv, __doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())
