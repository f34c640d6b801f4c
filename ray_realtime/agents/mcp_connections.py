"""Connections to MCP servers, for :mod:`ray_realtime.agents.mcp`.

A :class:`Connection` is one open client session of the ``mcp`` package, run
by a task of its own (the package's transports must be left by the task that
entered them, while calls come from many tasks). :class:`MCPConnections`
caches them, one per server spec, bounded; :func:`shared_connections` is the
cache of this process and event loop (what tool workers use).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING

from ray_realtime.exceptions import ToolError

if TYPE_CHECKING:
    from mcp import ClientSession
    from mcp.types import Tool as MCPTool

    from ray_realtime.agents.mcp import MCPServer

__all__ = ["Connection", "MCPConnections", "describe_error", "or_shared", "shared_connections"]

# Connections one cache keeps open; the least recently used closes first.
_MAX_CONNECTIONS = 32
# Time a connection gets to shut down (the server process to exit) on close.
_CLOSE_SECONDS = 5.0


class Connection:
    """One open MCP client session, owned by a task of its own: the ``mcp``
    package's transports must be left by the task that entered them, and
    calls come from many tasks."""

    def __init__(self, server: MCPServer) -> None:
        self.server = server
        self.session: ClientSession | None = None
        self.tools: list[MCPTool] | None = None  # cache_tools_list
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        """Open, and its task still running."""
        return self.session is not None and self._task is not None and not self._task.done()

    async def open(self, timeout: float) -> None:
        """Start the server's transport and initialise the session, within ``timeout``."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait({self._task, ready}, timeout=timeout, return_when="FIRST_COMPLETED")
        except BaseException:
            ready.cancel()
            await self._stop()
            raise
        ready.cancel()
        if self.alive:
            return
        error: BaseException | None = None
        if self._task.done() and not self._task.cancelled():
            error = self._task.exception()
        await self._stop()
        name = self.server.name
        if error is None:
            raise ToolError(f"MCP server {name!r} did not answer within {timeout:g} s")
        raise ToolError(
            f"MCP server {name!r} could not be reached: {describe_error(error)}"
        ) from error

    async def _run(self) -> None:
        from mcp import ClientSession

        server = self.server
        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(server._transport())
                session = await stack.enter_async_context(
                    ClientSession(
                        read,
                        write,
                        # Requests are bounded by the caller (client_session_timeout_seconds);
                        # initialising, by connect_timeout_seconds (a server process
                        # may take longer to start than to answer).
                        read_timeout_seconds=None,
                        message_handler=server.message_handler,
                    )
                )
                await session.initialize()
                self.session = session
                self._ready.set()
                await self._closing.wait()
        finally:
            self.session = None

    async def close(self) -> None:
        """Shut the session and its transport down (bounded)."""
        self._closing.set()
        await self._stop()

    async def _stop(self) -> None:
        task = self._task
        self.session = None
        if task is None or task.done():
            if task is not None and not task.cancelled():
                task.exception()  # retrieved: a failed open was reported already
            return
        self._closing.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), _CLOSE_SECONDS)
        except (TimeoutError, Exception):
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, _CLOSE_SECONDS)


class MCPConnections:
    """A bounded cache of open MCP connections, one per server spec, for one
    event loop. :meth:`aclose` closes them all."""

    def __init__(self, capacity: int = _MAX_CONNECTIONS) -> None:
        self._capacity = capacity
        self._open: OrderedDict[str, Connection] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._open)

    async def get(self, server: MCPServer) -> Connection:
        """The open connection for ``server``'s spec, opened on first use
        (and again after it broke)."""
        if self._closed:
            raise ToolError(f"MCP connections closed; cannot reach {server.name!r}")
        key = server.spec_key()
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._open.get(key)
            if conn is not None and conn.alive:
                self._open.move_to_end(key)
                return conn
            if conn is not None:
                del self._open[key]
                await conn.close()
            conn = Connection(server)
            await conn.open(server.connect_timeout_seconds)
            self._open[key] = conn
        while len(self._open) > self._capacity:
            old_key, old = self._open.popitem(last=False)
            self._locks.pop(old_key, None)
            await old.close()
        return conn

    async def discard(self, conn: Connection) -> None:
        """Close a connection found broken; the next use opens a new one."""
        for key, held in list(self._open.items()):
            if held is conn:
                del self._open[key]
        await conn.close()

    async def aclose(self) -> None:
        """Close every connection; the cache takes no more."""
        self._closed = True
        conns = list(self._open.values())
        self._open.clear()
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MCPConnections] = (
    weakref.WeakKeyDictionary()
)


def shared_connections() -> MCPConnections:
    """This process's connections for the running event loop (what tool
    workers use: one connection per server spec, kept for the worker's life)."""
    loop = asyncio.get_running_loop()
    conns = _SHARED.get(loop)
    if conns is None or conns._closed:
        conns = _SHARED[loop] = MCPConnections()
    return conns


def or_shared(connections: MCPConnections | None) -> MCPConnections:
    # Not ``connections or ...``: an empty cache is falsy (it has a length).
    return connections if connections is not None else shared_connections()


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of the innermost cause (anyio and the mcp transports
    wrap the cause in exception groups)."""
    while getattr(exc, "exceptions", None):
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
