"""Event throughput: N concurrent sessions doing turns back to back (one in
five with a tool call); events/s delivered to the handles and CPU seconds per
1,000 events over every process involved.

Method. Per (N, path) the work runs in *epochs*. An epoch opens N sessions,
runs one untimed warm-up turn on each, waits until the process tree is quiet
(no actor starting or retiring), then times a window in which every session
does turns until it has done ``MAX_TURNS`` or the epoch's time is up (a turn
in flight at the deadline finishes and counts), and closes the sessions. A
session's turns are capped because each ``history_updated`` event carries the
whole history (see bench_turn). Epochs repeat until the timed windows add up
to the level's time, or ``MAX_EPOCHS``. Turn ``i`` is a tool turn when ``i % 5
== 4`` (the model calls ``lookup_order``, the session runs it - inline
in-process, on a tool worker actor otherwise - and the model answers), else
a ``say`` turn with a 10-chunk reply. The model server does not pace audio.

Events/s = events yielded by all handles in the windows / the windows' time.
CPU = :class:`bench.common.CpuMeter` over the windows. In-process the path is
the driver (this process: handles + sessions) and the model server process;
with actors it is also every Ray process (GCS, raylet, agents, router,
session actors, workers) - all descendants of this process, since the
embedded Ray is started here. The per-role table shows where it goes.

Actor sessions run as configured by default (audio and events over the
direct data-plane WebSocket when the product has one); the full run adds 20
dedicated sessions with ``data_plane: False`` (every command and event batch
a Ray call). Up to 20 sessions use dedicated actors (``sessions_per_actor`` 1,
the default, from the warm pool and new actors); 100 sessions are packed 25
per actor (4 actor processes) so the machine does not start 100 processes;
the full run also tries 100 dedicated actors if they start in a bounded time.

Run alone: ``python bench/bench_throughput.py [--quick]``.
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
from bench.agents import reply_chars, say_text, tool_text
from bench.harness import BenchContext, OpenSession, run_standalone, run_turn

__all__ = ["main", "run"]

MAX_TURNS = 50
MAX_EPOCHS = 8
PACKED = 25
NO_DATA_PLANE: dict[str, Any] = {"data_plane": False}
IN_PROCESS_ROLES = ("driver", "model server")


@dataclass
class Run:
    """One (sessions, path) measurement, summed over its epochs."""

    label: str
    mode: str
    sessions: int
    actors: int = 0
    turns: int = 0
    tool_turns: int = 0
    events: int = 0
    window_s: float = 0.0
    failures: int = 0
    turn_ms: list[float] = field(default_factory=list)
    by_role: dict[str, float] = field(default_factory=lambda: dict.fromkeys(common.ROLES, 0.0))
    foreign_s: float = 0.0
    skipped: str = ""

    @property
    def roles(self) -> tuple[str, ...]:
        return IN_PROCESS_ROLES if self.mode == "in_process" else common.ROLES

    @property
    def cpu_s(self) -> float:
        return sum(self.by_role[r] for r in self.roles)

    @property
    def events_per_s(self) -> float:
        return self.events / self.window_s if self.window_s > 0 else math.nan

    @property
    def cpu_per_1k(self) -> float:
        return self.cpu_s / (self.events / 1000) if self.events else math.nan


async def _session_loop(
    opened: OpenSession, run: Run, say: str, deadline: float, start_index: int
) -> None:
    for i in range(start_index, start_index + MAX_TURNS):
        if time.perf_counter() >= deadline:
            return
        tool = i % 5 == 4
        turn = await run_turn(
            opened.session,
            opened.stream,
            tool_text() if tool else say,
            agent_ends=2 if tool else 1,
        )
        run.events += turn.events
        if not turn.ok:
            run.failures += 1
            return
        run.turns += 1
        run.tool_turns += tool
        run.turn_ms.append(turn.latency_ms)


async def _measure(
    ctx: BenchContext,
    run: Run,
    url: str,
    level_s: float,
    per_actor: int,
    open_timeout: float,
    extra: dict[str, Any],
) -> None:
    say = say_text(reply_chars(10))
    for _ in range(MAX_EPOCHS):
        if run.window_s >= level_s:
            break
        t_open = time.perf_counter()
        try:
            sessions = await asyncio.wait_for(
                ctx.open_packed(run.sessions, run.mode, url, per_actor, **extra), open_timeout
            )
        except (TimeoutError, Exception) as exc:
            run.skipped = (
                f"{run.sessions} sessions did not start within {open_timeout:.0f} s "
                f"({type(exc).__name__}); skipped"
            )
            await ctx.close_sessions()
            return
        open_s = time.perf_counter() - t_open
        try:
            await asyncio.gather(*(run_turn(s.session, s.stream, say) for s in sessions))
            if run.mode == "actor":
                placed = await ctx.session_actors()
                run.actors = len({placed.get(s.session.session_id) for s in sessions})
            await ctx.settle(max_wait=15.0 if run.sessions > 20 else 8.0)
            meter = common.CpuMeter()
            meter.start()
            t0 = time.perf_counter()
            deadline = t0 + max(0.5, level_s - run.window_s)
            await asyncio.gather(*(_session_loop(s, run, say, deadline, 1) for s in sessions))
            usage = meter.stop()
            run.window_s += time.perf_counter() - t0
            for role, used in usage.by_role.items():
                run.by_role[role] = run.by_role.get(role, 0.0) + used
            run.foreign_s += usage.foreign_s
        finally:
            await ctx.close_sessions(sessions)
        ctx.log(
            f"  {run.label}: epoch done, {run.events} events in {run.window_s:.1f} s "
            f"(opening took {open_s:.1f} s)"
        )


async def run(ctx: BenchContext) -> common.BenchResult:
    """Measure; return tables, headline rows and target (2)."""
    result = common.BenchResult("throughput", "2. Event throughput, concurrent sessions")
    url = await ctx.model_url()
    levels = [1, 20] if ctx.quick else [1, 20, 100]
    level_s = 1.5 if ctx.quick else 6.0
    runs: list[Run] = []
    for n in levels:
        # (label, mode, sessions per actor, seconds allowed to open them, extra run config)
        plans: list[tuple[str, str, int, float, dict[str, Any]]] = [
            ("in-process", "in_process", 1, 120.0, {})
        ]
        if n <= 20:
            plans.append(("actor, dedicated", "actor", 1, 120.0, {}))
        else:
            plans.append((f"actor, {PACKED} per actor", "actor", PACKED, 120.0, {}))
        if not ctx.quick and n == 20:
            plans.append(("actor, dedicated (Ray calls)", "actor", 1, 120.0, NO_DATA_PLANE))
            plans.append(("actor, 20 per actor", "actor", 20, 120.0, {}))
        if not ctx.quick and n == 100:
            plans.append(("actor, dedicated", "actor", 1, 150.0, {}))
        for label, mode, per_actor, open_timeout, extra in plans:
            r = Run(f"{n} x {label}", mode, n)
            ctx.log(f"throughput: {r.label}")
            await _measure(ctx, r, url, level_s, per_actor, open_timeout, extra)
            runs.append(r)

    table = common.Table(
        "Throughput (events delivered to handles)",
        [
            "sessions",
            "path",
            "actor procs",
            "turns",
            "events",
            "window s",
            "events/s",
            "CPU s / 1k events",
            "cores busy",
            "turn p50 ms",
            "turn p99 ms",
            "other load (cores)",
        ],
    )
    for r in runs:
        if r.skipped:
            table.add(r.sessions, r.label, "", "", "", "", "-", "-", "-", "-", "-", "-")
            table.notes.append(f"{r.label}: {r.skipped}")
            continue
        lat = common.Summary.of(r.turn_ms)
        table.add(
            r.sessions,
            r.label,
            r.actors if r.mode == "actor" else "",
            r.turns,
            r.events,
            common.fmt_num(r.window_s, 2),
            common.fmt_num(r.events_per_s, 0),
            common.fmt_num(r.cpu_per_1k, 3),
            common.fmt_num(r.cpu_s / r.window_s if r.window_s else math.nan, 2),
            common.fmt_ms(lat.p50),
            common.fmt_ms(lat.p99),
            common.fmt_num(r.foreign_s / r.window_s if r.window_s else math.nan, 2),
        )
        if r.failures:
            table.notes.append(f"{r.label}: {r.failures} turns failed (timed out)")
    table.notes.append(
        f"turns back to back, 1 in 5 with a tool call, <= {MAX_TURNS} turns per session per "
        f"epoch; CPU: in-process = driver + model server; actor = driver + model server + "
        "every Ray process."
    )
    table.notes.append(
        "other load: busy cores of the machine outside our process tree during the windows."
    )
    result.tables.append(table)

    roles = common.Table("CPU per role (ms per 1,000 events)", ["sessions", "path", *common.ROLES])
    for r in runs:
        if r.skipped or not r.events:
            continue
        per = 1000.0 / (r.events / 1000)
        roles.add(
            r.sessions, r.label, *(common.fmt_num(r.by_role[x] * per, 1) for x in common.ROLES)
        )
    roles.notes.append("in-process rows: the Ray processes idle in the background; not counted.")
    result.tables.append(roles)

    ratios = common.Table(
        "Actor / in-process", ["sessions", "path", "events/s ratio", "CPU per event ratio"]
    )
    target_ratio = math.nan
    for n in levels:
        base = next((r for r in runs if r.sessions == n and r.mode == "in_process"), None)
        if base is None or base.skipped:
            continue
        for r in runs:
            if r.sessions != n or r.mode != "actor" or r.skipped:
                continue
            ev = common.ratio(r.events_per_s, base.events_per_s)
            cpu = common.ratio(r.cpu_per_1k, base.cpu_per_1k)
            ratios.add(n, r.label, common.fmt_ratio(ev), common.fmt_ratio(cpu))
            if n == 20 and r.label.endswith("dedicated"):
                target_ratio = ev
            if r.label.endswith("dedicated") or (n == 100 and "per actor" in r.label):
                result.headline.append(
                    [
                        f"events/s, {n} session{'s' * (n > 1)} ({r.label.split(', ', 1)[1]})",
                        common.fmt_num(base.events_per_s, 0),
                        common.fmt_num(r.events_per_s, 0),
                        common.fmt_ratio(ev),
                    ]
                )
                result.headline.append(
                    [
                        f"CPU s / 1k events, {n} session{'s' * (n > 1)} "
                        f"({r.label.split(', ', 1)[1]})",
                        common.fmt_num(base.cpu_per_1k, 3),
                        common.fmt_num(r.cpu_per_1k, 3),
                        common.fmt_ratio(cpu),
                    ]
                )
    result.tables.append(ratios)
    result.notes.append(common.load_note())
    result.targets.append(
        common.Target(
            "(2)",
            "actor events/s at 20 sessions >= 0.8x in-process",
            common.fmt_ratio(target_ratio),
            None if math.isnan(target_ratio) else target_ratio >= 0.8,
        )
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run this benchmark alone."""
    return run_standalone(run, argv, __doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())
