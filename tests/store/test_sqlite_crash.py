"""SQLite crash safety: a process writing batches is SIGKILLed mid-stream;
reopening the file finds every batch it had acknowledged, each whole."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ray_realtime.store import SessionState, SqliteStore
from tests.conftest import UNIT

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from ray_realtime.store import PutItem, SqliteStore, StoredItem, UpdateSession

    async def main(path):
        store = await SqliteStore.open(path)
        n = 0
        while True:
            # One batch: an item and the sequence number that goes with it.
            await store.apply([
                PutItem("s", StoredItem(f"i{n}", b"x" * 2000)),
                UpdateSession("s", seq=n),
            ])
            print(n, flush=True)  # acknowledged: committed
            n += 1

    asyncio.run(main(sys.argv[1]))
    """
)


async def reopen(path: Path) -> SessionState:
    store = await SqliteStore.open(path)
    try:
        return await store.load("s")
    finally:
        await store.aclose()


def test_acknowledged_batches_survive_a_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite3"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    acknowledged = -1
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60 * UNIT
        while acknowledged < 300 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged = int(line)
        assert acknowledged >= 300, f"the writer stopped early: {proc.stderr.read()}"  # type: ignore[union-attr]
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: it is writing the next batch
        proc.wait(timeout=10 * UNIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10 * UNIT)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL

    state = asyncio.run(reopen(path))
    stored = [item.item_id for item in state.items]
    # Every acknowledged batch is there, in order, and no batch is half there:
    # the sequence number always matches the last item.
    assert len(stored) >= acknowledged + 1
    assert stored == [f"i{n}" for n in range(len(stored))]
    assert state.seq == len(stored) - 1
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert (path.stat().st_mode & 0o777) == 0o600  # the file holds secrets
