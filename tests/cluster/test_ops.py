"""Operator commands against the shared 3-node cluster, as real processes.

``status --json`` / ``--watch`` after a real session's turns, and ``drain`` /
``undrain`` moving placements off a node and back. The commands run as
subprocesses with ``RAY_ADDRESS`` set to the cluster's address and without
the test suite's Ray settings, the way an operator runs them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from ray_realtime import (
    RealtimeAgent,
    RealtimeAgentEndEvent,
    RealtimeError,
    RealtimeRunner,
    RealtimeSession,
    RealtimeSessionRecovered,
)
from ray_realtime.actors.handle import parse_ticket
from ray_realtime.cluster.service import drain_node, service_status
from ray_realtime.exceptions import RayRealtimeError
from tests.actors.util import ACTOR, collect_turns, placement_of, wait_until
from tests.conftest import UNIT, RayTestCluster
from tests.faults.util import Reader

pytestmark = [pytest.mark.ray, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]
COMMAND = 90 * UNIT


def _env(cluster: RayTestCluster) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_REALTIME_VERBOSE"):
        env.pop(name, None)
    env["RAY_ADDRESS"] = cluster.address
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _cli(cluster: RayTestCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ray_realtime.cli", *args],
        cwd=str(ROOT),
        env=_env(cluster),
        capture_output=True,
        text=True,
        timeout=COMMAND,
        check=False,
    )


async def _cli_async(cluster: RayTestCluster, *args: str) -> subprocess.CompletedProcess[str]:
    # Off the event loop: the test's sessions keep running meanwhile.
    return await asyncio.to_thread(_cli, cluster, *args)


def _runner(zone: str | None = None) -> RealtimeRunner:
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Ops", instructions="You are watched.")
    config: dict[str, Any] = dict(ACTOR)
    if zone is not None:
        config["placement"] = {"resources": {f"zone_{zone}": 1}}
    return RealtimeRunner(agent, config=config)  # type: ignore[arg-type]


async def _node_of(cluster: RayTestCluster, session: RealtimeSession) -> str:
    return str((await placement_of(cluster.router, session.session_id))["node_id"])


async def test_status_json_and_watch_show_sessions_and_turn_latency(
    ray_cluster: RayTestCluster,
) -> None:
    async with await _runner("a").run() as session:
        for n in range(3):
            await session.send_message(f"hello {n}")
            await collect_turns(session)
        proc = await _cli_async(ray_cluster, "status", "--json")
        assert proc.returncode == 0, proc.stderr[-3000:]
        doc = json.loads(proc.stdout)
        node_a = ray_cluster.zones["a"]
        assert doc["address"] == ray_cluster.address
        (a,) = [n for n in doc["nodes"] if n["node_id"] == node_a]
        assert a["sessions"] >= 1 and a["alive"] and not a["drained"]
        assert a["load"] == pytest.approx(a["sessions"] / a["capacity"])
        # The three turns just taken on node a, each a few ms on the local model.
        assert a["turns"]["turns"] >= 3
        assert 0 < a["turns"]["turn_p50_ms"] <= a["turns"]["turn_p99_ms"] < 10_000
        assert doc["turns"]["turns"] >= a["turns"]["turns"]
        assert {"warm", "tool_workers", "model_servers"} <= set(a)
        assert doc["sessions"] >= 1
        # Ids and numbers only: the session's secret and ticket never show.
        assert session.ticket not in proc.stdout
        for secret in _secrets_of(session):
            assert secret not in proc.stdout

        proc = await _cli_async(
            ray_cluster, "status", "--watch", "--interval", "0.2", "--count", "2"
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        frames = [f for f in proc.stdout.split("ray-realtime at ") if f.strip()]
        assert len(frames) == 2, proc.stdout
        for frame in frames:
            lines = frame.splitlines()
            assert lines[1].split()[:3] == ["node", "address", "alive"]
            assert "p50ms" in lines[1] and "errors" in lines[1]
            row = [line for line in lines if line.startswith(node_a[:12])]
            assert row and row[0].split()[4] != "0", frame  # its sessions
            assert lines[-1].startswith("sessions: ")
            assert "turns (last minute):" in frame


def _secrets_of(session: RealtimeSession) -> list[str]:
    """The session's secret, as the ticket carries it."""
    return [parse_ticket(session.ticket)[1]]


