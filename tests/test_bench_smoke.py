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


async def test_stamping_model_server_stamps_every_audio_chunk_in_order() -> None:
    """The benchmarks' server is the local server serving its own connection
    class: each output audio chunk carries its index and a send time."""
    import asyncio
    import base64
    import json
    import time

    from websockets.asyncio.client import connect

    from bench.model_server import StampingModelServer, read_stamp

    async def next_event(ws: object, wanted: str, seen: list[dict[str, object]]) -> None:
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 5.0))  # type: ignore[attr-defined]
            seen.append(event)
            if event["type"] == wanted:
                return

    before = time.monotonic()
    async with StampingModelServer() as server, connect(server.url, open_timeout=5) as ws:
        events: list[dict[str, object]] = []
        await next_event(ws, "session.created", events)
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "say hello there"}],
        }
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create"}))
        await next_event(ws, "response.done", events)
    chunks = [
        base64.b64decode(str(e["delta"]))
        for e in events
        if e["type"] == "response.output_audio.delta"
    ]
    stamps = [read_stamp(pcm) for pcm in chunks]
    assert chunks and None not in stamps
    assert [index for index, _ in stamps] == list(range(len(chunks)))  # type: ignore[misc]
    sent = [when for _, when in stamps]  # type: ignore[misc]
    assert sent == sorted(sent) and before <= sent[0] <= time.monotonic()


def test_stamp_splices_only_the_first_bytes() -> None:
    """The stamp rewrites the first 24 base64 characters of a delta; the audio after
    the stamp's 16 bytes passes unchanged, whatever the delta's length."""
    import base64
    import struct

    from bench.model_server import STAMP_MAGIC, read_stamp, stamp_delta

    for size in (0, 10, 15, 16, 17, 18, 19, 100, 1920, 1921):
        pcm = bytes((i * 7 + 3) % 256 for i in range(size))
        delta = base64.b64encode(pcm).decode("ascii")
        stamped = stamp_delta(delta, 5, 12.25)
        if size < 16:
            assert stamped == delta
            continue
        out = base64.b64decode(stamped, validate=True)
        assert out[16:] == pcm[16:] and len(out) == size
        assert out[:16] == struct.pack("<4sId", STAMP_MAGIC, 5, 12.25)
        assert read_stamp(out) == (5, 12.25)
