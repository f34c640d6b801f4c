"""The combined benchmark run: every measurement in sequence in one process
and one Ray runtime, one combined table, every target of issue 12 with its
figure and PASS / MISS, and ``bench/results/latest.md``.

``ray-realtime bench [--quick] [--only a,b] [--repeat N]`` (through
:func:`ray_realtime.bench.main`) or ``python -m bench.suite [...]``.

Phases. The measurements run in the order of :data:`MEASUREMENTS`; before
each, the suite closes what the last one left open, waits (bounded) until
the actors it used are retired and their processes gone and the process
tree is idle, and then records the load average; during each it measures
the cores our tree and the rest of the machine kept busy. The phase that
starts 100 dedicated actors (``dense``) runs last, so no other measurement
runs under its leftovers. Each phase has a time cap; one that fails or
overruns is reported and the run goes on with the next. ``long`` is loaded
lazily: a tree without ``bench/bench_long.py`` skips it with a note.

``--repeat N`` runs the selected measurements N times in the same runtime
and adds the spread of every target (min / median / max, how often it
passed), so that a figure quoted from one run can be checked against the
others.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import importlib
import math
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common, targets
from bench.harness import REPO_ROOT, SERVICE_CONFIG, BenchContext, prepare_environment

__all__ = [
    "BENCHMARKS",
    "MEASUREMENTS",
    "Measurement",
    "Phase",
    "SuiteRun",
    "combined_table",
    "main",
    "phases_table",
    "run_suite",
]


@dataclass(frozen=True)
class Measurement:
    """One phase of the suite: ``module.function(ctx)`` returns a
    :class:`~bench.common.BenchResult`; ``caps`` are its time caps (quick,
    full) in seconds; ``full_only``: left out of a quick run unless named."""

    name: str
    module: str
    function: str
    caps: tuple[float, float]
    full_only: bool = False


MEASUREMENTS: tuple[Measurement, ...] = (
    Measurement("turn", "bench.bench_turn", "run", (40, 120)),
    Measurement("long", "bench.bench_long", "run", (45, 300)),
    Measurement("throughput", "bench.bench_throughput", "run", (70, 300)),
    Measurement("start", "bench.bench_start", "run", (50, 120)),
    Measurement("audio", "bench.bench_audio", "run", (45, 420)),
    Measurement("memory", "bench.bench_memory", "run", (60, 300)),
    Measurement("tools", "bench.bench_tools", "run", (35, 90)),
    Measurement("dense", "bench.bench_throughput", "run_dense", (60, 300), full_only=True),
)
"""The phases, in run order (``dense``, 100 dedicated actors, last)."""

BENCHMARKS = tuple(m.name for m in MEASUREMENTS)
"""Measurement names, in run order."""

_BY_NAME = {m.name: m for m in MEASUREMENTS}

QUIET_WAIT_S = (10.0, 60.0)
"""Longest wait for quiet before a phase (quick, full)."""

SERVICE_START_CAP_S = 180.0
"""Longest wait for the embedded Ray and the service before the first phase."""

DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "latest.md"

RunFn = Callable[[BenchContext], Awaitable[common.BenchResult]]


def _load(m: Measurement) -> RunFn | None:
    """The measurement's function, or None when its module is not in this
    tree (another module missing is an error, as it should be)."""
    try:
        module = importlib.import_module(m.module)
    except ModuleNotFoundError as exc:
        if exc.name == m.module:
            return None
        raise
    fn: RunFn = getattr(module, m.function)
    return fn


@dataclass
class Phase:
    """One phase as it ran: its outcome, the wait for quiet before it, the
    load average when it started, and the cores busy during it (ours and the
    rest of the machine's)."""

    run: int
    name: str
    outcome: str = "ok"
    seconds: float = 0.0
    quiet_s: float = 0.0
    load1: float = math.nan
    ours_cores: float = math.nan
    other_cores: float = math.nan


@dataclass
class SuiteRun:
    """Everything one suite invocation measured: per repeat, the results and
    why a measurement gave none (for the targets table); the phases; the
    failures; and the embedded Ray + service start time."""

    results: list[list[common.BenchResult]] = field(default_factory=list)
    missing: list[dict[str, str]] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    startup_s: float = math.nan
    service_config: dict[str, Any] = field(default_factory=dict)

    def reported(self, i: int) -> list[common.Target]:
        """Every target the measurements of repeat ``i`` reported."""
        return [t for r in self.results[i] for t in r.targets]


def combined_table(
    results: list[common.BenchResult], title: str = "Combined results"
) -> common.Table:
    """One row per headline figure of every benchmark."""
    table = common.Table(title, ["measurement", "in-process", "actor", "actor / in-process"])
    for result in results:
        for row in result.headline:
            table.add(*row)
    return table


def phases_table(phases: Sequence[Phase]) -> common.Table:
    """Every phase: how it ended, how long it took, the wait for quiet
    before it, and the load it ran under."""
    table = common.Table(
        "Phases",
        [
            "run",
            "phase",
            "outcome",
            "took s",
            "quiet wait s",
            "load avg at start",
            "our cores",
            "other cores",
        ],
    )
    for p in phases:
        table.add(
            p.run,
            p.name,
            p.outcome,
            common.fmt_num(p.seconds, 1),
            common.fmt_num(p.quiet_s, 1),
            common.fmt_num(p.load1, 2),
            common.fmt_num(p.ours_cores, 2),
            common.fmt_num(p.other_cores, 2),
        )
    table.notes.append(
        "before each phase the suite closes leftover sessions and waits (bounded) until "
        "their actors are retired and the process tree is idle; load avg: the 1-minute "
        "load average then; our / other cores: the cores our process tree and the rest of "
        "the machine kept busy during the phase."
    )
    return table


def selected(names: Sequence[str] | None, quick: bool) -> list[str]:
    """The phases to run in run order: ``names`` when given (any order in,
    run order out), else every phase (a quick run leaves out full-only ones)."""
    if names is None:
        return [m.name for m in MEASUREMENTS if not (quick and m.full_only)]
    wanted = set(names)
    return [m.name for m in MEASUREMENTS if m.name in wanted]


def _why_missing(names: Sequence[str], quick: bool) -> dict[str, str]:
    why: dict[str, str] = {}
    for m in MEASUREMENTS:
        if m.name not in names:
            why[m.name] = "full run only" if quick and m.full_only else "not run (--only)"
    return why


async def _phase(
    ctx: BenchContext, m: Measurement, run_index: int, suite: SuiteRun, missing: dict[str, str]
) -> common.BenchResult | None:
    phase = Phase(run_index + 1, m.name)
    suite.phases.append(phase)
    fn = _load(m)
    if fn is None:
        path = m.module.replace(".", "/") + ".py"
        phase.outcome = f"skipped: {path} is not in this tree"
        missing[m.name] = f"not measured: {path} missing"
        ctx.log(f"=== {m.name}: {phase.outcome}")
        return None
    cap = m.caps[0 if ctx.quick else 1]
    phase.quiet_s = await ctx.wait_quiet(max_wait=QUIET_WAIT_S[0 if ctx.quick else 1])
    phase.load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    ctx.log(
        f"=== {m.name} (cap {cap:.0f} s; waited {phase.quiet_s:.1f} s for quiet, "
        f"load average {phase.load1:.2f})"
    )
    meter = common.CpuMeter()
    meter.start()
    t0 = time.perf_counter()
    result: common.BenchResult | None = None
    try:
        result = await asyncio.wait_for(fn(ctx), cap)
    except TimeoutError:
        phase.outcome = f"stopped at its {cap:.0f} s cap"
    except Exception as exc:
        phase.outcome = f"failed: {type(exc).__name__}: {exc}"
        traceback.print_exc()
    phase.seconds = time.perf_counter() - t0
    usage = meter.stop()
    phase.ours_cores = usage.cores()
    phase.other_cores = usage.foreign_s / usage.wall_s if usage.wall_s else math.nan
    if result is None:
        suite.failures.append(f"run {run_index + 1}, {m.name}: {phase.outcome}")
        missing[m.name] = phase.outcome
        await ctx.close_sessions()
        return None
    result.seconds = phase.seconds
    print(result.render(), flush=True)
    return result


async def run_suite(names: Sequence[str] | None, *, quick: bool, repeat: int = 1) -> SuiteRun:
    """Run the named measurements (None: see :func:`selected`), in run order,
    ``repeat`` times in one context."""
    suite = SuiteRun()
    order = selected(names, quick)
    async with BenchContext(quick=quick) as ctx:
        # Ray and the service start before the first phase, so that no phase's
        # cap or window pays for them (on a loaded machine they take 30 s+).
        try:
            await asyncio.wait_for(ctx.service(), SERVICE_START_CAP_S)
        except Exception as exc:
            suite.failures.append(f"the service did not start: {type(exc).__name__}: {exc}")
            return suite
        for i in range(repeat):
            if repeat > 1:
                ctx.log(f"##### run {i + 1} of {repeat}")
            results: list[common.BenchResult] = []
            missing = _why_missing(order, quick)
            for name in order:
                result = await _phase(ctx, _BY_NAME[name], i, suite, missing)
                if result is not None:
                    results.append(result)
            suite.results.append(results)
            suite.missing.append(missing)
        suite.startup_s = ctx.ray_start_s + ctx.service_start_s
        suite.service_config = dict(ctx.service_config)
    return suite


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


def summary_tables(suite: SuiteRun) -> list[common.Table]:
    """The combined table and the targets of every run, then the spread
    over the runs (when there are several) and the phases."""
    tables: list[common.Table] = []
    n = len(suite.results)
    for i, results in enumerate(suite.results):
        suffix = f" (run {i + 1} of {n})" if n > 1 else ""
        tables.append(combined_table(results, f"Combined results{suffix}"))
        tables.append(
            targets.targets_table(
                suite.reported(i), suite.missing[i], f"Targets (issue 12){suffix}"
            )
        )
    if n > 1:
        tables.append(
            targets.spread_table([suite.reported(i) for i in range(n)], suite.missing[-1])
        )
    tables.append(phases_table(suite.phases))
    return tables


def render_report(
    suite: SuiteRun,
    *,
    info: dict[str, str],
    command: str,
    code: str = "",
    total_s: float,
) -> str:
    """The Markdown report (what ``latest.md`` holds)."""
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    packing = suite.service_config.get("sessions_per_actor", "?")
    parts = [
        "# ray-realtime benchmark results",
        "",
        f"`{command}` - {now}, {total_s:.0f} s in total "
        f"(embedded Ray + service start {suite.startup_s:.1f} s)"
        + (f"; code at commit {code}." if code else "."),
        "",
        common.machine_table(info).render(),
        "",
        f"Service: `{SERVICE_CONFIG}` over the defaults of ServiceConfig "
        f"(sessions_per_actor: {packing}). Load at the end: {common.load_note()}.",
        "",
    ]
    for table in summary_tables(suite):
        parts.extend([table.render(), ""])
    if suite.failures:
        parts.extend(["#### Failures", "", *(f"- {f}" for f in suite.failures), ""])
    parts.append("## Details")
    parts.append("")
    n = len(suite.results)
    for i, results in enumerate(suite.results):
        if n > 1:
            parts.extend([f"## Run {i + 1} of {n}", ""])
        for result in results:
            parts.extend([result.render(), ""])
    return "\n".join(parts).rstrip() + "\n"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: Sequence[str] | None = None, prog: str = "python -m bench.suite") -> int:
    """Run the suite; print the combined table and the targets; write the
    report (``prog`` names the command in the report)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run every measurement in sequence in one process and one Ray runtime, "
            "waiting for quiet between them; print one combined table and every target "
            "of issue 12 with its figure and PASS/MISS; write bench/results/latest.md. "
            "Each measurement has a time cap; one that fails or overruns is reported and "
            "the run goes on."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="small and fast (~2-3 minutes)")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated subset of {','.join(BENCHMARKS)} (run in that order)",
    )
    parser.add_argument(
        "--repeat",
        type=_positive,
        default=1,
        metavar="N",
        help="run the measurements N times and report each target's spread",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="report file ('' for none)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or None
    unknown = [n for n in names or [] if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    prepare_environment()
    code = code_version()
    info = common.machine_info()
    print(common.machine_table(info).render(), flush=True)
    t0 = time.perf_counter()
    suite = asyncio.run(run_suite(names, quick=args.quick, repeat=args.repeat))
    total = time.perf_counter() - t0
    command = prog + (" --quick" if args.quick else "")
    if names is not None:
        command += f" --only {','.join(names)}"
    if args.repeat > 1:
        command += f" --repeat {args.repeat}"
    report = render_report(suite, info=info, command=command, code=code, total_s=total)
    for table in summary_tables(suite):
        print()
        print(table.render())
    for failure in suite.failures:
        print(f"FAILED {failure}")
    print(f"\ntotal {total:.0f} s")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report, encoding="utf-8")
        print(f"report written to {out}")
    return 1 if suite.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
