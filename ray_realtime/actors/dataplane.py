"""The data plane: a direct WebSocket between a session handle and its actor.

Ray carries control (open, message, interrupt, update, close); the two
high-rate streams travel over one WebSocket per handle instead, because a Ray
call per 40 ms audio chunk or per event batch would cap a whole machine at a
few dozen live voice sessions (about 1.5-2 k Ray calls/s here, against
55-64 k WebSocket messages/s on loopback):

- handle → actor: input audio, user messages and interrupts, as binary frames
  ``msgpack([op, payload, flag, request_id])``: ``[1, audio, commit, 0]``
  (raw bytes; base64 only happens at the model's socket; no reply),
  ``[2, message, false, id]`` and ``[3, nil, false, id]``, each answered by an
  ack frame ``{"ack": id}`` or ``{"ack": id, "error": <pickled exception>}`` so
  the caller gets the same typed errors as over Ray, for a WebSocket round
  trip (~0.2 ms) instead of a Ray call (~1-4 ms);
- actor → handle: event batches, pushed as soon as events exist, each frame a
  :func:`ray_realtime.wire.encode_batch` message (a msgpack array; acks are
  maps, so the first byte tells them apart).

The handle opens the socket with a hello frame ``{"session_id", "token",
"after_seq"}``; the token is a per-session secret handed out over Ray, compared
in constant time, never logged. The server binds the node's Ray address
(127.0.0.1 in the embedded mode). Frames are bounded (``max_size``), the
per-connection send queue is bounded by WebSocket flow control, and a slow
reader only holds the bounded event log, which tells it how much it missed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import pickle
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from ray_realtime import wire
from ray_realtime.exceptions import (
    ModelConnectionError,
    ProtocolError,
    SessionClosedError,
    UserError,
)
from ray_realtime.runner.driver import EventBatch, SessionDriver
from ray_realtime.runner.events import RealtimeSessionEvent

__all__ = ["DataPlaneBroken", "DataPlaneClient", "DataPlaneServer"]

logger = logging.getLogger(__name__)

OP_AUDIO = 1
OP_MESSAGE = 2
OP_INTERRUPT = 3
MAX_FRAME_BYTES = 16 << 20
HELLO_TIMEOUT_SECONDS = 10.0
# Close codes (application range 4000-4999).
CLOSE_BAD_HELLO = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_SESSION_ENDED = 4000


class DataPlaneBroken(Exception):
    """The socket dropped without the session ending: use Ray calls instead."""


Lookup = Callable[[str], "Awaitable[tuple[SessionDriver, str] | None]"]


class DataPlaneServer:
    """Serves the data plane of the sessions of one session actor."""

    def __init__(self, lookup: Lookup, bind_host: str = "127.0.0.1") -> None:
        self._lookup = lookup
        self._bind_host = bind_host
        self._server: Server | None = None
        self.url = ""
        self.frames_in = 0
        self.frames_out = 0

    async def start(self) -> str:
        """Start listening on a free port; returns ``ws://host:port``."""
        if self._server is None:
            self._server = await serve(
                self._handle,
                self._bind_host,
                0,
                max_size=MAX_FRAME_BYTES,
                compression=None,
                ping_interval=20,
                ping_timeout=20,
            )
            port = next(iter(self._server.sockets)).getsockname()[1]
            self.url = f"ws://{self._bind_host}:{port}"
        return self.url

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            raw = await asyncio.wait_for(ws.recv(), HELLO_TIMEOUT_SECONDS)
            hello = msgpack.unpackb(raw, raw=False) if isinstance(raw, bytes) else None
        except (TimeoutError, ConnectionClosed, ValueError, msgpack.UnpackException):
            await ws.close(CLOSE_BAD_HELLO, "bad hello")
            return
        if not isinstance(hello, dict) or not isinstance(hello.get("session_id"), str):
            await ws.close(CLOSE_BAD_HELLO, "bad hello")
            return
        found = await self._lookup(hello["session_id"])
        if found is None:
            await ws.close(CLOSE_NOT_FOUND, "no such session")
            return
        driver, token = found
        offered = hello.get("token")
        if not isinstance(offered, str) or not hmac.compare_digest(offered, token):
            await ws.close(CLOSE_UNAUTHORIZED, "unauthorized")
            return
        after_seq = hello.get("after_seq", 0)
        if not isinstance(after_seq, int) or isinstance(after_seq, bool) or after_seq < 0:
            await ws.close(CLOSE_BAD_HELLO, "bad after_seq")
            return
        writer = asyncio.get_running_loop().create_task(self._push(ws, driver, after_seq))
        try:
            await self._receive(ws, driver)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _receive(self, ws: ServerConnection, driver: SessionDriver) -> None:
        async for frame in ws:
            self.frames_in += 1
            try:
                if not isinstance(frame, bytes):
                    raise ProtocolError("data plane frames are binary")
                message = msgpack.unpackb(frame, raw=False)
                if not isinstance(message, list) or len(message) != 4:
                    raise ProtocolError("unknown data plane frame")
                op, payload, flag, request_id = message
                if not isinstance(request_id, int) or isinstance(request_id, bool):
                    raise ProtocolError("bad request id")
            except Exception as exc:
                # A malformed frame ends this connection, never the session.
                logger.info("session %s data plane: %s", driver.session_id, exc)
                await ws.close(CLOSE_BAD_HELLO, "bad frame")
                return
            error: BaseException | None = None
            try:
                if op == OP_AUDIO and isinstance(payload, bytes):
                    await driver.send_audio(payload, commit=bool(flag))
                elif op == OP_MESSAGE and isinstance(payload, (str, dict)):
                    await driver.send_message(payload)
                elif op == OP_INTERRUPT:
                    await driver.interrupt()
                else:
                    error = ProtocolError(f"unknown data plane operation {op!r}")
            except (UserError, SessionClosedError) as exc:
                error = exc
            if request_id:
                reply: dict[str, Any] = {"ack": request_id}
                if error is not None:
                    reply["error"] = pickle.dumps(error)
                await ws.send(msgpack.packb(reply, use_bin_type=True))
            elif error is not None and not isinstance(error, SessionClosedError):
                # Audio has no reply: a refused chunk is told to the readers.
                await driver.report_error({"message": str(error), "type": "invalid_input"})

    async def _push(self, ws: ServerConnection, driver: SessionDriver, after_seq: int) -> None:
        cursor = after_seq
        try:
            while True:
                batch = await driver.read_events(cursor, 256, 30.0)
                if batch.events or batch.missed or batch.closed:
                    await ws.send(
                        wire.encode_batch(batch.events, batch.last_seq, batch.missed, batch.closed)
                    )
                    self.frames_out += 1
                cursor = batch.last_seq
                if batch.closed:
                    await ws.close(CLOSE_SESSION_ENDED, "session ended")
                    return
        except ConnectionClosed:
            return


