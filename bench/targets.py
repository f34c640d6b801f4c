"""The targets of issue 12, how a figure is judged against them, how the
suite lays them out, and their spread over repeated runs.

Pure: no Ray, nothing started (unit-tested in ``tests/test_bench_targets.py``).
Each target lives here once - its text, its limit, which way it points and
which measurement reports it - so a benchmark calls :func:`evaluate` with
its figure and the suite's table lists every target, measured or not.

``bench_long`` (target 1) is meant to report ``evaluate("1a", turn latency
at 500 items / at 10)``, ``evaluate("1b", CPU per turn at 500 / at 10)`` and
``evaluate("1c", actor memory at the end / when the event log filled)``.
A benchmark not written against this module may still report its own
:class:`~bench.common.Target`; the suite shows it under the issue target
whose number its key starts with (``"(1)"``, ``"1b"``).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench import common

__all__ = [
    "SPECS",
    "Spec",
    "Spread",
    "arrange",
    "evaluate",
    "format_value",
    "normalise",
    "spec",
    "spread",
    "spread_table",
    "targets_table",
]


@dataclass(frozen=True)
class Spec:
    """One target: ``value <= limit`` (``at_most``) or ``value >= limit``,
    reported by the measurement ``measurement``; ``profile``: the
    ``bench.profile`` workload that shows where its time goes ("" none)."""

    key: str
    text: str
    limit: float
    at_most: bool
    unit: str
    measurement: str
    profile: str = ""

    @property
    def number(self) -> str:
        """The issue's target number ("2" of "2a")."""
        return _number(self.key)


SPECS: tuple[Spec, ...] = (
    Spec("1a", "long calls: turn latency at 500 history items <= 1.2x at 10", 1.2, True, "x",
         "long", "turn-long"),
    Spec("1b", "long calls: CPU per turn at 500 history items <= 1.2x at 10", 1.2, True, "x",
         "long", "turn-long"),
    Spec("1c", "long calls: actor memory flat once the event log is full (growth <= 1.05x)",
         1.05, True, "x", "long"),
    Spec("2a", "default configuration, 20 sessions: events/s >= 1.0x in-process", 1.0, False,
         "x", "throughput", "throughput"),
    Spec("2b", "default configuration, 20 sessions: turns/s >= 1.0x in-process", 1.0, False,
         "x", "throughput", "throughput"),
    Spec("2c", "default configuration, 20 sessions: turn p99 <= 2x in-process", 2.0, True, "x",
         "throughput", "throughput"),
    Spec("3", "live audio: >= 200 concurrent 24 kHz sessions, 40 ms chunks both ways in real "
         "time, chunk hop p99 <= 40 ms, zero drops per chunk index", 200, False, "K", "audio",
         "audio"),
    Spec("4a", "warm start p50 <= 10 ms", 10.0, True, "ms", "start", "start"),
    Spec("4b", "dedicated session actor <= 45 MiB USS", 45.0, True, "MiB", "memory"),
    Spec("4c", "packed <= 1 MiB USS per session at steady state (100 turns each)", 1.0, True,
         "MiB", "memory"),
    Spec("5a", "worker-pool tool call <= +2 ms p50 over inline", 2.0, True, "+ms", "tools"),
    Spec("5b", "100 concurrent tool calls p99 <= 5x inline", 5.0, True, "x", "tools"),
)  # fmt: skip
"""Every target of the issue, in order."""

_BY_KEY = {s.key: s for s in SPECS}


def spec(key: str) -> Spec:
    """The target ``key`` ("2a" or "(2a)"); KeyError for an unknown one."""
    return _BY_KEY[normalise(key)]


def normalise(key: str) -> str:
    """A target key without brackets or spaces, lower case: ``"(2a)"`` -> ``"2a"``."""
    return key.strip().strip("()").strip().lower()


def _number(key: str) -> str:
    match = re.match(r"\d+", normalise(key))
    return match.group(0) if match else ""


def format_value(value: float, unit: str, digits: int = 2) -> str:
    """A figure in its unit: ``1.23x``, ``8.40 ms``, ``+1.80 ms``, ``44.1 MiB``,
    ``K = 200``; "-" when missing."""
    if math.isnan(value) or math.isinf(value):
        return "-"
    if unit == "x":
        return common.fmt_ratio(value)
    if unit == "+ms":
        sign = "+" if value >= 0 else "-"
        return f"{sign}{common.fmt_num(abs(value), digits)} ms"
    if unit == "K":
        return f"K = {value:.0f}"
    if unit:
        return f"{common.fmt_num(value, digits)} {unit}"
    return common.fmt_num(value, digits)


