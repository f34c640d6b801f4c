"""Shared data-plane connections: one WebSocket per (handle process, session actor).

A process that holds handles of several sessions on one session actor (packed
sessions, the default) talks to that actor over one WebSocket: each session
is a *channel* of it, opened with its own hello and its own secret (the
frames are in :mod:`ray_realtime.actors.dataplane`). A refused hello refuses
that channel only; a session that ends, or whose handle closes, ends its
channel only; closing the last channel closes the socket. When the socket
drops, every channel on it is broken (:class:`DataPlaneBroken`) and each
handle goes on over Ray calls, as with a one-session connection.

:func:`open_channel` finds or dials the socket for an actor's data-plane URL
(per event loop: asyncio objects belong to one) and opens a channel on it;
:class:`SharedConnection` is the actor's end, which
:class:`~ray_realtime.actors.dataplane.DataPlaneServer` hands a connection
whose hello names a channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ray_realtime import wire
from ray_realtime.actors.dataplane import (
    _READY,
    CLOSE_BAD_FRAME,
    CLOSE_SESSION_ENDED,
    CLOSE_UNAUTHORIZED,
    MAX_CHANNELS,
    MAX_FRAME_BYTES,
    MAX_INBOX_FRAMES,
    MAX_OPENING,
    OP_AUDIO,
    OP_INTERRUPT,
    OP_LEAVE,
    OP_MESSAGE,
    OP_PLAYBACK,
    PUSH_FRAME_BYTES,
    DataPlaneBroken,
    DataPlaneServer,
    EventStream,
    _apply,
    _decode_frame,
    _parse_ack,
    _parse_hello,
    encode_event_batch,
)
from ray_realtime.actors.metrics import record_on_node
from ray_realtime.exceptions import ModelConnectionError, ProtocolError
from ray_realtime.session.driver import SessionDriver

__all__ = ["PlaneChannel", "SharedConnection", "SharedSocket", "open_channel", "shared_sockets"]

logger = logging.getLogger(__name__)

_sockets: dict[tuple[int, str], SharedSocket] = {}


class _SocketGone(Exception):
    """The shared socket closed before the channel was welcomed: dial again."""


# ---------------------------------------------------------------- server side


async def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again those that go on:
    on Python 3.11 a cancellation that meets ``wait_for``'s inner future just
    done is lost, and a pusher then waits for its next events."""
    pending = [task for task in tasks if not task.done()]
    while pending:
        for task in pending:
            task.cancel()
        _, still = await asyncio.wait(pending, timeout=0.1)
        pending = list(still)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            logger.debug("data plane task ended with %r", task.exception())


class _Channel:
    """One session on a shared connection (server side)."""

    __slots__ = ("driver", "inbox", "number", "pusher", "sent", "worker")

    def __init__(self, number: int, driver: SessionDriver) -> None:
        self.number = number
        self.driver = driver
        # Frames for this session wait here, so a session slow to take input
        # does not hold the others' frames (bounded: past it, the reader waits).
        self.inbox: asyncio.Queue[tuple[Any, Any, Any, int]] = asyncio.Queue(MAX_INBOX_FRAMES)
        self.pusher: asyncio.Task[None] | None = None
        self.worker: asyncio.Task[None] | None = None
        self.sent: asyncio.Future[None] | None = None


