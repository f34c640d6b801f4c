"""The router: places sessions, keeps pools warm, registers agents, watches health.

One named, detached actor per cluster. It is a reconciling controller: it
holds a target (on every live, undrained node: N tool workers, N guardrail
workers, a local model server when configured, and a warm pool of ready
session actors) and a loop moves the actual state toward it, replacing what
died. State-changing calls are idempotent (placing the same session id twice
returns the same placement), and the state can be rebuilt after a restart
from the named actors it finds in the project's namespace.

Placement itself is the pure policy :func:`ray_realtime.cluster.placement.choose_node`.

This is a plain class; :mod:`ray_realtime.actors.remote` makes it an actor.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ray_realtime.actors import raylib
from ray_realtime.cluster.placement import NodeInfo, PlacementRequirement, choose_node
from ray_realtime.cluster.service_config import ServiceConfig
from ray_realtime.exceptions import (
    ConfigError,
    NoCapacityError,
    SessionLostError,
    SessionNotFoundError,
)

__all__ = ["Router"]

logger = logging.getLogger(__name__)

_LOST_KEPT = 1024
SESSION_PREFIX = "rr_session_"
TOOL_PREFIX = "rr_tool_"
GUARD_PREFIX = "rr_guard_"
MODEL_PREFIX = "rr_model_"


@dataclass
class NodeState:
    """A Ray node as the router sees it."""

    node_id: str
    address: str = ""
    alive: bool = True
    drained: bool = False
    resources: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class ActorState:
    """One of the router's actors (session host, worker, model server)."""

    name: str
    kind: str
    node_id: str
    handle: Any
    capacity: int = 1
    sessions: set[str] = field(default_factory=set)
    ready: bool = False
    url: str = ""
    created: float = field(default_factory=time.monotonic)


