"""The session actor: hosts one or more sessions, each run by a SessionDriver.

It holds the model connections, the histories and the bounded event logs; its
methods are what remote handles call. Events leave in batches, wire-encoded
(msgpack), so Ray's per-call cost is paid per batch, not per event; audio
arrives as raw bytes. ``capacity`` sessions fit in one actor (1 by default;
more packs sessions for density — the same class either way).

This is a plain class; :mod:`ray_realtime.actors.remote` makes it an actor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections import OrderedDict
from typing import Any

from ray_realtime import wire
from ray_realtime.actors import raylib
from ray_realtime.actors.dataplane import DataPlaneServer
from ray_realtime.actors.pool import (
    PoolExecutor,
    SessionObjects,
    WorkerPool,
    WorkerSlot,
)
from ray_realtime.agents.agent import RealtimeAgent
from ray_realtime.exceptions import NoCapacityError, SessionClosedError, SessionNotFoundError
from ray_realtime.model.openai_ws import OpenAIRealtimeWebSocketModel
from ray_realtime.session.driver import SessionDriver
from ray_realtime.session.start import resolve_model_config
from ray_realtime.types.items import item_to_dict

__all__ = ["SessionHost"]

logger = logging.getLogger(__name__)

# Closed sessions stay readable this long (bounded in number), so a reader
# can drain the last events and learn that the session ended.
_CLOSED_KEPT = 64
_AGENTS_KEPT = 32
# How long a data plane hello waits for its session to be opened (the handle
# opens both at once).
_HELLO_WAIT_SECONDS = 10.0
_CLOSED_KEEP_SECONDS = 120.0


class RouterAgentResolver:
    """Resolves handoff targets through the router's cluster-wide agent registry."""

    def __init__(self, host: SessionHost) -> None:
        self._host = host
        self._versions: dict[str, tuple[int, RealtimeAgent[Any]]] = {}

    async def resolve(self, name: str, fallback: RealtimeAgent[Any]) -> RealtimeAgent[Any]:
        """The newest registered version of ``name``, else ``fallback``."""
        router = self._host.router()
        if router is None:
            return fallback
        try:
            found = await router.get_agent.remote(name)
        except Exception as exc:
            logger.warning("agent registry lookup of %r failed: %r", name, exc)
            return fallback
        if found is None:
            return fallback
        version, payload = found
        cached = self._versions.get(name)
        if cached is not None and cached[0] == version:
            return cached[1]
        agent = raylib.loads(payload)
        self._versions[name] = (version, agent)
        return agent  # type: ignore[no-any-return]


