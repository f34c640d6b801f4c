"""The bundled offline local realtime model server.

:class:`LocalModelServer` speaks a subset of the OpenAI Realtime (GA) WebSocket protocol
on ``ws://HOST:PORT/v1/realtime`` with fully deterministic, offline behaviour (see
``docs/local_model.md`` and :mod:`ray_realtime.local.rules`). Each connection is served
by a :class:`~ray_realtime.local.connection.Connection`.

Transport notes:

* Any ``Authorization`` header (or ``openai-insecure-api-key.*`` subprotocol) is
  accepted and never logged: the websockets logger used here redacts such headers.
* ``?model=NAME`` sets ``session.model``; other paths than ``/v1/realtime`` get HTTP 404
  and connections beyond ``max_connections`` get HTTP 503.
* WebSocket messages larger than ``max_frame_bytes`` are rejected by websockets itself,
  which closes the connection with code 1009 (message too big). Smaller messages above
  ``max_event_bytes`` only yield an ``event_too_large`` error event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from .connection import Connection
from .protocol import ServerOptions
from .session import DEFAULT_MODEL

__all__ = ["REALTIME_PATH", "LocalModelServer", "main", "serve_local_model"]

REALTIME_PATH = "/v1/realtime"
_SENSITIVE_HEADERS = frozenset(
    {"authorization", "cookie", "api-key", "openai-api-key", "x-api-key", "sec-websocket-protocol"}
)

logger = logging.getLogger("ray_realtime.local")


class _RedactSecrets(logging.Filter):
    """Redact credential headers from websockets' debug logs of the opening handshake."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            isinstance(args, tuple)
            and len(args) == 2
            and isinstance(args[0], str)
            and args[0].lower() in _SENSITIVE_HEADERS
        ):
            record.args = (args[0], "[redacted]")
        return True


_ws_logger = logging.getLogger("ray_realtime.local.websockets")
_ws_logger.addFilter(_RedactSecrets())


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    # Browser-style clients offer "realtime" (plus a key-carrying pseudo subprotocol) and
    # fail the handshake unless one is selected.
    return Subprotocol("realtime") if "realtime" in offered else None


class LocalModelServer:
    """Offline, deterministic Realtime-protocol model server bound to ``host:port``.

    Use as ``async with LocalModelServer() as server: ... server.url``. ``port=0`` picks a
    free port. See the module docstring for transport details and
    ``docs/local_model.md`` for the model's behaviour.
    """

    connection_class: type[Connection] = Connection
    """What serves each socket; a subclass may serve its own (the benchmarks'
    server stamps its output audio this way)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        audio_ms_per_char: float = 12.5,
        audio_chunk_ms: int = 40,
        pace_audio: bool = False,
        max_event_bytes: int = 1 << 20,
        max_frame_bytes: int = 16 << 20,
        max_connections: int = 1024,
        max_input_audio_ms: int = 15 * 60 * 1000,
        max_conversation_items: int = 4096,
        max_conversation_bytes: int = 32 << 20,
        max_reply_audio_ms: int = 5 * 60 * 1000,
        max_session_seconds: float | None = None,
    ) -> None:
        if audio_chunk_ms <= 0 or audio_ms_per_char <= 0:
            raise ValueError("audio_chunk_ms and audio_ms_per_char must be positive")
        if max_session_seconds is not None and not max_session_seconds > 0:
            raise ValueError("max_session_seconds must be positive (or None: no cap)")
        self.host = host
        self._requested_port = port
        self.max_frame_bytes = max_frame_bytes
        self.max_connections = max_connections
        self.options = ServerOptions(
            audio_ms_per_char=audio_ms_per_char,
            audio_chunk_ms=audio_chunk_ms,
            pace_audio=pace_audio,
            max_event_bytes=max_event_bytes,
            max_input_audio_ms=max_input_audio_ms,
            max_conversation_items=max_conversation_items,
            max_conversation_bytes=max_conversation_bytes,
            max_reply_audio_ms=max_reply_audio_ms,
            max_session_seconds=max_session_seconds,
        )
        self._server: Server | None = None
        self._port: int | None = None
        self._open_connections = 0

    @property
    def port(self) -> int:
        """The bound TCP port (the requested one until :meth:`start` resolves port 0)."""
        return self._port if self._port is not None else self._requested_port

    @property
    def url(self) -> str:
        """WebSocket URL of the realtime endpoint; available after :meth:`start`."""
        if self._port is None:
            raise RuntimeError("LocalModelServer is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self._port}{REALTIME_PATH}"

    @property
    def connection_count(self) -> int:
        """Number of connections currently being served."""
        return self._open_connections

    async def start(self) -> str:
        """Start listening and return :attr:`url`."""
        if self._server is not None:
            return self.url
        self._server = await serve(
            self._handle,
            self.host,
            self._requested_port,
            process_request=self._process_request,
            select_subprotocol=_select_subprotocol,
            # PCM audio does not compress and deflate costs CPU on every frame (a
            # browser offers it by default).
            compression=None,
            max_size=self.max_frame_bytes,
            close_timeout=2,
            logger=_ws_logger,
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        logger.info("local model listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        """Close every connection (code 1001), cancel their responses and stop listening."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await server.wait_closed()

    async def __aenter__(self) -> LocalModelServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path.rstrip("/") != REALTIME_PATH:
            return connection.respond(
                HTTPStatus.NOT_FOUND, f"Not found; connect to {REALTIME_PATH}\n"
            )
        if self._open_connections >= self.max_connections:
            response = connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Too many connections\n")
            response.headers = Headers(response.headers)
            response.headers["Retry-After"] = "1"
            return response
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        self._open_connections += 1
        try:
            query = parse_qs(urlsplit(ws.request.path if ws.request else "").query)
            model = (query.get("model") or [DEFAULT_MODEL])[0][:256] or DEFAULT_MODEL
            await self.connection_class(ws, self.options, model).run()
        finally:
            self._open_connections -= 1


async def serve_local_model(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
    **options: Any,
) -> None:
    """Run a :class:`LocalModelServer` until ``stop`` is set (or the task is cancelled).

    ``on_ready`` receives the URL once listening; ``options`` are passed to the server.
    """
    async with LocalModelServer(host, port, **options) as server:
        if on_ready is not None:
            on_ready(server.url)
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop.wait()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ray_realtime.local",
        description="Offline deterministic OpenAI-Realtime-compatible model server.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port, 0 for any (default 8765)")
    parser.add_argument("--pace-audio", action="store_true", help="send audio at real-time rate")
    parser.add_argument(
        "--audio-ms-per-char", type=float, default=12.5, help="reply audio per character"
    )
    parser.add_argument("--audio-chunk-ms", type=int, default=40, help="audio delta duration")
    parser.add_argument(
        "--max-session-seconds",
        type=float,
        default=None,
        help="end each session after this long, as the real service's cap (default: never)",
    )
    return parser.parse_args(argv)


async def _main_async(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await serve_local_model(
            args.host,
            args.port,
            stop=stop,
            on_ready=lambda url: print(url, flush=True),
            pace_audio=args.pace_audio,
            audio_ms_per_char=args.audio_ms_per_char,
            audio_chunk_ms=args.audio_chunk_ms,
            max_session_seconds=args.max_session_seconds,
        )
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: serve until SIGINT/SIGTERM, print the URL, return 0."""
    args = _parse_args(argv)
    try:
        asyncio.run(_main_async(args))
    except KeyboardInterrupt:  # signal handlers unavailable (e.g. not the main thread)
        pass
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
