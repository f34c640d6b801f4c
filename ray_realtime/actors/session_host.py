"""The session actor: hosts one or more sessions, each run by a SessionDriver.

It holds the model connections, the histories and the bounded event logs; its
methods are what remote handles call. Each session has a secret (chosen by the
handle that opens it, or here): every method about one session takes it
right after the session id and checks it in constant time, so reaching the
actor through Ray is not enough to read or steer a session
(:class:`SessionAccessError` otherwise). The one exception is
:meth:`SessionHost.data_plane` without a secret for a session opened with
``open_attach`` (the service's choice), which hands the secret out.

Events leave in batches, wire-encoded (msgpack), so Ray's per-call cost is
paid per batch, not per event; audio arrives as raw bytes. ``capacity``
sessions fit in one actor (1 by default; more packs sessions for density —
the same class either way).

This is a plain class; :mod:`ray_realtime.actors.remote` makes it an actor.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
import time
from collections import OrderedDict
from typing import Any, Literal

from ray_realtime import wire
from ray_realtime.actors import raylib
from ray_realtime.actors.dataplane import DataPlaneServer, encode_event_batch, server_ssl_context
from ray_realtime.actors.journal import (
    SECRET_HASH_KEY,
    SessionJournal,
    public_model_config,
    secret_matches,
)
from ray_realtime.actors.leases import DEFAULT_ORPHAN_TIMEOUT_SECONDS, Leases, check_keep_alive
from ray_realtime.actors.logs import bind_session, configure_actor_logging
from ray_realtime.actors.metrics import (
    MeteredGuardrailExecutor,
    MeteredToolExecutor,
    RecoveryMeter,
    UsageObserver,
    record,
)
from ray_realtime.actors.pool import (
    PoolExecutor,
    SessionObjects,
    WorkerPool,
    WorkerSlot,
)
from ray_realtime.actors.turn_stats import TurnObserver, TurnWindow
from ray_realtime.agents.agent import RealtimeAgent
from ray_realtime.agents.handoffs import Handoff
from ray_realtime.exceptions import (
    ConfigError,
    NoCapacityError,
    SessionAccessError,
    SessionClosedError,
    SessionLostError,
    SessionNotFoundError,
    StoreError,
    StoreUnavailableError,
    UserError,
)
from ray_realtime.model.openai_ws import OpenAIRealtimeWebSocketModel
from ray_realtime.model.playback import ReportedPlaybackTracker
from ray_realtime.session.driver import SessionDriver
from ray_realtime.session.start import resolve_model_config
from ray_realtime.store.config import open_store
from ray_realtime.store.records import AgentRecord
from ray_realtime.store.writer import WriteBehindStore
from ray_realtime.types.events import (
    AgentRef,
    RealtimeAgentEndEvent,
    RealtimeError,
    RealtimeSessionRecovered,
)
from ray_realtime.types.items import item_from_dict, item_to_dict

__all__ = ["SessionHost"]

logger = logging.getLogger(__name__)

# Closed sessions stay readable this long (bounded in number), so a reader
# can drain the last events and learn that the session ended.
_CLOSED_KEPT = 64
_AGENTS_KEPT = 32
# How long a data plane hello waits for its session to be opened (the handle
# opens both at once); the data plane's own hello deadline is shorter.
_HELLO_WAIT_SECONDS = 10.0
_MIN_SECRET_CHARS = 16
_ROUTER_CALL_SECONDS = 10.0
_CLOSED_KEEP_SECONDS = 120.0
_STORE_OPEN_SECONDS = 15.0


class RouterAgentResolver:
    """Resolves handoff targets through the router's cluster-wide agent registry."""

    def __init__(self, host: SessionHost) -> None:
        self._host = host
        self._versions: dict[str, tuple[int, RealtimeAgent[Any]]] = {}

    async def resolve(self, name: str, fallback: RealtimeAgent[Any]) -> RealtimeAgent[Any]:
        """The newest registered version of ``name``, else ``fallback``."""
        try:
            found = await self._host.call_router("get_agent", name)
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
        configure_actor_logging()
        self.capacity = max(1, capacity)
        self.name = name
        self.node_id = raylib.current_node_id()
        self._sessions: dict[str, SessionDriver] = {}
        self._restoring: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._closed: OrderedDict[str, SessionDriver] = OrderedDict()
        self._pools: dict[str, WorkerPool] = {}
        self._secrets: dict[str, str] = {}
        self._open_attach: set[str] = set()
        self._router_handle: Any | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._registered = asyncio.Event()
        self._agents: OrderedDict[bytes, RealtimeAgent[Any]] = OrderedDict()
        self._dataplane: DataPlaneServer | None = None
        self._turns = TurnWindow()
        # Who holds each session; sessions nobody holds are closed (leases.py).
        self._leases = Leases()
        self._lease_task: asyncio.Task[None] | None = None
        # The session store (None: off, or not deployed by a router) and each
        # session's journal; a restored session's secret is known only as its
        # hash until a caller proves it.
        self._store: WriteBehindStore | None = None
        self._store_lock = asyncio.Lock()
        self._store_checked = False
        self._store_error = ""
        self._warmup: asyncio.Task[None] | None = None
        self._journals: dict[str, SessionJournal] = {}
        self._secret_hashes: dict[str, str] = {}

    # -------------------------------------------------------------- status

    async def ping(self) -> dict[str, Any]:
        """Liveness and load: node, process, sessions, capacity. The first ping
        (the router's readiness check) also readies the data plane and, in the
        background, the session store and the worker pools, so a warm actor's
        first session pays for none of them."""
        await self._ensure_data_plane()
        if self._warmup is None:
            self._warmup = asyncio.get_running_loop().create_task(self._warm_up())
            self._tasks.add(self._warmup)
            self._warmup.add_done_callback(self._tasks.discard)
        return {
            "node_id": self.node_id,
            "pid": os.getpid(),
            "data_url": self._dataplane.url if self._dataplane is not None else "",
            "name": self.name,
            # A session being restored counts: a router rebuilding meanwhile
            # must not restore it a second time elsewhere.
            "sessions": [*self._sessions, *(s for s in self._restoring if s not in self._sessions)],
            "capacity": self.capacity,
        }

    async def statistics(self) -> dict[str, Any]:
        """Per-session statistics."""
        return {sid: d.statistics() for sid, d in self._sessions.items()}

    async def turn_stats(self) -> dict[str, Any]:
        """Turn durations and model errors of the last minute (numbers only)."""
        return self._turns.snapshot()

    async def _router(self) -> Any | None:
        # Looked up once (a synchronous GCS call, so off the event loop) and
        # cached; forgotten when the router is found dead.
        if self._router_handle is None:
            self._router_handle = await asyncio.to_thread(
                raylib.get_named_actor, raylib.ROUTER_NAME
            )
        return self._router_handle

    async def call_router(self, method: str, *args: Any) -> Any:
        """Call the router (None when it is not deployed), bounded in time; a
        router found dead is looked up again once (it may be redeployed)."""
        for attempt in range(2):
            router = await self._router()
            if router is None:
                return None
            try:
                return await raylib.result(
                    getattr(router, method).remote(*args), _ROUTER_CALL_SECONDS
                )
            except Exception as exc:
                if attempt or not raylib.is_actor_gone(exc):
                    raise
                self._router_handle = None
        return None

    def _tell_router(self, method: str, *args: Any, flush_store: bool = False) -> None:
        """Call the router in the background; a failure is logged (the router
        also notices through its own health checks). ``flush_store``: first
        make the store writes queued so far durable (bounded)."""

        async def tell() -> None:
            if flush_store and self._store is not None:
                try:
                    await asyncio.wait_for(self._store.flush(), _STORE_OPEN_SECONDS)
                except (TimeoutError, StoreError) as exc:
                    logger.warning("could not flush the session store: %r", exc)
            try:
                await self.call_router(method, *args)
            except Exception as exc:
                logger.info("telling the router %s failed: %r", method, exc)

        task = asyncio.get_running_loop().create_task(tell())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _authorize(self, session_id: str, secret: Any) -> None:
        """Raise unless ``secret`` is the session's secret (constant time)."""
        expected = self._secrets.get(session_id)
        if expected is None and session_id in self._secret_hashes:
            # A restored session: the store holds only the secret's hash.
            if not secret_matches(secret, self._secret_hashes[session_id]):
                raise SessionAccessError(
                    f"the caller does not hold the secret of session {session_id}", session_id
                )
            self._secrets[session_id] = secret
            return
        if expected is None:
            raise SessionNotFoundError(f"no session {session_id} on this actor", session_id)
        offered = secret if isinstance(secret, str) else ""
        if not hmac.compare_digest(
            offered.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
        ):
            raise SessionAccessError(
                f"the caller does not hold the secret of session {session_id}", session_id
            )

    # ----------------------------------------------------------- lifecycle

    async def open_session(
        self, session_id: str, payload: bytes, options: dict[str, Any]
    ) -> dict[str, Any]:
        """Create and connect a session; idempotent for the same id.

        ``payload`` is the pickled ``(agent, context, run_config,
        model_config)``; ``options`` carries ``model_url``, optionally the
        worker lists ``tool_workers`` / ``guardrail_workers`` as ``(name,
        node_id, handle)`` triples (absent: the router's lists this actor
        holds), the session's secret ``token`` (generated here when
        absent or short; returned either way) and ``open_attach``. Opening
        an open session again needs its secret.
        """
        if session_id in self._sessions:
            return await self.data_plane(session_id, options.get("token"))
        self._forget_old_closed()
        if len(self._sessions) >= self.capacity:
            raise NoCapacityError(
                f"session actor {self.name or self.node_id} is full ({self.capacity} sessions)"
            )
        agent_bytes, context_bytes, run_config, model_config = raylib.loads(payload)
        agent = self._agent(agent_bytes)

        await self._ensure_workers(options)
        journal = await self._new_journal(
            session_id,
            {
                "recipe": raylib.dumps(
                    (agent_bytes, context_bytes, run_config, public_model_config(model_config)),
                    "session",
                ),
                "open_attach": options.get("open_attach") is True,
                "turn": "",
            },
        )
        driver = self._new_driver(
            session_id,
            agent,
            context_bytes,
            run_config,
            _with_reported_playback(
                resolve_model_config(model_config, local_url=options.get("model_url")),
                bool(options.get("playback_reports")),
            ),
            options,
            before_emit=journal.before_emit if journal is not None else None,
        )
        # The handle may pick the secret, so it can open the data plane while
        # this call runs; the socket's hello then waits for this registration.
        token = options.get("token")
        secret = (
            token
            if isinstance(token, str) and _MIN_SECRET_CHARS <= len(token) <= 128
            else secrets.token_urlsafe(24)
        )
        self._secrets[session_id] = secret
        if options.get("open_attach") is True:
            self._open_attach.add(session_id)
        if journal is not None:
            journal.open(AgentRecord(agent.name), secret)
            self._attach_journal(driver, journal)
        self._registered.set()
        self._registered = asyncio.Event()
        t0 = time.monotonic()
        try:
            await driver.start()
        except BaseException:
            self._sessions.pop(session_id, None)
            self._leases.forget(session_id)
            self._secrets.pop(session_id, None)
            self._open_attach.discard(session_id)
            if self._journals.pop(session_id, None) is not None:
                journal.closed()  # type: ignore[union-attr]
            raise
        record("connect_seconds", time.monotonic() - t0, node=self.node_id)
        record("active", float(len(self._sessions)), node=self.node_id)
        if journal is None and self._store_error:
            driver.emit(
                RealtimeError(
                    {
                        "message": "the session store is unavailable; this session will not "
                        f"be recovered if its actor dies ({self._store_error})",
                        "type": "store_unavailable",
                        "code": "store_unavailable",
                    }
                )
            )
        return await self.data_plane(session_id, secret)

    # ------------------------------------------------------------ recovery

    async def _store_writer(self) -> WriteBehindStore | None:
        """The session store this actor writes to, opened on first use from
        the router's ``store_config`` (None: no router, or the store is off)."""
        if self._store_checked:
            return self._store
        async with self._store_lock:
            if self._store_checked:
                return self._store
            try:
                value = await self.call_router("store_config")
            except Exception as exc:
                logger.warning("could not ask the router for the session store: %r", exc)
                return None
            self._store_checked = True
            if value is not None and value != "off":
                try:
                    backend = await asyncio.wait_for(open_store(value), _STORE_OPEN_SECONDS)
                except TimeoutError:
                    raise StoreUnavailableError(
                        f"the session store did not answer within {_STORE_OPEN_SECONDS:g} s"
                    ) from None
                self._store = WriteBehindStore(backend)
            return self._store

    async def _warm_up(self) -> None:
        """Before the first session: open the session store and take the
        router's worker lists (round trips an opening session would otherwise
        wait for; a handle does not carry the worker lists)."""
        await asyncio.gather(self._warm_store(), self._warm_workers())

    async def _warm_workers(self) -> None:
        try:
            lists = await self.call_router("worker_lists")
        except Exception as exc:
            # The router pushes its lists with the next change; a session
            # opened meanwhile asks again (_ensure_workers).
            logger.info("could not ask the router for its workers: %r", exc)
            return
        for kind, workers in (lists or {}).items():
            if kind not in self._pools:  # a push that came first is newer
                self._pools[kind] = WorkerPool(
                    self.node_id,
                    [WorkerSlot(n, node, h) for n, node, h in workers],
                    on_dead=self._worker_died,
                )

    async def _ensure_workers(self, options: dict[str, Any]) -> None:
        """The worker pools a session opened without worker lists uses: the
        warm-up's (waited for), else asked from the router now."""
        if "tool_workers" in options or "guardrail_workers" in options:
            return
        if self._warmup is not None and not self._warmup.done():
            await asyncio.shield(self._warmup)
        if "tool" not in self._pools or "guardrail" not in self._pools:
            await self._warm_workers()

    async def _warm_store(self) -> None:
        try:
            await self._store_writer()
        except StoreError as exc:
            # As _new_journal does: sessions run, their recovery is off, and
            # open_session tells their readers.
            logger.warning("the session store could not be opened: %s", exc)
            self._store_error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            # Anything else: the first session asks again (and fails as before).
            logger.info("opening the session store ahead failed: %r", exc)
            self._store_checked = False

    async def _new_journal(
        self, session_id: str, settings: dict[str, Any]
    ) -> SessionJournal | None:
        try:
            store = await self._store_writer()
        except StoreError as exc:
            # The session runs; only its recovery is off (this actor does not
            # try the store again). Said in the log and, by open_session, to
            # the session's readers.
            logger.warning("session %s runs without the session store: %s", session_id, exc)
            self._store_error = f"{type(exc).__name__}: {exc}"
            return None
        if store is None:
            return None
        return SessionJournal(store, session_id, settings)

    def _attach_journal(self, driver: SessionDriver, journal: SessionJournal) -> None:
        journal._report = driver.emit
        self._journals[driver.session_id] = journal

    async def restore_session(self, session_id: str, options: dict[str, Any]) -> dict[str, Any]:
        """Rebuild a session whose actor died from the session store: its
        history, current agent, event numbering and the hash of its secret;
        reconnect the model; emit ``session_recovered`` (and, when a turn was
        cut, an ``error`` and that turn's ``agent_end``). Idempotent.

        ``options``: ``model_url``, the worker lists as for
        :meth:`open_session`, and ``reason`` (``actor_died`` / ``node_lost`` /
        ``drained``).
        Raises :class:`SessionLostError` when the store cannot give it back.
        """
        if session_id in self._sessions:
            return {"node_id": self.node_id, "restored": False}
        running = self._restoring.get(session_id)
        if running is None:  # one restore per session (a new router may ask again)
            running = asyncio.ensure_future(self._restore_session(session_id, options))
            self._restoring[session_id] = running
            running.add_done_callback(lambda _: self._restoring.pop(session_id, None))
        return await asyncio.shield(running)

    async def _restore_session(self, session_id: str, options: dict[str, Any]) -> dict[str, Any]:
        if len(self._sessions) >= self.capacity:
            raise NoCapacityError(
                f"session actor {self.name or self.node_id} is full ({self.capacity} sessions)"
            )
        store = await self._store_writer()
        if store is None:
            raise SessionLostError(f"session {session_id}: no session store to restore from")
        try:
            state = await store.load(session_id)
            recipe = state.settings["recipe"]
            agent_bytes, context_bytes, run_config, model_config = raylib.loads(recipe)
        except (StoreError, KeyError, SessionNotFoundError) as exc:
            raise SessionLostError(
                f"session {session_id} cannot be restored: {type(exc).__name__}: {exc}", session_id
            ) from None
        given = options.get("reason")
        reason: Literal["actor_died", "node_lost", "drained"] = (
            given if given in ("node_lost", "drained") else "actor_died"
        )
        starting = self._agent(agent_bytes)
        agent = await self._restored_agent(state.agent, starting, state.settings)
        items = [item_from_dict(stored.to_dict()) for stored in state.items]
        settings = dict(state.settings)
        turn = str(settings.get("turn") or "")
        settings["turn"] = ""
        journal = SessionJournal(store, session_id, settings, reserved_seq=state.seq, history=items)
        driver = self._new_driver(
            session_id,
            agent,
            context_bytes,
            run_config,
            resolve_model_config(model_config, local_url=options.get("model_url")),
            options,
            before_emit=journal.before_emit,
            history=items,
            start_seq=state.seq,
        )
        self._secret_hashes[session_id] = state.secrets.get(SECRET_HASH_KEY, "")
        self._attach_journal(driver, journal)
        # The events below get numbers past the stored mark: move the mark
        # first (durably), so a second fault cannot reuse them.
        await journal.reserve(state.seq + 3)
        try:
            await driver.start()
        except BaseException:
            self._sessions.pop(session_id, None)
            self._leases.forget(session_id)
            self._secret_hashes.pop(session_id, None)
            self._journals.pop(session_id, None)
            raise
        record("active", float(len(self._sessions)), node=self.node_id)
        driver.emit(RealtimeSessionRecovered(reason, len(items), 0))
        if turn:
            driver.emit(
                RealtimeError(
                    {
                        "message": "the response in progress was cut by the session's "
                        f"recovery ({reason}); send the request again",
                        "type": "session_recovered",
                        "code": "response_cut_by_recovery",
                    }
                )
            )
            driver.emit(RealtimeAgentEndEvent(AgentRef(turn)))
            journal.agent_changed(AgentRecord(agent.name))
        self._registered.set()
        self._registered = asyncio.Event()
        logger.info(
            "session %s restored (%s): %d items, events from %d",
            session_id,
            reason,
            len(items),
            state.seq + 1,
        )
        return {"node_id": self.node_id, "restored": True, "items": len(items)}

    def _new_driver(
        self,
        session_id: str,
        agent: RealtimeAgent[Any],
        context_bytes: bytes,
        run_config: Any,
        model_config: Any,
        options: dict[str, Any],
        *,
        before_emit: Any,
        history: list[Any] | None = None,
        start_seq: int = 0,
    ) -> SessionDriver:
        """The driver of an opened or restored session, with its model, its
        worker executors, metrics and lease, registered on this actor."""
        objects = SessionObjects(context_bytes, list(run_config.get("output_guardrails") or []))
        tools_pool = self._pool("tool", options.get("tool_workers") or [])
        guards_pool = self._pool("guardrail", options.get("guardrail_workers") or [])
        # emit_raw_model_events: raw server events too, as the SDK's model sends them.
        model = OpenAIRealtimeWebSocketModel(
            emit_raw_server_events=bool(run_config.get("emit_raw_model_events"))
        )
        model.add_listener(
            TurnObserver(
                self._turns, lambda: {"node": self.node_id, "agent": driver.current_agent.name}
            )
        )
        driver = SessionDriver(
            agent=agent,
            model=model,
            context=raylib.loads(context_bytes),
            run_config=run_config,
            model_config=model_config,
            tool_executor=MeteredToolExecutor(PoolExecutor(tools_pool, objects), self.node_id),
            guardrail_executor=MeteredGuardrailExecutor(
                PoolExecutor(guards_pool, objects), self.node_id
            ),
            agent_resolver=RouterAgentResolver(self),
            session_id=session_id,
            on_closed=self._on_driver_closed,
            history=history,
            start_seq=start_seq,
            before_emit=before_emit,
            on_event=RecoveryMeter(self.node_id, lambda: driver.current_agent.name),
        )
        model.add_listener(UsageObserver(lambda: driver.usage, self.node_id))
        self._sessions[session_id] = driver
        self._start_lease(session_id, run_config)
        _bind(driver)
        return driver

    async def _restored_agent(
        self, record: AgentRecord | None, starting: RealtimeAgent[Any], settings: Any
    ) -> RealtimeAgent[Any]:
        """The agent a restored session runs: the registry's newest of the
        stored name, else the agent ``update_agent`` gave it, else one of that
        name reachable by handoffs from the starting agent, else the starting
        agent."""
        if record is None or record.name == starting.name:
            return starting
        registered = await RouterAgentResolver(self).resolve(record.name, starting)
        if registered is not starting:
            return registered
        payload = settings.get("agent_payload")
        if isinstance(payload, bytes):
            candidate = raylib.loads(payload)
            if isinstance(candidate, RealtimeAgent) and candidate.name == record.name:
                return candidate
        return _reachable(starting, record.name) or starting

    async def hand_over(self) -> int:
        """Before the router moves this actor's sessions to other nodes (a
        drain past its timeout): write what each session's journal still
        holds to the store and wait for it; the router then stops this actor
        and restores the sessions elsewhere. Returns the sessions handed over."""
        journals = list(self._journals.values())
        await asyncio.gather(*(journal.flush() for journal in journals))
        return len(journals)

    async def watch(self, seconds: float) -> str:
        """Returns after ``seconds``: the router keeps one call in flight to
        each session actor, so an actor's death reaches it as this call's
        error at once (Ray fails pending calls of a dead actor)."""
        await asyncio.sleep(max(0.0, min(seconds, 3600.0)))
        return "ok"

    async def data_plane(self, session_id: str, secret: str | None) -> dict[str, Any]:
        """How a handle reaches this session directly: ``data_url`` and the
        session's ``token`` (its secret; it travels only over Ray), plus the
        bounds the handle checks before sending (empty ``data_url`` when the
        data plane could not start: handles then use Ray calls).

        Needs the session's secret, except with ``secret=None`` for a session
        opened with ``open_attach``: that is how an open attach gets it."""
        # A closed session stays readable for a while, so this works for it too.
        driver = self._sessions.get(session_id) or self._closed.get(session_id)
        if driver is None:
            raise SessionNotFoundError(f"no session {session_id} on this actor", session_id)
        if secret is not None or session_id not in self._open_attach:
            self._authorize(session_id, secret)
        self._leases.touch(session_id, time.monotonic())  # an attach holds it
        info: dict[str, Any] = {
            "node_id": self.node_id,
            "data_url": "",
            "token": self._secrets.get(session_id, ""),
            "max_audio_chunk_bytes": driver.limits["max_audio_chunk_bytes"],
            "max_message_chars": driver.limits["max_message_chars"],
            "input_audio_format": driver.input_audio_format,
            "closed": driver.closed,
            "orphan_timeout_seconds": self._leases.timeout(session_id),
        }
        info["data_url"] = await self._ensure_data_plane()
        return info

    async def _ensure_data_plane(self) -> str:
        try:
            if self._dataplane is None:
                plane = DataPlaneServer(
                    self._dataplane_lookup,
                    raylib.node_ip(),
                    ssl_context=server_ssl_context(),
                    on_connection=self._on_connection,
                )
                await plane.start()
                self._dataplane = plane
            return self._dataplane.url
        except (OSError, ConfigError) as exc:
            logger.warning("data plane server could not start: %s", exc)
            self._dataplane = None
            return ""

    async def _dataplane_lookup(self, session_id: str) -> tuple[SessionDriver, str] | None:
        deadline = time.monotonic() + _HELLO_WAIT_SECONDS
        while True:
            driver = self._sessions.get(session_id) or self._closed.get(session_id)
            token = self._secrets.get(session_id)
            if driver is not None and token is not None:
                _bind(driver)  # the data plane connection works for this session
                return driver, token
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(self._registered.wait(), remaining)
            except TimeoutError:
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

    async def close_session(self, session_id: str, secret: str) -> None:
        """Close a session; closing a closed or unknown one is a no-op."""
        driver = self._sessions.get(session_id)
        if driver is not None:
            self._authorize(session_id, secret)
            await driver.close()

    async def close_all(self) -> None:
        """Close every session (before the actor is stopped)."""
        await asyncio.gather(*(d.close() for d in list(self._sessions.values())))
        if self._store is not None:
            # The actor is stopped next: the closed sessions' deletions must
            # land, or a later router would find them in the store and
            # restore them.
            try:
                await asyncio.wait_for(self._store.flush(), _STORE_OPEN_SECONDS)
            except (TimeoutError, StoreError) as exc:
                logger.warning("could not flush the session store at close: %r", exc)

    def _on_driver_closed(self, driver: SessionDriver) -> None:
        self._sessions.pop(driver.session_id, None)
        self._leases.forget(driver.session_id)
        journal = self._journals.pop(driver.session_id, None)
        if journal is not None:
            journal.closed()
        self._closed[driver.session_id] = driver
        record("active", float(len(self._sessions)), node=self.node_id)
        self._forget_old_closed()
        # The router may stop this actor once it has no session: the session's
        # deletion from the store lands first (else a later router's rebuild
        # would find it there and restore it).
        self._tell_router(
            "session_ended", driver.session_id, self.name, flush_store=journal is not None
        )

    def _forget_old_closed(self) -> None:
        now = time.monotonic()
        while self._closed:
            sid, driver = next(iter(self._closed.items()))
            too_old = driver.closed_at is not None and now - driver.closed_at > _CLOSED_KEEP_SECONDS
            if len(self._closed) > _CLOSED_KEPT or too_old:
                self._closed.pop(sid)
                self._secrets.pop(sid, None)
                self._secret_hashes.pop(sid, None)
                self._open_attach.discard(sid)
            else:
                break

    # -------------------------------------------------------------- leases

    def _start_lease(self, session_id: str, run_config: dict[str, Any]) -> None:
        timeout = run_config.get("orphan_timeout_seconds") or DEFAULT_ORPHAN_TIMEOUT_SECONDS
        self._leases.open(session_id, time.monotonic(), float(timeout))
        if self._lease_task is None or self._lease_task.done():
            self._lease_task = asyncio.get_running_loop().create_task(self._expire_orphans())

    def _on_connection(self, session_id: str, connected: bool) -> None:
        now = time.monotonic()
        if connected:
            self._leases.connect(session_id, now)
        else:
            self._leases.disconnect(session_id, now)

    async def _expire_orphans(self) -> None:
        """The one periodic check: close the sessions nobody holds any more,
        the way ``close_session`` does (readers then see the session end and
        the router forgets it)."""
        while True:
            await asyncio.sleep(self._leases.check_interval())
            for session_id in self._leases.expired(time.monotonic()):
                self._leases.forget(session_id)
                driver = self._sessions.get(session_id)
                if driver is None:
                    continue
                logger.info("session %s has no handle left: closing it", session_id)
                try:
                    await driver.close()
                except Exception as exc:
                    # The check goes on for the other sessions.
                    logger.warning("closing orphaned session %s failed: %r", session_id, exc)

    async def touch(self, session_id: str, secret: str) -> None:
        """A handle on Ray calls (no data plane) says it is still there."""
        self._readable(session_id, secret)

    async def detach_session(
        self, session_id: str, secret: str, keep_alive_seconds: float | None
    ) -> None:
        """A handle lets go; with ``keep_alive_seconds``, the session is kept
        exactly that long once no handle holds it (instead of the orphan
        timeout). Letting go of a closed session is a no-op."""
        keep = check_keep_alive(keep_alive_seconds)
        self._readable(session_id, secret)
        self._leases.detach(session_id, time.monotonic(), keep)

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
        self._tell_router("worker_died", slot.name)

    async def update_workers(self, kind: str, workers: list[Any]) -> None:
        """Take a new worker list from the router (a worker died, retired or
        was replaced); an empty list empties the pool, and calls then wait
        for the next list."""
        slots = [WorkerSlot(name, node, handle) for name, node, handle in workers]
        pool = self._pools.get(kind)
        if pool is None:
            self._pools[kind] = WorkerPool(self.node_id, slots, on_dead=self._worker_died)
        else:
            pool.replace(slots)

    # ------------------------------------------------------------- commands

    def _driver(self, session_id: str, secret: str) -> SessionDriver:
        driver = self._sessions.get(session_id)
        if driver is not None:
            self._authorize(session_id, secret)
            self._leases.touch(session_id, time.monotonic())
            _bind(driver)
            return driver
        if session_id in self._closed:
            self._authorize(session_id, secret)
            raise SessionClosedError(f"session {session_id} is closed", session_id)
        raise SessionNotFoundError(f"no session {session_id} on this actor", session_id)

    def _readable(self, session_id: str, secret: str) -> SessionDriver:
        # Open or recently closed (readers drain its last events).
        driver = self._sessions.get(session_id) or self._closed.get(session_id)
        if driver is None:
            raise SessionNotFoundError(f"no session {session_id} on this actor", session_id)
        self._authorize(session_id, secret)
        self._leases.touch(session_id, time.monotonic())
        return driver

    async def send_message(self, session_id: str, secret: str, message: Any) -> None:
        """Send a user message."""
        await self._driver(session_id, secret).send_message(message)

    async def send_audio(self, session_id: str, secret: str, audio: bytes, commit: bool) -> None:
        """Send input audio (raw bytes)."""
        await self._driver(session_id, secret).send_audio(audio, commit=commit)

    async def interrupt(self, session_id: str, secret: str) -> None:
        """Interrupt the current response."""
        await self._driver(session_id, secret).interrupt()

    async def report_playback(self, session_id: str, secret: str, snapshot: Any) -> None:
        """The user's playback position (the data plane's fallback)."""
        self._driver(session_id, secret).report_playback(snapshot)

    async def update_agent(self, session_id: str, secret: str, agent_payload: bytes) -> None:
        """Switch agent (pickled)."""
        driver = self._driver(session_id, secret)
        agent = raylib.loads(agent_payload)
        await driver.update_agent(agent)
        journal = self._journals.get(session_id)
        if journal is not None:
            journal.agent_changed(AgentRecord(agent.name), agent_payload)

    async def approve_tool_call(
        self, session_id: str, secret: str, call_id: str, always: bool = False
    ) -> bool:
        """Approve a waiting tool call."""
        return await self._driver(session_id, secret).approve_tool_call(call_id, always=always)

    async def reject_tool_call(
        self,
        session_id: str,
        secret: str,
        call_id: str,
        message: str | None,
        always: bool = False,
    ) -> bool:
        """Reject a waiting tool call."""
        return await self._driver(session_id, secret).reject_tool_call(
            call_id, message, always=always
        )

    async def read_events(
        self,
        session_id: str,
        secret: str,
        after_seq: int,
        max_events: int,
        timeout: float | None,
    ) -> bytes:
        """A wire-encoded batch of events after ``after_seq`` (long-poll); an
        event that cannot be encoded arrives as an ``error`` event."""
        driver = self._readable(session_id, secret)
        batch = await driver.read_events(after_seq, max_events, timeout)
        if batch.missed:
            record("events_lost", float(batch.missed), node=self.node_id)
        return encode_event_batch(batch)

    async def get_history(self, session_id: str, secret: str) -> bytes:
        """The wire-encoded history."""
        driver = self._readable(session_id, secret)
        return wire.encode([item_to_dict(i) for i in driver.history])

    async def history_at(self, session_id: str, secret: str, seq: int) -> bytes:
        """The wire-encoded ``[at, items]``: the history as of event ``at``,
        which is ``seq`` unless the log no longer reaches back that far (a
        handle resyncs its replica from it; see ray_realtime.core.history_log)."""
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise UserError(f"seq must be an int >= 0, got {seq!r:.40}")
        driver = self._readable(session_id, secret)
        at, items = driver.history_at(seq)
        return wire.encode([at, items])


def _with_reported_playback(model_config: Any, reported: bool) -> Any:
    # The application's tracker stays in its process; the handle reports its
    # state, which the model reads from this stand-in.
    if reported:
        model_config = {**model_config, "playback_tracker": ReportedPlaybackTracker()}
    return model_config


def _reachable(start: RealtimeAgent[Any], name: str) -> RealtimeAgent[Any] | None:
    """The agent named ``name`` reachable by handoffs from ``start``, or None."""
    seen: set[int] = set()
    stack = [start]
    while stack:
        agent = stack.pop()
        if id(agent) in seen:
            continue
        seen.add(id(agent))
        if agent.name == name:
            return agent
        for item in agent.handoffs:
            target = item.agent if isinstance(item, Handoff) else item
            if isinstance(target, RealtimeAgent):
                stack.append(target)
    return None


def _bind(driver: SessionDriver) -> None:
    # Log lines of this call (and of the tasks it starts) name the session.
    bind_session(driver.session_id, lambda: driver.current_agent.name)