class Router:
    """The ray-realtime control plane."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self._config = ServiceConfig.from_dict(config)
        self._nodes: dict[str, NodeState] = {}
        self._actors: dict[str, ActorState] = {}
        self._sessions: dict[str, str] = {}
        self._session_nodes: dict[str, str] = {}
        # Packed actors being started, with the slots placements reserved on them.
        self._pending_packed: dict[
            tuple[str, int], tuple[asyncio.Future[ActorState | None], int]
        ] = {}
        # Sessions being placed while their actor starts: counted as load, so
        # concurrent placements do not all pick the same node.
        self._reserved: dict[str, str] = {}
        self._lost: OrderedDict[str, str] = OrderedDict()
        self._agents: dict[str, tuple[int, bytes]] = {}
        self._starting: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._started = False
        self._reconcile_lock: asyncio.Lock | None = None
        self._ready = asyncio.Event()
        self.placements = 0

    # ----------------------------------------------------------- lifecycle

    async def start(self) -> dict[str, Any]:
        """Rebuild state from live actors, reach the target once, start the
        control loop; idempotent. Returns :meth:`status`."""
        if not self._started:
            self._started = True
            self._reconcile_lock = asyncio.Lock()
            try:
                await self._rebuild()
                await self.reconcile()
            finally:
                self._ready.set()
            self._loop_task = asyncio.get_running_loop().create_task(self._control_loop())
        await self._ready.wait()
        return await self.status()

    async def shutdown(self) -> None:
        """Stop every actor of the service (the router itself is killed by the caller)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        for state in list(self._actors.values()):
            if state.kind == "session":
                try:
                    await asyncio.wait_for(_await(state.handle.close_all.remote()), 5.0)
                except Exception:
                    pass
            raylib.kill(state.handle)
        self._actors.clear()
        self._sessions.clear()

    async def _control_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.health_interval_seconds)
            try:
                await self.reconcile()
            except Exception:
                logger.exception("router reconcile failed; retrying next round")

    # ------------------------------------------------------------ rebuild

    async def _rebuild(self) -> None:
        import ray

        try:
            named = ray.util.list_named_actors(all_namespaces=True)
        except Exception:
            return
        found: list[tuple[str, str, Any]] = []
        for entry in named:
            if not isinstance(entry, dict) or entry.get("namespace") != raylib.NAMESPACE:
                continue
            name = str(entry.get("name", ""))
            kind = _kind_of(name)
            if kind is None:
                continue
            handle = raylib.get_named_actor(name)
            if handle is not None:
                found.append((name, kind, handle))
        pings = await raylib.gather_with_timeout(
            [h.ping.remote() for _, _, h in found], self._config.health_timeout_seconds
        )
        for (name, kind, handle), info in zip(found, pings, strict=True):
            if isinstance(info, BaseException):
                continue
            state = ActorState(name, kind, "", handle, ready=True)
            if isinstance(info, dict):
                state.node_id = str(info.get("node_id", ""))
                state.capacity = int(info.get("capacity", 1))
                state.sessions = set(info.get("sessions", []))
                state.url = str(info.get("url", "") or info.get("data_url", ""))
            else:
                state.node_id = str(info)
            self._actors[name] = state
            for sid in state.sessions:
                self._sessions[sid] = name
                self._session_nodes[sid] = state.node_id
        if found:
            logger.info(
                "router rebuilt %d actors, %d sessions", len(self._actors), len(self._sessions)
            )

    # ---------------------------------------------------------- reconcile

    async def reconcile(self) -> None:
        """One round: refresh nodes, find dead actors, start what is missing."""
        assert self._reconcile_lock is not None
        async with self._reconcile_lock:
            self._refresh_nodes()
            await self._check_health()
            creations: list[Any] = []
            for node in self._nodes.values():
                self._trim_warm(node)
                if not node.alive or node.drained:
                    continue
                creations.extend(self._top_up(node))
            if creations:
                await asyncio.gather(*creations, return_exceptions=True)

    def _refresh_nodes(self) -> None:
        import ray

        seen: set[str] = set()
        for info in ray.nodes():  # type: ignore[no-untyped-call]
            node_id = str(info.get("NodeID", ""))
            if not node_id:
                continue
            seen.add(node_id)
            state = self._nodes.get(node_id)
            if state is None:
                state = NodeState(node_id)
                self._nodes[node_id] = state
            state.alive = bool(info.get("Alive", False))
            state.address = str(info.get("NodeManagerAddress", ""))
            state.resources = {
                str(k): float(v)
                for k, v in (info.get("Resources") or {}).items()
                if not str(k).startswith("node:")
            }
            state.labels = {str(k): str(v) for k, v in (info.get("Labels") or {}).items()}
        for node_id, state in self._nodes.items():
            if node_id not in seen:
                state.alive = False

    async def _check_health(self) -> None:
        states = [s for s in self._actors.values() if s.ready]
        results = await raylib.gather_with_timeout(
            [s.handle.ping.remote() for s in states], self._config.health_timeout_seconds
        )
        for state, result in zip(states, results, strict=True):
            node = self._nodes.get(state.node_id)
            node_dead = node is not None and not node.alive
            if (isinstance(result, BaseException) and raylib.is_actor_gone(result)) or node_dead:
                self._actor_dead(state, "its actor died" if not node_dead else "its node died")

    def _actor_dead(self, state: ActorState, reason: str) -> None:
        self._actors.pop(state.name, None)
        raylib.kill(state.handle)
        for sid in state.sessions:
            self._sessions.pop(sid, None)
            self._session_nodes.pop(sid, None)
            self._lost[sid] = reason
        while len(self._lost) > _LOST_KEPT:
            self._lost.popitem(last=False)
        if state.sessions:
            logger.warning(
                "session actor %s lost %d sessions: %s", state.name, len(state.sessions), reason
            )

    def _top_up(self, node: NodeState) -> list[Any]:
        cfg = self._config
        wanted = [
            ("tool", cfg.tool_workers_per_node),
            ("guardrail", cfg.guardrail_workers_per_node),
            ("model", 1 if cfg.runs_local_model else 0),
        ]
        jobs: list[Any] = []
        for kind, target in wanted:
            have = sum(
                1 for s in self._actors.values() if s.kind == kind and s.node_id == node.node_id
            ) + sum(1 for n in self._starting if n.startswith(f"{kind}:{node.node_id}:"))
            for _ in range(max(0, target - have)):
                jobs.append(self._create(kind, node.node_id, 1))
        warm = sum(
            1
            for s in self._actors.values()
            if s.kind == "session"
            and s.node_id == node.node_id
            and not s.sessions
            and s.capacity == cfg.sessions_per_actor
        ) + sum(1 for n in self._starting if n.startswith(f"session:{node.node_id}:"))
        for _ in range(max(0, cfg.warm_pool_size - warm)):
            jobs.append(self._create("session", node.node_id, cfg.sessions_per_actor))
        return jobs

    def _trim_warm(self, node: NodeState) -> None:
        """Retire warm actors beyond the target (a refill that raced a session
        ending, or one that finished after its node was drained)."""
        cfg = self._config
        if any(n.startswith(f"session:{node.node_id}:") for n in self._starting):
            return  # settle first
        target = cfg.warm_pool_size if node.alive and not node.drained else 0
        warm = [
            s
            for s in self._actors.values()
            if s.kind == "session"
            and s.node_id == node.node_id
            and s.ready
            and not s.sessions
            and s.capacity == cfg.sessions_per_actor
        ]
        warm.sort(key=lambda s: s.created)
        for state in warm[target:]:
            self._retire(state)

    async def _create(self, kind: str, node_id: str, capacity: int) -> ActorState | None:
        from ray_realtime.actors import remote

        prefix = {
            "session": SESSION_PREFIX,
            "tool": TOOL_PREFIX,
            "guardrail": GUARD_PREFIX,
            "model": MODEL_PREFIX,
        }[kind]
        name = f"{prefix}{uuid.uuid4().hex[:12]}"
        token = f"{kind}:{node_id}:{name}"
        self._starting.add(token)
        try:
            options = raylib.actor_options(name=name, node_id=node_id)
            if kind == "session":
                handle = remote.SessionActor.options(**options).remote(capacity, name)
            elif kind == "tool":
                handle = remote.ToolWorkerActor.options(**options).remote()
            elif kind == "guardrail":
                handle = remote.GuardrailWorkerActor.options(**options).remote()
            else:
                handle = remote.LocalModelActor.options(**options).remote()
            state = ActorState(name, kind, node_id, handle, capacity=capacity)
            timeout = self._config.actor_start_timeout_seconds
            if kind == "model":
                state.url = str(await asyncio.wait_for(_await(handle.start.remote()), timeout))
            else:
                info = await asyncio.wait_for(_await(handle.ping.remote()), timeout)
                if isinstance(info, dict):
                    # A session actor's data plane address, handed out with placements.
                    state.url = str(info.get("data_url", ""))
            state.ready = True
            self._actors[name] = state
            if kind in ("tool", "guardrail"):
                self._spawn(self._push_workers(kind))
            return state
        except Exception as exc:
            logger.warning("starting a %s actor on node %s failed: %r", kind, node_id[:8], exc)
            return None
        finally:
            self._starting.discard(token)

    async def _push_workers(self, kind: str) -> None:
        workers = self._worker_list(kind)
        hosts = [s for s in self._actors.values() if s.kind == "session" and s.sessions]
        await raylib.gather_with_timeout(
            [s.handle.update_workers.remote(kind, workers) for s in hosts], 10.0
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _worker_list(self, kind: str) -> list[tuple[str, str, Any]]:
        return [
            (s.name, s.node_id, s.handle)
            for s in self._actors.values()
            if s.kind == kind and s.ready
        ]

    # ---------------------------------------------------------- placement

    async def place_session(
        self,
        session_id: str,
        requirement: dict[str, Any] | None = None,
        sessions_per_actor: int | None = None,
    ) -> dict[str, Any]:
        """Choose a node and a session actor for ``session_id`` (idempotent).

        Returns ``actor_name``, ``actor``, ``node_id``, ``model_url`` and the
        worker lists to hand to ``open_session``.
        """
        name = self._sessions.get(session_id)
        if name is None:
            capacity = sessions_per_actor or self._config.sessions_per_actor
            if capacity < 1:
                raise ConfigError("sessions_per_actor must be at least 1")
            req = PlacementRequirement(
                resources=dict((requirement or {}).get("resources") or {}),
                labels=dict((requirement or {}).get("labels") or {}),
            )
            node_id = self._choose_node(req, capacity)
            state = self._free_actor(node_id, capacity)
            if state is None:
                self._reserved[session_id] = node_id
                try:
                    state = await self._start_actor_for(node_id, capacity)
                finally:
                    self._reserved.pop(session_id, None)
                if state is not None and len(state.sessions) >= state.capacity:
                    # Its slots went to others meanwhile: a fresh actor then.
                    state = await self._create("session", node_id, capacity)
                if state is None:
                    raise SessionLostError(
                        f"could not start a session actor on node {node_id}", session_id
                    )
            # Placed again while the actor was starting: keep the first one.
            name = self._sessions.get(session_id)
            if name is None:
                state.sessions.add(session_id)
                self._sessions[session_id] = state.name
                self._session_nodes[session_id] = state.node_id
                name = state.name
                self.placements += 1
            self._spawn(self._refill(state.node_id))
        return self._placement(session_id, name)

    async def _start_actor_for(self, node_id: str, capacity: int) -> ActorState | None:
        """A new session actor for a placement. Packed placements that arrive
        while one is starting take its free slots instead of each starting
        another process."""
        key = (node_id, capacity)
        pending = self._pending_packed.get(key)
        if capacity > 1 and pending is not None and pending[1] < capacity:
            self._pending_packed[key] = (pending[0], pending[1] + 1)
            return await asyncio.shield(pending[0])
        future: asyncio.Future[ActorState | None] = asyncio.get_running_loop().create_future()
        if capacity > 1:
            self._pending_packed[key] = (future, 1)
        try:
            state = await self._create("session", node_id, capacity)
            future.set_result(state)
            return state
        except BaseException:
            future.set_result(None)
            raise
        finally:
            if self._pending_packed.get(key, (None, 0))[0] is future:
                del self._pending_packed[key]

    def _choose_node(self, req: PlacementRequirement, capacity: int) -> str:
        infos = self._node_infos()
        limit = self._config.max_sessions_per_node
        if capacity > 1:
            # Packing: fill a partly used actor of this size before opening
            # another one (each actor costs a process), on an eligible node.
            open_nodes = {
                s.node_id
                for s in self._actors.values()
                if s.kind == "session"
                and s.ready
                and s.capacity == capacity
                and 0 < len(s.sessions) < capacity
            } | {
                node_id
                for (node_id, size), (_, reserved) in self._pending_packed.items()
                if size == capacity and reserved < capacity
            }
            if open_nodes:
                try:
                    return choose_node(
                        [n for n in infos if n.node_id in open_nodes],
                        req,
                        max_sessions_per_node=limit,
                    )
                except NoCapacityError:
                    pass
        return choose_node(infos, req, max_sessions_per_node=limit)

    async def _refill(self, node_id: str) -> None:
        # A short pause lets actors of sessions that are ending come back to the
        # pool first: short sessions then reuse actors instead of each one
        # starting a process (~0.8 s of CPU) while another is retired.
        await asyncio.sleep(self._config.refill_delay_seconds)
        node = self._nodes.get(node_id)
        if node is not None and node.alive and not node.drained:
            await asyncio.gather(*self._top_up(node), return_exceptions=True)

    def _placement(self, session_id: str, actor_name: str) -> dict[str, Any]:
        state = self._actors[actor_name]
        model = next(
            (
                s
                for s in self._actors.values()
                if s.kind == "model" and s.node_id == state.node_id and s.ready
            ),
            None,
        )
        return {
            "session_id": session_id,
            "actor_name": actor_name,
            "actor": state.handle,
            "node_id": state.node_id,
            "model_url": model.url if model else "",
            "data_url": state.url,
            "open_attach": self._config.open_attach,
            "tool_workers": self._worker_list("tool"),
            "guardrail_workers": self._worker_list("guardrail"),
        }

    def _free_actor(self, node_id: str, capacity: int) -> ActorState | None:
        candidates = [
            s
            for s in self._actors.values()
            if s.kind == "session"
            and s.ready
            and s.node_id == node_id
            and s.capacity == capacity
            and len(s.sessions) < s.capacity
        ]
        if not candidates:
            return None
        # Pack: the fullest actor that still has room.
        return max(candidates, key=lambda s: (len(s.sessions), -s.created))

    def _node_infos(self) -> list[NodeInfo]:
        counts: dict[str, int] = {}
        for node_id in [*self._session_nodes.values(), *self._reserved.values()]:
            counts[node_id] = counts.get(node_id, 0) + 1
        return [
            NodeInfo(
                node_id=n.node_id,
                capacity=self._config.max_sessions_per_node,
                sessions=counts.get(n.node_id, 0),
                drained=n.drained,
                alive=n.alive,
                resources=n.resources,
                labels=n.labels,
            )
            for n in self._nodes.values()
        ]

    # ------------------------------------------------------------ registry

    async def lookup(self, session_id: str) -> dict[str, Any]:
        """Where a session lives; :class:`SessionNotFoundError` /
        :class:`SessionLostError` when it is gone."""
        name = self._sessions.get(session_id)
        if name is not None and name in self._actors:
            return self._placement(session_id, name)
        if session_id in self._lost:
            raise SessionLostError(
                f"session {session_id} was lost: {self._lost[session_id]}", session_id
            )
        raise SessionNotFoundError(f"no live session {session_id}", session_id)

    async def session_ended(self, session_id: str, actor_name: str = "") -> None:
        """A session closed (or failed to open): free its slot; idempotent."""
        name = self._sessions.pop(session_id, None) or actor_name
        self._session_nodes.pop(session_id, None)
        state = self._actors.get(name) if name else None
        if state is None:
            return
        state.sessions.discard(session_id)
        if state.sessions or state.capacity != self._config.sessions_per_actor:
            if not state.sessions and state.capacity != self._config.sessions_per_actor:
                self._retire(state)
            return
        warm = sum(
            1
            for s in self._actors.values()
            if s.kind == "session"
            and s.node_id == state.node_id
            and not s.sessions
            and s.capacity == state.capacity
        )
        node = self._nodes.get(state.node_id)
        if warm > self._config.warm_pool_size or (node is not None and node.drained):
            self._retire(state)

    def _retire(self, state: ActorState) -> None:
        self._actors.pop(state.name, None)
        raylib.kill(state.handle)

    async def list_sessions(self) -> list[dict[str, str]]:
        """Every live session: id, node and actor."""
        return [
            {"session_id": sid, "node_id": self._session_nodes.get(sid, ""), "actor_name": name}
            for sid, name in self._sessions.items()
        ]

    async def worker_died(self, name: str) -> None:
        """A session saw a worker die: forget it; the next round replaces it."""
        state = self._actors.get(name)
        if state is not None:
            self._actor_dead(state, "worker died")
            self._spawn(self.reconcile())

    # -------------------------------------------------------------- agents

    async def register_agent(self, name: str, payload: bytes) -> int:
        """Register (a new version of) an agent by name; returns its version."""
        version = self._agents.get(name, (0, b""))[0] + 1
        self._agents[name] = (version, payload)
        return version

    async def get_agent(self, name: str) -> tuple[int, bytes] | None:
        """The newest registered version of an agent, or None."""
        return self._agents.get(name)

    async def list_agents(self) -> dict[str, int]:
        """Registered agent names and their versions."""
        return {name: entry[0] for name, entry in self._agents.items()}

    # --------------------------------------------------------------- nodes

    async def drain_node(self, node_id: str, drained: bool = True) -> None:
        """Stop (or resume) placing new sessions on a node; its sessions stay."""
        self._refresh_nodes()
        node = self._nodes.get(node_id)
        if node is None:
            raise ConfigError(f"unknown node {node_id}")
        node.drained = drained
        if drained:
            for state in list(self._actors.values()):
                if state.kind == "session" and state.node_id == node_id and not state.sessions:
                    self._retire(state)

    async def status(self) -> dict[str, Any]:
        """Nodes, sessions per node, pool sizes and warm pool, for ``status``."""
        nodes = []
        for node in self._nodes.values():
            mine = [s for s in self._actors.values() if s.node_id == node.node_id]
            nodes.append(
                {
                    "node_id": node.node_id,
                    "address": node.address,
                    "alive": node.alive,
                    "drained": node.drained,
                    "sessions": sum(1 for n in self._session_nodes.values() if n == node.node_id),
                    "session_actors": sum(1 for s in mine if s.kind == "session"),
                    "warm": sum(1 for s in mine if s.kind == "session" and not s.sessions),
                    "tool_workers": sum(1 for s in mine if s.kind == "tool"),
                    "guardrail_workers": sum(1 for s in mine if s.kind == "guardrail"),
                    "model_servers": sum(1 for s in mine if s.kind == "model"),
                }
            )
        return {
            "nodes": nodes,
            "sessions": len(self._sessions),
            "lost_sessions": len(self._lost),
            "agents": {name: v for name, (v, _) in self._agents.items()},
            "placements": self.placements,
            "config": self._config.to_dict(),
        }

    async def ping(self) -> str:
        """Liveness."""
        return "ok"


def _kind_of(name: str) -> str | None:
    for prefix, kind in (
        (SESSION_PREFIX, "session"),
        (TOOL_PREFIX, "tool"),
        (GUARD_PREFIX, "guardrail"),
        (MODEL_PREFIX, "model"),
    ):
        if name.startswith(prefix):
            return kind
    return None


async def _await(ref: Any) -> Any:
    return await ref