class SharedConnection:
    """The server's side of a shared connection: the sessions of one handle
    process on this actor, each on its own channel (see the module docstring).

    Until a hello is welcomed the connection is unauthenticated: only hellos
    (small frames), at most :data:`MAX_OPENING` at a time, and a welcome
    within the hello deadline or the connection closes. A refused hello
    after that is answered ``{"refused": channel}`` and disturbs no other
    channel. Event batches ready within one loop turn go out in one frame.
    """

    def __init__(
        self,
        server: DataPlaneServer,
        ws: ServerConnection,
        deadline: float,
        on_authenticated: Callable[[], None],
    ) -> None:
        self._server = server
        self._ws = ws
        self._deadline = deadline
        self._on_authenticated = on_authenticated
        self._authenticated = False
        self._channels: dict[int, _Channel] = {}
        # Channels whose tasks may still run (a channel left is no longer in
        # _channels while its worker carries out the frames before the leave).
        self._live: set[_Channel] = set()
        self._opening: dict[int, asyncio.Task[None]] = {}
        self._ready: list[tuple[_Channel, bytes]] = []
        self._wake = asyncio.Event()
        self._idle_since: float | None = None
        self._done = False
        self._last_channel = 0

    async def run(self, hello: tuple[str, str, int, int]) -> None:
        """Serve the connection until it closes."""
        loop = asyncio.get_running_loop()
        watchdog = loop.create_task(self._watch())
        writer = loop.create_task(self._write_loop())
        self._open(hello, self._deadline)
        try:
            await self._read_loop()
        finally:
            self._done = True
            tasks: list[asyncio.Task[Any]] = [watchdog, writer, *self._opening.values()]
            for channel in self._live:
                tasks.extend(t for t in (channel.pusher, channel.worker) if t is not None)
                self._detach(channel)
            self._live.clear()
            await _cancel_all(tasks)

    async def _watch(self) -> None:
        """Close the connection when it is not authenticated by its deadline,
        and when it has had no session for a hello timeout."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, self._deadline - loop.time()))
        if not self._authenticated:
            await self._ws.close(CLOSE_UNAUTHORIZED, "unauthorized")
            return
        timeout = self._server._hello_timeout
        while True:
            if self._channels or self._opening:
                self._idle_since = None
            elif self._idle_since is None:
                self._idle_since = loop.time()
            elif loop.time() - self._idle_since >= timeout:
                await self._ws.close(CLOSE_SESSION_ENDED, "no session")
                return
            await asyncio.sleep(timeout / 2)

    def _open(self, hello: tuple[str, str, int, int], deadline: float) -> None:
        number = self._last_channel = hello[3]
        task = asyncio.get_running_loop().create_task(self._welcome(hello, deadline))
        self._opening[number] = task

    async def _welcome(self, hello: tuple[str, str, int, int], deadline: float) -> None:
        session_id, offered, after_seq, number = hello
        try:
            driver = await self._server._check_hello(session_id, offered, deadline)
        finally:
            self._opening.pop(number, None)
        record_on_node(
            "data_plane_connections", 1.0, outcome="refused" if driver is None else "accepted"
        )
        if driver is None:
            if not self._authenticated:
                await self._ws.close(CLOSE_UNAUTHORIZED, "unauthorized")
            else:
                await self._send_control({"refused": number})
            return
        if not self._authenticated:
            self._authenticated = True
            # As for a one-session connection: the handle sends its ``ready``
            # frame after the first welcome; frames after it may be large.
            self._ws.protocol.max_message_size = MAX_FRAME_BYTES
            self._on_authenticated()
        channel = _Channel(number, driver)
        self._channels[number] = channel
        self._live.add(channel)
        self._server._connected(session_id, True)
        await self._send_control({"welcome": number})
        if self._done:  # the connection ended meanwhile (and ended the channel)
            return
        channel.pusher = asyncio.get_running_loop().create_task(self._push(channel, after_seq))

    async def _send_control(self, message: dict[str, int]) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._ws.send(msgpack.packb(message))

    async def _read_loop(self) -> None:
        server = self._server
        try:
            async for frame in self._ws:
                server.frames_in += 1
                try:
                    await self._take(frame)
                except ProtocolError as exc:
                    logger.info("data plane shared connection: %s", exc)
                    # The frames before the bad one are carried out (and
                    # acknowledged) first, as on a one-session connection.
                    workers = [c.worker for c in self._live if c.worker is not None]
                    if workers:
                        await asyncio.wait(workers, timeout=server._hello_timeout)
                    code = CLOSE_BAD_FRAME if self._authenticated else CLOSE_UNAUTHORIZED
                    await self._ws.close(code, "bad frame")
                    return
        except ConnectionClosed:
            return

    async def _take(self, frame: Any) -> None:
        if isinstance(frame, bytes) and frame[:1] and frame[0] & 0xF0 == 0x80:
            # A fixmap: a hello for another session.
            hello = _parse_hello(frame)
            if not hello[3]:
                raise ProtocolError("a hello on a shared connection needs a channel")
            if len(self._opening) >= MAX_OPENING or (
                len(self._channels) + len(self._opening) >= MAX_CHANNELS
            ):
                raise ProtocolError("too many sessions on one connection")
            if hello[3] <= self._last_channel:
                # Numbers only grow: a number names one session for the
                # connection's whole life, with no set of used ones to keep.
                raise ProtocolError("a channel number must be larger than the last one")
            loop = asyncio.get_running_loop()
            self._open(hello, loop.time() + self._server._hello_timeout)
            return
        if not self._authenticated:
            raise ProtocolError("only hellos before the welcome")
        if frame == _READY:
            return
        op, payload, flag, request_id, number = _decode_frame(frame, shared=True)
        channel = self._channels.get(number)
        if channel is None:
            # Never opened, refused, or ended: a late frame. A request gets
            # told, so that its handle goes over Ray.
            if request_id:
                await self._send_control({"ended": number})
            return
        if op == OP_LEAVE:
            # Frames after a leave find no channel; those before it are
            # still carried out, in order, then the worker ends it.
            self._detach(channel)
        if channel.worker is None:
            channel.worker = asyncio.get_running_loop().create_task(self._work(channel))
        await channel.inbox.put((op, payload, flag, request_id))

    async def _work(self, channel: _Channel) -> None:
        # Runs while the channel has frames waiting (started by the reader).
        try:
            while not channel.inbox.empty():
                op, payload, flag, request_id = channel.inbox.get_nowait()
                if op == OP_LEAVE:
                    self._end(channel)
                    return
                await _apply(self._ws, channel.driver, op, payload, flag, request_id)
        except ConnectionClosed:
            return
        finally:
            channel.worker = None

    def _detach(self, channel: _Channel) -> None:
        if self._channels.get(channel.number) is channel:
            del self._channels[channel.number]
            self._server._connected(channel.driver.session_id, False)

    def _end(self, channel: _Channel) -> None:
        self._detach(channel)
        self._live.discard(channel)
        current = asyncio.current_task()
        for task in (channel.pusher, channel.worker):
            if task is not None and task is not current:
                task.cancel()

    async def _push(self, channel: _Channel, after_seq: int) -> None:
        driver = channel.driver
        cursor = after_seq
        try:
            while channel in self._live:
                batch = await driver.read_events(cursor, 256, 30.0)
                if batch.missed:
                    record_on_node("events_lost", float(batch.missed))
                if batch.events or batch.missed or batch.closed:
                    # At most one batch per channel waits for the writer:
                    # what comes meanwhile goes in this channel's next batch.
                    if channel.sent is not None and not channel.sent.done():
                        await channel.sent
                    channel.sent = asyncio.get_running_loop().create_future()
                    self._ready.append((channel, encode_event_batch(batch)))
                    self._wake.set()
                cursor = batch.last_seq
                if batch.closed:  # the closed batch ends the channel at the handle
                    self._end(channel)
                    return
        except (asyncio.CancelledError, ConnectionClosed):
            raise
        except Exception as exc:
            # Never a silent stop: the handle is told and reads over Ray.
            logger.warning("session %s data plane push stopped: %r", driver.session_id, exc)
            self._end(channel)
            await self._send_control({"ended": channel.number})

    async def _write_loop(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._write_batches()

    async def _write_batches(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            ready, self._ready = self._ready, []
            while ready:
                size = 0
                count = 0
                for _, data in ready:
                    if count and size + len(data) > PUSH_FRAME_BYTES:
                        break
                    size += len(data)
                    count += 1
                taken, ready = ready[:count], ready[count:]
                frame: list[Any] = []
                for channel, data in taken:
                    frame += (channel.number, data)
                await self._ws.send(msgpack.packb(frame, use_bin_type=True))
                self._server.frames_out += 1
                for channel, _ in taken:
                    if channel.sent is not None and not channel.sent.done():
                        channel.sent.set_result(None)


# ---------------------------------------------------------------- client side


def shared_sockets() -> list[SharedSocket]:
    """The shared sockets of this process that are open or opening."""
    return [s for s in _sockets.values() if not s.done]


async def open_channel(
    url: str,
    session_id: str,
    token: str,
    after_seq: int,
    *,
    timeout: float = 10.0,
    max_buffered: int = 4096,
    ssl_context: ssl.SSLContext | None = None,
) -> PlaneChannel:
    """A channel for ``session_id`` on this process's socket to ``url``
    (dialled when there is none), welcomed with ``token``;
    :class:`ModelConnectionError` if the socket cannot open or the session's
    secret is refused. A ``wss://`` url needs ``ssl_context``."""
    if url.startswith("wss://") and ssl_context is None:
        raise ModelConnectionError("the data plane uses TLS but this process has no TLS setup")
    loop = asyncio.get_running_loop()
    for attempt in range(2):
        key = (id(loop), url)
        sock = _sockets.get(key)
        if sock is None or sock.done or sock.loop is not loop:
            sock = SharedSocket(url, ssl_context, loop)
            _sockets[key] = sock
        sock.openers += 1
        failed = True
        try:
            await sock.wait_connected(timeout)
            channel = await sock.open_channel(session_id, token, after_seq, timeout, max_buffered)
            failed = False
            return channel
        except _SocketGone:
            # It closed under us (its last channel was closing): one fresh try.
            failed = False
            if attempt:
                break
        finally:
            sock.openers -= 1
            if failed:
                # Cancelled or failed: a socket dialled for openers that all
                # gave up must not stay open with no channel on it.
                sock.close_soon_if_unused()
    raise ModelConnectionError("data plane connection failed: the socket closed while opening")


