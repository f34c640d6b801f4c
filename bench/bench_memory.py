"""Memory per session: dedicated session actors vs 50 sessions packed in one
actor (``sessions_per_actor`` 50), measured on the actor processes.

Method. Sessions are opened, each does one turn (a 10-chunk reply, so it has
a model connection, a history and events in its log), the machine settles,
then each session actor's process is read with psutil
``memory_full_info()``: USS (pages only this process maps - what it would
give back if it exited) and PSS (its share of every page it maps, shared
pages divided among the processes mapping them). The actor processes are
found from the router's session list (session -> actor name) and the actor's
``ping`` (its pid) or Ray's actor table.

* dedicated: per session = the USS / PSS of the actor process (one session
  each), averaged over the actors; an idle warm actor (no session) is shown
  for reference.
* packed: per session = the packed actor's USS / PSS with 50 sessions,
  divided by 50 (what a session costs, its share of the process included);
  marginal = (with 50 - with 1) / 49.
* in-process (reference): growth of this process's USS for 50 sessions / 50.

Run alone: ``python bench/bench_memory.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.agents import reply_chars, say_text
from bench.harness import BenchContext, OpenSession, run_standalone, run_turn

__all__ = ["main", "run"]

PACKED = 50
DEDICATED_LIMIT_MIB = 45.0
PACKED_LIMIT_MIB = 2.0


async def _one_turn_each(sessions: list[OpenSession]) -> int:
    text = say_text(reply_chars(10))
    turns = await asyncio.gather(*(run_turn(s.session, s.stream, text) for s in sessions))
    return sum(not t.ok for t in turns)


async def _actor_memory(
    ctx: BenchContext, sessions: list[OpenSession]
) -> dict[str, common.MemInfo]:
    placed = await ctx.session_actors()
    names = {placed[s.session.session_id] for s in sessions if s.session.session_id in placed}
    pids = await ctx.actor_pids(names)
    return {name: common.memory_of(pid) for name, pid in pids.items()}


async def run(ctx: BenchContext) -> common.BenchResult:
    """Measure; return tables, headline rows and target (5)."""
    result = common.BenchResult("memory", "5. Memory per session")
    url = await ctx.model_url()
    await ctx.service()
    n_dedicated = 4 if ctx.quick else 10
    table = common.Table(
        "Memory per session (MiB)",
        ["how", "sessions", "processes", "USS / session", "PSS / session", "RSS / process", "note"],
    )
    failures = 0

    # in-process reference
    ctx.log(f"memory: {PACKED} in-process sessions")
    gc.collect()
    before = common.memory_of(os.getpid())
    sessions = await ctx.open_sessions(PACKED, "in_process", url)
    failures += await _one_turn_each(sessions)
    gc.collect()
    after = common.memory_of(os.getpid())
    await ctx.close_sessions(sessions)
    inproc_uss = max(0, after.uss - before.uss) / PACKED
    inproc_pss = max(0, after.pss - before.pss) / PACKED
    table.add(
        "in-process (this process's growth)",
        PACKED,
        1,
        common.fmt_mib(inproc_uss, 2),
        common.fmt_mib(inproc_pss, 2),
        common.fmt_mib(after.rss),
        "reference",
    )

    # an idle warm actor (the pool is full and no session is open)
    await ctx.wait_warm(1, 15.0)
    await ctx.settle()
    busy = set((await ctx.session_actors()).values())
    idle_names = [n for n in await ctx.named_actors("rr_session_") if n not in busy]
    idle = [common.memory_of(p) for p in (await ctx.actor_pids(idle_names[:2])).values()]

    # dedicated actors
    ctx.log(f"memory: {n_dedicated} dedicated actor sessions")
    sessions = await ctx.open_sessions(n_dedicated, "actor", url)
    try:
        failures += await _one_turn_each(sessions)
        await ctx.settle()
        mems = await _actor_memory(ctx, sessions)
    finally:
        await ctx.close_sessions(sessions)
    ded_uss = sum(m.uss for m in mems.values()) / max(1, len(mems))
    ded_pss = sum(m.pss for m in mems.values()) / max(1, len(mems))
    ded_rss = sum(m.rss for m in mems.values()) / max(1, len(mems))
    table.add(
        "dedicated actors",
        n_dedicated,
        len(mems),
        common.fmt_mib(ded_uss),
        common.fmt_mib(ded_pss),
        common.fmt_mib(ded_rss),
        "1 session per process",
    )
    if idle:
        table.add(
            "idle warm actor",
            0,
            len(idle),
            common.fmt_mib(sum(m.uss for m in idle) / len(idle)),
            common.fmt_mib(sum(m.pss for m in idle) / len(idle)),
            common.fmt_mib(sum(m.rss for m in idle) / len(idle)),
            "reference, no session",
        )

    # packed
    ctx.log(f"memory: {PACKED} sessions packed in one actor")
    config = {"sessions_per_actor": PACKED}
    first = await ctx.open_session("actor", url, **config)
    opened = [first]
    try:
        failures += await _one_turn_each([first])
        await ctx.settle()
        one = list((await _actor_memory(ctx, [first])).values())
        rest = await ctx.open_sessions(PACKED - 1, "actor", url, concurrency=10, **config)
        opened.extend(rest)
        failures += await _one_turn_each(rest)
        await ctx.settle()
        full = await _actor_memory(ctx, opened)
    finally:
        await ctx.close_sessions(opened)
    packed_uss = sum(m.uss for m in full.values()) / PACKED
    packed_pss = sum(m.pss for m in full.values()) / PACKED
    marginal = (
        (sum(m.uss for m in full.values()) - one[0].uss) / (PACKED - 1) if one else float("nan")
    )
    table.add(
        f"packed, {PACKED} per actor",
        PACKED,
        len(full),
        common.fmt_mib(packed_uss, 2),
        common.fmt_mib(packed_pss, 2),
        common.fmt_mib(sum(m.rss for m in full.values()) / max(1, len(full))),
        f"marginal USS {common.fmt_mib(marginal, 2)} MiB / session",
    )
    table.notes.append(
        "in-process: a lower bound (the process reuses memory that earlier sessions freed)."
    )
    if one:
        table.notes.append(f"packed actor with 1 session: USS {common.fmt_mib(one[0].uss)} MiB.")
    if failures:
        table.notes.append(f"{failures} turns failed")
    table.notes.append(common.load_note())
    result.tables.append(table)

    result.headline.append(
        ["memory / session, dedicated (USS MiB)", "", common.fmt_mib(ded_uss), ""]
    )
    result.headline.append(
        [
            f"memory / session, {PACKED} packed (USS MiB)",
            common.fmt_mib(inproc_uss, 2),
            common.fmt_mib(packed_uss, 2),
            "",
        ]
    )
    result.targets.append(
        common.Target(
            "(5a)",
            f"dedicated <= {DEDICATED_LIMIT_MIB:g} MiB USS per session",
            f"{common.fmt_mib(ded_uss)} MiB",
            ded_uss / common.MIB <= DEDICATED_LIMIT_MIB if mems else None,
        )
    )
    result.targets.append(
        common.Target(
            "(5b)",
            f"packed <= {PACKED_LIMIT_MIB:g} MiB USS per session",
            f"{common.fmt_mib(packed_uss, 2)} MiB",
            packed_uss / common.MIB <= PACKED_LIMIT_MIB if full else None,
        )
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run this benchmark alone."""
    return run_standalone(run, argv, __doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())
