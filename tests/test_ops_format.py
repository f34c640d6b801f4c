"""The operator commands' output formats (no Ray)."""

from __future__ import annotations

from typing import Any

from ray_realtime.ops import format_status, status_document


def _status() -> dict[str, Any]:
    node = {
        "node_id": "a" * 56,
        "address": "127.0.0.1",
        "alive": True,
        "drained": True,
        "sessions": 3,
        "capacity": 200,
        "load": 0.015,
        "session_actors": 4,
        "warm": 1,
        "tool_workers": 1,
        "guardrail_workers": 1,
        "model_servers": 1,
        "turns": {"turns": 5, "turn_p50_ms": 3.25, "turn_p99_ms": 12.5, "errors": 2},
        "token": "not-for-print",  # whatever the router may add later
    }
    return {
        "nodes": [node],
        "sessions": 3,
        "lost_sessions": 0,
        "agents": {},
        "agents_in_use": {"Assistant": 3},
        "placements": 9,
        "turns": {"turns": 5, "turn_p50_ms": 3.25, "turn_p99_ms": 12.5, "errors": 2},
        "config": {"warm_pool_size": 1},
        "secret_stuff": "not-for-print",
    }


def test_table_shows_load_latency_errors_and_drained() -> None:
    lines = format_status(_status()).splitlines()
    assert lines[0].split() == [
        "node", "address", "alive", "drained", "sessions", "load", "actors", "warm",
        "tools", "guards", "model", "p50ms", "p99ms", "errors",
    ]  # fmt: skip
    assert lines[1].split() == [
        "a" * 12, "127.0.0.1", "yes", "yes", "3", "2%", "4", "1", "1", "1", "1",
        "3.2", "12.5", "2",
    ]  # fmt: skip
    assert "p99: 12.5 ms" in lines[2] and "model errors: 2" in lines[2]
    assert lines[-1].startswith("sessions: 3")


def test_json_document_passes_on_known_keys_only() -> None:
    doc = status_document(_status(), "127.0.0.1:6379")
    assert "secret_stuff" not in doc and "token" not in doc["nodes"][0]
    assert doc["nodes"][0]["load"] == 0.015 and doc["nodes"][0]["drained"] is True
    assert doc["address"] == "127.0.0.1:6379" and doc["turns"]["turn_p99_ms"] == 12.5
