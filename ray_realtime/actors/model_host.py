"""The per-node local model server actor (when no OpenAI key is configured).

Session actors on the same node reach it over loopback, so model traffic never
leaves the node.
"""

from __future__ import annotations

from typing import Any

from ray_realtime.actors import raylib
from ray_realtime.actors.logs import configure_actor_logging

__all__ = ["LocalModelHost"]


class LocalModelHost:
    """Runs a :class:`~ray_realtime.local.LocalModelServer` inside an actor."""

    def __init__(self) -> None:
        configure_actor_logging()
        self.node_id = raylib.current_node_id()
        self._server: Any = None
        self.url = ""

    async def start(self) -> str:
        """Start the server on 127.0.0.1 (idempotent); returns its URL."""
        if self._server is None:
            from ray_realtime.local.server import LocalModelServer

            self._server = LocalModelServer("127.0.0.1", 0)
            self.url = await self._server.start()
        return self.url

    async def ping(self) -> dict[str, Any]:
        """Liveness, node and URL."""
        return {"node_id": self.node_id, "url": self.url, "capacity": 1, "sessions": []}

    async def stop(self) -> None:
        """Stop the server."""
        if self._server is not None:
            await self._server.stop()
            self._server = None