class Streaming:
    """A CLI command running in the background, its output read line by line."""

    def __init__(self, cluster: RayTestCluster, *args: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ray_realtime.cli", *args],
            cwd=str(ROOT),
            env=_env(cluster),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    async def wait_line(self, text: str, timeout: float) -> None:
        async def seen() -> bool:
            return any(text in line for line in self.lines) or self.proc.poll() is not None

        await wait_until(seen, timeout, f"the command to print {text!r}", 0.05)
        assert any(text in line for line in self.lines), self.output()

    async def wait(self, timeout: float) -> int:
        code = await asyncio.to_thread(self.proc.wait, timeout)
        self._reader.join(10)
        return code

    def output(self) -> str:
        err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
        return "".join(self.lines) + err[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


async def test_drain_moves_placements_off_a_node_and_undrain_brings_them_back(
    ray_cluster: RayTestCluster,
) -> None:
    node_b = ray_cluster.zones["b"]
    first = await _runner("b").run()
    await first.enter()
    try:
        assert await _node_of(ray_cluster, first) == node_b
        # A short timeout with a session left: it reports what is left and why.
        proc = await _cli_async(ray_cluster, "drain", node_b[:12], "--timeout", "0.5", "--no-move")
        assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
        assert first.session_id in proc.stdout
        assert "with --no-move they keep running there" in proc.stdout
        assert await _node_of(ray_cluster, first) == node_b
        status = await service_status()
        (b,) = [n for n in status["nodes"] if n["node_id"] == node_b]
        assert b["drained"]

        # New sessions go elsewhere; one that needs node b finds no node.
        async with await _runner().run() as other:
            assert await _node_of(ray_cluster, other) != node_b
        with pytest.raises(RayRealtimeError):
            async with await _runner("b").run():
                pass

        # Drain again and wait: the session on b ends, the drain completes.
        waiting = Streaming(ray_cluster, "drain", node_b, "--timeout", "60", "--interval", "0.2")
        try:
            await waiting.wait_line("waiting up to 60 s for its 1 session(s)", COMMAND)
            assert waiting.proc.poll() is None, waiting.output()
            await first.close()
            assert await waiting.wait(60 * UNIT) == 0, waiting.output()
        finally:
            waiting.stop()
        out = "".join(waiting.lines)
        assert "0 session(s) left on node" in out, out
        assert "drained and empty" in out, out
    finally:
        await first.close()
        undrain = await _cli_async(ray_cluster, "undrain", node_b[:12])
        if undrain.returncode != 0:
            await drain_node(node_b, False)
    assert undrain.returncode == 0, undrain.stdout + undrain.stderr[-3000:]
    assert "takes new sessions again" in undrain.stdout

    async def placed_on_b_again() -> bool:
        try:
            async with await _runner("b").run() as again:
                return await _node_of(ray_cluster, again) == node_b
        except RayRealtimeError:
            return False

    await wait_until(placed_on_b_again, 30 * UNIT, "node b to take sessions again", 0.5)


async def test_drain_moves_the_sessions_left_after_its_timeout(
    ray_cluster: RayTestCluster,
) -> None:
    node_b = ray_cluster.zones["b"]
    session = await _runner("b").run()
    try:
        async with session:
            reader = Reader(session)
            await session.send_message("say before the move")
            await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
            completed = set(reader.completed)
            assert len(completed) >= 2  # the user's item and the reply
            assert await _node_of(ray_cluster, session) == node_b
            before = await placement_of(ray_cluster.router, session.session_id)

            proc = await _cli_async(
                ray_cluster, "drain", node_b[:12], "--timeout", "0.5", "--interval", "0.2"
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
            assert "moving 1 session(s)" in proc.stdout, proc.stdout
            assert "moved 1 session(s) off node" in proc.stdout, proc.stdout
            assert "drained and empty" in proc.stdout, proc.stdout
            assert session.ticket not in proc.stdout

            # The same handle follows: one session_recovered, reason drained.
            recovered = await reader.until(
                lambda e: isinstance(e, RealtimeSessionRecovered), 30 * UNIT
            )
            assert isinstance(recovered, RealtimeSessionRecovered)
            assert recovered.reason == "drained"
            assert recovered.items_restored >= len(completed)
            after = await placement_of(ray_cluster.router, session.session_id)
            assert after["node_id"] != node_b
            assert after["actor_name"] != before["actor_name"]

            await session.send_message("say after the move")
            await reader.until(lambda e: isinstance(e, RealtimeAgentEndEvent))
            history = await asyncio.wait_for(session.get_history(), 10 * UNIT)
            ids = {item.item_id for item in history}
            assert completed <= ids, f"lost items: {completed - ids}"
            assert len(history) >= len(completed) + 2  # the new turn's items too
            assert len(reader.of_type(RealtimeSessionRecovered)) == 1
            # No turn was in progress: nothing was cut, no error reached readers.
            assert not reader.of_type(RealtimeError), reader.types()
    finally:
        await drain_node(node_b, False)


async def test_drain_does_not_move_sessions_that_have_nowhere_to_go(
    ray_cluster: RayTestCluster,
) -> None:
    node_b = ray_cluster.zones["b"]
    others = [ray_cluster.zones[z] for z in ("a", "c")]
    async with await _runner("b").run() as session:
        await session.send_message("say stay")
        await collect_turns(session)
        try:
            for node in others:
                await drain_node(node, True)
            proc = await _cli_async(ray_cluster, "drain", node_b[:12], "--timeout", "0.2")
            assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
            assert "no other node can take the sessions" in proc.stderr, proc.stderr[-3000:]
            # Refused before anything was stopped: it runs where it was.
            assert await _node_of(ray_cluster, session) == node_b
            await session.send_message("say still here")
            events = await collect_turns(session)
            assert not [e for e in events if isinstance(e, RealtimeSessionRecovered)]
        finally:
            for node in [*others, node_b]:
                await drain_node(node, False)


def test_drain_of_an_unknown_node_names_the_nodes(ray_cluster: RayTestCluster) -> None:
    proc = _cli(ray_cluster, "drain", "nosuchnode", "--timeout", "1")
    assert proc.returncode == 2
    assert "not a node of this cluster" in proc.stderr
    assert ray_cluster.zones["a"][:12] in proc.stderr
