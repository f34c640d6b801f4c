"""The service's log lines name their session and agent and never hold a secret.

A real session on the shared cluster, with an API key sent to the node's local
model server: its session actor's lines in the Ray session's log files carry
``session=<id> agent=<name>``, and neither those files (every one of them, on
every node) nor this process's captured logs contain the API key, the
session's secret or its ticket.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from ray_realtime import RealtimeAgent, RealtimeRunner
from ray_realtime.actors.handle import parse_ticket
from tests.actors.util import ACTOR, collect_turns, placement_of, wait_until
from tests.conftest import UNIT, RayTestCluster

pytestmark = [pytest.mark.ray, pytest.mark.cluster]

API_KEY = "sk-LOGSCAN-4f1c9e2b7d"


def _log_dirs(cluster: RayTestCluster) -> list[Path]:
    nodes = [cluster.cluster.head_node, *cluster.cluster.worker_nodes]
    return sorted({Path(n.get_logs_dir_path()) for n in nodes})


def _log_files(cluster: RayTestCluster) -> list[Path]:
    return [p for d in _log_dirs(cluster) for p in d.rglob("*") if p.is_file()]


def _grep(files: list[Path], needle: str) -> list[str]:
    found = []
    for path in files:
        try:
            text = path.read_bytes().decode("utf-8", "replace")
        except OSError:
            continue  # a file rotated away meanwhile
        found.extend(f"{path.name}: {line}" for line in text.splitlines() if needle in line)
    return found


async def test_log_lines_name_the_session_and_hold_no_secret(
    ray_cluster: RayTestCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ray_realtime")
    caplog.set_level(logging.INFO)
    agent: RealtimeAgent[Any] = RealtimeAgent(name="Logged Agent", instructions="You log.")
    config: dict[str, Any] = {**ACTOR, "placement": {"resources": {"zone_a": 1}}}
    runner = RealtimeRunner(agent, config=config)  # type: ignore[arg-type]
    # The node's local model server, reached with an API key this time.
    async with await runner.run() as probe:
        model_url = (await placement_of(ray_cluster.router, probe.session_id))["model_url"]
    assert model_url.startswith("ws://127.0.0.1:")
    session = await runner.run(model_config={"url": model_url, "api_key": API_KEY})
    async with session:
        await session.send_message("hello logs")
        await collect_turns(session)
        ticket = session.ticket
        session_id, secret = parse_ticket(ticket)

    tagged = f"[session={session_id} agent=Logged Agent]"

    async def connect_line_logged() -> list[str]:
        return [line for line in _grep(_log_files(ray_cluster), tagged) if "connected" in line]

    lines = await wait_until(connect_line_logged, 30 * UNIT, "the session actor's log line")
    assert "connected to the realtime model at ws://127.0.0.1:" in lines[0], lines

    files = _log_files(ray_cluster)
    assert any(p.name.startswith("worker-") for p in files)
    for needle in (API_KEY, secret, ticket):
        assert not _grep(files, needle), needle[:6]
        assert needle not in caplog.text, needle[:6]
