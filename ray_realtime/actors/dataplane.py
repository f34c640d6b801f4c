"""The data plane: a direct WebSocket between a session handle and its actor.

Ray carries control (open, message, interrupt, update, close); the two
high-rate streams travel over one WebSocket per handle instead, because a Ray
call per 40 ms audio chunk or per event batch would cap a whole machine at a
few dozen live voice sessions (about 1.5-2 k Ray calls/s here, against
55-64 k WebSocket messages/s on loopback):

- handle → actor: input audio, as binary frames ``msgpack([1, audio, commit])``
  (raw bytes; base64 only happens at the model's socket);
- actor → handle: event batches, pushed as soon as events exist, each frame a
  :func:`ray_realtime.wire.encode_batch` message.

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
from collections import deque
from collections.abc import Callable

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from ray_realtime import wire
from ray_realtime.exceptions import ModelConnectionError, ProtocolError
from ray_realtime.runner.driver import EventBatch, SessionDriver
from ray_realtime.runner.events import RealtimeSessionEvent

__all__ = ["DataPlaneBroken", "DataPlaneClient", "DataPlaneServer"]

logger = logging.getLogger(__name__)

OP_AUDIO = 1
MAX_FRAME_BYTES = 16 << 20
HELLO_TIMEOUT_SECONDS = 10.0
# Close codes (application range 4000-4999).
CLOSE_BAD_HELLO = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_SESSION_ENDED = 4000


class DataPlaneBroken(Exception):
    """The socket dropped without the session ending: use Ray calls instead."""


Lookup = Callable[[str], "tuple[SessionDriver, str] | None"]


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
        except (asyncio.TimeoutError, ConnectionClosed, ValueError, msgpack.UnpackException):
            await ws.close(CLOSE_BAD_HELLO, "bad hello")
            return
        if not isinstance(hello, dict) or not isinstance(hello.get("session_id"), str):
            await ws.close(CLOSE_BAD_HELLO, "bad hello")
            return
        found = self._lookup(hello["session_id"])
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
                if (
                    not isinstance(message, list)
                    or len(message) != 3
                    or message[0] != OP_AUDIO
                    or not isinstance(message[1], bytes)
                ):
                    raise ProtocolError("unknown data plane frame")
                await driver.send_audio(message[1], commit=bool(message[2]))
            except Exception as exc:
                # Bad input ends this connection, never the session.
                logger.info("session %s data plane: %s", driver.session_id, exc)
                await ws.close(CLOSE_BAD_HELLO, "bad frame")
                return

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
    """The handle's end: sends audio frames, receives pushed event batches.

    Events are kept in a small buffer until the handle's iterator takes them,
    so a consumer that stops mid-batch resumes where it left off.
    """

    def __init__(self, ws: ClientConnection, after_seq: int) -> None:
        self._ws = ws
        self._pending: deque[tuple[int, RealtimeSessionEvent]] = deque()
        self._stream_seq = after_seq
        self._served_seq = after_seq
        self._closed = False
        self._broken = False

    @classmethod
    async def open(
        cls, url: str, session_id: str, token: str, after_seq: int, timeout: float = 10.0
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
        except (OSError, asyncio.TimeoutError, ConnectionClosed) as exc:
            raise ModelConnectionError(f"data plane connection failed: {exc}") from None
        return cls(ws, after_seq)

    @property
    def stream_seq(self) -> int:
        """The newest sequence number received."""
        return self._stream_seq

    @property
    def broken(self) -> bool:
        """Whether the socket dropped without the session ending."""
        return self._broken

    def can_serve(self, after_seq: int) -> bool:
        """Whether a read after ``after_seq`` can come from this stream (the
        stream only moves forward from what it has already handed out)."""
        if self._broken and not self._pending:
            return False
        return self._served_seq <= after_seq <= self._stream_seq

    async def send_audio(self, audio: bytes, commit: bool) -> None:
        """Send one audio frame (no reply); :class:`DataPlaneBroken` if the
        socket is gone."""
        try:
            await self._ws.send(msgpack.packb([OP_AUDIO, audio, commit], use_bin_type=True))
        except ConnectionClosed:
            self._broken = True
            raise DataPlaneBroken("the data plane socket dropped") from None

    async def read(self, after_seq: int, max_events: int, timeout: float | None) -> EventBatch:
        """Events after ``after_seq`` from the stream, waiting up to ``timeout``."""
        self._drop_through(after_seq)
        if not self._pending and not self._closed:
            await self._receive(timeout)
            self._drop_through(after_seq)
            if self._broken and not self._pending:
                raise DataPlaneBroken("the data plane socket dropped")
        taken = [self._pending.popleft() for _ in range(min(max_events, len(self._pending)))]
        if taken:
            last = taken[-1][0]
            # A gap before the first event is what the bounded log dropped.
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

    async def _receive(self, timeout: float | None) -> None:
        try:
            frame = await asyncio.wait_for(self._ws.recv(), timeout)
        except asyncio.TimeoutError:
            return
        except ConnectionClosed as exc:
            # A normal end comes as a closed batch first; anything else
            # (the actor died, the network dropped) is not the session's end.
            received = exc.rcvd
            if received is not None and received.code == CLOSE_SESSION_ENDED:
                self._closed = True
            else:
                self._broken = True
            return
        if not isinstance(frame, bytes):
            raise ProtocolError("data plane sent a text frame")
        events, last_seq, _, closed = wire.decode_batch(frame)
        first = last_seq - len(events) + 1
        for offset, event in enumerate(events):
            self._pending.append((first + offset, event))
        self._stream_seq = last_seq
        if closed:
            self._closed = True

    async def close(self) -> None:
        """Close the socket."""
        self._closed = True
        await self._ws.close()