class SessionHost:
    """Hosts up to ``capacity`` sessions in one actor."""

    def __init__(self, capacity: int = 1, name: str = "") -> None:
        self.capacity = max(1, capacity)
        self.name = name
        self.node_id = raylib.current_node_id()
        self._sessions: dict[str, SessionDriver] = {}
        self._closed: OrderedDict[str, SessionDriver] = OrderedDict()
        self._pools: dict[str, WorkerPool] = {}
        self._tokens: dict[str, str] = {}
        self._registered = asyncio.Event()
        self._agents: OrderedDict[bytes, RealtimeAgent[Any]] = OrderedDict()
        self._dataplane: DataPlaneServer | None = None

    # -------------------------------------------------------------- status

    async def ping(self) -> dict[str, Any]:
        """Liveness and load: node, process, sessions, capacity. The first ping
        (the router's readiness check) also readies the data plane, so a warm
        actor's first session does not pay for it."""
        await self._ensure_data_plane()
        return {
            "node_id": self.node_id,
            "pid": os.getpid(),
            "data_url": self._dataplane.url if self._dataplane is not None else "",
            "name": self.name,
            "sessions": list(self._sessions),
            "capacity": self.capacity,
        }

    async def statistics(self) -> dict[str, Any]:
        """Per-session statistics."""
        return {sid: d.statistics() for sid, d in self._sessions.items()}

    def router(self) -> Any | None:
        """The router actor, if deployed."""
        return raylib.get_named_actor(raylib.ROUTER_NAME)

    # ----------------------------------------------------------- lifecycle

    async def open_session(
        self, session_id: str, payload: bytes, options: dict[str, Any]
    ) -> dict[str, Any]:
        """Create and connect a session; idempotent for the same id.

        ``payload`` is the pickled ``(agent, context, run_config,
        model_config)``; ``options`` carries ``model_url`` and the worker
        lists ``tool_workers`` / ``guardrail_workers`` as ``(name, node_id,
        handle)`` triples.
        """
        if session_id in self._sessions:
            return await self.data_plane(session_id)
        self._forget_old_closed()
        if len(self._sessions) >= self.capacity:
            raise NoCapacityError(
                f"session actor {self.name or self.node_id} is full ({self.capacity} sessions)"
            )
        agent_bytes, context_bytes, run_config, model_config = raylib.loads(payload)
        agent = self._agent(agent_bytes)

        context = raylib.loads(context_bytes)
        objects = SessionObjects(context_bytes, list(run_config.get("output_guardrails") or []))
        tools_pool = self._pool("tool", options.get("tool_workers") or [])
        guards_pool = self._pool("guardrail", options.get("guardrail_workers") or [])
        driver = SessionDriver(
            agent=agent,
            model=OpenAIRealtimeWebSocketModel(),
            context=context,
            run_config=run_config,
            model_config=resolve_model_config(model_config, local_url=options.get("model_url")),
            tool_executor=PoolExecutor(tools_pool, objects),
            guardrail_executor=PoolExecutor(guards_pool, objects),
            agent_resolver=RouterAgentResolver(self),
            session_id=session_id,
            on_closed=self._on_driver_closed,
        )
        self._sessions[session_id] = driver
        # The handle may pick the token, so it can open the data plane while
        # this call runs; the socket's hello then waits for this registration.
        token = options.get("token")
        self._tokens[session_id] = (
            token if isinstance(token, str) and len(token) >= 16 else secrets.token_urlsafe(24)
        )
        self._registered.set()
        self._registered = asyncio.Event()
        try:
            await driver.start()
        except BaseException:
            self._sessions.pop(session_id, None)
            self._tokens.pop(session_id, None)
            raise
        return await self.data_plane(session_id)

    async def data_plane(self, session_id: str) -> dict[str, Any]:
        """How a handle reaches this session directly: ``data_url`` and the
        session's ``token`` (a secret; it travels only over Ray), plus the
        bounds the handle checks before sending (empty ``data_url`` when the
        data plane could not start: handles then use Ray calls)."""
        # A closed session stays readable for a while, so this works for it too.
        driver = self._sessions.get(session_id) or self._closed.get(session_id)
        if driver is None:
            raise SessionNotFoundError(f"no session {session_id} on this actor", session_id)
        info: dict[str, Any] = {
            "node_id": self.node_id,
            "data_url": "",
            "token": self._tokens.get(session_id, ""),
            "max_audio_chunk_bytes": driver.limits["max_audio_chunk_bytes"],
            "max_message_chars": driver.limits["max_message_chars"],
            "input_audio_format": driver.input_audio_format,
            "closed": driver.closed,
        }
        info["data_url"] = await self._ensure_data_plane()
        return info

    async def _ensure_data_plane(self) -> str:
        try:
            if self._dataplane is None:
                self._dataplane = DataPlaneServer(self._dataplane_lookup, raylib.node_ip())
                await self._dataplane.start()
            return self._dataplane.url
        except OSError as exc:
            logger.warning("data plane server could not start: %s", exc)
            self._dataplane = None
            return ""

    async def _dataplane_lookup(self, session_id: str) -> tuple[SessionDriver, str] | None:
        deadline = time.monotonic() + _HELLO_WAIT_SECONDS
        while True:
            driver = self._sessions.get(session_id) or self._closed.get(session_id)
            token = self._tokens.get(session_id)
            if driver is not None and token is not None:
                return driver, token
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._registered.wait(), remaining)
            except asyncio.TimeoutError:
                return None

    def _agent(self, agent_bytes: bytes) -> RealtimeAgent[Any]:
        # Rebuilding an agent re-creates its tools' argument models (pydantic
        # classes): a few ms a session. Equal bytes are an equal agent, so the
        # sessions of this actor share one copy (agents are never changed).
        agent = self._agents.get(agent_bytes)
        if agent is None:
            agent = raylib.loads(agent_bytes)
            self._agents[agent_bytes] = agent
            while len(self._agents) > _AGENTS_KEPT:
                self._agents.popitem(last=False)
        return agent

    async def close_session(self, session_id: str) -> None:
        """Close a session; closing a closed or unknown one is a no-op."""
        driver = self._sessions.get(session_id)
        if driver is not None:
            await driver.close()

    async def close_all(self) -> None:
        """Close every session (before the actor is stopped)."""
        await asyncio.gather(*(d.close() for d in list(self._sessions.values())))

    def _on_driver_closed(self, driver: SessionDriver) -> None:
        self._sessions.pop(driver.session_id, None)
        self._closed[driver.session_id] = driver
        self._forget_old_closed()
        router = self.router()
        if router is not None:
            # Fire and forget: the router also notices through its health checks.
            router.session_ended.remote(driver.session_id, self.name)

    def _forget_old_closed(self) -> None:
        now = time.monotonic()
        while self._closed:
            sid, driver = next(iter(self._closed.items()))
            too_old = driver.closed_at is not None and now - driver.closed_at > _CLOSED_KEEP_SECONDS
            if len(self._closed) > _CLOSED_KEPT or too_old:
                self._closed.pop(sid)
                self._tokens.pop(sid, None)
            else:
                break

    def _pool(self, kind: str, workers: list[Any]) -> WorkerPool:
        pool = self._pools.get(kind)
        slots = [WorkerSlot(name, node, handle) for name, node, handle in workers]
        if pool is None:
            pool = WorkerPool(self.node_id, slots, on_dead=self._worker_died)
            self._pools[kind] = pool
        elif slots:
            known = {w.name for w in pool.workers}
            if {s.name for s in slots} != known:
                pool.replace(slots)
        return pool

    def _worker_died(self, slot: WorkerSlot) -> None:
        router = self.router()
        if router is not None:
            router.worker_died.remote(slot.name)

    async def update_workers(self, kind: str, workers: list[Any]) -> None:
        """Take a new worker list from the router (after a replacement)."""
        self._pool(kind, workers)

    # ------------------------------------------------------------- commands

    def _driver(self, session_id: str) -> SessionDriver:
        driver = self._sessions.get(session_id)
        if driver is not None:
            return driver
        if session_id in self._closed:
            raise SessionClosedError(f"session {session_id} is closed", session_id)
        raise SessionNotFoundError(f"no session {session_id} on this actor", session_id)

    async def send_message(self, session_id: str, message: Any) -> None:
        """Send a user message."""
        await self._driver(session_id).send_message(message)

    async def send_audio(self, session_id: str, audio: bytes, commit: bool) -> None:
        """Send input audio (raw bytes)."""
        await self._driver(session_id).send_audio(audio, commit=commit)

    async def interrupt(self, session_id: str) -> None:
        """Interrupt the current response."""
        await self._driver(session_id).interrupt()

    async def update_agent(self, session_id: str, agent_payload: bytes) -> None:
        """Switch agent (pickled)."""
        await self._driver(session_id).update_agent(raylib.loads(agent_payload))

    async def approve_tool_call(self, session_id: str, call_id: str, always: bool = False) -> bool:
        """Approve a waiting tool call."""
        return await self._driver(session_id).approve_tool_call(call_id, always=always)

    async def reject_tool_call(
        self, session_id: str, call_id: str, message: str | None, always: bool = False
    ) -> bool:
        """Reject a waiting tool call."""
        return await self._driver(session_id).reject_tool_call(call_id, message, always=always)

    async def read_events(
        self, session_id: str, after_seq: int, max_events: int, timeout: float | None
    ) -> bytes:
        """A wire-encoded batch of events after ``after_seq`` (long-poll)."""
        driver = self._sessions.get(session_id) or self._closed.get(session_id)
        if driver is None:
            raise SessionNotFoundError(f"no session {session_id} on this actor", session_id)
        batch = await driver.read_events(after_seq, max_events, timeout)
        return wire.encode_batch(batch.events, batch.last_seq, batch.missed, batch.closed)

    async def get_history(self, session_id: str) -> bytes:
        """The wire-encoded history."""
        driver = self._sessions.get(session_id) or self._closed.get(session_id)
        if driver is None:
            raise SessionNotFoundError(f"no session {session_id} on this actor", session_id)
        return wire.encode([item_to_dict(i) for i in driver.history])