def evaluate(key: str, value: float, *, judged: bool = True, note: str = "") -> common.Target:
    """Judge ``value`` against the target ``key``. ``judged=False`` (the run
    did not measure what the target asks, e.g. a quick run) or a NaN value
    gives status n/a with the figure still shown; ``note`` follows the figure."""
    s = spec(key)
    figure = format_value(value, s.unit)
    if note:
        figure = f"{figure} ({note})"
    passed: bool | None = None
    if judged and not math.isnan(value):
        passed = value <= s.limit if s.at_most else value >= s.limit
    return common.Target(f"({s.key})", s.text, figure, passed, float(value), s.unit)


def _placeholder(s: Spec, why: str) -> common.Target:
    return common.Target(f"({s.key})", s.text, why, None, math.nan, s.unit)


def arrange(
    reported: Sequence[common.Target], why_missing: Mapping[str, str] | None = None
) -> list[common.Target]:
    """Every issue target in order, each with what was reported for it.

    A target nobody reported gets a placeholder whose figure says why
    (``why_missing[measurement]``, else "not measured"). Reported targets
    whose keys match no spec appear under the issue number their key starts
    with (instead of that number's placeholders when none of its specs was
    reported), others at the end. The first report of a key wins.
    """
    why_missing = why_missing or {}
    by_key: dict[str, common.Target] = {}
    for t in reported:
        by_key.setdefault(normalise(t.key), t)
    known = set(_BY_KEY)
    foreign = [t for k, t in by_key.items() if k not in known]
    rows: list[common.Target] = []
    numbers = list(dict.fromkeys(s.number for s in SPECS))
    for number in numbers:
        specs = [s for s in SPECS if s.number == number]
        exact = [s for s in specs if s.key in by_key]
        others = [t for t in foreign if _number(t.key) == number]
        if exact or not others:
            for s in specs:
                found = by_key.get(s.key)
                if found is not None:
                    rows.append(found)
                else:
                    rows.append(_placeholder(s, why_missing.get(s.measurement, "not measured")))
        rows.extend(others)
    rows.extend(t for t in foreign if _number(t.key) not in numbers)
    return rows


def targets_table(
    reported: Sequence[common.Target],
    why_missing: Mapping[str, str] | None = None,
    title: str = "Targets (issue 12)",
) -> common.Table:
    """Every target with its figure and PASS / MISS / n/a."""
    table = common.Table(title, ["target", "figure", "status"])
    profiles: dict[str, list[str]] = {}
    rows = arrange(reported, why_missing)
    for t in rows:
        table.add(f"{t.key} {t.text}", t.figure, t.status)
        known = _BY_KEY.get(normalise(t.key))
        if t.passed is False and known is not None and known.profile:
            profiles.setdefault(known.profile, []).append(t.key)
    if any(t.passed is False for t in rows):
        table.notes.append(
            "for each MISS, docs/benchmarks.md ('The measurements, and what stands in the "
            "way') says what stands in the way and what was tried."
        )
    for workload, keys in profiles.items():
        table.notes.append(
            f"{', '.join(keys)}: `python -m bench.profile {workload}` shows where the time goes."
        )
    return table


@dataclass(frozen=True)
class Spread:
    """A target's figures over repeated runs."""

    runs: int
    measured: int
    passed: int
    min: float
    median: float
    max: float


def spread(targets: Sequence[common.Target | None]) -> Spread:
    """The spread of one target over runs (None: not reported in that run;
    NaN values are not measured)."""
    values = [t.value for t in targets if t is not None and not math.isnan(t.value)]
    passed = sum(1 for t in targets if t is not None and t.passed is True)
    if not values:
        return Spread(len(targets), 0, passed, math.nan, math.nan, math.nan)
    return Spread(
        len(targets),
        len(values),
        passed,
        min(values),
        float(statistics.median(values)),
        max(values),
    )


def spread_table(
    runs: Sequence[Sequence[common.Target]],
    why_missing: Mapping[str, str] | None = None,
) -> common.Table:
    """One row per target: its figure in every run, min / median / max, and
    in how many runs it passed (``runs``: each run's reported targets)."""
    arranged = [arrange(r, why_missing) for r in runs]
    order: list[str] = []
    texts: dict[str, tuple[str, str]] = {}
    for rows in arranged:
        for t in rows:
            k = normalise(t.key)
            if k not in texts:
                order.append(k)
                texts[k] = (t.key, t.text)
    table = common.Table(
        f"Targets over {len(runs)} runs (spread)",
        ["target", "min", "median", "max", "PASS in", "figures"],
    )
    for k in order:
        per_run = [next((t for t in rows if normalise(t.key) == k), None) for rows in arranged]
        s = spread(per_run)
        unit = next((t.unit for t in per_run if t is not None), "")
        figures = "; ".join(t.figure if t is not None else "-" for t in per_run)
        key, text = texts[k]
        table.add(
            f"{key} {text}",
            format_value(s.min, unit),
            format_value(s.median, unit),
            format_value(s.max, unit),
            f"{s.passed} of {s.runs}",
            figures,
        )
    table.notes.append(
        "min / median / max over the runs that measured the target; a figure of '-' or "
        "with n/a status (a quick run, a measurement not run) does not count as PASS."
    )
    return table
