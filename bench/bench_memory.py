"""Memory per session at steady state: dedicated session actors vs 50
sessions packed in one actor (``sessions_per_actor`` 50), measured on the
actor processes after every session has done ``STEADY_TURNS`` turns.

Method. Sessions are opened and each does ``STEADY_TURNS`` turns back to
back (quick: ``QUICK_TURNS``), all sessions at once; a turn is a 10-chunk
reply, so each adds two history items and fills the session's event log.
After the first turn, after half the turns and after all of them the machine
settles and each session actor's process is read with psutil
``memory_full_info()``: USS (pages only this process maps - what it would
give back if it exited) and PSS (its share of every page it maps, shared
pages divided among the processes mapping them). The targets take the
reading after all turns; the half-way one shows whether the figure is still
growing. The actor processes are found from the router's session list
(session -> actor name) and the actor's ``ping`` (its pid) or Ray's actor
table.

* dedicated: sessions that ask for ``sessions_per_actor`` 1; per session =
  the USS / PSS of the actor process (one session each), averaged over the
  actors; an idle warm actor (no session) is shown for reference.
* packed: per session = the packed actor's USS / PSS with 50 sessions,
  divided by 50 (what a session costs, its share of the process included);
  marginal = (with 50 - with 1, both after one turn) / 49.
* in-process (reference): growth of this process's USS for 50 sessions / 50,
  after the same turns.

Run alone: ``python bench/bench_memory.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, targets
from bench.agents import reply_chars, say_text
from bench.harness import BenchContext, OpenSession, run_standalone, run_turn

__all__ = ["main", "run"]

PACKED = 50
STEADY_TURNS = 100
QUICK_TURNS = 10


async def _turns_each(sessions: list[OpenSession], turns: int) -> int:
    """``turns`` turns on every session (sessions at once, turns in order);
    returns the number of failed turns (a session stops at its first)."""
    text = say_text(reply_chars(10))

    async def one(opened: OpenSession) -> int:
        if opened.stream.broken:  # stopped at an earlier failed turn, counted then
            return 0
        for _ in range(turns):
            turn = await run_turn(opened.session, opened.stream, text, timeout=60.0)
            if not turn.ok:
                return 1
        return 0

    return sum(await asyncio.gather(*(one(s) for s in sessions)))


async def _actor_memory(
    ctx: BenchContext, sessions: list[OpenSession]
) -> dict[str, common.MemInfo]:
    placed = await ctx.session_actors()
    names = {placed[s.session.session_id] for s in sessions if s.session.session_id in placed}
    pids = await ctx.actor_pids(names)
    return {name: common.memory_of(pid) for name, pid in pids.items()}


def _mean(mems: Sequence[common.MemInfo], what: str) -> float:
    return sum(getattr(m, what) for m in mems) / len(mems) if mems else math.nan


async def _staged(
    ctx: BenchContext, sessions: list[OpenSession], turns: int, done: int = 0
) -> tuple[list[dict[str, common.MemInfo]], int]:
    """Readings of the sessions' actors after 1 turn, half the turns and all
    of them (``done``: turns every session has done already); and the
    failed turns."""
    readings = []
    failures = 0
    for upto in (1, max(1, turns // 2), turns):
        if upto > done:
            failures += await _turns_each(sessions, upto - done)
            done = upto
        await ctx.settle()
        readings.append(await _actor_memory(ctx, sessions))
    return readings, failures


async def run(ctx: BenchContext) -> common.BenchResult:
    """Measure; return tables, headline rows and targets (4b, 4c)."""
    result = common.BenchResult("memory", "4. Memory per session at steady state")
    url = await ctx.model_url()
    await ctx.service()
    n_dedicated = 3 if ctx.quick else 10
    turns = QUICK_TURNS if ctx.quick else STEADY_TURNS
    half = max(1, turns // 2)
    table = common.Table(
        "Memory per session (MiB)",
        [
            "how",
            "sessions",
            "processes",
            "USS / session, 1 turn",
            f"USS / session, {half} turns",
            f"USS / session, {turns} turns",
            f"PSS / session, {turns} turns",
            "RSS / process",
            "note",
        ],
    )
    failures = 0

    # in-process reference
    ctx.log(f"memory: {PACKED} in-process sessions, {turns} turns each")
    gc.collect()
    before = common.memory_of(os.getpid())
    sessions = await ctx.open_sessions(PACKED, "in_process", url)
    failures += await _turns_each(sessions, turns)
    gc.collect()
    after = common.memory_of(os.getpid())
    await ctx.close_sessions(sessions)
    inproc_uss = max(0, after.uss - before.uss) / PACKED
    inproc_pss = max(0, after.pss - before.pss) / PACKED
    table.add(
        "in-process (this process's growth)",
        PACKED,
        1,
        "",
        "",
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
    ctx.log(f"memory: {n_dedicated} dedicated actor sessions, {turns} turns each")
    sessions = await ctx.open_sessions(n_dedicated, "actor", url, sessions_per_actor=1)
    try:
        ded, failed = await _staged(ctx, sessions, turns)
        failures += failed
    finally:
        await ctx.close_sessions(sessions)
    ded_uss = [_mean(list(r.values()), "uss") for r in ded]
    last = list(ded[-1].values())
    table.add(
        "dedicated actors",
        n_dedicated,
        len(last),
        *(common.fmt_mib(v) for v in ded_uss),
        common.fmt_mib(_mean(last, "pss")),
        common.fmt_mib(_mean(last, "rss")),
        "1 session per process",
    )
    if idle:
        table.add(
            "idle warm actor",
            0,
            len(idle),
            "",
            "",
            common.fmt_mib(_mean(idle, "uss")),
            common.fmt_mib(_mean(idle, "pss")),
            common.fmt_mib(_mean(idle, "rss")),
            "reference, no session",
        )

    # packed
    ctx.log(f"memory: {PACKED} sessions packed in one actor, {turns} turns each")
    config = {"sessions_per_actor": PACKED}
    first = await ctx.open_session("actor", url, **config)
    opened = [first]
    try:
        failures += await _turns_each([first], 1)
        await ctx.settle()
        one = list((await _actor_memory(ctx, [first])).values())
        rest = await ctx.open_sessions(PACKED - 1, "actor", url, concurrency=10, **config)
        opened.extend(rest)
        # the first session has done its first turn already
        failures += await _turns_each(rest, 1)
        packed, failed = await _staged(ctx, opened, turns, done=1)
        failures += failed
    finally:
        await ctx.close_sessions(opened)
    packed_uss = [sum(m.uss for m in r.values()) / PACKED if r else math.nan for r in packed]
    full = list(packed[-1].values())
    packed_pss = sum(m.pss for m in full) / PACKED if full else math.nan
    marginal = (
        (sum(m.uss for m in packed[0].values()) - one[0].uss) / (PACKED - 1)
        if one and packed[0]
        else math.nan
    )
    table.add(
        f"packed, {PACKED} per actor",
        PACKED,
        len(full),
        *(common.fmt_mib(v, 2) for v in packed_uss),
        common.fmt_mib(packed_pss, 2),
        common.fmt_mib(_mean(full, "rss")),
        f"marginal USS after 1 turn {common.fmt_mib(marginal, 2)} MiB / session",
    )
    table.notes.append(
        f"every session does {turns} turns (10-chunk replies, 2 history items each), all "
        "sessions at once; each reading after the machine settles."
    )
    table.notes.append(
        "in-process: a lower bound (the process reuses memory that earlier sessions freed)."
    )
    if one:
        table.notes.append(
            f"packed actor with 1 session after 1 turn: USS {common.fmt_mib(one[0].uss)} MiB."
        )
    if failures:
        table.notes.append(f"{failures} sessions stopped at a failed turn")
    table.notes.append(common.load_note())
    result.tables.append(table)

    ded_final, packed_final = ded_uss[-1], packed_uss[-1]
    result.headline.append(
        [f"memory / session, dedicated, {turns} turns (USS MiB)", "", common.fmt_mib(ded_final), ""]
    )
    result.headline.append(
        [
            f"memory / session, {PACKED} packed, {turns} turns (USS MiB)",
            common.fmt_mib(inproc_uss, 2),
            common.fmt_mib(packed_final, 2),
            "",
        ]
    )
    steady = turns >= STEADY_TURNS
    note = f"after {turns} turns"
    result.targets.append(
        targets.evaluate("4b", ded_final / common.MIB, judged=not failures, note=note)
    )
    if not steady:
        note += f"; quick: the target asks {STEADY_TURNS}"
    result.targets.append(
        targets.evaluate("4c", packed_final / common.MIB, judged=steady and not failures, note=note)
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run this benchmark alone."""
    return run_standalone(run, argv, __doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())