class SharedSocket:
    """One WebSocket to one actor, carrying the channels of this process's
    sessions there. Its reader hands pushed batches to their channels and
    acks to their requests; request ids are the socket's."""

    def __init__(
        self, url: str, ssl_context: ssl.SSLContext | None, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.url = url
        self.loop = loop
        self.done = False
        self._ssl = ssl_context if url.startswith("wss://") else None
        self._ws: ClientConnection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._channels: dict[int, PlaneChannel] = {}
        self._opening: dict[int, tuple[asyncio.Future[bool], PlaneChannel]] = {}
        self._acks: dict[int, tuple[asyncio.Future[Any], int]] = {}
        self._next_channel = 0
        self._next_id = 0
        self._ready_sent = False
        # Openers between dialling and their channel's welcome.
        self.openers = 0
        # The actor answers at most MAX_OPENING hellos at a time per socket
        # (more is a protocol error): the others wait here.
        self._hello_slots = asyncio.Semaphore(MAX_OPENING)

    @property
    def channels(self) -> int:
        """Channels open on this socket now."""
        return len(self._channels)

    async def wait_connected(self, timeout: float) -> None:
        """Dial once (shared by every opener); ModelConnectionError on failure."""
        if self._connecting is None:
            self._connecting = self.loop.create_task(self._connect(timeout))
        await asyncio.shield(self._connecting)

    async def _connect(self, timeout: float) -> None:
        try:
            self._ws = await connect(
                self.url,
                max_size=MAX_FRAME_BYTES,
                compression=None,
                open_timeout=timeout,
                ssl=self._ssl,
            )
        except (TimeoutError, OSError, InvalidHandshake) as exc:
            self._forget()
            raise ModelConnectionError(f"data plane connection failed: {exc}") from None
        if self.done:
            # Closed while dialling (its openers gave up); an opener still
            # waiting finds it done and dials afresh.
            await self._ws.close()
            return
        self._reader = self.loop.create_task(self._read_loop())

    async def open_channel(
        self, session_id: str, token: str, after_seq: int, timeout: float, max_buffered: int
    ) -> PlaneChannel:
        """Say hello for one session and wait for its welcome."""
        async with self._hello_slots:
            return await self._open_channel(session_id, token, after_seq, timeout, max_buffered)

    async def _open_channel(
        self, session_id: str, token: str, after_seq: int, timeout: float, max_buffered: int
    ) -> PlaneChannel:
        if self.done or self._ws is None:
            raise _SocketGone
        self._next_channel += 1
        number = self._next_channel
        channel = PlaneChannel(self, number, after_seq, max_buffered)
        waiter: asyncio.Future[bool] = self.loop.create_future()
        self._opening[number] = (waiter, channel)
        hello: dict[str, Any] = {
            "channel": number,
            "session_id": session_id,
            "token": token,
            "after_seq": after_seq,
        }
        try:
            await self._ws.send(msgpack.packb(hello, use_bin_type=True))
            welcomed = await asyncio.wait_for(waiter, timeout)
        except ConnectionClosed:
            raise _SocketGone from None
        except TimeoutError:
            raise ModelConnectionError("data plane connection failed: no welcome in time") from None
        finally:
            self._opening.pop(number, None)
        if not welcomed:
            await self._close_if_unused()
            raise ModelConnectionError("data plane connection failed: refused the session's secret")
        return channel

    def next_request_id(self) -> int:
        """A request id unique on this socket."""
        self._next_id += 1
        return self._next_id

    async def send(self, frame: list[Any]) -> None:
        """Send one frame; ConnectionClosed when the socket is gone."""
        if self._ws is None:
            raise DataPlaneBroken("the data plane socket is not open")
        await self._ws.send(msgpack.packb(frame, use_bin_type=True))

    async def request(self, channel: int, op: int, payload: Any, timeout: float) -> Any:
        """Send a request frame and wait for its ack; its error (or None)."""
        request_id = self.next_request_id()
        future: asyncio.Future[Any] = self.loop.create_future()
        self._acks[request_id] = (future, channel)
        try:
            await self.send([op, payload, False, request_id, channel])
            return await asyncio.wait_for(future, timeout)
        finally:
            self._acks.pop(request_id, None)

    async def leave(self, channel: PlaneChannel) -> None:
        """A channel's handle is done with it: tell the actor, or close the
        socket when no other channel uses it."""
        if self._channels.get(channel.number) is channel:
            del self._channels[channel.number]
        if self.done:
            return
        if self._channels or self._opening:
            with contextlib.suppress(ConnectionClosed, DataPlaneBroken):
                await self.send([OP_LEAVE, None, False, 0, channel.number])
            return
        await self.close()

    def close_soon_if_unused(self) -> None:
        """Close the socket from a task of its own when no channel uses it
        and none is opening (an opener was cancelled or failed)."""
        if not self._channels and not self._opening and not self.openers and not self.done:
            self._forget()
            if not self.loop.is_closed():
                self.loop.create_task(self.close())

    async def _close_if_unused(self) -> None:
        if not self._channels and not self._opening and not self.done:
            await self.close()

    async def close(self) -> None:
        """Close the socket (every channel on it ends) and stop the reader."""
        self._forget()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    def _forget(self) -> None:
        self.done = True
        key = (id(self.loop), self.url)
        if _sockets.get(key) is self:
            del _sockets[key]

    # ------------------------------------------------------------- reading

    async def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            async for frame in self._ws:
                if not isinstance(frame, bytes) or not frame:
                    raise ProtocolError("data plane sent a text or empty frame")
                if frame[0] & 0xF0 == 0x80:  # a msgpack map: control
                    await self._on_control(wire.decode(frame))
                else:
                    self._on_push(frame)
        except ConnectionClosed:
            pass
        except Exception as exc:
            logger.warning("data plane reader stopped: %r", exc)
        finally:
            self._finish()

    async def _on_control(self, reply: Any) -> None:
        if not isinstance(reply, dict) or len(reply) > 2:
            raise ProtocolError("the data plane sent an unknown control frame")
        if "ack" in reply:
            request_id, error = _parse_ack(reply)
            entry = self._acks.get(request_id)
            if entry is not None and not entry[0].done():
                entry[0].set_result(error)
            return
        if len(reply) != 1:
            raise ProtocolError("the data plane sent an unknown control frame")
        (kind, number), *_ = reply.items()
        if type(number) is not int:
            raise ProtocolError("the data plane sent a control frame without a channel")
        if kind == "welcome":
            opening = self._opening.get(number)
            if not self._ready_sent:
                # Frames after this one may be large (see the hello in dataplane.py).
                self._ready_sent = True
                assert self._ws is not None
                await self._ws.send(_READY)
            if opening is None or opening[0].done():  # its opener gave up: leave
                with contextlib.suppress(ConnectionClosed, DataPlaneBroken):
                    await self.send([OP_LEAVE, None, False, 0, number])
                return
            self._channels[number] = opening[1]
            opening[0].set_result(True)
        elif kind == "refused":
            opening = self._opening.get(number)
            if opening is not None and not opening[0].done():
                opening[0].set_result(False)
        elif kind == "ended":
            channel = self._channels.pop(number, None)
            if channel is not None:
                self._break(channel)
        else:
            raise ProtocolError("the data plane sent an unknown control frame")

    def _on_push(self, frame: bytes) -> None:
        """``[channel, batch, channel, batch, ...]``, each batch as bytes."""
        containers = [0]

        def one_array(value: Any) -> Any:
            containers[0] += 1
            if containers[0] > 1:
                raise ProtocolError("a pushed frame is one flat array")
            return value

        def no_map(value: Any) -> Any:
            raise ProtocolError("a pushed frame holds no map")

        n = len(frame)
        try:
            items = msgpack.unpackb(
                frame,
                raw=False,
                list_hook=one_array,
                object_hook=no_map,
                max_str_len=0,
                max_bin_len=n,
                max_array_len=n,
                max_map_len=0,
                max_ext_len=0,
            )
        except ProtocolError:
            raise
        except Exception:
            raise ProtocolError("the data plane sent a malformed frame") from None
        if type(items) is not list or len(items) % 2:
            raise ProtocolError("a pushed frame is [channel, batch, ...]")
        for i in range(0, len(items), 2):
            number, data = items[i], items[i + 1]
            if type(number) is not int or type(data) is not bytes:
                raise ProtocolError("a pushed frame is [channel, batch, ...]")
            channel = self._channels.get(number)
            if channel is not None:  # else a late batch of a channel left
                channel._add_batch(data)

    def _break(self, channel: PlaneChannel) -> None:
        channel._drop()
        for future, number in self._acks.values():
            if number == channel.number and not future.done():
                future.set_exception(DataPlaneBroken("the data plane channel ended"))

    def _finish(self) -> None:
        self._forget()
        refused = self._ws is not None and self._ws.close_code == CLOSE_UNAUTHORIZED
        for waiter, _ in self._opening.values():
            if not waiter.done():
                if refused:
                    waiter.set_result(False)
                else:
                    waiter.set_exception(_SocketGone())
        for channel in self._channels.values():
            channel._drop()
        for future, _ in self._acks.values():
            if not future.done():
                future.set_exception(DataPlaneBroken("the data plane socket dropped"))


class PlaneChannel(EventStream):
    """One session's stream on a :class:`SharedSocket`: the same calls as a
    :class:`~ray_realtime.actors.dataplane.DataPlaneClient`."""

    def __init__(self, sock: SharedSocket, number: int, after_seq: int, max_buffered: int) -> None:
        super().__init__(after_seq, max_buffered)
        self._socket = sock
        self.number = number

    async def send_audio(self, audio: bytes, commit: bool) -> None:
        """Send one audio frame (no reply); :class:`DataPlaneBroken` if the
        channel is gone."""
        await self._send([OP_AUDIO, audio, commit, 0, self.number])

    async def send_message(self, message: str | dict[str, Any], timeout: float = 30.0) -> None:
        """Send a user message and wait for the session to take it."""
        await self._request(OP_MESSAGE, message, timeout)

    async def send_playback(self, snapshot: Any) -> None:
        """Report the user's playback position (no reply)."""
        await self._send([OP_PLAYBACK, list(snapshot), False, 0, self.number])

    async def send_interrupt(self, timeout: float = 30.0) -> None:
        """Interrupt the current response and wait for the session to take it."""
        await self._request(OP_INTERRUPT, None, timeout)

    async def _request(self, op: int, payload: Any, timeout: float) -> None:
        if self._broken or self._closed:
            raise DataPlaneBroken("the data plane channel is closed")
        try:
            error = await self._socket.request(self.number, op, payload, timeout)
        except TimeoutError:
            raise DataPlaneBroken("no answer on the data plane in time") from None
        except ConnectionClosed:
            self._drop()
            raise DataPlaneBroken("the data plane socket dropped") from None
        if error is not None:
            raise error

    async def _send(self, frame: list[Any]) -> None:
        if self._broken or self._closed:
            raise DataPlaneBroken("the data plane channel is closed")
        try:
            await self._socket.send(frame)
        except ConnectionClosed:
            self._drop()
            raise DataPlaneBroken("the data plane socket dropped") from None

    def _drop(self) -> None:
        """The channel ended without the session's end (unless that came first)."""
        if not self._closed:
            self._broken = True
        self._wake()

    async def close(self) -> None:
        """Leave the session's stream (the socket closes with its last channel)."""
        self._closed = True
        self._wake()
        await self._socket.leave(self)
