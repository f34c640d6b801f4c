"""Pure helpers of the benchmarks: statistics, tables, machine facts, and the
CPU and memory of a process tree.

Nothing here imports Ray or starts anything, so it is cheap to import and
unit-tested on its own (``tests/test_bench_smoke.py``).

CPU accounting
--------------
:class:`CpuMeter` reads, at the start and at the end of a window, the CPU time
(user + system, all threads) of every process in the tree rooted at this
process: the benchmark driver itself, the model server it spawned, and - since
an embedded Ray runtime is started by this process - Ray's GCS, raylet,
agents and every worker and actor process (children of the raylet). Processes
are keyed by ``(pid, create_time)``; one born inside the window counts from
zero; one that exits inside the window loses what it used since the first
reading (the benchmarks do not start or retire actors inside a timed window).
Each process gets a *role* from its command line (Ray sets an actor worker's
title to ``ray::ClassName``), so a window's CPU can be shown per role and
summed over the roles that take part in a path. The machine's total busy time
(``psutil.cpu_times``) is read too: the part not in our tree is other load
(other people's test runs), reported so that a figure taken on a loaded
machine says so.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata

import psutil

__all__ = [
    "MIB",
    "ROLES",
    "BenchResult",
    "ChunkTally",
    "CpuMeter",
    "CpuUsage",
    "MemInfo",
    "ProcInfo",
    "Summary",
    "Table",
    "Target",
    "classify",
    "fmt_mib",
    "fmt_ms",
    "fmt_num",
    "fmt_ratio",
    "format_table",
    "load_note",
    "machine_info",
    "machine_table",
    "memory_of",
    "percentile",
    "ratio",
    "snapshot",
    "tally_chunks",
]

MIB = 1024 * 1024

# ---------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolating linearly
    between the closest ranks (numpy's default); NaN when there are none."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    data = sorted(float(v) for v in values)
    if not data:
        return math.nan
    position = (len(data) - 1) * q / 100.0
    low = math.floor(position)
    high = math.ceil(position)
    return data[low] + (data[high] - data[low]) * (position - low)


@dataclass(frozen=True)
class Summary:
    """Order statistics of a sample."""

    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """Summarise ``values`` (NaNs everywhere when empty)."""
        if not values:
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan, nan)
        return cls(
            n=len(values),
            p50=percentile(values, 50),
            p90=percentile(values, 90),
            p99=percentile(values, 99),
            mean=sum(values) / len(values),
            min=float(min(values)),
            max=float(max(values)),
        )


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when either is missing or the
    denominator is zero."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return math.nan
    return numerator / denominator


# ------------------------------------------------------- audio chunk drops


@dataclass(frozen=True)
class ChunkTally:
    """How one session's stamped audio chunks arrived against the chunks its
    reply has (indices ``0..expected-1``), or the sum over sessions.

    ``missing``: indices that never arrived (the drops); ``duplicates``:
    arrivals of an index beyond its first; ``unexpected``: indices outside
    ``0..expected-1``; ``unstamped``: chunks without a stamp. Counting per
    index and per session, a chunk missing in one session cannot hide behind
    an extra one in another, as a difference of totals would let it.
    """

    expected: int = 0
    received: int = 0
    missing: int = 0
    duplicates: int = 0
    unexpected: int = 0
    unstamped: int = 0

    @property
    def clean(self) -> bool:
        """Every expected chunk arrived exactly once and nothing else did."""
        return not (self.missing or self.duplicates or self.unexpected or self.unstamped)

    def __add__(self, other: ChunkTally) -> ChunkTally:
        return ChunkTally(
            self.expected + other.expected,
            self.received + other.received,
            self.missing + other.missing,
            self.duplicates + other.duplicates,
            self.unexpected + other.unexpected,
            self.unstamped + other.unstamped,
        )


def tally_chunks(indices: Iterable[int | None], expected: int) -> ChunkTally:
    """Tally one session's received chunk indices (None: a chunk without a
    stamp) against ``expected`` chunks numbered from 0. Linear in the input."""
    if expected < 0:
        raise ValueError(f"expected must be >= 0, got {expected}")
    seen = [0] * expected
    received = unexpected = unstamped = 0
    for index in indices:
        received += 1
        if index is None:
            unstamped += 1
        elif 0 <= index < expected:
            seen[index] += 1
        else:
            unexpected += 1
    missing = sum(1 for count in seen if count == 0)
    duplicates = sum(count - 1 for count in seen if count > 1)
    return ChunkTally(expected, received, missing, duplicates, unexpected, unstamped)


# ---------------------------------------------------------------- formatting


def fmt_num(value: float | int | None, digits: int = 1) -> str:
    """A number with ``digits`` decimals and thousands separators; "-" for
    missing values."""
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return "-"
    return f"{value:,.{digits}f}"


def fmt_ms(value: float | None, digits: int = 2) -> str:
    """Milliseconds (the value is already in ms)."""
    return fmt_num(value, digits)


def fmt_ratio(value: float | None) -> str:
    """A ratio as ``1.23x``."""
    text = fmt_num(value, 2)
    return text if text == "-" else f"{text}x"


def fmt_mib(value_bytes: float | None, digits: int = 1) -> str:
    """Bytes as MiB."""
    if value_bytes is None:
        return "-"
    return fmt_num(value_bytes / MIB, digits)


def _is_numeric(cell: str) -> bool:
    """Whether a cell reads as a number ("1,234.5", "2.1x", "15%", "-")."""
    text = cell.strip().rstrip("x%").replace(",", "").strip()
    if text == "-":
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown pipe table whose columns are padded to line up in a
    terminal too. The first column is left-aligned; a column whose non-empty
    cells all read as numbers ("1,234.5", "2.1x", "-") is right-aligned, others
    left-aligned. Raises ValueError for a row of the wrong width."""
    width = len(headers)
    cells = [[str(c) for c in row] for row in rows]
    for row in cells:
        if len(row) != width:
            raise ValueError(f"row {row!r} has {len(row)} cells, expected {width}")
    right = []
    for i in range(width):
        filled = [row[i] for row in cells if row[i].strip()]
        right.append(i > 0 and bool(filled) and all(_is_numeric(c) for c in filled))
    widths = [max([len(headers[i]), 3, *(len(row[i]) for row in cells)]) for i in range(width)]

    def line(values: Sequence[str]) -> str:
        padded = [
            v.rjust(widths[i]) if right[i] else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (widths[i] + 1) + ":") if right[i] else (":" + "-" * (widths[i] + 1))
            for i in range(width)
        )
        + "|"
    )
    return "\n".join([line(list(headers)), rule, *(line(row) for row in cells)])


