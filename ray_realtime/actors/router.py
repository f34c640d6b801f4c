"""The router: the actor shell that composes the service's control-plane parts.

One named, detached actor per cluster. It is a reconciling controller: it
holds a target (on every live, undrained node: N tool workers, N guardrail
workers, a local model server when configured, and a warm pool of ready
session actors) and a loop moves the actual state toward it, replacing what
died. State-changing calls are idempotent (placing the same session id twice
returns the same placement), and the state is rebuilt after a restart from the
named actors it finds in the project's namespace.

Tool and guardrail workers are watched, not only polled: the router keeps one
``wait_retire`` call pending on each, which fails the moment Ray reports the
worker's death and returns when the worker retires (its threads are stuck).
Either way the router pushes the worker list without it to the session
actors at once, starts the replacement, and pushes again when it is ready;
a retiring worker is killed once its calls in flight are done (bounded by
``worker_retire_grace_seconds``).

The state lives in plain parts, each tested without Ray:

* :class:`~ray_realtime.cluster.node_table.NodeTable`: the cluster's nodes;
* :class:`~ray_realtime.cluster.fleet.Fleet`: the actors it runs, as typed records;
* :class:`~ray_realtime.cluster.session_registry.SessionRegistry`: session -> actor;
* :class:`~ray_realtime.cluster.agent_registry.AgentRegistry`: registered agents
  (handoffs) and the agents open sessions run (status);
* :class:`~ray_realtime.cluster.pools.WorkerPools` and
  :class:`~ray_realtime.cluster.pools.WarmPool`: what each node should run;
* :class:`~ray_realtime.cluster.placer.Placer`: the node for a session, around
  the pure policy :func:`~ray_realtime.cluster.placement.choose_node`.

This shell gathers inputs, applies the parts' answers and makes every Ray
call through :class:`~ray_realtime.actors.router_ops.RouterOps` (off the event
loop where Ray blocks). Every public method waits, bounded, until the router
has rebuilt its state and seen the cluster's nodes, so calls that arrive at a
fresh or restarted router wait instead of failing or answering from an empty
registry; a router that cannot rebuild raises :class:`ServiceNotRunningError`
to every caller instead of serving empty.

This is a plain class; :mod:`ray_realtime.actors.remote` makes it an actor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from ray_realtime.actors.logs import configure_actor_logging
from ray_realtime.actors.metrics import record as record_metric
from ray_realtime.actors.router_ops import RayRouterOps, RouterOps
from ray_realtime.actors.turn_stats import merge_snapshots
from ray_realtime.cluster.agent_registry import AgentRegistry
from ray_realtime.cluster.fleet import (
    ActorKind,
    ActorRecord,
    Fleet,
    StartingActor,
    record_from_ping,
)
from ray_realtime.cluster.node_table import NodeRecord, NodeTable
from ray_realtime.cluster.placement import PlacementRequirement
from ray_realtime.cluster.placer import Placer
from ray_realtime.cluster.pools import WarmPool, WorkerPools
from ray_realtime.cluster.service_config import ServiceConfig
from ray_realtime.cluster.session_registry import SessionRecord, SessionRegistry
from ray_realtime.exceptions import (
    ConfigError,
    NoCapacityError,
    ServiceNotRunningError,
    SessionLostError,
    SessionNotFoundError,
)

__all__ = ["Router"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

REBUILD_BACKOFF = (0.1, 0.2, 0.4, 0.8)
"""Pauses between the tries to list the service's actors after a (re)start;
one more try than pauses, then the router fails loudly."""

_NODE_WAIT_FIRST_DELAY = 0.05
_SHUTDOWN_CLOSE_SECONDS = 5.0
_PUSH_WORKERS_SECONDS = 10.0
# A worker's watch call returns this often when nothing happens (each round
# also hands the worker the service's stuck-thread limit again).
_WORKER_WATCH_SECONDS = 60.0
_WORKER_KINDS = (ActorKind.TOOL, ActorKind.GUARDRAIL)
# A session actor's watch call returns after this long and is made again; its
# error is how the router learns at once that the actor died.
_SESSION_WATCH_SECONDS = 600.0
_RECOVERY_TRIES = 3


class Router:
    """The ray-realtime control plane."""

    def __init__(self, config: dict[str, Any] | None = None, ops: RouterOps | None = None) -> None:
        configure_actor_logging()
        self._config = ServiceConfig.from_dict(config)
        self._ops: RouterOps = ops if ops is not None else RayRouterOps()
        self._nodes = NodeTable()
        self._fleet = Fleet()
        self._sessions = SessionRegistry()
        self._agents = AgentRegistry()
        self._workers = WorkerPools(self._config, self._fleet)
        self._warm = WarmPool(self._config, self._fleet)
        self._placer = Placer(
            self._nodes, self._sessions, self._fleet, self._config.max_sessions_per_node
        )
        self._startup: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._reconcile_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Kills in flight; shutdown waits for them rather than cancelling them.
        self._kills: set[asyncio.Task[Any]] = set()
        self._starts: set[asyncio.Task[Any]] = set()
        # Recovery: one watch call in flight per session actor with sessions,
        # and one recovery task per session being re-placed.
        self._watched: dict[str, asyncio.Task[None]] = {}
        self._recoveries: dict[str, asyncio.Task[dict[str, Any]]] = {}

    # ----------------------------------------------------------- lifecycle

    async def start(self) -> dict[str, Any]:
        """Rebuild state from live actors, reach the target once, start the
        control loop; idempotent. Returns :meth:`status`."""
        await self._wait_started()
        return await self.status()

    async def _wait_started(self) -> None:
        """Start the router once and wait for it, bounded. Any call may be the
        first (callers that found the router by name do not wait for the one
        that deployed it); a start that failed is tried again by the next call."""
        task = self._startup
        if task is not None and task.done() and not task.cancelled() and not task.exception():
            return  # started: the common case costs nothing
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._start_once())
            self._startup = task
        bound = self._startup_bound()
        try:
            await asyncio.wait_for(asyncio.shield(task), bound)
        except TimeoutError:
            raise ServiceNotRunningError(
                f"the ray-realtime router is still starting after {bound:g} s"
            ) from None

    def _startup_bound(self) -> float:
        # The start's own steps are each bounded: listing (with its retries),
        # pinging what was found, one reconcile (nodes, health, actor starts).
        cfg = self._config
        listing = (len(REBUILD_BACKOFF) + 1) * cfg.health_timeout_seconds + sum(REBUILD_BACKOFF)
        return listing + 3 * cfg.health_timeout_seconds + cfg.actor_start_timeout_seconds + 5.0

    async def _start_once(self) -> None:
        await self._rebuild()
        try:
            await self.reconcile()
        except Exception:
            # Placement refreshes the nodes itself; the loop reaches the target.
            logger.exception("router's first reconcile failed; the control loop retries")
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._control_loop())

    async def shutdown(self) -> None:
        """Stop every actor of the service (the router itself is killed by the caller)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
        for task in [*self._tasks, *self._watched.values(), *self._recoveries.values()]:
            task.cancel()
        records = self._fleet.clear()
        self._sessions.clear()
        hosts = [r.handle for r in records if r.kind is ActorKind.SESSION]
        await self._ops.call_many(hosts, "close_all", timeout=_SHUTDOWN_CLOSE_SECONDS)
        await asyncio.gather(
            *self._kills, *(self._ops.kill(r.handle) for r in records), return_exceptions=True
        )

    async def _control_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.health_interval_seconds)
            try:
                await self.reconcile()
            except Exception:
                logger.exception("router reconcile failed; retrying next round")

    # ------------------------------------------------------------ rebuild

    async def _rebuild(self) -> None:
        """Adopt the service's running actors and the sessions they host.
        Listing them is retried; when it keeps failing the start fails with
        :class:`ServiceNotRunningError` (an empty registry would orphan live
        sessions and answer "not found" for them)."""
        found = await self._with_retries("list the service's actors", self._find_actors)
        infos = await self._ops.call_many(
            [handle for _, _, handle in found], "ping", timeout=self._config.health_timeout_seconds
        )
        for (name, kind, handle), info in zip(found, infos, strict=True):
            if isinstance(info, BaseException):
                continue
            record = record_from_ping(name, kind, handle, info)
            self._fleet.add(record)
            if kind in _WORKER_KINDS:
                self._spawn(self._watch_worker(record))
            for session_id in record.sessions:
                self._sessions.adopt(session_id, name, record.node_id)
            if record.kind is ActorKind.SESSION and record.sessions:
                if self._config.stores_sessions:
                    self._watch_actor(record)
        if found:
            logger.info(
                "router rebuilt %d actors, %d sessions", len(self._fleet), len(self._sessions)
            )
        if self._config.stores_sessions:
            unsure = any(
                kind is ActorKind.SESSION
                and isinstance(info, BaseException)
                and not self._ops.is_gone(info)
                for (_, kind, _), info in zip(found, infos, strict=True)
            )
            await self._recover_unhosted(unsure)

    async def _recover_unhosted(self, unsure: bool) -> None:
        """Recover the stored sessions no live actor hosts: their actor died
        while no router watched it (the router was killed during a recovery,
        or before it noticed). Skipped when a session actor did not answer
        the rebuild's ping: it may host them, and a second copy must not run."""
        listing = getattr(self._ops, "stored_sessions", None)
        if listing is None:
            return
        if unsure:
            logger.warning("router rebuild: a session actor did not answer; no store scan")
            return
        try:
            stored: list[str] = await asyncio.wait_for(
                listing(self._config.store), self._config.health_timeout_seconds
            )
        except Exception as exc:
            logger.warning("router rebuild could not list the session store: %r", exc)
            return
        unhosted = [sid for sid in stored if self._sessions.get(sid) is None]
        for session_id in unhosted:
            self._start_recovery(session_id, "", self._config.sessions_per_actor)
        if unhosted:
            logger.warning("router rebuild: recovering %d stored sessions", len(unhosted))

    async def _find_actors(self) -> list[tuple[str, ActorKind, Any]]:
        named: list[tuple[str, ActorKind]] = []
        for name in await self._ops.list_actor_names():
            kind = ActorKind.of_name(name)
            if kind is not None:
                named.append((name, kind))
        handles = await asyncio.gather(*(self._ops.get_actor(name) for name, _ in named))
        return [(n, k, h) for (n, k), h in zip(named, handles, strict=True) if h is not None]

    async def _with_retries(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        last: BaseException | None = None
        tries = len(REBUILD_BACKOFF) + 1
        for n in range(tries):
            try:
                return await asyncio.wait_for(attempt(), self._config.health_timeout_seconds)
            except Exception as exc:
                last = exc
                logger.warning("router could not %s (try %d of %d): %r", what, n + 1, tries, exc)
            if n < len(REBUILD_BACKOFF):
                await asyncio.sleep(REBUILD_BACKOFF[n])
        raise ServiceNotRunningError(
            f"the ray-realtime router could not {what} after {tries} tries "
            f"({type(last).__name__}: {last}); it does not serve with a state it could "
            "not rebuild, which would orphan live sessions. Retry once the Ray cluster answers."
        ) from last

    # ---------------------------------------------------------- reconcile

    async def reconcile(self) -> None:
        """One round: refresh nodes, find dead actors, start what is missing."""
        async with self._reconcile_lock:
            await self._refresh_nodes()
            await self._check_health()
            starts: list[asyncio.Task[ActorRecord | None]] = []
            for node in self._nodes:
                for record in self._warm.surplus(node):
                    self._retire(record)
                if node.open:
                    starts.extend(self._top_up(node))
            if starts:
                await asyncio.gather(*starts, return_exceptions=True)
            for node in self._nodes:
                record_metric("warm", float(len(self._warm.warm(node.node_id))), node=node.node_id)

    async def _refresh_nodes(self) -> None:
        raw = await asyncio.wait_for(self._ops.nodes(), self._config.health_timeout_seconds)
        self._nodes.update(raw)

    async def _check_health(self) -> None:
        records = list(self._fleet)
        results = await self._ops.call_many(
            [r.handle for r in records], "ping", timeout=self._config.health_timeout_seconds
        )
        for record, result in zip(records, results, strict=True):
            node_dead = self._nodes.is_dead(record.node_id)
            gone = isinstance(result, BaseException) and self._ops.is_gone(result)
            if node_dead or gone:
                self._actor_dead(record, "its node died" if node_dead else "its actor died")

    def _actor_dead(self, record: ActorRecord, reason: str, *, planned: bool = False) -> None:
        """Forget (and kill) a session or worker actor; a session actor's
        sessions are recovered elsewhere from the store. ``planned``: a drain
        moves them (the actor handed its sessions over first)."""
        if self._fleet.get(record.name) is not record:
            return  # already handled (the watch and the health check both see it)
        self._fleet.remove(record.name)
        self._kill(record.handle)
        if record.kind in _WORKER_KINDS:
            # Sessions stop sending to it now, not when the replacement is up.
            self._spawn(self._push_workers(record.kind))
        watch = self._watched.pop(record.name, None)
        if watch is not None and watch is not asyncio.current_task():
            watch.cancel()
        if record.kind is ActorKind.SESSION and record.sessions and self._config.stores_sessions:
            # The sessions' state is in the store: re-place each on another actor.
            for session_id in record.sessions:
                self._sessions.remove(session_id)
                self._start_recovery(session_id, record.node_id, record.capacity, planned)
            logger.log(
                logging.INFO if planned else logging.WARNING,
                "session actor %s %s (%s): recovering %d sessions",
                record.name,
                "stopped" if planned else "died",
                reason,
                len(record.sessions),
            )
            return
        self._sessions.lose(record.sessions, reason)
        self._agents.forget_sessions(record.sessions)
        if record.sessions:
            logger.warning(
                "session actor %s lost %d sessions: %s", record.name, len(record.sessions), reason
            )

    # ------------------------------------------------------------ recovery

    def _watch_actor(self, record: ActorRecord) -> None:
        """Keep a watch call in flight to a session actor that hosts sessions."""
        task = self._watched.get(record.name)
        if task is None or task.done():
            self._watched[record.name] = asyncio.get_running_loop().create_task(self._watch(record))

    async def _watch(self, record: ActorRecord) -> None:
        timeout = _SESSION_WATCH_SECONDS + self._config.health_timeout_seconds
        while self._fleet.get(record.name) is record and record.sessions:
            try:
                await self._ops.call(
                    record.handle, "watch", _SESSION_WATCH_SECONDS, timeout=timeout
                )
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                continue
            except Exception as exc:
                if self._ops.is_gone(exc):
                    self._actor_dead(record, "its actor died")
                # Anything else: the periodic health check still covers it.
                break
        if self._watched.get(record.name) is asyncio.current_task():
            del self._watched[record.name]

    def _start_recovery(
        self, session_id: str, node_id: str, capacity: int, planned: bool = False
    ) -> None:
        if session_id not in self._recoveries:
            task = asyncio.get_running_loop().create_task(
                self._recover(session_id, node_id, capacity, planned)
            )
            task.add_done_callback(self._recovery_done)
            self._recoveries[session_id] = task

    def _recovery_done(self, task: asyncio.Task[dict[str, Any]]) -> None:
        for session_id, running in list(self._recoveries.items()):
            if running is task:
                del self._recoveries[session_id]
        if not task.cancelled() and task.exception() is not None:
            logger.warning("session recovery failed: %r", task.exception())

    async def _recover(
        self, session_id: str, node_id: str, capacity: int, planned: bool = False
    ) -> dict[str, Any]:
        """Re-place a session whose actor died on another (warm) actor, which
        restores it from the store; its placement. The session counts as lost
        when every try failed. ``planned``: a drain moves it (reason
        ``drained``; its node is alive, so a retry does not wait for it to die)."""
        last: BaseException | None = None
        for attempt in range(_RECOVERY_TRIES):
            try:
                await self._refresh_nodes()
            except Exception as exc:
                logger.warning("router could not list the nodes during a recovery: %r", exc)
            if attempt and node_id and not planned and not self._nodes.is_dead(node_id):
                # The last try found the dead actor's node unusable: it is
                # probably leaving; wait (bounded) until Ray says so.
                await self._wait_node_dead(node_id)
            reason = "node_lost" if self._nodes.is_dead(node_id) else "actor_died"
            if planned:
                reason = "drained"
            try:
                target = self._placer.choose_node(PlacementRequirement(), capacity)
                actor = self._fleet.free_session_actor(target, capacity)
                if actor is None:
                    actor = await self._start_for_placement(session_id, target, capacity)
                actor.sessions.add(session_id)
                options = {
                    "reason": reason,
                    "model_url": self._fleet.model_url(actor.node_id),
                    "tool_workers": self._fleet.workers(ActorKind.TOOL),
                    "guardrail_workers": self._fleet.workers(ActorKind.GUARDRAIL),
                }
                try:
                    await self._ops.call(
                        actor.handle,
                        "restore_session",
                        session_id,
                        options,
                        timeout=self._config.actor_start_timeout_seconds,
                    )
                except BaseException as exc:
                    if not self._placed_on(session_id, actor.name):
                        actor.sessions.discard(session_id)
                    if self._ops.is_gone(exc):
                        self._actor_dead(actor, "its actor died")
                    raise
                record = self._sessions.place(session_id, actor.name, actor.node_id)
                self._watch_actor(actor)
                self._spawn(self._refill(actor.node_id))
                return self._placement(record)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                last = exc
                if isinstance(exc, SessionLostError):
                    break  # the store cannot give it back: no point trying elsewhere
                logger.warning("recovering session %s failed, trying again: %r", session_id, exc)
        again = self._sessions.get(session_id)
        if again is not None and again.actor_name in self._fleet:
            # A session that had not opened when its actor died (nothing in
            # the store): its handle placed it again, and that placement holds.
            return self._placement(again)
        self._sessions.lose([session_id], f"its actor died and recovery failed: {last!r}")
        self._agents.forget_sessions([session_id])
        forget = getattr(self._ops, "forget_stored", None)
        if forget is not None:
            # Lost for good: a later router's rebuild must not bring it back.
            try:
                await asyncio.wait_for(
                    forget(self._config.store, session_id), self._config.health_timeout_seconds
                )
            except Exception as exc:
                logger.warning(
                    "could not delete lost session %s from the store: %r", session_id, exc
                )
        raise SessionLostError(f"session {session_id} could not be recovered: {last!r}", session_id)

    def _placed_on(self, session_id: str, actor_name: str) -> bool:
        record = self._sessions.get(session_id)
        return record is not None and record.actor_name == actor_name

    async def _wait_node_dead(self, node_id: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.health_timeout_seconds
        while not self._nodes.is_dead(node_id) and loop.time() < deadline:
            await asyncio.sleep(0.2)
            try:
                await self._refresh_nodes()
            except Exception as exc:
                logger.warning("router could not list the nodes during a recovery: %r", exc)

    async def recover_session(self, session_id: str) -> dict[str, Any]:
        """Where a session lives now, after a handle found its actor gone:
        waits for its recovery (started here if the router had not noticed
        the death yet). :class:`SessionLostError` when it cannot be recovered,
        :class:`SessionNotFoundError` for an unknown id. Bounded by the
        recovery's own steps; callers bound it further."""
        await self._wait_started()
        record = self._sessions.get(session_id)
        actor = self._fleet.get(record.actor_name) if record is not None else None
        if actor is not None:
            try:
                await self._ops.call(
                    actor.handle, "ping", timeout=self._config.health_timeout_seconds
                )
            except Exception as exc:
                if not self._ops.is_gone(exc):
                    raise ServiceNotRunningError(
                        f"the actor of session {session_id} does not answer: {exc!r}"
                    ) from None
                self._actor_dead(actor, "its actor died")
            else:
                return self._placement(record)  # type: ignore[arg-type]
        task = self._recoveries.get(session_id)
        if task is None:
            return await self.lookup(session_id)
        return await asyncio.shield(task)

    async def store_config(self) -> Any:
        """The session store session actors write to (None when off)."""
        return self._config.store if self._config.stores_sessions else None

    async def worker_lists(self) -> dict[str, list[tuple[str, str, Any]]]:
        """The ready tool and guardrail workers, as ``update_workers`` pushes
        them (a new session actor asks once, while it warms up)."""
        return {
            kind.value: self._fleet.workers(kind) for kind in (ActorKind.TOOL, ActorKind.GUARDRAIL)
        }

    def _top_up(self, node: NodeRecord) -> list[asyncio.Task[ActorRecord | None]]:
        starts = [
            self._create(kind, node.node_id, 1) for kind in self._workers.missing(node.node_id)
        ]
        for _ in range(self._warm.deficit(node)):
            starts.append(self._create(ActorKind.SESSION, node.node_id, self._warm.actor_size))
        return starts

    def _create(
        self, kind: ActorKind, node_id: str, capacity: int, *, for_placement: bool = False
    ) -> asyncio.Task[ActorRecord | None]:
        """Start an actor. It counts as starting from now on (so concurrent
        top-ups do not start it twice) until the returned task ends, however
        it ends."""
        starting = StartingActor(kind.new_name(), kind, node_id, capacity, for_placement)
        self._fleet.begin_start(starting)
        task = asyncio.get_running_loop().create_task(self._start_actor(starting))
        task.add_done_callback(lambda _: self._fleet.end_start(starting.name))
        return task

    async def _start_actor(self, s: StartingActor) -> ActorRecord | None:
        timeout = self._config.actor_start_timeout_seconds
        try:
            create = self._ops.create(s.kind, s.name, s.node_id, s.capacity)
            handle = await asyncio.wait_for(create, timeout)
            record = ActorRecord(s.name, s.kind, s.node_id, handle, capacity=s.capacity)
            if s.kind is ActorKind.MODEL:
                record.url = str(await self._ops.call(handle, "start", timeout=timeout))
            else:
                info = await self._ops.call(handle, "ping", timeout=timeout)
                if isinstance(info, dict):
                    # A session actor's data plane address, handed out with placements.
                    record.url = str(info.get("data_url", ""))
            self._fleet.add(record)
            if s.kind in _WORKER_KINDS:
                self._spawn(self._push_workers(s.kind))
                self._spawn(self._watch_worker(record))
            return record
        except Exception as exc:
            logger.warning(
                "starting a %s actor on node %s failed: %r", s.kind.value, s.node_id[:8], exc
            )
            return None

    async def _watch_worker(self, record: ActorRecord) -> None:
        """Keep a ``wait_retire`` call pending on a worker while it is in the
        fleet: its death (Ray fails the call at once) or its retirement is
        acted on at once, not at the next health round."""
        cfg = self._config
        while self._fleet.get(record.name) is record:
            try:
                retire = await self._ops.call(
                    record.handle,
                    "wait_retire",
                    cfg.worker_stuck_threads,
                    _WORKER_WATCH_SECONDS,
                    timeout=_WORKER_WATCH_SECONDS + cfg.health_timeout_seconds,
                )
            except Exception as exc:
                if self._fleet.get(record.name) is not record:
                    return
                if self._ops.is_gone(exc):
                    self._worker_lost(record, "its actor died")
                    return
                # A slow or confused worker: the health rounds judge it.
                logger.warning("watching worker %s failed: %r", record.name, exc)
                await asyncio.sleep(cfg.health_interval_seconds)
                continue
            if retire and self._fleet.get(record.name) is record:
                await self._retire_worker(record)
                return

    def _worker_lost(self, record: ActorRecord, reason: str) -> None:
        """A worker died: forget it, tell the sessions, start its replacement."""
        logger.warning("%s worker %s is gone: %s", record.kind.value, record.name, reason)
        self._actor_dead(record, reason)
        self._replace_on(record.node_id)

    def _replace_on(self, node_id: str) -> None:
        node = self._nodes.get(node_id)
        if node is not None and node.open:
            # Held (not cancelled at shutdown: a start cut short would leave
            # an actor no one knows), so they are not collected mid-start.
            for task in self._top_up(node):
                self._starts.add(task)
                task.add_done_callback(self._starts.discard)

    async def _retire_worker(self, record: ActorRecord) -> None:
        """A worker asked to retire (stuck threads): take it out of the fleet
        and the sessions' pools, start its replacement, and kill it once its
        calls in flight are done, or after the grace period."""
        logger.warning("%s worker %s retires (stuck threads)", record.kind.value, record.name)
        self._fleet.remove(record.name)
        self._spawn(self._push_workers(record.kind))
        self._replace_on(record.node_id)
        try:
            await self._ops.call(
                record.handle, "wait_idle", timeout=self._config.worker_retire_grace_seconds
            )
        except Exception as exc:
            if not self._ops.is_gone(exc):
                logger.warning("retiring worker %s did not go idle: %r", record.name, exc)
        finally:
            # Also when shutdown cancels the wait: it is no longer in the fleet,
            # so nothing else would stop it.
            self._kill(record.handle)

    async def _push_workers(self, kind: ActorKind) -> None:
        # Warm actors too: a session opened on one uses the lists it holds
        # (the handle does not carry them), so they must stay current.
        hosts = [r.handle for r in self._fleet.of_kind(ActorKind.SESSION)]
        workers = self._fleet.workers(kind)
        await self._ops.call_many(
            hosts, "update_workers", kind.value, workers, timeout=_PUSH_WORKERS_SECONDS
        )

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _kill(self, handle: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._ops.kill(handle))
        self._kills.add(task)
        task.add_done_callback(self._kills.discard)

    def _retire(self, record: ActorRecord) -> None:
        self._fleet.remove(record.name)
        self._kill(record.handle)

    # ---------------------------------------------------------- placement

    async def place_session(
        self,
        session_id: str,
        requirement: dict[str, Any] | None = None,
        sessions_per_actor: int | None = None,
    ) -> dict[str, Any]:
        """Choose a node and a session actor for ``session_id`` (idempotent).

        Returns ``actor_name``, ``actor``, ``node_id``, ``model_url``,
        ``data_url`` and ``open_attach``: what ``open_session`` needs (the
        actor holds the worker lists; :meth:`lookup` also says them).
        A placement that fails counts in the ``placement_failures`` metric.
        """
        try:
            return await self._place_session(session_id, requirement, sessions_per_actor)
        except Exception as exc:
            record_metric("placement_failures", 1.0, reason=type(exc).__name__)
            raise

    async def _place_session(
        self,
        session_id: str,
        requirement: dict[str, Any] | None,
        sessions_per_actor: int | None,
    ) -> dict[str, Any]:
        await self._wait_started()
        record = self._sessions.get(session_id)
        if record is None:
            capacity = sessions_per_actor or self._config.sessions_per_actor
            if capacity < 1:
                raise ConfigError("sessions_per_actor must be at least 1")
            req = PlacementRequirement(
                resources=dict((requirement or {}).get("resources") or {}),
                labels=dict((requirement or {}).get("labels") or {}),
            )
            await self._wait_for_nodes()
            t0 = asyncio.get_running_loop().time()
            node_id = self._placer.choose_node(req, capacity)
            actor = self._fleet.free_session_actor(node_id, capacity)
            start = "warm" if actor is not None else "cold"
            if actor is None:
                actor = await self._start_for_placement(session_id, node_id, capacity)
            record_metric("starts", 1.0, node=node_id, start=start)
            seconds = asyncio.get_running_loop().time() - t0
            record_metric("start_seconds", seconds, node=node_id, start=start)
            # Placed again while the actor was starting: the first placement holds.
            record = self._sessions.get(session_id)
            if record is None:
                actor.sessions.add(session_id)
                record = self._sessions.place(session_id, actor.name, actor.node_id)
            if self._config.stores_sessions:
                self._watch_actor(actor)
            self._spawn(self._refill(actor.node_id))
        # Without the workers' handles: each one costs the caller to take in.
        return self._placement(record, workers=False)

    async def _start_for_placement(
        self, session_id: str, node_id: str, capacity: int
    ) -> ActorRecord:
        def start() -> Awaitable[ActorRecord | None]:
            return self._create(ActorKind.SESSION, node_id, capacity, for_placement=True)

        with self._sessions.reserving(session_id, node_id):
            actor = await self._placer.start_shared(node_id, capacity, start)
        if actor is not None and not actor.has_room:
            # Its slots went to others meanwhile: a fresh actor then.
            actor = await start()
        if actor is None:
            raise SessionLostError(f"could not start a session actor on node {node_id}", session_id)
        return actor

    async def _wait_for_nodes(self) -> None:
        """Placement needs the cluster's nodes: when none is known alive, look
        again with a short backoff, bounded; the policy then says why not."""
        if self._nodes.has_live_node():
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.health_timeout_seconds
        delay = _NODE_WAIT_FIRST_DELAY
        while True:
            try:
                await self._refresh_nodes()
            except Exception as exc:
                logger.warning("router could not list the cluster's nodes: %r", exc)
            remaining = deadline - loop.time()
            if self._nodes.has_live_node() or remaining <= 0:
                return
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)

    async def _refill(self, node_id: str) -> None:
        # A short pause lets actors of sessions that are ending come back to the
        # pool first: short sessions then reuse actors instead of each one
        # starting a process while another is retired.
        await asyncio.sleep(self._config.refill_delay_seconds)
        node = self._nodes.get(node_id)
        if node is not None and node.open:
            await asyncio.gather(*self._top_up(node), return_exceptions=True)

    def _placement(self, record: SessionRecord, *, workers: bool = True) -> dict[str, Any]:
        actor = self._fleet.get(record.actor_name)
        assert actor is not None
        # Addresses and handles only: a session's secrets never pass the router.
        placement = {
            "session_id": record.session_id,
            "actor_name": record.actor_name,
            "actor": actor.handle,
            "node_id": actor.node_id,
            "model_url": self._fleet.model_url(actor.node_id),
            "data_url": actor.url,
            "open_attach": self._config.open_attach,
        }
        if workers:
            placement["tool_workers"] = self._fleet.workers(ActorKind.TOOL)
            placement["guardrail_workers"] = self._fleet.workers(ActorKind.GUARDRAIL)
        return placement

    # ------------------------------------------------------------ registry

    async def lookup(self, session_id: str) -> dict[str, Any]:
        """Where a session lives; :class:`SessionNotFoundError` /
        :class:`SessionLostError` when it is gone."""
        await self._wait_started()
        record = self._sessions.get(session_id)
        if record is not None and record.actor_name in self._fleet:
            return self._placement(record)
        recovering = self._recoveries.get(session_id)
        if recovering is not None:
            return await asyncio.shield(recovering)
        reason = self._sessions.lost_reason(session_id)
        if reason is not None:
            raise SessionLostError(f"session {session_id} was lost: {reason}", session_id)
        raise SessionNotFoundError(f"no live session {session_id}", session_id)

    async def session_ended(self, session_id: str, actor_name: str = "") -> None:
        """A session closed (or failed to open): free its slot; idempotent."""
        await self._wait_started()
        record = self._sessions.remove(session_id)
        self._agents.forget_sessions([session_id])
        name = record.actor_name if record is not None else actor_name
        actor = self._fleet.get(name) if name else None
        if actor is None:
            return
        actor.sessions.discard(session_id)
        if self._warm.retire_after_release(actor, self._nodes.get(actor.node_id)):
            self._retire(actor)

    async def list_sessions(self) -> list[dict[str, str]]:
        """Every live session: id, node and actor (never a secret)."""
        await self._wait_started()
        return self._sessions.listing()

    async def worker_died(self, name: str) -> None:
        """A session saw a worker die: forget it; the next round replaces it."""
        record = self._fleet.get(name)
        if record is not None:
            self._worker_lost(record, "a session saw it die")

    # -------------------------------------------------------------- agents

    async def register_agent(self, name: str, payload: bytes) -> int:
        """Register (a new version of) an agent by name; returns its version."""
        return self._agents.register(name, payload)

    async def get_agent(self, name: str) -> tuple[int, bytes] | None:
        """The newest registered version of an agent, or None."""
        entry = self._agents.get(name)
        return (entry.version, entry.payload) if entry is not None else None

    async def list_agents(self) -> dict[str, int]:
        """Registered agent names and their versions."""
        return self._agents.versions()

    async def _observe_agents(self) -> None:
        """Ask the session actors which agent each open session runs now."""
        hosts = self._fleet.hosts_with_sessions()
        answers = await self._ops.call_many(
            [h.handle for h in hosts], "statistics", timeout=self._config.health_timeout_seconds
        )
        for host, stats in zip(hosts, answers, strict=True):
            if not isinstance(stats, dict):
                continue  # a slow or dying host: its sessions keep their last agent
            self._agents.observe(
                {
                    str(sid): str(entry.get("agent", ""))
                    for sid, entry in stats.items()
                    if sid in host.sessions and isinstance(entry, dict)
                }
            )
        self._agents.keep_only(r.session_id for r in self._sessions)

    # --------------------------------------------------------------- nodes

    async def drain_node(self, node_id: str, drained: bool = True) -> None:
        """Stop (or resume) placing new sessions on a node; its sessions stay."""
        await self._wait_started()
        await self._refresh_nodes()
        self._nodes.set_drained(node_id, drained)
        if drained:
            for record in self._fleet.of_kind(ActorKind.SESSION, node_id):
                if record.idle:
                    self._retire(record)

    async def move_sessions(self, node_id: str) -> dict[str, int]:
        """Move every session off a node (drained first, so none comes back):
        each of its session actors hands its sessions over (writes their
        journals to the store), is stopped, and its sessions are restored on
        other nodes' actors, as after a death but with reason ``drained``.
        Handles follow on their own (their actor is gone: they ask
        :meth:`recover_session`). Returns how many sessions moved and how
        many were lost; :class:`ConfigError` without a session store."""
        await self._wait_started()
        if not self._config.stores_sessions:
            raise ConfigError(
                "moving sessions needs the session store (service config session_store)"
            )
        await self._refresh_nodes()
        self._nodes.set_drained(node_id, True)
        hosts = [r for r in self._fleet.of_kind(ActorKind.SESSION, node_id) if r.sessions]
        for host in hosts:
            try:
                self._placer.choose_node(PlacementRequirement(), host.capacity)
            except NoCapacityError as exc:
                # Nowhere to go: they keep running here rather than be lost.
                raise NoCapacityError(
                    f"no other node can take the sessions of node {node_id[:12]} ({exc}); "
                    "they keep running there"
                ) from None
        # Bounded; an actor that does not answer is moved anyway (its store
        # writes are write-behind, so at most its last moments are missing).
        answers = await self._ops.call_many(
            [h.handle for h in hosts], "hand_over", timeout=self._config.health_timeout_seconds
        )
        tasks: list[asyncio.Task[dict[str, Any]]] = []
        for host, answer in zip(hosts, answers, strict=True):
            if isinstance(answer, BaseException):
                logger.warning("session actor %s did not hand over: %r", host.name, answer)
            moving = list(host.sessions)
            self._actor_dead(host, "its node is drained", planned=True)
            tasks.extend(self._recoveries[s] for s in moving if s in self._recoveries)
        results = await asyncio.gather(*(asyncio.shield(t) for t in tasks), return_exceptions=True)
        moved = sum(not isinstance(r, BaseException) for r in results)
        return {"moved": moved, "lost": len(results) - moved}

    async def status(self) -> dict[str, Any]:
        """Nodes, sessions per node, pools and warm pool, registered agents and
        the agents open sessions run, for ``status`` (never a secret)."""
        await self._wait_started()
        await self._observe_agents()
        turns = await self._turn_stats()
        sessions_by_node = self._sessions.sessions_by_node()
        capacity = self._config.max_sessions_per_node
        nodes = []
        for node in self._nodes:
            mine = [r for r in self._fleet if r.node_id == node.node_id]
            count = sessions_by_node.get(node.node_id, 0)
            nodes.append(
                {
                    "node_id": node.node_id,
                    "address": node.address,
                    "alive": node.alive,
                    "drained": node.drained,
                    "sessions": count,
                    "capacity": capacity,
                    "load": round(count / capacity, 4) if capacity > 0 else 0.0,
                    "turns": merge_snapshots(turns.get(node.node_id, [])),
                    "session_actors": sum(1 for r in mine if r.kind is ActorKind.SESSION),
                    "warm": len(self._warm.warm(node.node_id)),
                    "tool_workers": sum(1 for r in mine if r.kind is ActorKind.TOOL),
                    "guardrail_workers": sum(1 for r in mine if r.kind is ActorKind.GUARDRAIL),
                    "model_servers": sum(1 for r in mine if r.kind is ActorKind.MODEL),
                }
            )
        return {
            "nodes": nodes,
            "sessions": len(self._sessions),
            "lost_sessions": self._sessions.lost_count,
            "agents": self._agents.versions(),
            "agents_in_use": self._agents.in_use(),
            "placements": self._sessions.placements,
            "turns": merge_snapshots(snap for snaps in turns.values() for snap in snaps),
            "config": self._config.to_dict(),
        }

    async def _turn_stats(self) -> dict[str, list[dict[str, Any]]]:
        """Each session actor's turn window of the last minute, by node (an
        actor that does not answer in time is left out)."""
        hosts = self._fleet.of_kind(ActorKind.SESSION)
        answers = await self._ops.call_many(
            [h.handle for h in hosts], "turn_stats", timeout=self._config.health_timeout_seconds
        )
        by_node: dict[str, list[dict[str, Any]]] = {}
        for host, snap in zip(hosts, answers, strict=True):
            if isinstance(snap, dict):
                by_node.setdefault(host.node_id, []).append(snap)
        return by_node

    async def ping(self) -> str:
        """Liveness: ``"ok"`` once started, ``"starting"`` before; a start that
        failed raises its error."""
        task = self._startup
        if task is None or not task.done():
            return "starting"
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            raise failure
        return "ok"
