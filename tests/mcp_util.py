"""A real MCP server for the MCP tests, and helpers to start it.

The server is a small script on the ``mcp`` package, written to a temporary
directory by the tests: over stdio it is started by ``MCPServerStdio`` as a
subprocess; over streamable HTTP the test starts it on a free loopback port
and stops it by pid. Every wait is bounded and scaled by ``UNIT``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ray_realtime import MCPServerStdio, MCPServerStreamableHttp
from tests.conftest import UNIT

__all__ = ["SERVER_SOURCE", "http_mcp", "http_server", "stdio_server", "write_server"]

SERVER_SOURCE = '''
import asyncio, json, os, sys
from mcp.server.mcpserver import MCPServer

app = MCPServer("calc")

@app.tool()
def add_numbers(a: int, b: int) -> int:
    """Add two integers."""
    return a + b

@app.tool()
def whoami() -> str:
    """The pid of this server and of its parent."""
    return json.dumps({"pid": os.getpid(), "ppid": os.getppid()})

@app.tool()
def broken_tool(reason: str) -> str:
    """Always fails."""
    raise ValueError("broken on purpose: " + reason)

@app.tool()
async def slow_tool(seconds: float) -> str:
    """Answers after a while."""
    await asyncio.sleep(seconds)
    return "slept"

@app.tool()
def crash() -> str:
    """Ends the server process at once."""
    os._exit(3)

if __name__ == "__main__":
    if len(sys.argv) > 2:
        app.run(sys.argv[2], host="127.0.0.1", port=int(sys.argv[1]))
    else:
        app.run()
'''


def write_server(directory: Path) -> Path:
    """The server script, written into ``directory``."""
    path = directory / "calc_mcp_server.py"
    path.write_text(SERVER_SOURCE, encoding="utf-8")
    return path


def stdio_server(script: Path, **options: Any) -> MCPServerStdio:
    """An ``MCPServerStdio`` that runs ``script`` with this Python."""
    return MCPServerStdio({"command": sys.executable, "args": [str(script)]}, **options)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def http_server(
    script: Path, log: Path, transport: str = "streamable-http", path: str = "/mcp"
) -> Iterator[str]:
    """Run ``script`` as an HTTP server (streamable HTTP, or ``"sse"``) on a
    free loopback port; yields its URL; stops the process by its pid."""
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(port), transport],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30 * UNIT
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if proc.poll() is not None:
                raise AssertionError(f"MCP HTTP server exited: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("MCP HTTP server did not listen in time")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10 * UNIT)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10 * UNIT)


def http_mcp(url: str, **options: Any) -> MCPServerStreamableHttp:
    """An ``MCPServerStreamableHttp`` for ``url``."""
    return MCPServerStreamableHttp({"url": url}, **options)