@dataclass
class Table:
    """A titled table with notes under it."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        """Append a row."""
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        """Markdown: a heading, the table, the notes as a list."""
        parts = [f"#### {self.title}", "", format_table(self.headers, self.rows)]
        if self.notes:
            parts.append("")
            parts.extend(f"- {note}" for note in self.notes)
        return "\n".join(parts)


@dataclass(frozen=True)
class Target:
    """One target of the issue and how the run did against it: ``value`` is
    the figure as a number (NaN when there is none) in ``unit``, for the
    spread over repeated runs."""

    key: str
    text: str
    figure: str
    passed: bool | None
    value: float = math.nan
    unit: str = ""

    @property
    def status(self) -> str:
        """PASS, MISS, or n/a (not measured in this run)."""
        if self.passed is None:
            return "n/a"
        return "PASS" if self.passed else "MISS"


@dataclass
class BenchResult:
    """What one benchmark measured: detail tables, headline rows for the
    combined table (measurement, in-process, actor, actor/in-process), targets."""

    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    headline: list[list[str]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def render(self) -> str:
        """Markdown of the whole result."""
        parts = [f"### {self.title}", ""]
        for table in self.tables:
            parts.extend([table.render(), ""])
        if self.targets:
            targets = Table("Targets", ["target", "figure", "status"])
            for t in self.targets:
                targets.add(f"{t.key} {t.text}", t.figure, t.status)
            parts.extend([targets.render(), ""])
        parts.extend(f"- {note}" for note in self.notes)
        parts.append(f"- took {self.seconds:.1f} s")
        return "\n".join(parts).rstrip() + "\n"


# ------------------------------------------------------------- machine facts


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str]:
    """The machine and the software versions a figure depends on."""
    memory = psutil.virtual_memory()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return {
        "cores": f"{psutil.cpu_count(logical=True)} logical / "
        f"{psutil.cpu_count(logical=False) or '?'} physical",
        "cpu": _cpu_model(),
        "memory": f"{memory.total / 1024**3:.1f} GiB ({memory.available / 1024**3:.1f} GiB free)",
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "ray": _version("ray"),
        "websockets": _version("websockets"),
        "msgpack": _version("msgpack"),
        "load average (1/5/15 min) at start": " / ".join(f"{v:.2f}" for v in load),
    }


def machine_table(info: dict[str, str]) -> Table:
    """The machine facts as a table."""
    table = Table("Machine", ["what", "value"])
    for key, value in info.items():
        table.add(key, value)
    return table


def load_note() -> str:
    """The current load average, to print beside a figure."""
    if not hasattr(os, "getloadavg"):
        return "load average unknown"
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {psutil.cpu_count()} cores"


# --------------------------------------------------------- process sampling

ROLES = (
    "driver",
    "model server",
    "session actors",
    "tool/guardrail workers",
    "router",
    "ray system",
)
"""Roles of the processes in the benchmark's tree, in display order."""

