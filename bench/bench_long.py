"""Long calls: does a turn cost the same at 500 history items as at 10?

One session per path (in-process; a session actor as configured by default)
does turns back to back until its history holds ``ITEMS`` items (each turn
adds two: the user's message and the reply). Two windows of ``WINDOW`` turns
are timed: the first starting at ~10 items, the last ending at ~``ITEMS``.
For each: turn latency (``send_message`` -> ``agent_end``) p50, and the CPU
of the benchmark's process and the session actors per turn. The actor's
unique memory (USS) is read at ~half and at ~all of ``ITEMS``: with the event
log bounded (in count and in bytes) and the history travelling as deltas, it
should stay flat.

Method: the reply is the 10-chunk ``say`` of ``bench_turn`` (unpaced model
server, ~40 transcript deltas per turn), so each turn emits the same events
whatever the history's length; only what the history costs can grow. The
machine is waited quiet before each window.

Run alone: ``python bench/bench_long.py [--quick]``.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, targets
from bench.agents import reply_chars, say_text
from bench.harness import (
    ACTOR,
    IN_PROCESS,
    BenchContext,
    OpenSession,
    SessionPath,
    run_standalone,
    run_turn,
)

__all__ = ["main", "run"]

ITEMS = 500
QUICK_ITEMS = 120
WINDOW = 30
QUICK_WINDOW = 10
EARLY_ITEMS = 10


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time of every thread of ``pids``, in nanosecond resolution from
    ``/proc/PID/task/TID/schedstat`` (psutil's clock ticks are 10 ms: too
    coarse for a few ms per turn)."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


async def _actor_pid(ctx: BenchContext, opened: OpenSession) -> int | None:
    """The session actor's process id (None in-process or if not found)."""
    if opened.mode != "actor":
        return None
    placed = await ctx.session_actors()
    name = placed.get(opened.session.session_id)
    if name is None:
        return None
    return (await ctx.actor_pids([name])).get(name)


def _uss(pid: int | None) -> float:
    return math.nan if pid is None else float(common.memory_of(pid).uss)


async def _window(
    ctx: BenchContext, opened: OpenSession, text: str, turns: int, actor_pid: int | None
) -> tuple[list[float], float, float, list[str]]:
    """``turns`` timed turns: their latencies (ms), CPU seconds per turn of
    this process and of the session actor, and the failures."""
    await ctx.settle(max_wait=4.0)
    here = [os.getpid()]
    actor = [actor_pid] if actor_pid else []
    latencies: list[float] = []
    failures: list[str] = []
    here0, actor0 = _cpu_seconds(here), _cpu_seconds(actor)
    for _ in range(turns):
        turn = await run_turn(opened.session, opened.stream, text, timeout=60.0)
        if not turn.ok:
            failures.append(turn.error)
            break
        latencies.append(turn.latency_ms)
    n = max(1, len(latencies))
    return latencies, (_cpu_seconds(here) - here0) / n, (_cpu_seconds(actor) - actor0) / n, failures


async def _grow(opened: OpenSession, text: str, items: int, failures: list[str]) -> None:
    """Turns (untimed) until the history holds ``items`` items."""
    while len(opened.session.history) < items and len(failures) < 3:
        turn = await run_turn(opened.session, opened.stream, text, timeout=60.0)
        if not turn.ok:
            failures.append(turn.error)