class DataPlaneClient:
    """The handle's end: sends frames, receives pushed event batches and acks.

    A background task reads the socket: acks resolve the waiting request,
    events go to a buffer the handle's iterator takes from. The buffer is
    bounded; when the handle does not read, the oldest events go and the next
    read reports how many were missed (as the actor's own log does).
    """

    def __init__(self, ws: ClientConnection, after_seq: int, max_buffered: int) -> None:
        self._ws = ws
        self._pending: deque[tuple[int, RealtimeSessionEvent]] = deque(maxlen=max_buffered)
        self._stream_seq = after_seq
        self._served_seq = after_seq
        self._closed = False
        self._broken = False
        self._wakeup = asyncio.Event()
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def open(
        cls,
        url: str,
        session_id: str,
        token: str,
        after_seq: int,
        timeout: float = 10.0,
        max_buffered: int = 4096,
    ) -> DataPlaneClient:
        """Connect and say hello; :class:`ModelConnectionError` if it fails."""
        try:
            ws = await connect(
                url, max_size=MAX_FRAME_BYTES, compression=None, open_timeout=timeout
            )
            await ws.send(
                msgpack.packb(
                    {"session_id": session_id, "token": token, "after_seq": after_seq},
                    use_bin_type=True,
                )
            )
        except (TimeoutError, OSError, ConnectionClosed) as exc:
            raise ModelConnectionError(f"data plane connection failed: {exc}") from None
        return cls(ws, after_seq, max_buffered)

    @property
    def broken(self) -> bool:
        """Whether the socket dropped without the session ending."""
        return self._broken

    @property
    def closed(self) -> bool:
        """Whether the session ended (its last events may still be buffered)."""
        return self._closed

    def can_serve(self, after_seq: int) -> bool:
        """Whether a read after ``after_seq`` can come from this stream (the
        stream only moves forward from what it has already handed out)."""
        if self._broken and not self._pending:
            return False
        return self._served_seq <= after_seq <= self._stream_seq

    async def send_audio(self, audio: bytes, commit: bool) -> None:
        """Send one audio frame (no reply); :class:`DataPlaneBroken` if the
        socket is gone."""
        await self._send_frame([OP_AUDIO, audio, commit, 0])

    async def send_message(self, message: str | dict[str, Any], timeout: float = 30.0) -> None:
        """Send a user message and wait for the session to take it."""
        await self._request(OP_MESSAGE, message, timeout)

    async def send_interrupt(self, timeout: float = 30.0) -> None:
        """Interrupt the current response and wait for the session to take it."""
        await self._request(OP_INTERRUPT, None, timeout)

    async def _request(self, op: int, payload: Any, timeout: float) -> None:
        if self._broken or self._closed:
            raise DataPlaneBroken("the data plane socket is closed")
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[request_id] = future
        try:
            await self._send_frame([op, payload, False, request_id])
            error = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise DataPlaneBroken("no answer on the data plane in time") from None
        finally:
            self._acks.pop(request_id, None)
        if error is not None:
            raise error

    async def _send_frame(self, frame: list[Any]) -> None:
        try:
            await self._ws.send(msgpack.packb(frame, use_bin_type=True))
        except ConnectionClosed:
            self._broken = self._broken or not self._closed
            raise DataPlaneBroken("the data plane socket dropped") from None

    async def read(self, after_seq: int, max_events: int, timeout: float | None) -> EventBatch:
        """Events after ``after_seq`` from the stream, waiting up to ``timeout``."""
        self._drop_through(after_seq)
        if not self._pending and not self._closed and not self._broken:
            waiter = self._wakeup
            try:
                await asyncio.wait_for(waiter.wait(), timeout)
            except TimeoutError:
                pass
            self._drop_through(after_seq)
        if self._broken and not self._pending:
            raise DataPlaneBroken("the data plane socket dropped")
        taken = [self._pending.popleft() for _ in range(min(max_events, len(self._pending)))]
        if taken:
            last = taken[-1][0]
            # A gap before the first event is what a bounded buffer dropped.
            missed = max(0, taken[0][0] - after_seq - 1)
        else:
            last = max(after_seq, self._stream_seq)
            missed = max(0, self._stream_seq - after_seq)
        self._served_seq = last
        closed = self._closed and not self._pending
        return EventBatch([event for _, event in taken], last, missed, closed)

    def _drop_through(self, seq: int) -> None:
        while self._pending and self._pending[0][0] <= seq:
            self._pending.popleft()

    def _wake(self) -> None:
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    async def _read_loop(self) -> None:
        try:
            async for frame in self._ws:
                if not isinstance(frame, bytes) or not frame:
                    raise ProtocolError("data plane sent a text or empty frame")
                if frame[0] & 0xF0 == 0x80:  # a msgpack map: an ack
                    self._on_ack(msgpack.unpackb(frame, raw=False))
                    continue
                events, last_seq, _, closed = wire.decode_batch(frame)
                first = last_seq - len(events) + 1
                for offset, event in enumerate(events):
                    self._pending.append((first + offset, event))
                self._stream_seq = last_seq
                if closed:
                    self._closed = True
                self._wake()
        except ConnectionClosed:
            pass
        except Exception as exc:
            logger.warning("data plane reader stopped: %r", exc)
        finally:
            # A normal end comes as a closed batch (or close code 4000) first;
            # anything else (the actor died, the network dropped) is not the
            # session's end: the handle then reads over Ray.
            if self._ws.close_code == CLOSE_SESSION_ENDED:
                self._closed = True
            if not self._closed:
                self._broken = True
            for future in self._acks.values():
                if not future.done():
                    future.set_exception(DataPlaneBroken("the data plane socket dropped"))
            self._wake()

    def _on_ack(self, reply: Any) -> None:
        if not isinstance(reply, dict):
            return
        future = self._acks.get(reply.get("ack", 0))
        if future is None or future.done():
            return
        error = reply.get("error")
        future.set_result(pickle.loads(error) if isinstance(error, bytes) else None)

    async def close(self) -> None:
        """Close the socket and stop the reader."""
        self._closed = True
        await self._ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
