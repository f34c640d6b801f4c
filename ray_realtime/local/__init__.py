"""Offline, deterministic local realtime model speaking the OpenAI Realtime protocol.

``LocalModelServer`` runs a WebSocket server on loopback that behaves like a tiny,
predictable realtime model so the rest of ray-realtime can be developed and tested
without network access. See ``docs/local_model.md`` for the documented rules.
"""

from .server import LocalModelServer, main, serve_local_model

__all__ = ["LocalModelServer", "main", "serve_local_model"]
