"""Live audio: K sessions each streaming 24 kHz PCM16 in 40 ms chunks in real
time, in both directions, for D seconds; chunk hop latency, dropped chunks,
and the largest K whose hop p99 stays within 40 ms with nothing dropped.

Method. The model server paces its audio (``pace_audio=True``: one 40 ms
chunk, then a 40 ms wait) and stamps each chunk with its send time (see
``bench/model_server.py``). Each session is sent one ``say X`` whose reply
lasts D seconds (``len(X) = D / 12.5 ms``) and, at the same time, streams
40 ms chunks of silence (1,920 bytes) with ``send_audio``, each due at
``t0 + i x 40 ms`` by the wall clock (a late chunk is sent at once, the
lateness recorded); silence keeps the server's voice detection from
interrupting the reply. The handle reads every event; for each audio chunk
*hop* = its ``time.monotonic()`` at receipt - the stamp (the same clock in
both processes). Dropped = chunks the reply has (known from its length) -
chunks received, plus any ``events_lost``. A level passes when hop p99 <=
40 ms and nothing is dropped. Levels K = 10, 25, 50, 100 (quick: 10) per
path; a path stops after two failing levels in a row (on a machine shared
with other work one level can fail by chance). Actor sessions are packed 10
per actor (``sessions_per_actor`` 10, opened one actor at a time), so K = 100
runs 10 actor processes. Paths: in-process; actor as configured by default
(audio in and events out over the data-plane WebSocket when the product has
one); and, in the full run, actor with ``data_plane: False`` (a Ray call per
chunk sent and per event batch).

Run alone: ``python bench/bench_audio.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.agents import say_text
from bench.harness import (
    BenchContext,
    OpenSession,
    ServerSettings,
    run_standalone,
    run_turn,
)

__all__ = ["main", "run"]

CHUNK_MS = 40
MS_PER_CHAR = 12.5
SILENCE = bytes(24_000 * 2 * CHUNK_MS // 1000)
PACKING = 10
HOP_LIMIT_MS = 40.0
# (label, mode, sessions per actor, extra run config); the full run adds the last one
PATHS: tuple[tuple[str, str, int, dict[str, Any]], ...] = (
    ("in-process", "in_process", 1, {}),
    ("actor", "actor", PACKING, {}),
    ("actor, Ray calls", "actor", PACKING, {"data_plane": False}),
)


@dataclass
class Level:
    """One (path, K) run."""

    label: str
    k: int
    actors: int = 0
    expected: int = 0
    received: int = 0
    missed: int = 0
    failed_turns: int = 0
    send_errors: int = 0
    hops: list[float] = field(default_factory=list)
    lateness: list[float] = field(default_factory=list)
    send_ms: list[float] = field(default_factory=list)
    cores: float = math.nan
    foreign: float = math.nan
    role_cores: dict[str, float] = field(default_factory=dict)
    error: str = ""

    @property
    def dropped(self) -> int:
        return max(0, self.expected - self.received) + self.missed

    @property
    def passed(self) -> bool:
        hop = common.percentile(self.hops, 99)
        return (
            not self.error
            and self.failed_turns == 0
            and self.dropped == 0
            and self.send_errors == 0
            and not math.isnan(hop)
            and hop <= HOP_LIMIT_MS
        )


async def _stream_input(opened: OpenSession, seconds: float, level: Level) -> None:
    count = int(seconds * 1000 / CHUNK_MS)
    t0 = time.perf_counter()
    for i in range(count):
        due = t0 + i * CHUNK_MS / 1000
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        start = time.perf_counter()
        level.lateness.append((start - due) * 1000)
        try:
            await opened.session.send_audio(SILENCE)
        except Exception:
            level.send_errors += 1
        level.send_ms.append((time.perf_counter() - start) * 1000)


async def _one(opened: OpenSession, text: str, seconds: float, level: Level) -> None:
    sender = asyncio.create_task(_stream_input(opened, seconds, level))
    try:
        turn = await run_turn(
            opened.session, opened.stream, text, timeout=seconds * 3 + 30, hops=True
        )
    finally:
        await sender
    level.received += turn.audio_chunks
    level.missed += turn.missed
    level.hops.extend(turn.hops_ms)
    level.failed_turns += not turn.ok


async def _level(
    ctx: BenchContext,
    label: str,
    mode: str,
    packing: int,
    extra: dict[str, Any],
    k: int,
    url: str,
    seconds: float,
) -> Level:
    level = Level(label, k)
    chars = int(seconds * 1000 / MS_PER_CHAR)
    text = say_text(chars)
    level.expected = k * math.ceil(chars * MS_PER_CHAR / CHUNK_MS)
    try:
        sessions = await asyncio.wait_for(ctx.open_packed(k, mode, url, packing, **extra), 120.0)
    except Exception as exc:
        level.error = f"sessions did not start: {type(exc).__name__}: {exc}"
        await ctx.close_sessions()
        return level
    try:
        if mode == "actor":
            placed = await ctx.session_actors()
            level.actors = len({placed.get(s.session.session_id) for s in sessions})
        await ctx.settle(max_wait=10.0)
        meter = common.CpuMeter()
        meter.start()
        await asyncio.gather(*(_one(s, text, seconds, level) for s in sessions))
        usage = meter.stop()
        level.cores = usage.cores()
        level.role_cores = {r: usage.cores([r]) for r in common.ROLES}
        level.foreign = usage.foreign_s / usage.wall_s if usage.wall_s else math.nan
    finally:
        await ctx.close_sessions(sessions)
    return level


async def run(ctx: BenchContext) -> common.BenchResult:
    """Measure; return tables, headline rows and target (4)."""
    result = common.BenchResult("audio", "4. Live audio, both directions, real time")
    url = await ctx.model_url(ServerSettings(pace_audio=True))
    ks = [10] if ctx.quick else [10, 25, 50, 100]
    seconds = 3.0 if ctx.quick else 8.0
    levels: list[Level] = []
    best: dict[str, int] = {}
    for label, mode, packing, extra in PATHS if not ctx.quick else PATHS[:2]:
        best[label] = 0
        misses = 0
        for k in ks:
            ctx.log(f"audio: {label}, K={k}, {seconds:g} s")
            level = await _level(ctx, label, mode, packing, extra, k, url, seconds)
            levels.append(level)
            if level.passed:
                best[label] = k
                misses = 0
            else:
                misses += 1
                if misses == 2:
                    break

    table = common.Table(
        "Audio chunk hop, model server -> handle (ms)",
        [
            "path",
            "K",
            "actor procs",
            "hop p50",
            "hop p99",
            "hop max",
            "chunks expected",
            "received",
            "dropped",
            "input late p99",
            "send_audio p99",
            "cores busy",
            "other load",
            "within 40 ms",
        ],
    )
    for lv in levels:
        hop = common.Summary.of(lv.hops)
        table.add(
            lv.label,
            lv.k,
            lv.actors or "",
            common.fmt_ms(hop.p50),
            common.fmt_ms(hop.p99),
            common.fmt_ms(hop.max),
            lv.expected,
            lv.received,
            lv.dropped,
            common.fmt_ms(common.percentile(lv.lateness, 99)),
            common.fmt_ms(common.percentile(lv.send_ms, 99)),
            common.fmt_num(lv.cores, 2),
            common.fmt_num(lv.foreign, 2),
            "yes" if lv.passed else "no",
        )
        if lv.error or lv.failed_turns or lv.send_errors:
            table.notes.append(
                f"{lv.label} K={lv.k}: {lv.error or ''} {lv.failed_turns} turns failed, "
                f"{lv.send_errors} send_audio errors"
            )
    for lv in levels:
        if lv.role_cores:
            busy = ", ".join(f"{r} {v:.2f}" for r, v in lv.role_cores.items() if v >= 0.01)
            table.notes.append(f"{lv.label} K={lv.k} cores by role: {busy}")
    table.notes.append(
        f"{seconds:g} s of reply audio and of input audio per session; actor sessions "
        f"packed {PACKING} per actor; input late: how far behind its wall-clock slot a "
        "send_audio started; a path stops after two failing K in a row."
    )
    table.notes.append(common.load_note())
    result.tables.append(table)

    def at(label: str, k: int) -> Level | None:
        return next((lv for lv in levels if lv.label == label and lv.k == k), None)

    base, actor = at("in-process", ks[0]), at("actor", ks[0])
    if base and actor:
        b99 = common.percentile(base.hops, 99)
        a99 = common.percentile(actor.hops, 99)
        result.headline.append(
            [
                f"audio hop p99, K={ks[0]} (ms)",
                common.fmt_ms(b99),
                common.fmt_ms(a99),
                common.fmt_ratio(common.ratio(a99, b99)),
            ]
        )
    result.headline.append(
        [
            "largest K with hop p99 <= 40 ms, no drops",
            str(best["in-process"]),
            str(best["actor"]),
            "",
        ]
    )
    if "actor, Ray calls" in best:
        result.headline.append(
            [
                "largest K, actor over Ray calls only",
                str(best["in-process"]),
                str(best["actor, Ray calls"]),
                "",
            ]
        )
    target_k = 100
    result.targets.append(
        common.Target(
            "(4)",
            ">= 100 concurrent audio sessions, hop p99 <= 40 ms, zero drops",
            f"largest K = {best['actor']}" + (" (quick: K=10 only)" if ctx.quick else ""),
            best["actor"] >= target_k if not ctx.quick or best["actor"] < ks[-1] else None,
        )
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run this benchmark alone."""
    return run_standalone(run, argv, __doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())
