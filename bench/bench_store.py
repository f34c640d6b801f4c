"""Micro-benchmark of the session store: what a session pays to keep its
history durable.

For each backend - the in-process fake, SQLite (``synchronous`` NORMAL and
FULL), the embedded store actor (a local one-node Ray, no dashboard) and Redis
(a ``redis-server`` this script starts on a free loopback port, with AOF and
``appendfsync everysec``; skipped when it is not installed) - through the
write-behind writer (:class:`ray_realtime.store.WriteBehindStore`):

* **enqueue**: µs per queued write, measured once (it never touches the
  backend): a new history item, and a reader position that coalesces;
* **flush, 1 item**: the latency of ``await flush()`` after queueing one
  completed item and a reader position - what flush-before-emit adds to one
  ``history_added``; p50/p99 over ``ROUNDS`` rounds;
* **flush, 32 items**: the same with 32 items queued;
* **items/s**: 1 KiB items queued as fast as the loop allows (yielding every
  100), then one flush; items over the elapsed time.

Bounded: a few seconds per backend plus Ray's start. Not part of the test
suite. Usage: ``python bench/bench_store.py [--quick]``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from ray_realtime.store import (
    MemoryStore,
    PutItem,
    RedisStore,
    SessionStore,
    SetReader,
    SqliteStore,
    StoredItem,
    WriteBehindStore,
)

__all__ = ["main"]

QUICK = "--quick" in sys.argv
ROUNDS = 50 if QUICK else 200
BIG_ROUNDS = 20 if QUICK else 50
THROUGHPUT_ITEMS = 1000 if QUICK else 5000
ENQUEUES = 20_000
PAYLOAD = b"t" * 1024  # a transcript-sized history item


def make_item(n: int) -> StoredItem:
    return StoredItem(f"item_{n:08d}", PAYLOAD)


async def bench_enqueue() -> tuple[float, float]:
    """µs per enqueue (on a running loop, as in a session): new items; a
    coalescing reader position."""
    writer = WriteBehindStore(
        MemoryStore(), flush_interval_seconds=3600, max_pending_ops=ENQUEUES + 1
    )
    ops = [PutItem("s", make_item(n)) for n in range(ENQUEUES)]
    started = time.perf_counter()
    for op in ops:
        writer.enqueue(op)
    per_item = (time.perf_counter() - started) / ENQUEUES * 1e6
    readers = [SetReader("s", "reader", n) for n in range(ENQUEUES)]
    started = time.perf_counter()
    for op in readers:
        writer.enqueue(op)
    per_reader = (time.perf_counter() - started) / ENQUEUES * 1e6
    await writer.aclose()
    return per_item, per_reader


async def measure(store: SessionStore) -> dict[str, Any]:
    """Flush latencies and throughput through a writer over ``store``."""
    writer = WriteBehindStore(store, flush_interval_seconds=0.01, max_pending_ops=100_000)
    counter = 0
    one: list[float] = []
    for _ in range(ROUNDS):
        writer.enqueue(PutItem("bench", make_item(counter)))
        writer.enqueue(SetReader("bench", "reader", counter))
        counter += 1
        started = time.perf_counter()
        await writer.flush()
        one.append((time.perf_counter() - started) * 1000)
    many: list[float] = []
    for _ in range(BIG_ROUNDS):
        for _ in range(32):
            writer.enqueue(PutItem("bench", make_item(counter)))
            counter += 1
        started = time.perf_counter()
        await writer.flush()
        many.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    for n in range(THROUGHPUT_ITEMS):
        writer.enqueue(PutItem("bench-throughput", make_item(n)))
        if n % 100 == 99:
            await asyncio.sleep(0)
    await writer.flush()
    rate = THROUGHPUT_ITEMS / (time.perf_counter() - started)
    stored = len((await store.load("bench-throughput")).items)
    if stored != THROUGHPUT_ITEMS:
        raise SystemExit(f"lost items: {stored} of {THROUGHPUT_ITEMS} stored")
    await writer.aclose()
    return {
        "one": common.Summary.of(one),
        "many": common.Summary.of(many),
        "rate": rate,
        "batches": writer.statistics().batches,
    }


@asynccontextmanager
async def redis_server(workdir: Path) -> AsyncIterator[str | None]:
    """A redis-server with AOF on a free loopback port; its URL, or None."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(workdir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while True:
            try:
                probe = await RedisStore.open(url)
                await probe.aclose()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def run_all(workdir: Path) -> list[tuple[str, dict[str, Any] | None]]:
    results: list[tuple[str, dict[str, Any] | None]] = []

    async def backend(name: str, opener: Callable[[], Any]) -> None:
        store = await opener()
        try:
            results.append((name, await measure(store)))
        finally:
            await store.aclose()

    await backend("memory (fake)", lambda: _ready(MemoryStore()))
    await backend("SQLite, NORMAL", lambda: SqliteStore.open(workdir / "n.sqlite3"))
    await backend("SQLite, FULL", lambda: SqliteStore.open(workdir / "f.sqlite3", "FULL"))

    import ray

    from ray_realtime.store.actor import connect_store_actor

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        store = await connect_store_actor(str(workdir / "actor.sqlite3"), name="bench-store")
        try:
            results.append(("embedded actor (SQLite NORMAL)", await measure(store)))
        finally:
            ray.kill(store.handle, no_restart=True)
    finally:
        ray.shutdown()

    async with redis_server(workdir) as url:
        if url is None:
            results.append(("Redis (redis-server not installed)", None))
        else:
            await backend("Redis, AOF everysec", lambda: RedisStore.open(url))
    return results


async def _ready(store: SessionStore) -> SessionStore:
    return store


def main() -> None:
    per_item, per_reader = asyncio.run(bench_enqueue())
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        results = asyncio.run(run_all(Path(tmp)))
    table = common.Table(
        "Session store through the write-behind writer",
        [
            "backend",
            "flush 1 item p50 ms",
            "p99 ms",
            "flush 32 items p50 ms",
            "p99 ms",
            "items/s",
        ],
    )
    for name, figures in results:
        if figures is None:
            table.add(name, "-", "-", "-", "-", "-")
            continue
        one, many = figures["one"], figures["many"]
        table.add(
            name,
            common.fmt_ms(one.p50, 3),
            common.fmt_ms(one.p99, 3),
            common.fmt_ms(many.p50, 3),
            common.fmt_ms(many.p99, 3),
            common.fmt_num(figures["rate"], 0),
        )
    table.notes.append(
        f"enqueue: {per_item:.2f} µs per new item, {per_reader:.2f} µs per coalescing "
        f"reader position (mean of {ENQUEUES})"
    )
    table.notes.append(
        f"{ROUNDS} rounds of 1 item (+ a reader position), {BIG_ROUNDS} rounds of 32; "
        f"{THROUGHPUT_ITEMS} items of {len(PAYLOAD)} B for items/s"
    )
    table.notes.append(common.load_note())
    print(table.render())
    print(f"\n{os.cpu_count()} CPUs; Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
