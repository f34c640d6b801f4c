"""`ray-realtime serve` in one process; `status`, a driver and `attach` in others.

Everything here runs as real processes against a real served service, with the
environment a user has: no ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` (on a machine
with a network address Ray would otherwise swap 127.0.0.1 for that address and
hang) and no ``RAY_ADDRESS`` unless the test sets the one line ``serve``
prints. The service runs on a private Ray temp folder (so ``auto`` finds it
and nobody else's Ray) and on Ray's random ports, and is stopped by pid.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import UNIT

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
STARTUP = 180 * UNIT
COMMAND = 90 * UNIT

# Lines only Ray writes; none may reach a user without --verbose.
RAY_NOISE = re.compile(r"WARNING|INFO worker\.py|authentication token|\x1b\[|rpc_client\.h")

_DRIVER = r"""
import asyncio, json, sys, time

from ray_realtime import RealtimeAgent, RealtimeRunner, function_tool
from ray_realtime.cluster.service import ensure_service


@function_tool
def get_weather(city: str) -> str:
    '''Tell the weather in a city.'''
    return f"It is sunny in {city}."


agent = RealtimeAgent(name="Assistant", instructions="You help.", tools=[get_weather])


async def main() -> None:
    out = {}
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    # Joining Ray takes a while: the event loop must keep running meanwhile.
    task = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    await ensure_service()
    out["join_seconds"] = time.perf_counter() - t0
    out["ticks_while_joining"] = ticks
    task.cancel()

    import ray

    out["gcs_address"] = ray.get_runtime_context().gcs_address
    out["node_addresses"] = sorted({n["NodeManagerAddress"] for n in ray.nodes()})
    async with asyncio.timeout(60):
        session = await RealtimeRunner(agent).run()
        async with session:
            await session.send_message('What is the get weather for "Paris"?')
            types, tools = [], []
            async for event in session:
                types.append(event.type)
                if event.type == "tool_start":
                    tools.append(event.tool.name)
                if event.type == "tool_end":
                    out["tool_output"] = str(event.output)
                if event.type == "agent_end" and "tool_output" in out:
                    break
            out["types"] = types
            out["tools"] = tools
            # Another process attaches with this (a ticket where the API has one).
            out["attach"] = getattr(session, "ticket", None) or session.session_id
            await session.detach()

    # A raylet message (a worker died) reaches the logger, not the terminal.
    import logging, os, threading

    seen = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "(raylet)" in record.getMessage():
                seen.set()

    quiet = logging.getLogger("ray_realtime.cluster.connect")
    quiet.setLevel(logging.INFO)
    quiet.addHandler(Seen())

    @ray.remote(num_cpus=0)
    class Doomed:
        def die(self) -> None:
            os._exit(1)

    try:
        ray.get(Doomed.remote().die.remote(), timeout=30)
    except Exception as exc:
        out["died"] = type(exc).__name__
    out["raylet_message_logged"] = await asyncio.to_thread(seen.wait, 30)
    print(json.dumps(out))


asyncio.run(main())
"""

_ATTACH = r"""
import asyncio, json, sys

from ray_realtime import RealtimeSession


async def main() -> None:
    async with asyncio.timeout(60):
        session = await RealtimeSession.attach(sys.argv[1])
        types, output = [], None
        async for event in session:
            types.append(event.type)
            if event.type == "tool_end":
                output = str(event.output)
            if event.type == "agent_end" and output is not None:
                break
        await session.close()
    print(json.dumps({"types": types, "tool_output": output}))


