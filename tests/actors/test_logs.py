"""Log lines carry the bound session and agent, as text or JSON (no Ray)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from ray_realtime.actors.logs import (
    JsonFormatter,
    SessionContextFilter,
    TextFormatter,
    bind_session,
    configure_logging,
    log_format,
)


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SessionContextFilter())
    logger = logging.getLogger("ray_realtime.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream, handler
    finally:
        logger.removeHandler(handler)


def _log(message: str) -> None:
    logging.getLogger("ray_realtime.test_logs").info(message)


async def test_bound_session_reaches_the_tasks_it_starts_and_names_the_current_agent(
    captured: tuple[io.StringIO, logging.Handler],
) -> None:
    stream, handler = captured
    handler.setFormatter(JsonFormatter())
    agent = {"name": "Greeter"}

    async def session_work() -> None:
        bind_session("sess-1", lambda: agent["name"])
        _log("first")
        agent["name"] = "Billing"  # a handoff
        await asyncio.get_running_loop().create_task(asyncio.to_thread(lambda: None))
        await asyncio.create_task(_alog("from a task"))

    async def _alog(message: str) -> None:
        _log(message)

    await asyncio.create_task(session_work())
    _log("outside")  # another context: no session applies
    docs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(d["message"], d["session_id"], d["agent"]) for d in docs] == [
        ("first", "sess-1", "Greeter"),
        ("from a task", "sess-1", "Billing"),
        ("outside", None, None),
    ]
    assert docs[0]["level"] == "INFO" and docs[0]["logger"] == "ray_realtime.test_logs"


async def test_text_lines_append_the_fields_where_a_session_applies(
    captured: tuple[io.StringIO, logging.Handler],
) -> None:
    stream, handler = captured
    handler.setFormatter(TextFormatter())

    async def bound() -> None:
        bind_session("sess-2", lambda: "Assistant")
        _log("in a session")

    await asyncio.create_task(bound())
    _log("not in one")
    first, second = stream.getvalue().splitlines()
    assert first.endswith("in a session [session=sess-2 agent=Assistant]")
    assert second.endswith("-- not in one")


def test_configure_is_idempotent_and_the_format_comes_from_the_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logger = logging.getLogger("ray_realtime")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    try:
        monkeypatch.setenv("RAY_REALTIME_LOG_FORMAT", "json")
        assert log_format() == "json" and log_format("text") == "text"
        configure_logging()
        configure_logging()
        ours = [h for h in logger.handlers if h not in saved[0]]
        assert len(ours) == 1 and isinstance(ours[0].formatter, JsonFormatter)
        configure_logging("text")
        assert isinstance(ours[0].formatter, TextFormatter)
        monkeypatch.setenv("RAY_REALTIME_LOG_FORMAT", "yaml")
        assert log_format() == "text"
    finally:
        logger.handlers[:] = saved[0]
        logger.propagate, logger.level = saved[1], saved[2]
