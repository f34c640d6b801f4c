"""Turn latency of one session: ``send_message`` -> ``agent_end`` for a reply of
exactly 10 audio chunks: in-process; in a session actor as configured by
default (audio and events over the direct data-plane WebSocket when the
product has one); and in a session actor with ``data_plane: False`` (every
command and event batch a Ray call).

Method: the reply is ``say X`` with ``len(X) = 32`` characters, so at the
model server's 12.5 ms of audio per character it is 400 ms of audio = 10
chunks of 40 ms (checked on every turn). The model server does not pace audio
(chunks go out as fast as possible), so the latency is the system's, not the
audio's duration. Turns run back to back on one session at a time; sessions
are replaced every ``TURNS_PER_SESSION`` turns (outside the timing, followed
by waiting for the machine to be quiet) because each ``history_updated``
event carries the whole history, so a turn costs more as the history grows -
the second table measures that growth on one long session. Each session's
first turn and the first ``WARMUP`` turns of a mode are not counted.

Run alone: ``python bench/bench_turn.py [--quick]``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.agents import reply_chars, say_text
from bench.harness import (
    ACTOR,
    ACTOR_RAY,
    IN_PROCESS,
    BenchContext,
    SessionPath,
    run_standalone,
    run_turn,
)

__all__ = ["main", "run"]

REPLY_CHUNKS = 10
TURNS_PER_SESSION = 20
WARMUP = 5


async def _latencies(
    ctx: BenchContext, path: SessionPath, url: str, text: str, turns: int
) -> dict[str, Any]:
    """``turns`` measured turns in sessions of ``TURNS_PER_SESSION``."""
    latencies: list[float] = []
    hops: list[float] = []
    bad_chunks = 0
    failures: list[str] = []
    planes: set[bool | None] = set()
    warmup = WARMUP
    while len(latencies) < turns and len(failures) < 3:
        opened = await ctx.open_session(path.mode, url, **path.options)
        planes.add(opened.data_plane)
        try:
            await run_turn(opened.session, opened.stream, text)  # the session's first turn
            for _ in range(warmup):
                await run_turn(opened.session, opened.stream, text)
            warmup = 0
            await ctx.settle(max_wait=4.0)
            for _ in range(min(TURNS_PER_SESSION, turns - len(latencies))):
                turn = await run_turn(opened.session, opened.stream, text, hops=True)
                if not turn.ok:
                    failures.append(turn.error)
                    break
                latencies.append(turn.latency_ms)
                hops.extend(turn.hops_ms)
                bad_chunks += turn.audio_chunks != REPLY_CHUNKS
        finally:
            await ctx.close_session(opened)
    return {
        "lat": latencies,
        "hops": hops,
        "bad_chunks": bad_chunks,
        "failures": failures,
        "planes": planes,
    }


async def _depth(
    ctx: BenchContext, path: SessionPath, url: str, text: str, turns: int
) -> list[float]:
    """Latencies of ``turns`` turns on one session (history grows)."""
    opened = await ctx.open_session(path.mode, url, **path.options)
    latencies: list[float] = []
    try:
        await ctx.settle(max_wait=4.0)
        for _ in range(turns):
            turn = await run_turn(opened.session, opened.stream, text, timeout=60.0)
            if not turn.ok:
                break
            latencies.append(turn.latency_ms)
    finally:
        await ctx.close_session(opened)
    return latencies


async def run(ctx: BenchContext) -> common.BenchResult:
    """Measure; return tables and headline rows (no target of issue 12: long
    calls are bench_long's)."""
    result = common.BenchResult("turn", "1. Turn latency, one session (10-chunk reply)")
    url = await ctx.model_url()
    text = say_text(reply_chars(REPLY_CHUNKS))
    turns = 30 if ctx.quick else 200
    depth_turns = 30 if ctx.quick else 200
    paths = (IN_PROCESS, ACTOR, ACTOR_RAY)
    data: dict[str, dict[str, Any]] = {}
    for path in paths:
        ctx.log(f"turn latency: {path.label}, {turns} turns")
        data[path.label] = await _latencies(ctx, path, url, text, turns)

    table = common.Table(
        "Turn latency, send_message -> agent_end (ms)",
        ["path", "turns", "p50", "p90", "p99", "max", "chunk hop p50", "chunk hop p99"],
    )
    summaries = {}
    for path in paths:
        s = common.Summary.of(data[path.label]["lat"])
        h = common.Summary.of(data[path.label]["hops"])
        summaries[path.label] = s
        values = (s.p50, s.p90, s.p99, s.max, h.p50, h.p99)
        table.add(path.label, s.n, *(common.fmt_ms(v) for v in values))
    base = summaries[IN_PROCESS.label]
    for path in paths[1:]:
        r50 = common.ratio(summaries[path.label].p50, base.p50)
        r99 = common.ratio(summaries[path.label].p99, base.p99)
        table.add(f"{path.label} / in-process", "", common.fmt_ratio(r50), "",
                  common.fmt_ratio(r99), "", "", "")  # fmt: skip
    table.notes.append(
        f"reply: {len(text) - 4} characters -> {REPLY_CHUNKS} chunks of 40 ms; unpaced model "
        f"server; sessions of {TURNS_PER_SESSION} turns; {WARMUP} warm-up turns per path."
    )
    table.notes.append(
        "chunk hop: model server send -> handle receipt of each audio chunk (stamped chunks)."
    )
    for path in paths[1:]:
        planes = data[path.label]["planes"]
        used = (
            "data plane"
            if planes == {True}
            else "Ray calls"
            if planes <= {False, None}
            else "mixed"
        )
        table.notes.append(f"{path.label}: audio and events travelled over {used}.")
    for path in paths:
        d = data[path.label]
        if d["bad_chunks"] or d["failures"]:
            table.notes.append(
                f"{path.label}: {d['bad_chunks']} turns without exactly {REPLY_CHUNKS} "
                f"chunks; failures: {d['failures'][:3]}"
            )
    table.notes.append(common.load_note())
    result.tables.append(table)

    depth = common.Table(
        "Turn latency vs history length (one session, p50 ms)",
        ["path", "turns", "turns 1-20", "last 20 turns", "growth"],
    )
    for path in paths:
        ctx.log(f"history depth: {path.label}, {depth_turns} turns")
        lat = await _depth(ctx, path, url, text, depth_turns)
        first = common.percentile(lat[:20], 50)
        last = common.percentile(lat[-20:], 50)
        growth = common.fmt_ratio(common.ratio(last, first))
        depth.add(path.label, len(lat), common.fmt_ms(first), common.fmt_ms(last), growth)
    depth.notes.append(
        "each turn adds 2 history items; history_updated events carry the whole history."
    )
    result.tables.append(depth)

    actor = summaries[ACTOR.label]
    for key, label in (("p50", "turn latency p50 (ms)"), ("p99", "turn latency p99 (ms)")):
        a, b = getattr(actor, key), getattr(base, key)
        result.headline.append(
            [label, common.fmt_ms(b), common.fmt_ms(a), common.fmt_ratio(common.ratio(a, b))]
        )
    ray50 = summaries[ACTOR_RAY.label].p50
    result.headline.append(
        [
            "turn latency p50, actor over Ray calls only (ms)",
            common.fmt_ms(base.p50),
            common.fmt_ms(ray50),
            common.fmt_ratio(common.ratio(ray50, base.p50)),
        ]
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run this benchmark alone."""
    return run_standalone(run, argv, __doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())