asyncio.run(main())
"""


def user_env(tmp: str) -> dict[str, str]:
    """A user's environment: none of the test suite's Ray settings."""
    env = dict(os.environ)
    for name in (
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
        "RAY_ADDRESS",
        "RAY_REALTIME_VERBOSE",
        "RAY_REALTIME_EXECUTION",
    ):
        env.pop(name, None)
    env["RAY_TMPDIR"] = tmp
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_python(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python *args`` from the repository root, bounded in time."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND,
        check=False,
    )


class Served:
    """A running `ray-realtime serve` subprocess and what it printed."""

    def __init__(self, tmp: str, *extra: str) -> None:
        self.tmp = tmp
        self.env = user_env(tmp)
        self.out: list[str] = []
        self.err: list[str] = []
        self.ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ray_realtime.cli", "serve", "--warm-pool", "1", *extra],
            cwd=str(ROOT),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a stray Ctrl-C in the terminal is not ours
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line)
            if "Ctrl-C to stop" in line:
                self.ready.set()
        self.ready.set()  # the process ended: stop waiting either way

    @property
    def address(self) -> str:
        found = re.search(r"running at (\S+)", "".join(self.out))
        assert found, self.text()
        return found.group(1)

    def text(self) -> str:
        return "".join(self.out) + "".join(self.err)

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_python(*args, env=env or self.env)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60 * UNIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for reader in self._readers:
            reader.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    # A short folder: Ray puts Unix sockets under it (107-character limit).
    tmp = tempfile.mkdtemp(prefix="rrs", dir="/tmp" if os.path.isdir("/tmp") else None)
    service = Served(tmp)
    try:
        assert service.ready.wait(STARTUP), "serve printed nothing in time"
        assert service.proc.poll() is None, service.text()
        yield service
    finally:
        service.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_serve_prints_the_address_and_the_line_to_join(served: Served) -> None:
    address = served.address
    assert re.fullmatch(r"127\.0\.0\.1:\d+", address)
    assert f"export RAY_ADDRESS={address}" in served.text()
    assert not RAY_NOISE.search(served.text()), served.text()
    # Recorded where "auto" looks, as `ray start` does.
    assert (Path(served.tmp) / "ray" / "ray_current_cluster").read_text() == address


def test_status_joins_the_served_service(served: Served) -> None:
    for args in ((), ("--address", served.address)):
        proc = served.run("-m", "ray_realtime.cli", "status", *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert re.search(r"^\w{12}\s+127\.0\.0\.1\s+yes", proc.stdout, re.M), proc.stdout
        assert "sessions:" in proc.stdout
        assert not RAY_NOISE.search(proc.stdout + proc.stderr), proc.stdout + proc.stderr
    # --verbose shows Ray's own lines again.
    proc = served.run("-m", "ray_realtime.cli", "status", "--verbose")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Connecting to existing Ray cluster" in proc.stderr, proc.stderr


def test_a_driver_turn_and_attach_join_the_served_service(served: Served, tmp_path: Path) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    env = {**served.env, "RAY_ADDRESS": "auto"}
    proc = served.run(str(driver), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["gcs_address"] == served.address
    assert out["node_addresses"] == ["127.0.0.1"]
    assert out["tools"] == ["get_weather"]
    assert out["tool_output"] == "It is sunny in Paris."
    assert out["types"].index("tool_end") < len(out["types"]) - 1
    assert out["types"][-1] == "agent_end"
    # ensure_service joined off the event loop: a 5 ms ticker kept running.
    assert out["ticks_while_joining"] >= 5, out
    assert out["died"] == "ActorDiedError"
    assert out["raylet_message_logged"] is True
    assert not RAY_NOISE.search(proc.stderr), proc.stderr

    # The line serve prints works too, and attach reaches the session.
    attach = tmp_path / "attach.py"
    attach.write_text(_ATTACH)
    env = {**served.env, "RAY_ADDRESS": served.address}
    proc = served.run(str(attach), out["attach"], env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["tool_output"] == "It is sunny in Paris."
    assert "tool_start" in seen["types"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_status_where_nothing_listens_fails_fast_naming_the_address(tmp_path: Path) -> None:
    address = f"127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    proc = run_python(
        "-m", "ray_realtime.cli", "status", "--address", address, env=user_env(str(tmp_path))
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2
    assert address in proc.stderr
    assert "ray-realtime serve" in proc.stderr
    assert elapsed < 30 * UNIT  # Ray alone retries such an address for minutes


_CONNECT_NOWHERE = r"""
import json, sys, time
from ray_realtime.cluster.connect import connect
from ray_realtime.exceptions import ClusterConnectError

t0 = time.monotonic()
try:
    connect(sys.argv[1])
except ClusterConnectError as exc:
    print(json.dumps({"type": type(exc).__name__, "address": exc.address,
                      "message": str(exc), "seconds": time.monotonic() - t0}))
"""


def test_connect_where_nothing_listens_is_a_typed_error(tmp_path: Path) -> None:
    # In a child: this test process may hold Ray already (connect would no-op).
    address = f"127.0.0.1:{_free_port()}"
    proc = run_python("-c", _CONNECT_NOWHERE, address, env=user_env(str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["type"] == "ClusterConnectError"
    assert out["address"] == address
    assert address in out["message"]
    assert out["seconds"] < 2.0
