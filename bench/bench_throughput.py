"""Event throughput: N concurrent sessions doing turns back to back (one in
five with a tool call); events/s and turns/s delivered to the handles, turn
latency, and CPU seconds per 1,000 events over every process involved.

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

Only complete turns count: a turn that fails (an error, no ``agent_end`` in
time), loses events (``events_lost``), or is incomplete (a ``say`` turn
without exactly 10 audio chunks, a tool turn without ``tool_end``) is left
out of events/s, turns/s and the latency figures, and counted and shown with
the events it delivered; its session stops for the epoch.

Events/s = events of complete turns / the windows' time; turns/s likewise.
CPU = :class:`bench.common.CpuMeter` over the windows. In-process the path is
the driver (this process: handles + sessions) and the model server process;
with actors it is also every Ray process (GCS, raylet, agents, router,
session actors, workers) - all descendants of this process, since the
embedded Ray is started here. The per-role table shows where it goes.

Paths. "actor, default" opens sessions as a user would, without asking for
an actor size: the service's default ``sessions_per_actor`` (one session per
actor, or packed, whatever ``ServiceConfig`` says) - target 2 is judged on
it at 20 sessions. The full run adds, at 20 sessions, 20 sessions packed in
one actor, 20 dedicated actors with ``data_plane: False`` (every command and
event batch a Ray call) and, when the default packs, 20 dedicated actors;
100 sessions run packed 25 per actor. 100 dedicated actors are a separate
phase, :func:`run_dense` (``dense`` in the suite), which the suite runs last
because starting and retiring 100 processes loads the machine for a while.

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

from bench import common, targets
from bench.agents import reply_chars, say_text, tool_text
from bench.harness import BenchContext, OpenSession, TurnResult, run_standalone, run_turn

__all__ = ["main", "run", "run_dense", "turn_problem"]

MAX_TURNS = 50
MAX_EPOCHS = 8
PACKED = 25
REPLY_CHUNKS = 10
NO_DATA_PLANE: dict[str, Any] = {"data_plane": False}
IN_PROCESS_ROLES = ("driver", "model server")


def turn_problem(turn: TurnResult, *, tool: bool, reply_chunks: int = REPLY_CHUNKS) -> str:
    """Why a turn does not count ("" when it is complete): failed, lost
    events, or a reply without its audio / a tool turn without its tool."""
    if not turn.ok:
        return "failed"
    if turn.missed:
        return "events lost"
    if tool and turn.tool_gap_ms is None:
        return "no tool_end"
    if not tool and turn.audio_chunks != reply_chunks:
        return f"not {reply_chunks} audio chunks"
    return ""


@dataclass
class Run:
    """One (sessions, path) measurement, summed over its epochs. ``kind``:
    in_process, default, dedicated, packed or ray_calls."""

    label: str
    mode: str
    kind: str
    sessions: int
    actors: int = 0
    turns: int = 0
    tool_turns: int = 0
    events: int = 0
    window_s: float = 0.0
    bad_turns: int = 0
    bad_events: int = 0
    problems: dict[str, int] = field(default_factory=dict)
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
    def turns_per_s(self) -> float:
        return self.turns / self.window_s if self.window_s > 0 else math.nan

    @property
    def cpu_per_1k(self) -> float:
        return self.cpu_s / (self.events / 1000) if self.events else math.nan

    def add(self, turn: TurnResult, *, tool: bool) -> bool:
        """Count one turn; False when it does not count (see :func:`turn_problem`)."""
        problem = turn_problem(turn, tool=tool)
        if problem:
            self.bad_turns += 1
            self.bad_events += turn.events
            self.problems[problem] = self.problems.get(problem, 0) + 1
            return False
        self.events += turn.events
        self.turns += 1
        self.tool_turns += tool
        self.turn_ms.append(turn.latency_ms)
        return True


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
        if not run.add(turn, tool=tool):
            return


async def _measure(
    ctx: BenchContext,
    run: Run,
    url: str,
    level_s: float,
    per_actor: int | None,
    open_timeout: float,
    extra: dict[str, Any],
) -> None:
    say = say_text(reply_chars(REPLY_CHUNKS))
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


# (label, kind, mode, sessions per actor (None: the service's default), open timeout, extra)
_Plan = tuple[str, str, str, int | None, float, dict[str, Any]]


async def _run_plans(
    ctx: BenchContext, url: str, plans: Sequence[tuple[int, _Plan]], level_s: float
) -> list[Run]:
    runs: list[Run] = []
    for n, (label, kind, mode, per_actor, open_timeout, extra) in plans:
        r = Run(f"{n} x {label}", mode, kind, n)
        ctx.log(f"throughput: {r.label}")
        await _measure(ctx, r, url, level_s, per_actor, open_timeout, extra)
        runs.append(r)
    return runs


def _tables(result: common.BenchResult, runs: list[Run]) -> None:
    table = common.Table(
        "Throughput (events delivered to handles, complete turns only)",
        [
            "sessions",
            "path",
            "actor procs",
            "turns",
            "events",
            "window s",
            "events/s",
            "turns/s",
            "CPU s / 1k events",
            "cores busy",
            "turn p50 ms",
            "turn p99 ms",
            "turns left out",
            "other load (cores)",
        ],
    )
    for r in runs:
        if r.skipped:
            table.add(r.sessions, r.label, *([""] * 5), *(["-"] * 7))
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
            common.fmt_num(r.turns_per_s, 1),
            common.fmt_num(r.cpu_per_1k, 3),
            common.fmt_num(r.cpu_s / r.window_s if r.window_s else math.nan, 2),
            common.fmt_ms(lat.p50),
            common.fmt_ms(lat.p99),
            r.bad_turns,
            common.fmt_num(r.foreign_s / r.window_s if r.window_s else math.nan, 2),
        )
        if r.bad_turns:
            why = ", ".join(f"{k}: {v}" for k, v in sorted(r.problems.items()))
            table.notes.append(
                f"{r.label}: {r.bad_turns} turns left out ({why}); their {r.bad_events} "
                "events are not counted"
            )
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


def _ratios(result: common.BenchResult, runs: list[Run]) -> dict[str, float]:
    """The actor / in-process table and headline rows; returns target 2's
    ratios (events/s, turns/s, p99) for the default path at 20 sessions."""
    ratios = common.Table(
        "Actor / in-process",
        ["sessions", "path", "events/s ratio", "turns/s ratio", "turn p99 ratio", "CPU per event"],
    )
    found = {"events": math.nan, "turns": math.nan, "p99": math.nan}
    for n in dict.fromkeys(r.sessions for r in runs):
        base = next((r for r in runs if r.sessions == n and r.mode == "in_process"), None)
        if base is None or base.skipped:
            continue
        base99 = common.percentile(base.turn_ms, 99)
        for r in runs:
            if r.sessions != n or r.mode != "actor" or r.skipped:
                continue
            ev = common.ratio(r.events_per_s, base.events_per_s)
            tu = common.ratio(r.turns_per_s, base.turns_per_s)
            p99 = common.ratio(common.percentile(r.turn_ms, 99), base99)
            cpu = common.ratio(r.cpu_per_1k, base.cpu_per_1k)
            ratios.add(n, r.label, *(common.fmt_ratio(v) for v in (ev, tu, p99, cpu)))
            if n == 20 and r.kind == "default":
                found = {"events": ev, "turns": tu, "p99": p99}
            if r.kind in ("default", "dedicated") or (n == 100 and r.kind == "packed"):
                what = r.label.split(" x ", 1)[1].split(", ", 1)[1]
                plural = "s" * (n > 1)
                result.headline.append(
                    [
                        f"events/s, {n} session{plural} ({what})",
                        common.fmt_num(base.events_per_s, 0),
                        common.fmt_num(r.events_per_s, 0),
                        common.fmt_ratio(ev),
                    ]
                )
                result.headline.append(
                    [
                        f"CPU s / 1k events, {n} session{plural} ({what})",
                        common.fmt_num(base.cpu_per_1k, 3),
                        common.fmt_num(r.cpu_per_1k, 3),
                        common.fmt_ratio(cpu),
                    ]
                )
                if n == 20 and r.kind == "default":
                    result.headline.append(
                        [
                            f"turn p99, {n} sessions ({what}) (ms)",
                            common.fmt_ms(base99),
                            common.fmt_ms(common.percentile(r.turn_ms, 99)),
                            common.fmt_ratio(p99),
                        ]
                    )
    result.tables.append(ratios)
    return found


async def run(ctx: BenchContext) -> common.BenchResult:
    """Measure; return tables, headline rows and targets (2a-2c)."""
    result = common.BenchResult("throughput", "2. Event throughput, concurrent sessions")
    url = await ctx.model_url()
    packing = await ctx.default_packing()
    default = f"actor, default, {packing} per actor"
    levels = [1, 20] if ctx.quick else [1, 20, 100]
    level_s = 1.5 if ctx.quick else 6.0
    plans: list[tuple[int, _Plan]] = []
    for n in levels:
        plans.append((n, ("in-process", "in_process", "in_process", None, 120.0, {})))
        if n <= 20:
            plans.append((n, (default, "default", "actor", None, 120.0, {})))
        else:
            plans.append((n, (f"actor, {PACKED} per actor", "packed", "actor", PACKED, 120.0, {})))
        if not ctx.quick and n == 20:
            if packing != 1:
                plans.append((n, ("actor, dedicated", "dedicated", "actor", 1, 120.0, {})))
            plans.append(
                (n, ("actor, dedicated, Ray calls", "ray_calls", "actor", 1, 120.0, NO_DATA_PLANE))
            )
            if packing != 20:
                plans.append((n, ("actor, 20 per actor", "packed", "actor", 20, 120.0, {})))
    runs = await _run_plans(ctx, url, plans, level_s)
    _tables(result, runs)
    found = _ratios(result, runs)
    result.notes.append(
        f"the service's default sessions_per_actor: {packing}; target 2 is judged on "
        f"'{default}' at 20 sessions."
    )
    result.notes.append(common.load_note())
    result.targets.append(targets.evaluate("2a", found["events"]))
    result.targets.append(targets.evaluate("2b", found["turns"]))
    result.targets.append(targets.evaluate("2c", found["p99"]))
    return result


async def run_dense(ctx: BenchContext) -> common.BenchResult:
    """100 sessions in 100 dedicated actors beside 100 in-process sessions
    (quick: 10). Starting and retiring that many processes loads the machine
    well past the window, so the suite runs this phase last."""
    result = common.BenchResult("dense", "2. Event throughput, 100 dedicated actors (last)")
    url = await ctx.model_url()
    n = 10 if ctx.quick else 100
    level_s = 1.5 if ctx.quick else 6.0
    plans: list[tuple[int, _Plan]] = [
        (n, ("in-process", "in_process", "in_process", None, 120.0, {})),
        (n, ("actor, dedicated", "dedicated", "actor", 1, 150.0, {})),
    ]
    runs = await _run_plans(ctx, url, plans, level_s)
    _tables(result, runs)
    _ratios(result, runs)
    result.notes.append(common.load_note())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run this benchmark alone."""
    return run_standalone(run, argv, __doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())
