"""The remote backend of a session handle: calls to the session's actor.

Each command is one actor call; events come back in wire-encoded batches from
a long-poll, so a busy session costs one call per batch, not per event. Ray's
errors are translated at this edge: a dead actor becomes
:class:`SessionLostError`, an error raised in the actor is re-raised as itself.

A ``playback_tracker`` in the model config stays in this process: the handle
strips it from what it ships and reports the tracker's state to the session
(coalesced: at most one small report per :data:`PLAYBACK_REPORT_SECONDS`
while it changes, and always one just before an ``interrupt``), over the data
plane or, without it, as Ray calls; the session's model truncates where the
listener was, as in-process. An ``audio_interrupted`` read here resets the
tracker, as the model resets it in-process.

Every call carries the session's secret, which the handle that opens a session
chooses; :attr:`ActorBackend.ticket` packs the session id and the secret into
one opaque string that another process passes to ``RealtimeSession.attach``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import logging
import os
import secrets
from typing import Any

import msgpack

from ray_realtime import wire
from ray_realtime.actors import raylib
from ray_realtime.actors.dataplane import DataPlaneBroken, DataPlaneClient, client_ssl_context
from ray_realtime.actors.dataplane_shared import PlaneChannel, open_channel
from ray_realtime.agents.agent import RealtimeAgent
from ray_realtime.core.history_log import HistoryReplica
from ray_realtime.core.session_core import check_audio_chunk, check_user_message
from ray_realtime.exceptions import (
    ConfigError,
    ModelConnectionError,
    ProtocolError,
    ServiceNotRunningError,
    SessionAccessError,
    SessionClosedError,
    SessionLostError,
    SessionNotFoundError,
)
from ray_realtime.model.playback import (
    PlaybackSnapshot,
    RealtimePlaybackTracker,
    playback_snapshot,
)
from ray_realtime.session.driver import EventBatch
from ray_realtime.session.start import new_session_id
from ray_realtime.types.config import RealtimeModelConfig, RealtimeRunConfig
from ray_realtime.types.events import RealtimeSessionRecovered
from ray_realtime.types.items import RealtimeItem, item_from_dict

__all__ = ["ActorBackend", "actor_backend", "attach_backend", "make_ticket", "parse_ticket"]

logger = logging.getLogger(__name__)

PLAYBACK_REPORT_SECONDS = 0.05
"""Longest a change of the playback tracker waits before it is reported."""

SHARED_DATA_PLANE_ENV = "RAY_REALTIME_SHARED_DATA_PLANE"
"""Set to ``0`` for one data-plane socket per session handle instead of one
per (process, actor) shared by its sessions (for side-by-side measurements)."""

_DEFAULT_RECOVERY_TIMEOUT = 10.0
_OPEN_ATTEMPTS = 3
_OPEN_RETRY_DELAY = 0.1


async def _discard(early: asyncio.Task[DataPlaneClient | PlaneChannel] | None) -> None:
    """Stop an early data-plane dial that is not wanted; close what it
    opened if it had finished (else its socket would stay open unused)."""
    if early is None:
        return
    early.cancel()
    (result,) = await asyncio.gather(early, return_exceptions=True)
    if isinstance(result, DataPlaneClient | PlaneChannel):
        with contextlib.suppress(Exception):
            await result.close()


class _PlacedOnDeadActor(Exception):
    """The actor a session was placed on died before the session opened."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


# How often a recovery asks again for a router that is gone.
_ROUTER_RETRY_SECONDS = 0.2
_TICKET_PREFIX = "rrt1."
_MAX_TICKET_CHARS = 512


def make_ticket(session_id: str, secret: str) -> str:
    """An opaque, URL-safe string carrying what attaching needs (the session
    id and its secret). Whoever holds it controls the session."""
    packed = msgpack.packb([session_id, secret], use_bin_type=True)
    return _TICKET_PREFIX + base64.urlsafe_b64encode(packed).decode("ascii").rstrip("=")


def is_ticket(text: str) -> bool:
    """Whether ``text`` has the form of a ticket (rather than a session id)."""
    return isinstance(text, str) and text.startswith(_TICKET_PREFIX)