async def _long_session(
    ctx: BenchContext, path: SessionPath, url: str, text: str, items: int, window: int
) -> dict[str, Any]:
    opened = await ctx.open_session(path.mode, url, **path.options)
    failures: list[str] = []
    try:
        pid = await _actor_pid(ctx, opened)
        await _grow(opened, text, EARLY_ITEMS, failures)
        early_items = len(opened.session.history)
        early, early_here, early_actor, failed = await _window(ctx, opened, text, window, pid)
        failures += failed
        await _grow(opened, text, items // 2, failures)
        half_items = len(opened.session.history)
        uss_half = _uss(pid)
        await _grow(opened, text, items - 2 * window, failures)
        late_items = len(opened.session.history)
        late, late_here, late_actor, failed = await _window(ctx, opened, text, window, pid)
        failures += failed
        end_items = len(opened.session.history)
        uss_end = _uss(pid)
    finally:
        await ctx.close_session(opened)
    return {
        "early": early,
        "early_cpu": early_here + early_actor,
        "early_split": (early_here, early_actor),
        "early_items": early_items,
        "late": late,
        "late_cpu": late_here + late_actor,
        "late_split": (late_here, late_actor),
        "late_items": late_items,
        "end_items": end_items,
        "half_items": half_items,
        "uss_half": uss_half,
        "uss_end": uss_end,
        "failures": failures,
    }


async def run(ctx: BenchContext) -> common.BenchResult:
    """Measure; return the table, headline rows and the long-call targets."""
    result = common.BenchResult("long", "Long calls: turn cost at 500 history items vs 10")
    url = await ctx.model_url()
    text = say_text(reply_chars(10))
    items = QUICK_ITEMS if ctx.quick else ITEMS
    window = QUICK_WINDOW if ctx.quick else WINDOW
    paths = (IN_PROCESS, ACTOR)
    data: dict[str, dict[str, Any]] = {}
    for path in paths:
        ctx.log(f"long session: {path.label}, until {items} history items")
        data[path.label] = await _long_session(ctx, path, url, text, items, window)

    table = common.Table(
        f"One session growing to {items} history items ({window}-turn windows)",
        [
            "path",
            "items (early)",
            "p50 early (ms)",
            "items (late)",
            "p50 late (ms)",
            "p50 late/early",
            "CPU/turn early (ms)",
            "CPU/turn late (ms)",
            "CPU late/early",
            "actor USS half (MiB)",
            "actor USS end (MiB)",
        ],
    )
    ratios: dict[str, tuple[float, float]] = {}
    for path in paths:
        d = data[path.label]
        early50 = common.percentile(d["early"], 50)
        late50 = common.percentile(d["late"], 50)
        lat_ratio = common.ratio(late50, early50)
        cpu_ratio = common.ratio(d["late_cpu"], d["early_cpu"])
        ratios[path.label] = (lat_ratio, cpu_ratio)
        table.add(
            path.label,
            f"{d['early_items']}-{d['early_items'] + 2 * len(d['early'])}",
            common.fmt_ms(early50),
            f"{d['late_items']}-{d['end_items']}",
            common.fmt_ms(late50),
            common.fmt_ratio(lat_ratio),
            common.fmt_ms(d["early_cpu"] * 1000),
            common.fmt_ms(d["late_cpu"] * 1000),
            common.fmt_ratio(cpu_ratio),
            common.fmt_mib(d["uss_half"]) if not math.isnan(d["uss_half"]) else "",
            common.fmt_mib(d["uss_end"]) if not math.isnan(d["uss_end"]) else "",
        )
        if path.mode == "actor":
            (eh, ea), (lh, la) = d["early_split"], d["late_split"]
            table.notes.append(
                f"{path.label}: CPU/turn early {eh * 1000:.2f} ms here + {ea * 1000:.2f} ms in "
                f"the actor; late {lh * 1000:.2f} + {la * 1000:.2f} ms."
            )
        if d["failures"]:
            table.notes.append(f"{path.label}: failures: {d['failures'][:3]}")
    table.notes.append(
        "CPU/turn: CPU time of the benchmark process and the session's actor (every "
        "thread, from /proc schedstat) over the window, per turn; the model server and "
        "Ray's own processes are not counted."
    )
    table.notes.append(common.load_note())
    result.tables.append(table)

    actor = data[ACTOR.label]
    growth = (actor["uss_end"] - actor["uss_half"]) / common.MIB
    for path in paths:
        lat_ratio, cpu_ratio = ratios[path.label]
        result.headline.append(
            [f"long call: turn p50 late/early, {path.label}", "", common.fmt_ratio(lat_ratio), ""]
        )
    lat_ratio, cpu_ratio = ratios[ACTOR.label]
    # Judged only when the session really reached the 500 items.
    full = not ctx.quick and actor["end_items"] >= ITEMS
    reached = f"at {actor['end_items']} items"
    result.targets.append(targets.evaluate("1a", lat_ratio, judged=full, note=reached))
    result.targets.append(targets.evaluate("1b", cpu_ratio, judged=full, note=reached))
    memory_ratio = common.ratio(actor["uss_end"], actor["uss_half"])
    result.targets.append(
        targets.evaluate(
            "1c",
            memory_ratio,
            judged=full,
            note=f"{growth:+.1f} MiB from {actor['half_items']} to {actor['end_items']} items",
        )
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run this benchmark alone."""
    return run_standalone(run, argv, __doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())
