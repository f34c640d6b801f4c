"""Smoke test of the benchmark helpers (``bench/common.py``): statistics,
table formatting, process sampling. No Ray, no network, well under a second."""

from __future__ import annotations

import math
import os

import pytest

from bench import common


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert common.percentile(values, 0) == 1.0
    assert common.percentile(values, 100) == 4.0
    assert common.percentile(values, 50) == pytest.approx(2.5)
    assert common.percentile(list(range(101)), 99) == pytest.approx(99.0)
    assert common.percentile([7.0], 99) == 7.0
    assert math.isnan(common.percentile([], 50))
    with pytest.raises(ValueError):
        common.percentile(values, 101)


def test_summary_and_ratio() -> None:
    s = common.Summary.of([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (s.n, s.p50, s.min, s.max) == (5, 3.0, 1.0, 100.0)
    assert s.mean == pytest.approx(22.0)
    assert s.p99 == pytest.approx(96.16)
    assert math.isnan(common.Summary.of([]).p50)
    assert common.ratio(3.0, 2.0) == 1.5
    assert math.isnan(common.ratio(1.0, 0.0))
    assert math.isnan(common.ratio(math.nan, 1.0))


def test_number_formats() -> None:
    assert common.fmt_num(1234.567, 1) == "1,234.6"
    assert common.fmt_num(math.nan) == "-"
    assert common.fmt_num(None) == "-"
    assert common.fmt_ms(2.0) == "2.00"
    assert common.fmt_ratio(1.234) == "1.23x"
    assert common.fmt_ratio(math.nan) == "-"
    assert common.fmt_mib(3 * common.MIB) == "3.0"


def test_format_table_aligns_columns() -> None:
    text = common.format_table(["path", "n", "p50"], [["in_process", 40, "3.45"], ["actor", 7, ""]])
    lines = text.splitlines()
    assert lines[0].startswith("| path ")
    assert lines[1] == "|:-----------|----:|-----:|"
    assert lines[2] == "| in_process |  40 | 3.45 |"
    assert lines[3] == "| actor      |   7 |      |"
    assert len({len(line) for line in lines}) == 1
    with pytest.raises(ValueError):
        common.format_table(["a", "b"], [["only one"]])


def test_table_target_and_result_render() -> None:
    table = common.Table("Latency", ["path", "p50"], notes=["a note"])
    table.add("actor", "12.5")
    rendered = table.render()
    assert rendered.startswith("#### Latency\n\n| path")
    assert rendered.endswith("- a note")
    assert common.Target("(1)", "t", "1.2x", True).status == "PASS"
    assert common.Target("(1)", "t", "2x", False).status == "MISS"
    assert common.Target("(1)", "t", "-", None).status == "n/a"
    result = common.BenchResult("turn", "1. Turn", tables=[table])
    result.targets.append(common.Target("(1)", "t", "2x", False))
    assert "MISS" in result.render()


def test_process_roles() -> None:
    assert common.classify([], "python", is_root=True) == "driver"
    assert common.classify(["ray::SessionHost.read_events"], "ray::SessionHos") == "session actors"
    assert common.classify(["ray::ToolWorker"], "x") == "tool/guardrail workers"
    assert common.classify(["ray::Router"], "x") == "router"
    assert common.classify(["python", "-m", "bench.model_server"], "python") == "model server"
    assert common.classify(["/usr/bin/raylet"], "raylet") == "ray system"


def test_cpu_meter_and_memory_of_this_process() -> None:
    meter = common.CpuMeter()
    meter.start()
    sum(i * i for i in range(200_000))
    usage = meter.stop()
    assert usage.wall_s > 0
    assert usage.processes >= 1
    assert usage.total() >= 0.0
    assert usage.total(["driver"]) == usage.by_role["driver"]
    mem = common.memory_of(os.getpid())
    assert mem.uss > 0 and mem.rss >= mem.uss