def parse_ticket(ticket: str) -> tuple[str, str]:
    """``(session_id, secret)`` from :func:`make_ticket`'s string;
    :class:`SessionAccessError` for anything else."""
    bad = SessionAccessError("not a session ticket (use session.ticket of the owner's handle)")
    if not is_ticket(ticket) or len(ticket) > _MAX_TICKET_CHARS:
        raise bad
    body = ticket[len(_TICKET_PREFIX) :]
    try:
        packed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        n = len(packed)
        value = msgpack.unpackb(
            packed, raw=False, max_str_len=n, max_bin_len=n, max_array_len=2, max_map_len=0
        )
    except (binascii.Error, ValueError, msgpack.UnpackException):
        raise bad from None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, str) and 0 < len(v) <= 128 for v in value)
    ):
        raise bad
    return value[0], value[1]


class ActorBackend:
    """A session that lives in a session actor."""

    def __init__(
        self,
        session_id: str,
        *,
        payload: bytes | None = None,
        run_config: RealtimeRunConfig | None = None,
        placement: dict[str, Any] | None = None,
        secret: str | None = None,
        playback_tracker: RealtimePlaybackTracker | None = None,
    ) -> None:
        self.session_id = session_id
        # Chosen here for a new session (so the data plane can open at once).
        self._secret = secret or secrets.token_urlsafe(24)
        self._payload = payload
        self._run_config: RealtimeRunConfig = run_config or {}
        self._placement = placement
        self._actor: Any = placement["actor"] if placement else None
        self._closed = False
        self._plane: DataPlaneClient | PlaneChannel | None = None
        self._max_audio = 0
        self._max_message = 0
        self._audio_format = "pcm16"
        self.use_data_plane = bool(self._run_config.get("data_plane", True))
        # Keeps the session's lease while no data plane does (see leases.py).
        self._orphan_timeout = 0.0
        self._toucher: asyncio.Task[None] | None = None
        self._tracker = playback_tracker
        self._reported: PlaybackSnapshot | None = None
        self._report_due = False
        self._report_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Recovery: when the session's actor dies, one task re-finds the
        # session through the router; every call waits for it, bounded.
        self._recovery_timeout = float(
            self._run_config.get("recovery_timeout_seconds", _DEFAULT_RECOVERY_TIMEOUT)
        )
        self._recovery: asyncio.Task[None] | None = None
        self._read_seq = 0
        # The session's log holds history deltas: reads turn them back into
        # the SDK's events on this replica (resynced from the actor's
        # history_at when a read does not continue from it).
        self._replica = HistoryReplica()

    @property
    def node_id(self) -> str:
        """The node the session runs on ("" before start)."""
        return str(self._placement["node_id"]) if self._placement else ""

    @property
    def data_plane_connected(self) -> bool:
        """Whether audio and events travel over the direct socket now."""
        return self._plane is not None and not self._plane.broken

    @property
    def ticket(self) -> str:
        """The session's ticket: its id and secret, for ``attach`` elsewhere."""
        return make_ticket(self.session_id, self._secret)

    @property
    def actor_name(self) -> str:
        """The session actor's name ("" before start)."""
        return str(self._placement["actor_name"]) if self._placement else ""

    async def start(self) -> None:
        """Place the session through the router and open it on its actor."""
        if self._actor is not None:
            return
        from ray_realtime.cluster.service import ensure_service, forget_router

        router = await ensure_service()
        # Two direct calls (router, then actor) measured faster than letting
        # the router forward the open: an async actor awaiting another actor
        # adds more than the extra round trip from here.
        args = (
            self.session_id,
            self._run_config.get("placement"),
            self._run_config.get("sessions_per_actor"),
        )
        try:
            placement = await router.place_session.remote(*args)
        except BaseException as exc:
            if not raylib.is_actor_gone(exc):
                raise raylib.unwrap_task_error(exc) from None
            # The cached router died (and may have been redeployed): look again.
            forget_router()
            router = await ensure_service()
            try:
                placement = await router.place_session.remote(*args)
            except BaseException as again:
                raise raylib.unwrap_task_error(again) from None
        await self._open_on(router, placement, args)

    async def _open_on(self, router: Any, placement: dict[str, Any], args: tuple[Any, ...]) -> None:
        # A warm actor can die between the router's last health round and the
        # open; the session never existed there, so it is placed again (the
        # router has usually noticed by then: its watch call failed at once).
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                await self._open(router, placement)
                return
            except _PlacedOnDeadActor as dead:
                if attempt + 1 >= _OPEN_ATTEMPTS:
                    raise self._translate(dead.cause) from None
                logger.info("session %s: placed on a dead actor; placing it again", self.session_id)
                await asyncio.sleep(_OPEN_RETRY_DELAY * (attempt + 1))
                try:
                    placement = await router.place_session.remote(*args)
                except BaseException as exc:
                    raise raylib.unwrap_task_error(exc) from None

    async def _open(self, router: Any, placement: dict[str, Any]) -> None:
        self._placement = placement
        self._actor = placement["actor"]
        token = self._secret
        # No worker lists: the actor holds the router's (pushed to it and
        # kept current); shipping their handles cost a millisecond a start.
        options = {
            "model_url": placement["model_url"],
            "token": token,
            "open_attach": placement.get("open_attach") is True,
            "playback_reports": self._tracker is not None,
        }
        # The data plane opens while the session opens: its hello waits on the
        # actor for the session to be registered, so neither waits on the other.
        early: asyncio.Task[DataPlaneClient | PlaneChannel] | None = None
        url = placement.get("data_url")
        if self.use_data_plane and url:
            early = asyncio.ensure_future(self._dial(url, token, 0))
        try:
            info = await self._actor.open_session.remote(self.session_id, self._payload, options)
        except BaseException as exc:
            router.session_ended.remote(self.session_id, placement["actor_name"])
            self._actor = None
            await _discard(early)
            if raylib.is_actor_gone(raylib.unwrap_task_error(exc)):
                raise _PlacedOnDeadActor(exc) from None
            raise self._translate(exc) from None
        self._payload = None
        # A new session: its history is empty before its first event.
        self._replica.reset([], 0)
        self._watch_playback()
        self._secret = str(info.get("token") or token)
        fresh = info.get("data_url") == url and info.get("token") == token
        if early is not None and fresh and not info.get("closed"):
            self._take_limits(info)
            try:
                self._plane = await early
                return
            except ModelConnectionError:
                pass
        else:
            await _discard(early)
        await self._open_data_plane(info, after_seq=0)

    async def connect(self, after_seq: int, secret: str | None) -> None:
        """Join an already running session (attach): check the secret (None:
        an open attach, which receives it) and open the direct socket."""
        if self._actor is None:
            raise SessionClosedError(f"session {self.session_id} is not started", self.session_id)
        try:
            info = await self._actor.data_plane.remote(self.session_id, secret)
        except BaseException as exc:
            if not raylib.is_actor_gone(raylib.unwrap_task_error(exc)):
                raise self._translate(exc) from None
            # The listed actor is gone: the session is being recovered
            # elsewhere, or it ended and its packed actor retired (the router
            # then says SessionNotFoundError).
            info = await self._data_plane_after_loss(secret)
        self._secret = str(info["token"])
        await self._open_data_plane(info, after_seq)

    async def _data_plane_after_loss(self, secret: str | None) -> dict[str, Any]:
        try:
            info = await asyncio.wait_for(self._relocate(secret), self._recovery_timeout)
        except TimeoutError:
            raise self._not_recovered() from None
        except BaseException as exc:
            raise self._translate(exc) from None
        return info

    async def _dial(self, url: str, token: str, after_seq: int) -> DataPlaneClient | PlaneChannel:
        try:
            ssl_context = client_ssl_context()
        except ConfigError as exc:
            raise ModelConnectionError(f"data plane TLS setup: {exc}") from None
        if ssl_context is not None and not url.startswith("wss://"):
            # Ray runs with TLS here: a plaintext data plane is refused.
            raise ModelConnectionError("the data plane is not TLS while Ray is")
        # By default one socket per actor for all of this process's sessions there.
        shared = os.environ.get(SHARED_DATA_PLANE_ENV, "1") != "0"
        return await (open_channel if shared else DataPlaneClient.open)(
            url,
            self.session_id,
            token,
            after_seq,
            max_buffered=int(self._run_config.get("event_log_size", 4096)),
            ssl_context=ssl_context,
        )

    def _take_limits(self, info: dict[str, Any]) -> None:
        # The session's bounds, checked here before a frame goes out.
        self._max_audio = int(info.get("max_audio_chunk_bytes", 0))
        self._max_message = int(info.get("max_message_chars", 0))
        self._audio_format = str(info.get("input_audio_format", "pcm16"))
        self._orphan_timeout = float(info.get("orphan_timeout_seconds") or 0.0)
        if self._orphan_timeout > 0 and self._toucher is None and not info.get("closed"):
            self._toucher = asyncio.ensure_future(self._keep_lease())

    async def _keep_lease(self) -> None:
        """While this handle is open and its data plane is down, tell the actor
        every quarter of the orphan timeout that it is still here (a live
        data-plane connection holds the session by itself)."""
        while not self._closed:
            await asyncio.sleep(self._orphan_timeout / 4)
            if self._closed or self.data_plane_connected:
                continue
            try:
                await self._call("touch")
            except (SessionClosedError, SessionLostError, SessionAccessError):
                return
            except Exception:
                continue  # a passing Ray failure: try again next time

    async def _stop_lease(self) -> None:
        task, self._toucher = self._toucher, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _open_data_plane(self, info: dict[str, Any], after_seq: int) -> None:
        self._take_limits(info)
        url = info.get("data_url")
        if not self.use_data_plane or not url or info.get("closed"):
            # A closed session is read and refused over Ray, with typed errors.
            return
        try:
            self._plane = await self._dial(url, info["token"], after_seq)
        except ModelConnectionError:
            # Ray calls still work; only the fast path is missing.
            self._plane = None

    def _translate(self, exc: BaseException) -> BaseException:
        exc = raylib.unwrap_task_error(exc)
        if raylib.is_actor_gone(exc):
            return SessionLostError(f"the actor of session {self.session_id} died", self.session_id)
        return exc

    async def _call(self, method: str, *args: Any) -> Any:
        if self._actor is None:
            raise SessionClosedError(f"session {self.session_id} is not started", self.session_id)
        actor = self._actor
        try:
            return await getattr(actor, method).remote(self.session_id, self._secret, *args)
        except BaseException as exc:
            translated = self._translate(exc)
            if not isinstance(translated, SessionLostError) or self._closed:
                raise translated from None
        # The actor died: wait (bounded) for the session's recovery, then once more.
        await self._recovered(actor)
        try:
            return await getattr(self._actor, method).remote(self.session_id, self._secret, *args)
        except BaseException as exc:
            raise self._translate(exc) from None

    async def _recovered(self, dead_actor: Any) -> None:
        """Wait until the session runs on a live actor again (sharing one
        recovery among all calls), at most ``recovery_timeout_seconds``;
        :class:`SessionLostError` past that or when it cannot be recovered."""
        if self._actor is not dead_actor:
            return  # another call already recovered it
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.ensure_future(self._recover())
        try:
            await asyncio.wait_for(asyncio.shield(self._recovery), self._recovery_timeout)
        except TimeoutError:
            raise self._not_recovered() from None
        except SessionLostError:
            raise
        except SessionNotFoundError:
            # The router knows no such live session and none it lost: it
            # ended (its packed actor then retired, so this call found no actor).
            raise SessionClosedError(
                f"session {self.session_id} has ended", self.session_id
            ) from None
        except BaseException as exc:
            raise SessionLostError(
                f"the actor of session {self.session_id} died and recovery failed: "
                f"{type(exc).__name__}: {exc}",
                self.session_id,
            ) from None

    def _not_recovered(self) -> SessionLostError:
        return SessionLostError(
            f"session {self.session_id} was not recovered within "
            f"{self._recovery_timeout:g} s (recovery_timeout_seconds)",
            self.session_id,
        )

    async def _recover(self) -> None:
        """Re-find the session through the router, re-authenticate with the
        secret on its new actor and reopen the data plane from where this
        handle has read."""
        await self._close_plane()
        info = await self._relocate(self._secret)
        await self._open_data_plane(info, after_seq=self._read_seq)

    async def _relocate(self, secret: str | None) -> dict[str, Any]:
        """Ask the router where the session lives now (waiting for its
        recovery), take that actor and return its data-plane details."""
        from ray_realtime.cluster.service import get_router

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._recovery_timeout
        while True:
            try:
                router = await asyncio.to_thread(get_router)
                placement = await router.recover_session.remote(self.session_id)
                break
            except BaseException as exc:
                error = raylib.unwrap_task_error(exc)
                # No router (being redeployed) or it died under the call: its
                # successor recovers the session from the store; ask it.
                gone = isinstance(error, ServiceNotRunningError) or raylib.is_actor_gone(exc)
                if not gone or loop.time() >= deadline:
                    raise error from None
            await asyncio.sleep(_ROUTER_RETRY_SECONDS)
        try:
            info: dict[str, Any] = await placement["actor"].data_plane.remote(
                self.session_id, secret
            )
        except BaseException as exc:
            raise raylib.unwrap_task_error(exc) from None
        self._placement = placement
        self._actor = placement["actor"]
        return info

    def _fold_recovery(self, batch: EventBatch, after_seq: int) -> EventBatch:
        """A batch that starts with ``session_recovered``: the events this
        reader missed are the numbers between its position and that event
        (reported there, not again as a separate loss)."""
        self._read_seq = max(self._read_seq, batch.last_seq)
        if not batch.events or not isinstance(batch.events[0], RealtimeSessionRecovered):
            return batch
        first_seq = batch.last_seq - len(batch.events) + 1
        event = dataclasses.replace(batch.events[0], events_lost=max(0, first_seq - after_seq - 1))
        return EventBatch([event, *batch.events[1:]], batch.last_seq, 0, batch.closed)

    async def send_message(self, message: Any) -> None:
        """Send a user message: checked here and sent over the data plane when
        it is up (no round trip on the turn's path), else as a Ray call."""
        plane = self._plane
        if plane is not None and not plane.broken and self._max_message:
            checked = check_user_message(message, self._max_message)
            try:
                await plane.send_message(checked)
                return
            except DataPlaneBroken:
                pass
        await self._call("send_message", message)

    async def send_audio(self, audio: bytes, commit: bool) -> None:
        """Send raw audio bytes: over the data plane when it is up (checked
        here first, as the socket gives no reply), else as a Ray call."""
        plane = self._plane
        if plane is not None and not plane.broken:
            chunk = check_audio_chunk(audio, self._max_audio or None, self._audio_format)
            try:
                await plane.send_audio(chunk, commit)
                return
            except DataPlaneBroken:
                pass
        await self._call("send_audio", audio, commit)

    # ------------------------------------------------------------ playback

    def _watch_playback(self) -> None:
        if self._tracker is not None:
            self._loop = asyncio.get_running_loop()
            self._tracker._on_change = self._playback_changed

    def _playback_changed(self) -> None:
        # Called from whichever thread plays the audio: only schedule here.
        loop = self._loop
        if self._report_due or loop is None or self._closed:
            return
        self._report_due = True
        try:
            loop.call_soon_threadsafe(self._schedule_report)
        except RuntimeError:  # the loop is closed
            pass

    def _schedule_report(self) -> None:
        if self._report_task is None or self._report_task.done():
            self._report_task = asyncio.ensure_future(self._report_later())

    async def _report_later(self) -> None:
        await asyncio.sleep(PLAYBACK_REPORT_SECONDS)
        try:
            await self._report_playback()
        except Exception as exc:
            # A lost report only makes a later truncation less precise; the
            # next change (or interrupt) reports again.
            logger.info("session %s: playback report failed: %r", self.session_id, exc)

    async def _report_playback(self) -> None:
        """Send the tracker's state now, unless the session has it already."""
        self._report_due = False
        if self._tracker is None or self._closed:
            return
        snapshot = playback_snapshot(self._tracker)
        if snapshot == self._reported:
            return
        self._reported = snapshot
        plane = self._plane
        if plane is not None and not plane.broken:
            try:
                await plane.send_playback(snapshot)
                return
            except DataPlaneBroken:
                pass
        await self._call("report_playback", list(snapshot))

    async def interrupt(self) -> None:
        """Interrupt: over the data plane when it is up, else a Ray call.
        The playback position goes first, so the cut is where the listener is."""
        await self._report_playback()
        plane = self._plane
        if plane is not None and not plane.broken:
            try:
                await plane.send_interrupt()
                return
            except DataPlaneBroken:
                pass
        await self._call("interrupt")

    async def update_agent(self, agent: RealtimeAgent[Any]) -> None:
        """Switch agent."""
        await self._call("update_agent", raylib.dumps(agent, "agent"))

    async def approve_tool_call(self, call_id: str, always: bool) -> bool:
        """Approve a tool call."""
        return bool(await self._call("approve_tool_call", call_id, always))

    async def reject_tool_call(self, call_id: str, message: str | None, always: bool) -> bool:
        """Reject a tool call."""
        return bool(await self._call("reject_tool_call", call_id, message, always))

    async def read_events(
        self, after_seq: int, max_events: int, timeout: float | None
    ) -> EventBatch:
        """One long-poll for a batch of events."""
        self._read_seq = max(self._read_seq, after_seq)
        plane = self._plane
        batch: EventBatch | None = None
        if plane is not None and plane.can_serve(after_seq):
            try:
                batch = await plane.read(after_seq, max_events, timeout)
            except DataPlaneBroken:
                pass
        if batch is None:
            data = await self._call("read_events", after_seq, max_events, timeout)
            events, last_seq, missed, closed = wire.decode_batch(data)
            batch = EventBatch(events, last_seq, missed, closed)
        batch = self._fold_recovery(batch, after_seq)
        batch = await self._materialise(batch)
        if self._tracker is not None:
            if any(event.type == "audio_interrupted" for event in batch.events):
                # In-process the model resets the application's tracker.
                self._tracker.on_interrupted()
        return batch

    async def _materialise(self, batch: EventBatch) -> EventBatch:
        """``batch`` with its history deltas as the SDK's history events."""
        if not batch.events:
            return batch
        first = batch.last_seq - len(batch.events) + 1
        replica = self._replica
        if replica.needs_snapshot(batch.events, first):
            await self._resync(first - 1)
        try:
            events = replica.materialise(batch.events, first)
        except ProtocolError as exc:
            # A delta that does not fit the replica: start again from the
            # session's own history (once; a second misfit is the peer's).
            logger.warning("session %s: history resync: %s", self.session_id, exc)
            await self._resync(first - 1)
            events = replica.materialise(batch.events, first)
        return EventBatch(events, batch.last_seq, batch.missed, batch.closed)

    async def _resync(self, seq: int) -> None:
        data = await self._call("history_at", seq)
        value = wire.decode(data)
        if (
            not isinstance(value, list)
            or len(value) != 2
            or type(value[0]) is not int
            or not isinstance(value[1], list)
        ):
            raise ProtocolError("the session sent a malformed history snapshot")
        # The actor may answer from a later position (its log dropped the
        # older history meanwhile) or, right after a recovery, from a new
        # log's: never from before the read.
        self._replica.reset(value[1], max(value[0], seq))

    async def get_history(self) -> list[RealtimeItem]:
        """The history, fetched from the actor."""
        data = await self._call("get_history")
        return [
            item if not isinstance(item, dict) else item_from_dict(item)
            for item in wire.decode(data)
        ]

    async def close(self) -> None:
        """Close the session on its actor; idempotent."""
        if self._closed or self._actor is None:
            self._closed = True
            return
        self._closed = True
        self._stop_playback()
        await self._stop_lease()
        await self._close_plane()
        actor = self._actor
        try:
            await actor.close_session.remote(self.session_id, self._secret)
            return
        except BaseException as exc:
            translated = self._translate(exc)
            if not isinstance(translated, SessionLostError):
                raise translated from None
        # Its actor died: the router is recovering it, so close the recovered
        # session (else it would outlive its last handle); bounded, and a
        # session that cannot be recovered is closed already.
        try:
            await self._recovered(actor)
            await self._close_plane()
            await self._actor.close_session.remote(self.session_id, self._secret)
        except BaseException as exc:
            translated = self._translate(exc)
            if not isinstance(translated, SessionLostError):
                raise translated from None

    async def detach(self, keep_alive_seconds: float | None = None) -> None:
        """Leave the session running; only this handle's socket closes. With
        ``keep_alive_seconds``, the actor keeps the session exactly that long
        once no handle holds it (instead of its orphan timeout)."""
        self._closed = True
        self._stop_playback()
        await self._stop_lease()
        if keep_alive_seconds is not None and self._actor is not None:
            try:
                await self._call("detach_session", keep_alive_seconds)
            except SessionClosedError:
                pass
        await self._close_plane()

    def _stop_playback(self) -> None:
        if self._tracker is not None and self._tracker._on_change == self._playback_changed:
            self._tracker._on_change = None
        if self._report_task is not None:
            self._report_task.cancel()

    async def _close_plane(self) -> None:
        plane, self._plane = self._plane, None
        if plane is not None:
            try:
                await plane.close()
            except Exception:
                pass

    def local_history(self) -> list[RealtimeItem] | None:
        """Remote sessions keep their history in the actor."""
        return None


