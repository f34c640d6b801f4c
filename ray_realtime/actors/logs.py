"""The service's log lines: the session and agent they concern, text or JSON.

Every log record of the ``ray_realtime`` loggers in the service's actors goes
through one handler that adds two fields, ``session_id`` and ``agent``, from a
context variable the session actor sets while it works for a session
(:func:`bind_session`). asyncio copies context variables into the tasks it
creates, so the model connection's reader, the tool calls and everything else
a session spawns while bound log under that session, without passing ids
around. The agent is read when the line is written, so a line after a handoff
names the new agent. A record that names its own ``session_id`` / ``agent``
through ``extra`` keeps them.

Formats: ``text`` (the default: Ray's usual line with ``session=... agent=...``
appended where one applies) or ``json`` (one object per line: ``time``,
``level``, ``logger``, ``message``, ``session_id``, ``agent``, ``exc``).
``ray-realtime serve --log-format json`` sets :data:`LOG_FORMAT_ENV`, which
reaches every actor of the service through its runtime environment
(:func:`~ray_realtime.actors.raylib.actor_options`); the actors call
:func:`configure_logging` when they start. Their lines land in Ray's log
files (``logs/worker-*.err`` of the Ray session), as any actor's output does.

Only ids and agent names are added: never a secret, ticket or key.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LOG_FORMATS",
    "LOG_FORMAT_ENV",
    "JsonFormatter",
    "SessionContextFilter",
    "TextFormatter",
    "bind_session",
    "configure_actor_logging",
    "configure_logging",
    "log_format",
]

LOG_FORMAT_ENV = "RAY_REALTIME_LOG_FORMAT"
"""``text`` or ``json``: the format of the service's log lines."""

LOG_FORMATS = ("text", "json")

_LOGGER = "ray_realtime"
_MARK = "_ray_realtime_handler"


@dataclass(frozen=True)
class _Bound:
    session_id: str
    agent: Callable[[], str]


_current: contextvars.ContextVar[_Bound | None] = contextvars.ContextVar(
    "ray_realtime_log_session", default=None
)


def bind_session(session_id: str, agent: Callable[[], str]) -> None:
    """Log what runs in the current context (and the tasks it creates from
    now on) under ``session_id``; ``agent()`` names the active agent."""
    _current.set(_Bound(session_id, agent))


def session_fields() -> tuple[str | None, str | None]:
    """The bound session id and agent name, or ``(None, None)``."""
    bound = _current.get()
    if bound is None:
        return None, None
    try:
        agent: str | None = bound.agent()
    except Exception:  # a log line never fails for want of an agent name
        agent = None
    return bound.session_id, agent


class SessionContextFilter(logging.Filter):
    """Adds ``session_id`` and ``agent`` (None when no session applies)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate ``record``; never drops it."""
        session_id, agent = session_fields()
        if getattr(record, "session_id", None) is None:
            record.session_id = session_id
        if getattr(record, "agent", None) is None:
            record.agent = agent
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger -- message [session=... agent=...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s -- %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The line, with the session's fields where one applies."""
        line = super().format(record)
        session_id = getattr(record, "session_id", None)
        if session_id is None:
            return line
        agent = getattr(record, "agent", None)
        head, sep, tail = line.partition("\n")  # a traceback follows the first line
        return f"{head} [session={session_id} agent={agent}]{sep}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON (``exc`` holds a traceback when there is one)."""
        doc: dict[str, Any] = {
            "time": round(record.created, 6),
            "iso_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "session_id": getattr(record, "session_id", None),
            "agent": getattr(record, "agent", None),
            "pid": record.process,
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def log_format(value: str | None = None) -> str:
    """The chosen format: ``value``, else :data:`LOG_FORMAT_ENV`, else ``text``."""
    chosen = (value or os.environ.get(LOG_FORMAT_ENV) or "text").strip().lower()
    return chosen if chosen in LOG_FORMATS else "text"


def configure_logging(fmt: str | None = None, level: int = logging.INFO) -> None:
    """Send the ``ray_realtime`` loggers' lines to stderr through one handler
    that adds the session's fields, in ``fmt`` (see :func:`log_format`).
    Idempotent: calling it again swaps the format, never adds a handler."""
    logger = logging.getLogger(_LOGGER)
    handler = next((h for h in logger.handlers if getattr(h, _MARK, False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        setattr(handler, _MARK, True)
        handler.addFilter(SessionContextFilter())
        logger.addHandler(handler)
    handler.setFormatter(JsonFormatter() if log_format(fmt) == "json" else TextFormatter())
    logger.setLevel(level)
    # Ray's own handler on the root logger would write every line twice.
    logger.propagate = False


def configure_actor_logging() -> None:
    """:func:`configure_logging` in one of the service's actors (a no-op in a
    driver, e.g. a test that builds an actor's class in its own process)."""
    import ray

    if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
        configure_logging()
