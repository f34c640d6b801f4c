"""The combined benchmark run: every measurement in sequence in one process
and one Ray runtime, one combined table, and ``bench/results/latest.md``.

``ray-realtime bench [--quick]`` (through :func:`ray_realtime.bench.main`) or
``python -m bench.suite [--quick]``. Each benchmark has a time cap; one that
fails or overruns is reported and the run goes on with the next.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.harness import REPO_ROOT, SERVICE_CONFIG, BenchContext, prepare_environment

__all__ = ["BENCHMARKS", "main", "run_suite"]

BENCHMARKS = ("turn", "throughput", "start", "audio", "memory", "tools")
"""Benchmark names, in run order (module ``bench.bench_<name>``)."""

# Time caps per benchmark (quick, full), seconds.
_CAPS = {
    "turn": (40, 120),
    "throughput": (70, 300),
    "start": (50, 120),
    "audio": (45, 240),
    "memory": (40, 90),
    "tools": (35, 90),
}

DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "latest.md"


def _module(name: str) -> ModuleType:
    import importlib

    return importlib.import_module(f"bench.bench_{name}")


def combined_table(results: list[common.BenchResult]) -> common.Table:
    """One row per headline figure of every benchmark."""
    table = common.Table(
        "Combined results", ["measurement", "in-process", "actor", "actor / in-process"]
    )
    for result in results:
        for row in result.headline:
            table.add(*row)
    return table


def targets_table(results: list[common.BenchResult]) -> common.Table:
    """Every target with its figure and PASS / MISS."""
    table = common.Table("Targets", ["target", "figure", "status"])
    for result in results:
        for t in result.targets:
            table.add(f"{t.key} {t.text}", t.figure, t.status)
    return table


async def run_suite(
    names: Sequence[str], *, quick: bool
) -> tuple[list[common.BenchResult], list[str], float]:
    """Run the named benchmarks in one context; returns their results, the
    failures, and the context's Ray + service start time."""
    results: list[common.BenchResult] = []
    failures: list[str] = []
    async with BenchContext(quick=quick) as ctx:
        for name in names:
            module = _module(name)
            cap = _CAPS[name][0 if quick else 1]
            ctx.log(f"=== {name} (cap {cap} s)")
            t0 = time.perf_counter()
            try:
                result = await asyncio.wait_for(module.run(ctx), cap)
            except TimeoutError:
                failures.append(f"{name}: stopped at its {cap} s cap")
                await ctx.close_sessions()
                continue
            except Exception as exc:
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
                traceback.print_exc()
                await ctx.close_sessions()
                continue
            result.seconds = time.perf_counter() - t0
            results.append(result)
            print(result.render(), flush=True)
        startup = ctx.ray_start_s + ctx.service_start_s
    return results, failures, startup


def code_version() -> str:
    """The repository's commit, and whether files differ from it ("" without git)."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{head} (with local changes)" if dirty else head


def render_report(
    results: list[common.BenchResult],
    failures: list[str],
    *,
    info: dict[str, str],
    command: str,
    code: str = "",
    total_s: float,
    startup_s: float,
) -> str:
    """The Markdown report (what ``latest.md`` holds)."""
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [
        "# ray-realtime benchmark results",
        "",
        f"`{command}` - {now}, {total_s:.0f} s in total "
        f"(embedded Ray + service start {startup_s:.1f} s)"
        + (f"; code at commit {code}." if code else "."),
        "",
        common.machine_table(info).render(),
        "",
        f"Service: `{SERVICE_CONFIG}`. Load at the end: {common.load_note()}.",
        "",
        combined_table(results).render(),
        "",
        targets_table(results).render(),
        "",
    ]
    if failures:
        parts.extend(["#### Failures", "", *(f"- {f}" for f in failures), ""])
    parts.append("## Details")
    parts.append("")
    for result in results:
        parts.extend([result.render(), ""])
    return "\n".join(parts).rstrip() + "\n"


def main(argv: Sequence[str] | None = None, prog: str = "python -m bench.suite") -> int:
    """Run the suite; print the combined table; write the report (``prog``
    names the command in the report)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run every benchmark in sequence in one process and one Ray runtime; print "
            "one combined table and write bench/results/latest.md. Each benchmark has a "
            "time cap; one that fails or overruns is reported and the run goes on."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="small and fast (< 2 minutes)")
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of {','.join(BENCHMARKS)}",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="report file ('' for none)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    prepare_environment()
    code = code_version()
    info = common.machine_info()
    print(common.machine_table(info).render(), flush=True)
    t0 = time.perf_counter()
    results, failures, startup = asyncio.run(run_suite(names, quick=args.quick))
    total = time.perf_counter() - t0
    command = prog + (" --quick" if args.quick else "")
    if names != list(BENCHMARKS):
        command += f" --only {','.join(names)}"
    report = render_report(
        results,
        failures,
        info=info,
        command=command,
        code=code,
        total_s=total,
        startup_s=startup,
    )
    print()
    print(combined_table(results).render())
    print()
    print(targets_table(results).render())
    for failure in failures:
        print(f"FAILED {failure}")
    print(f"\ntotal {total:.0f} s")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report, encoding="utf-8")
        print(f"report written to {out}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
