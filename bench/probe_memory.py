"""Diagnostic, not part of the suite: what an idle warm session actor holds.

Starts the bench service, waits for the warm pool, lets it settle and reads
each warm actor's USS and PSS (psutil); then the USS of the actor of one
session after one turn; then the embedded runtime's own processes by command
line. ``python bench/probe_memory.py``
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from bench.harness import BenchContext, prepare_environment

MIB = 2**20


def _label(proc: psutil.Process) -> str:
    line = " ".join(proc.cmdline())
    for key in (
        "gcs_server",
        "raylet",
        "dashboard.py",
        "DashboardAgent",
        "RuntimeEnvAgent",
        "log_monitor.py",
        "monitor.py",
        "bench.model_server",
    ):
        if key in line:
            return key
    return line.split(" ")[0][-30:] if line else "?"


async def main() -> None:
    prepare_environment()
    async with BenchContext(quick=True) as ctx:
        await ctx.model_url()
        await ctx.service()
        await ctx.wait_warm(4, 30.0)
        await asyncio.sleep(2.0)
        await ctx.settle(max_wait=5.0)
        pids = await ctx.actor_pids(await ctx.named_actors("rr_session_"))
        uss = [psutil.Process(p).memory_full_info().uss / MIB for p in pids.values()]
        pss = [psutil.Process(p).memory_full_info().pss / MIB for p in pids.values()]
        print(
            f"idle warm session actors: n={len(uss)} USS median {statistics.median(uss):.1f} "
            f"MiB (min {min(uss):.1f}, max {max(uss):.1f}), PSS median {statistics.median(pss):.1f}"
        )
        url = await ctx.model_url()
        opened = await ctx.open_session("actor", url)
        await opened.session.send_message("say hi")
        while (await opened.stream.next(30.0)).type != "agent_end":
            pass
        await asyncio.sleep(1.0)
        name = (await ctx.session_actors())[opened.session.session_id]
        pid = (await ctx.actor_pids([name]))[name]
        info = psutil.Process(pid).memory_full_info()
        print(f"actor with one session after one turn: USS {info.uss / MIB:.1f} MiB")
        runtime: dict[str, float] = {}
        for proc in psutil.Process().children(recursive=True):
            try:
                label = _label(proc)
                if proc.pid in pids.values() or label.startswith("ray::"):
                    continue
                runtime[label] = runtime.get(label, 0.0) + proc.memory_full_info().uss / MIB
            except psutil.Error:
                continue
        for label, mib in sorted(runtime.items(), key=lambda kv: -kv[1]):
            print(f"  runtime process {label:22s} USS {mib:6.1f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
