"""The process-wide embedded local model server.

When no OpenAI key is configured, sessions talk to a bundled local model
server. In a plain Python process (the in-process execution mode, scripts,
tests) one server is started on demand in a daemon thread with its own event
loop, so it outlives any single asyncio loop and is shared by every session of
the process.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

__all__ = ["embedded_server_url", "stop_embedded_server"]

_lock = threading.Lock()
_state: dict[str, Any] = {}


def embedded_server_url(timeout: float = 30.0, **server_options: Any) -> str:
    """The URL of this process's embedded local model server, starting it on
    first use (bound to 127.0.0.1 on a free port)."""
    with _lock:
        url = _state.get("url")
        if url is not None:
            return str(url)
        ready: Future[str] = Future()
        loop = asyncio.new_event_loop()

        def run() -> None:
            from ray_realtime.local.server import LocalModelServer

            asyncio.set_event_loop(loop)
            server = LocalModelServer("127.0.0.1", 0, **server_options)
            _state["server"] = server
            try:
                ready.set_result(loop.run_until_complete(server.start()))
            except BaseException as exc:
                ready.set_exception(exc)
                return
            loop.run_forever()
            loop.run_until_complete(server.stop())
            loop.close()

        thread = threading.Thread(target=run, name="ray-realtime-local-model", daemon=True)
        thread.start()
        url = ready.result(timeout)
        _state.update(url=url, loop=loop, thread=thread)
        return url


def stop_embedded_server(timeout: float = 10.0) -> None:
    """Stop the embedded server if it runs (tests and clean shutdown)."""
    with _lock:
        loop = _state.pop("loop", None)
        thread = _state.pop("thread", None)
        _state.clear()
    if loop is not None:
        loop.call_soon_threadsafe(loop.stop)
    if thread is not None:
        thread.join(timeout)