MODEL_SERVER_MARK = "bench.model_server"
"""Part of the model server subprocess's command line."""


def classify(cmdline: Sequence[str], name: str, *, is_root: bool = False) -> str:
    """The role of a process of the tree, from its command line (Ray titles
    an actor's worker process ``ray::ClassName[.method]``)."""
    if is_root:
        return "driver"
    title = " ".join(cmdline) if cmdline else name
    if MODEL_SERVER_MARK in title:
        return "model server"
    if title.startswith("ray::SessionHost") or title.startswith("ray::SessionActor"):
        return "session actors"
    if title.startswith(("ray::ToolWorker", "ray::GuardrailWorker")):
        return "tool/guardrail workers"
    if title.startswith("ray::Router"):
        return "router"
    return "ray system"


@dataclass(frozen=True)
class ProcInfo:
    """One process at one reading."""

    pid: int
    create_time: float
    role: str
    cpu_s: float


def snapshot(root_pid: int | None = None) -> dict[tuple[int, float], ProcInfo]:
    """CPU time of every process in the tree rooted at ``root_pid`` (default:
    this process), keyed by ``(pid, create_time)``."""
    root = psutil.Process(root_pid or os.getpid())
    found: dict[tuple[int, float], ProcInfo] = {}
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        procs = [root]
    for proc in procs:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                created = proc.create_time()
                try:
                    cmdline = proc.cmdline()
                except psutil.Error:
                    cmdline = []
                role = classify(cmdline, proc.name(), is_root=proc.pid == root.pid)
        except psutil.Error:
            continue  # exited while we looked
        cpu = times.user + times.system
        found[(proc.pid, created)] = ProcInfo(proc.pid, created, role, cpu)
    return found


def _machine_busy() -> float:
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return float(sum(times)) - idle


@dataclass
class CpuUsage:
    """CPU used by the tree over a window, per role."""

    wall_s: float
    by_role: dict[str, float]
    machine_busy_s: float
    processes: int

    def total(self, roles: Iterable[str] | None = None) -> float:
        """CPU seconds of ``roles`` (default: every role)."""
        wanted = set(ROLES if roles is None else roles)
        return sum(v for k, v in self.by_role.items() if k in wanted)

    @property
    def foreign_s(self) -> float:
        """Busy CPU seconds of the machine outside our tree (other load)."""
        return max(0.0, self.machine_busy_s - self.total())

    def cores(self, roles: Iterable[str] | None = None) -> float:
        """Average number of cores ``roles`` kept busy."""
        return self.total(roles) / self.wall_s if self.wall_s > 0 else math.nan


class CpuMeter:
    """Measures the CPU of the process tree over a window (see the module
    docstring): ``start()``, the work, ``stop()``."""

    def __init__(self, root_pid: int | None = None) -> None:
        self._root = root_pid
        self._first: dict[tuple[int, float], ProcInfo] = {}
        self._t0 = 0.0
        self._busy0 = 0.0

    def start(self) -> None:
        """Take the first reading."""
        self._first = snapshot(self._root)
        self._busy0 = _machine_busy()
        self._t0 = time.perf_counter()

    def stop(self) -> CpuUsage:
        """Take the last reading and return the usage in between."""
        wall = time.perf_counter() - self._t0
        last = snapshot(self._root)
        busy = _machine_busy() - self._busy0
        by_role = dict.fromkeys(ROLES, 0.0)
        for key, info in last.items():
            before = self._first.get(key)
            used = info.cpu_s - (before.cpu_s if before is not None else 0.0)
            by_role[info.role] = by_role.get(info.role, 0.0) + max(0.0, used)
        return CpuUsage(wall, by_role, busy, len(last))


# -------------------------------------------------------------------- memory


@dataclass(frozen=True)
class MemInfo:
    """Memory of one process: resident, unique (USS) and proportional (PSS) set."""

    pid: int
    rss: int
    uss: int
    pss: int


def memory_of(pid: int) -> MemInfo:
    """USS / PSS / RSS of ``pid`` (reads ``/proc/PID/smaps``; needs the same
    user or root)."""
    info = psutil.Process(pid).memory_full_info()
    return MemInfo(pid, int(info.rss), int(info.uss), int(getattr(info, "pss", 0)))
