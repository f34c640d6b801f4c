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
(per event loop: asyncio objects belong to one) and opens a channel on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ray_realtime import wire
from ray_realtime.actors.dataplane import (
    CLOSE_UNAUTHORIZED,
    MAX_FRAME_BYTES,
    MAX_OPENING,
    OP_AUDIO,
    OP_INTERRUPT,
    OP_LEAVE,
    OP_MESSAGE,
    OP_PLAYBACK,
    DataPlaneBroken,
    EventStream,
    _parse_ack,
)
from ray_realtime.exceptions import ModelConnectionError, ProtocolError

__all__ = ["PlaneChannel", "SharedSocket", "open_channel", "shared_sockets"]

logger = logging.getLogger(__name__)

_READY = b"\xc0"  # msgpack nil
_sockets: dict[tuple[int, str], SharedSocket] = {}


class _SocketGone(Exception):
    """The shared socket closed before the channel was welcomed: dial again."""


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
        try:
            await sock.wait_connected(timeout)
            return await sock.open_channel(session_id, token, after_seq, timeout, max_buffered)
        except _SocketGone:
            # It closed under us (its last channel was closing): one fresh try.
            if attempt:
                break
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
