"""Where the time goes: run one actor-mode workload and sample the driver,
the session actor(s) and the router with py-spy.

``python -m bench.profile turn|turn-long|throughput|audio|start [--seconds 8]``
(from the repository root; needs ``py-spy`` on PATH and permission to ptrace, e.g.
root). For each process it prints the functions with the most samples —
*self* (the leaf frame: where the CPU is) and *inclusive* (anywhere on the
stack) — as shares of that process's non-idle samples. The raw collapsed
stacks are kept in ``bench/results/profile-<workload>-<role>.txt`` (open them
with any flame-graph tool). Not part of the suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.agents import reply_chars, say_text, tool_text
from bench.harness import (
    REPO_ROOT,
    BenchContext,
    OpenSession,
    ServerSettings,
    prepare_environment,
    run_turn,
)

__all__ = ["main", "summarize"]

OUT_DIR = REPO_ROOT / "bench" / "results"
_IDLE = (
    "epoll_wait",
    "select (selectors",
    "_worker (concurrent",
    "wait (threading",
    "sleep",
    "main_loop (ray/_private/worker.py",  # an actor's main thread, blocked in the C++ core
)


def summarize(raw: str, top: int = 12) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Top self and inclusive frames of py-spy ``--format raw`` output, as
    shares of the non-idle samples (a stack whose leaf is a known wait is idle)."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        leaf = frames[-1]
        if any(mark in leaf for mark in _IDLE):
            continue
        count = int(count_text)
        total += count
        self_counts[leaf] += count
        for frame in set(frames[1:]):  # the first frame is the thread
            incl_counts[frame] += count
    if not total:
        return [], []

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(frame, n / total) for frame, n in counter.most_common(top)]

    return shares(self_counts), shares(incl_counts)


async def _record(pid: int, seconds: float, out: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "py-spy", "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "250",
        "-f", "raw", "-o", str(out), "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def _turn_loop(
    opened: OpenSession, deadline: float, tools: bool, turns: int = 1_000_000
) -> None:
    say = say_text(reply_chars(10))
    i = 0
    while time.perf_counter() < deadline and i < turns:
        tool = tools and i % 5 == 4
        text = tool_text() if tool else say
        await run_turn(opened.session, opened.stream, text, agent_ends=2 if tool else 1)
        i += 1


async def _audio(opened: OpenSession, seconds: float) -> None:
    from bench.bench_audio import SILENCE

    async def send() -> None:
        t0 = time.perf_counter()
        for i in range(int(seconds * 25)):
            delay = t0 + i * 0.04 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await opened.session.send_audio(SILENCE)

    sender = asyncio.create_task(send())
    await run_turn(opened.session, opened.stream, say_text(int(seconds * 80)), timeout=90)
    await sender


async def profile(workload: str, seconds: float) -> int:
    """Run ``workload`` and print the profiles."""
    async with BenchContext(quick=True) as ctx:
        pace = workload == "audio"
        url = await ctx.model_url(ServerSettings(pace_audio=pace))
        await ctx.service()
        count = {"turn": 1, "turn-long": 1, "start": 0, "throughput": 20, "audio": 10}[workload]
        # "turn": short sessions (a new one every 20 turns) kept on one actor
        # process by packing, with the first session left open as an anchor.
        per_actor = {"audio": 10, "turn": 1000}.get(workload)
        config = {"sessions_per_actor": per_actor} if per_actor else {}
        sessions = await ctx.open_sessions(count, "actor", url, **config) if count else []
        await ctx.settle()
        placed = await ctx.session_actors()
        names = {placed[s.session.session_id] for s in sessions}
        names |= {"ray_realtime_router"}
        pids = await ctx.actor_pids(names)
        targets = {"driver": os.getpid()}
        for name, pid in sorted(pids.items()):
            role = "router" if name == "ray_realtime_router" else f"actor-{name[-6:]}"
            targets[role] = pid
        targets = dict(list(targets.items())[:4])  # driver, router and two actors at most
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        outs = {role: OUT_DIR / f"profile-{workload}-{role}.txt" for role in targets}
        recorders = [await _record(pid, seconds, outs[role]) for role, pid in targets.items()]
        deadline = time.perf_counter() + seconds
        if workload == "audio":
            await asyncio.gather(*(_audio(s, seconds) for s in sessions))
        elif workload == "start":
            while time.perf_counter() < deadline:
                await ctx.wait_warm(1, 5.0)
                opened = await ctx.open_session("actor", url)
                await run_turn(opened.session, opened.stream, "say hi")
                await ctx.close_session(opened)
        elif workload == "turn":
            while time.perf_counter() < deadline:
                opened = await ctx.open_session("actor", url, **config)
                await _turn_loop(opened, min(deadline, time.perf_counter() + 60), True, 20)
                await ctx.close_session(opened)
        else:
            await asyncio.gather(*(_turn_loop(s, deadline, True) for s in sessions))
        for rec in recorders:
            await asyncio.wait_for(rec.wait(), seconds + 30)
        await ctx.close_sessions()
    for role, out in outs.items():
        if not out.exists():
            print(f"\n{role}: no profile (py-spy failed?)")
            continue
        own, incl = summarize(out.read_text(encoding="utf-8"))
        print(f"\n== {role} ({targets[role]}), {workload}: top self")
        for frame, share in own:
            print(f"  {share:6.1%}  {frame}")
        print("   top inclusive")
        for frame, share in incl:
            print(f"  {share:6.1%}  {frame}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workload", choices=["turn", "turn-long", "throughput", "audio", "start"])
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    if shutil.which("py-spy") is None:
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    prepare_environment()
    return asyncio.run(profile(args.workload, args.seconds))


if __name__ == "__main__":
    raise SystemExit(main())