async def actor_backend(
    agent: RealtimeAgent[Any],
    context: Any,
    run_config: RealtimeRunConfig,
    model_config: RealtimeModelConfig,
) -> ActorBackend:
    """The backend of a new actor-backed session (placed and opened by its
    :meth:`~ActorBackend.start`, which ``async with`` on the handle calls).

    The agent, context and configs are serialised now, so a context that
    cannot cross processes fails here with :class:`SerializationError`.
    """
    model_config = dict(model_config)  # type: ignore[assignment]
    # The tracker stays here (the application plays the audio here): the
    # backend reports its state; a pickled copy would never hear the playback.
    tracker = model_config.pop("playback_tracker", None)
    if tracker is not None and not isinstance(tracker, RealtimePlaybackTracker):
        raise ConfigError("playback_tracker must be a RealtimePlaybackTracker")
    if not model_config.get("url") and not model_config.get("api_key"):
        key = os.environ.get("OPENAI_API_KEY")
        if key:
            # The session actor may not share this process's environment.
            model_config["api_key"] = key
    context_bytes = raylib.dumps(context, "context")
    agent_bytes = raylib.dumps(agent, "agent")
    payload = raylib.dumps((agent_bytes, context_bytes, run_config, model_config), "run config")
    return ActorBackend(
        new_session_id(), payload=payload, run_config=run_config, playback_tracker=tracker
    )


async def attach_backend(ticket: str, *, after_seq: int = 0) -> ActorBackend:
    """The backend of a running session, from any process of the cluster,
    with its data plane open from ``after_seq``: ``ticket`` is the owner's
    ``session.ticket``, or a bare session id when the service allows open
    attach."""
    from ray_realtime.cluster.connect import connect_async
    from ray_realtime.cluster.service import get_router

    if not isinstance(ticket, str) or not ticket:
        raise SessionAccessError("attach needs a session ticket (session.ticket)")
    secret: str | None = None
    session_id = ticket
    if is_ticket(ticket):
        session_id, secret = parse_ticket(ticket)
    await connect_async()
    try:
        placement = await get_router().lookup.remote(session_id)
    except BaseException as exc:
        raise raylib.unwrap_task_error(exc) from None
    if secret is None and placement.get("open_attach") is not True:
        raise SessionAccessError(
            "attach needs the session's ticket (session.ticket): this service does not "
            "allow attaching by session id (ServiceConfig.open_attach)",
            session_id,
        )
    backend = ActorBackend(session_id, placement=placement)
    await backend.connect(after_seq, secret)
    return backend
