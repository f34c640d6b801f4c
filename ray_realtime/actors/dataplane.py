"""The data plane: a direct WebSocket between a session handle and its actor.

Ray carries control (open, message, interrupt, update, close); the two
high-rate streams travel over a WebSocket instead (one per handle, or one
per handle process and actor shared by its sessions: below), because a Ray
call per audio chunk or per event batch would cap a whole machine at a few
dozen live voice sessions: a machine carries far fewer Ray calls per second
than loopback WebSocket messages (the figures are in ``docs/benchmarks.md``):

- handle → actor: input audio, user messages and interrupts, as binary frames
  ``msgpack([op, payload, flag, request_id])``: ``[1, audio, commit, 0]``
  (raw bytes; base64 only happens at the model's socket; no reply),
  ``[4, [item_id, content_index, elapsed_ms], false, 0]`` (the user's playback
  position, as the handle's tracker reports it; no reply),
  ``[2, message, false, id]`` and ``[3, nil, false, id]``, each answered by an
  ack frame ``{"ack": id}`` or ``{"ack": id, "error": <error>}``, encoded with
  :mod:`ray_realtime.wire` (the error is one of the project's exception
  classes, carried by name and arguments, never pickled) so the caller gets
  the same typed errors as over Ray, for a WebSocket round trip
  instead of a Ray call;
- actor → handle: event batches, pushed as soon as events exist, each frame a
  :func:`ray_realtime.wire.encode_batch` message (a msgpack array; acks are
  maps, so the first byte tells them apart).

Opening (the socket is the project's own trust boundary: Ray's token auth
does not cover it, see ``docs/security.md``):

1. the handle sends a hello frame ``{"session_id", "token", "after_seq"}``;
   ``token`` is the session's secret, handed out over Ray only;
2. the actor answers ``{"welcome": true}``, or closes with
   :data:`CLOSE_UNAUTHORIZED` whatever was wrong (malformed hello, unknown
   session, wrong secret, too slow: one code, so a peer learns nothing about
   which session ids exist);
3. the handle sends one ``nil`` frame (``ready``) and then anything.

Until the welcome, a connection may send at most :data:`MAX_HELLO_BYTES` (the
frame limit of the WebSocket itself), must say hello within the hello timeout
(also the bound of the opening and of every closing handshake), and at most
``max_unauthenticated`` such connections exist per actor (more are closed at
once with 1013, "try again later"). The secret is compared in constant time
and never logged. Only after the welcome does the frame limit rise to
:data:`MAX_FRAME_BYTES` (websockets reads the limit when it starts reading
the next frame, which is why the handle sends the small ``ready`` frame after
the welcome), and frames after it are decoded with a bound on the number of
containers, so that no frame costs more than its size in time and memory.

Shared connections (one per handle process and actor, see
:mod:`ray_realtime.actors.dataplane_shared`): the same socket carries several
sessions, each a *channel* numbered by the handle's process.

- A hello names its channel: ``{"channel", "session_id", "token",
  "after_seq"}`` (channel numbers are positive and grow on a connection;
  a smaller or repeated one is a protocol error). The actor answers
  ``{"welcome": channel}`` or, once the connection has a welcomed channel,
  ``{"refused": channel}`` when the hello deadline passes (whatever was
  wrong: the other channels go on). Before its first welcome the connection
  is unauthenticated as above (hellos only, at most :data:`MAX_OPENING`
  waiting, closed with :data:`CLOSE_UNAUTHORIZED` when none is welcomed in
  time); the handle sends ``ready`` after the first welcome.
- Frames carry their channel: ``[op, payload, flag, request_id, channel]``
  (request ids are the connection's), plus ``[5, nil, false, 0, channel]``:
  the handle leaves that session's stream (the session goes on; no reply).
  A request on a channel not open is answered ``{"ended": channel}``, as is
  every channel whose push fails: its handle then goes over Ray.
- Pushed frames are ``[channel, batch, channel, batch, ...]``, each batch the
  :func:`ray_realtime.wire.encode_batch` bytes as a msgpack bin: the batches
  of every session ready within one loop turn go out in one frame (up to
  :data:`PUSH_FRAME_BYTES`). A channel ends with its session's closed batch.
- A session's frames wait in its own bounded queue (:data:`MAX_INBOX_FRAMES`),
  so a session slow to take input does not hold the others'; a malformed
  frame closes the connection (:data:`CLOSE_BAD_FRAME`), never a session;
  an authenticated connection with no channel for a hello timeout is closed.

The server binds the node's Ray address (127.0.0.1 in the embedded mode).
When Ray runs with TLS (``RAY_USE_TLS`` with ``RAY_TLS_SERVER_CERT``,
``RAY_TLS_SERVER_KEY`` and ``RAY_TLS_CA_CERT``), the data plane is ``wss://``
with the same certificates, verified both ways (as Ray's own gRPC); without
it, it is plaintext. The per-connection send queue is bounded by WebSocket
flow control, and a slow reader only holds the bounded event log, which tells
it how much it missed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import ssl
import typing
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ray_realtime import wire
from ray_realtime.actors.metrics import record_on_node
from ray_realtime.core.history_log import HistoryDelta
from ray_realtime.exceptions import (
    ConfigError,
    ModelConnectionError,
    ProtocolError,
    SessionClosedError,
    UserError,
)
from ray_realtime.session.driver import EventBatch, SessionDriver
from ray_realtime.types.events import RealtimeError, RealtimeSessionEvent

__all__ = [
    "DataPlaneBroken",
    "DataPlaneClient",
    "DataPlaneServer",
    "client_ssl_context",
    "encode_event_batch",
    "server_ssl_context",
]

logger = logging.getLogger(__name__)

OP_AUDIO = 1
OP_MESSAGE = 2
OP_INTERRUPT = 3
# [4, [item_id, content_index, elapsed_ms], false, 0]: the user's playback
# position (the handle's tracker, coalesced); no reply, like audio.
OP_PLAYBACK = 4
# [5, nil, false, 0, channel]: this handle leaves the session's stream (shared
# connections only; the session goes on).
OP_LEAVE = 5
MAX_FRAME_BYTES = 16 << 20
"""Largest frame after authentication (either way)."""
MAX_HELLO_BYTES = 512
"""Largest frame before authentication (a hello is about 100 bytes)."""
MAX_FRAME_CONTAINERS = 4096
"""Most arrays and maps in one frame from a handle (a message has a few)."""
HELLO_TIMEOUT_SECONDS = 2.0
"""Default bound of the opening handshake, and of hello to welcome."""
MAX_UNAUTHENTICATED = 32
"""Default bound of connections per actor that have not been welcomed yet."""
_MAX_ID_CHARS = 128
MAX_CHANNEL_ID = 2**31 - 1
"""Largest channel number of a shared connection."""
MAX_CHANNELS = 4096
"""Most sessions (open or opening) on one shared connection."""
MAX_OPENING = 64
"""Most hellos awaiting an answer on one shared connection."""
MAX_INBOX_FRAMES = 256
"""Frames one session of a shared connection may have waiting to be taken."""
PUSH_FRAME_BYTES = 1 << 20
"""A pushed frame of a shared connection stops taking batches past this size."""
_HELLO_KEYS = frozenset({"session_id", "token", "after_seq"})
_READY = b"\xc0"  # msgpack nil
_WELCOME = msgpack.packb({"welcome": True})
_SESSION_EVENTS: tuple[type, ...] = (*typing.get_args(RealtimeSessionEvent), HistoryDelta)
# Close codes (application range 4000-4999).
CLOSE_BAD_FRAME = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_SESSION_ENDED = 4000
CLOSE_TRY_AGAIN = 1013


class DataPlaneBroken(Exception):
    """The socket dropped without the session ending: use Ray calls instead."""


Lookup = Callable[[str], "Awaitable[tuple[SessionDriver, str] | None]"]


# ------------------------------------------------------------------------ TLS


def _tls_files(environ: Mapping[str, str]) -> tuple[str, str, str] | None:
    """Ray's TLS files when Ray runs with TLS, else None."""
    if environ.get("RAY_USE_TLS", "0").strip().lower() not in ("1", "true"):
        return None
    names = ("RAY_TLS_SERVER_CERT", "RAY_TLS_SERVER_KEY", "RAY_TLS_CA_CERT")
    values = [environ.get(name, "") for name in names]
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise ConfigError(f"RAY_USE_TLS is set but {', '.join(missing)} is not")
    return values[0], values[1], values[2]


def server_ssl_context(environ: Mapping[str, str] | None = None) -> ssl.SSLContext | None:
    """The data plane server's TLS context from Ray's TLS variables (mutual:
    a handle must present a certificate of the same CA), or None without TLS."""
    files = _tls_files(os.environ if environ is None else environ)
    if files is None:
        return None
    cert, key, ca = files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(environ: Mapping[str, str] | None = None) -> ssl.SSLContext | None:
    """The handle's TLS context from Ray's TLS variables: verifies the
    actor's certificate (CA and address) and presents this process's own."""
    files = _tls_files(os.environ if environ is None else environ)
    if files is None:
        return None
    cert, key, ca = files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, checks the host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=ca)
    context.load_cert_chain(cert, key)
    return context


# -------------------------------------------------------------------- frames


def _parse_hello(raw: Any) -> tuple[str, str, int, int]:
    """``(session_id, token, after_seq, channel)`` from a hello frame (channel
    0: a one-session connection's hello, which has none); ProtocolError otherwise."""
    if not isinstance(raw, bytes) or len(raw) > MAX_HELLO_BYTES:
        raise ProtocolError("a hello is one small binary frame")
    n = len(raw)
    try:
        hello = msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n // 2,
            max_ext_len=n,
        )
    except Exception:
        raise ProtocolError("the hello is not msgpack") from None
    if not isinstance(hello, dict) or set(hello) - {"channel"} != _HELLO_KEYS:
        raise ProtocolError("the hello must be {session_id, token, after_seq} (and channel)")
    session_id, token, after_seq = hello["session_id"], hello["token"], hello["after_seq"]
    channel = hello.get("channel", 0)
    if "channel" in hello and not (type(channel) is int and 0 < channel <= MAX_CHANNEL_ID):
        raise ProtocolError("bad channel")
    if not (isinstance(session_id, str) and 0 < len(session_id) <= _MAX_ID_CHARS):
        raise ProtocolError("bad session_id")
    if not (isinstance(token, str) and 0 < len(token) <= _MAX_ID_CHARS):
        raise ProtocolError("bad token")
    if type(after_seq) is not int or after_seq < 0:
        raise ProtocolError("bad after_seq")
    return session_id, token, after_seq, channel


def _decode_frame(frame: Any, shared: bool = False) -> tuple[Any, Any, Any, int, int]:
    """``(op, payload, flag, request_id, channel)`` (``shared``: a shared
    connection's five-element frame, else four and channel 0); ProtocolError
    for anything else.

    The number of arrays and maps is bounded, so a frame of many tiny
    containers costs a bounded amount of memory, not ~70 bytes per byte.
    """
    if not isinstance(frame, bytes):
        raise ProtocolError("data plane frames are binary")
    budget = [MAX_FRAME_CONTAINERS]

    def count(container: Any) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise ProtocolError(f"more than {MAX_FRAME_CONTAINERS} arrays/maps in one frame")
        return container

    n = len(frame)
    try:
        message = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            list_hook=count,
            object_hook=count,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n // 2,
            max_ext_len=0,
        )
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"malformed data plane frame: {type(exc).__name__}") from None
    if not isinstance(message, list) or len(message) != (5 if shared else 4):
        raise ProtocolError("unknown data plane frame")
    op, payload, flag, request_id = message[:4]
    if type(request_id) is not int or request_id < 0:
        raise ProtocolError("bad request id")
    channel = message[4] if shared else 0
    if type(channel) is not int or (shared and not 0 < channel <= MAX_CHANNEL_ID):
        raise ProtocolError("bad channel")
    return op, payload, flag, request_id, channel


def _parse_ack(reply: dict[Any, Any]) -> tuple[int, BaseException | None]:
    """``(request_id, error)`` of an ack map; ProtocolError without an int id."""
    request_id = reply.get("ack")
    if type(request_id) is not int:  # an unknown int is a late ack; anything else is wrong
        raise ProtocolError("the data plane sent an ack without a request id")
    error = reply.get("error")
    if error is not None and not isinstance(error, BaseException):
        error = ProtocolError("the data plane sent a malformed error")
    return request_id, error


def encode_event_batch(batch: EventBatch) -> bytes:
    """:func:`ray_realtime.wire.encode_batch` of ``batch``, where an event that
    cannot be encoded is replaced by an ``error`` event at its place (same
    sequence number), so one bad event never stops a reader's stream."""
    try:
        return wire.encode_batch(batch.events, batch.last_seq, batch.missed, batch.closed)
    except Exception as exc:
        first_error = exc
    events: list[Any] = []
    for event in batch.events:
        try:
            wire.encode_events([event])
            events.append(event)
        except Exception as exc:
            events.append(_unsendable(event, exc))
    try:
        data = wire.encode_batch(events, batch.last_seq, batch.missed, batch.closed)
    except Exception as exc:  # each fits, together too large: send the errors only
        events = [_unsendable(event, exc) for event in batch.events]
        data = wire.encode_batch(events, batch.last_seq, batch.missed, batch.closed)
    logger.warning("an event batch could not be encoded as is: %s", str(first_error)[:200])
    return data


def _unsendable(event: Any, exc: BaseException) -> RealtimeError:
    kind = str(getattr(event, "type", type(event).__name__))[:64]
    return RealtimeError(
        {
            "type": "serialization_error",
            "message": f"a {kind} event could not be sent to readers: {str(exc)[:200]}",
        }
    )


# -------------------------------------------------------------------- server


class DataPlaneServer:
    """Serves the data plane of the sessions of one session actor.

    ``hello_timeout`` bounds the opening handshake and the time from
    connection to welcome; ``max_unauthenticated`` bounds the connections not
    welcomed yet; ``ssl_context`` (see :func:`server_ssl_context`) makes it
    ``wss://``. ``on_connection(session_id, connected)`` is told when a
    session's connection is welcomed and when it ends (the actor's leases).
    """

    def __init__(
        self,
        lookup: Lookup,
        bind_host: str = "127.0.0.1",
        *,
        hello_timeout: float = HELLO_TIMEOUT_SECONDS,
        max_unauthenticated: int = MAX_UNAUTHENTICATED,
        ssl_context: ssl.SSLContext | None = None,
        on_connection: Callable[[str, bool], None] | None = None,
    ) -> None:
        if not hello_timeout > 0 or max_unauthenticated < 1:
            raise ConfigError("hello_timeout must be > 0 and max_unauthenticated >= 1")
        self._lookup = lookup
        self._bind_host = bind_host
        self._hello_timeout = hello_timeout
        self._max_unauthenticated = max_unauthenticated
        self._ssl = ssl_context
        self._on_connection = on_connection
        self._server: Server | None = None
        self._unauthenticated = 0
        self.url = ""
        self.frames_in = 0
        self.frames_out = 0
        self.refused = 0
        self.turned_away = 0
        self.connections = 0

    async def start(self) -> str:
        """Start listening on a free port; returns ``ws://host:port`` (``wss``
        with TLS)."""
        if self._server is None:
            self._server = await serve(
                self._handle,
                self._bind_host,
                0,
                max_size=MAX_HELLO_BYTES,
                compression=None,
                open_timeout=self._hello_timeout,
                # A refused peer's answer to our close frame can sit behind
                # frames we no longer read (flow control): bound the closing
                # handshake too, so it cannot hold an unauthenticated slot
                # for websockets' default 10 s.
                close_timeout=self._hello_timeout,
                ping_interval=20,
                ping_timeout=20,
                ssl=self._ssl,
            )
            port = next(iter(self._server.sockets)).getsockname()[1]
            scheme = "wss" if self._ssl is not None else "ws"
            self.url = f"{scheme}://{self._bind_host}:{port}"
        return self.url

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def statistics(self) -> dict[str, int]:
        """Frames in and out, connections refused and turned away, and the
        connections waiting for authentication now."""
        return {
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "refused": self.refused,
            "turned_away": self.turned_away,
            "unauthenticated": self._unauthenticated,
            "connections": self.connections,
        }

    async def _handle(self, ws: ServerConnection) -> None:
        if self._unauthenticated >= self._max_unauthenticated:
            self.turned_away += 1
            await ws.close(CLOSE_TRY_AGAIN, "busy")
            return
        self._unauthenticated += 1
        counted = True

        def authenticated() -> None:
            nonlocal counted
            if counted:
                counted = False
                self._unauthenticated -= 1

        self.connections += 1
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._hello_timeout
            hello: tuple[str, str, int, int] | None = None
            try:
                hello = _parse_hello(await asyncio.wait_for(ws.recv(), self._hello_timeout))
            except (TimeoutError, ProtocolError, ConnectionClosed):
                pass
            if hello is not None and hello[3]:
                # Imported here: that module builds on this one.
                from ray_realtime.actors.dataplane_shared import SharedConnection

                await SharedConnection(self, ws, deadline, authenticated).run(hello)
                return
            welcomed = await self._authenticate(ws, hello, deadline)
            authenticated()
            record_on_node(
                "data_plane_connections",
                1.0,
                outcome="refused" if welcomed is None else "accepted",
            )
            if welcomed is None:
                return
            driver, after_seq = welcomed
            self._connected(driver.session_id, True)
            writer = loop.create_task(self._push(ws, driver, after_seq))
            try:
                await self._receive(ws, driver)
            finally:
                self._connected(driver.session_id, False)
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
        finally:
            authenticated()
            self.connections -= 1

    def _connected(self, session_id: str, connected: bool) -> None:
        if self._on_connection is not None:
            self._on_connection(session_id, connected)

    async def _check_hello(
        self, session_id: str, offered: str, deadline: float
    ) -> SessionDriver | None:
        """The session's driver when ``offered`` is its secret, else None once
        ``deadline`` has passed (a wrong secret and an unknown session take the
        same time, so the time tells nothing)."""
        loop = asyncio.get_running_loop()
        found: tuple[SessionDriver, str] | None = None
        try:
            # The handle may say hello while its session is still being
            # registered: the lookup waits for it, within the same deadline.
            found = await asyncio.wait_for(
                self._lookup(session_id), max(0.0, deadline - loop.time())
            )
        except TimeoutError:
            found = None
        token = found[1] if found is not None else ""
        # Constant time in the secret (bytes: compare_digest refuses non-ASCII str).
        secret_ok = hmac.compare_digest(
            offered.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
        )
        if found is not None and secret_ok:
            return found[0]
        self.refused += 1
        await asyncio.sleep(max(0.0, deadline - loop.time()))
        return None

    async def _authenticate(
        self, ws: ServerConnection, hello: tuple[str, str, int, int] | None, deadline: float
    ) -> tuple[SessionDriver, int] | None:
        loop = asyncio.get_running_loop()
        driver: SessionDriver | None = None
        if hello is not None:
            session_id, offered, after_seq, _ = hello
            driver = await self._check_hello(session_id, offered, deadline)
        else:
            self.refused += 1
        if driver is None:
            await ws.close(CLOSE_UNAUTHORIZED, "unauthorized")
            return None
        # websockets reads the limit when it starts on a frame: it is already
        # reading the next one with the small limit, which the handle's
        # ``ready`` frame fits; every frame after that may be large.
        ws.protocol.max_message_size = MAX_FRAME_BYTES
        try:
            await ws.send(_WELCOME)
            ready = await asyncio.wait_for(ws.recv(), max(0.0, deadline - loop.time()) + 1.0)
        except (TimeoutError, ConnectionClosed):
            await ws.close(CLOSE_BAD_FRAME, "no ready frame")
            return None
        if ready != _READY:
            await ws.close(CLOSE_BAD_FRAME, "expected the ready frame")
            return None
        return driver, after_seq

    async def _receive(self, ws: ServerConnection, driver: SessionDriver) -> None:
        async for frame in ws:
            self.frames_in += 1
            try:
                op, payload, flag, request_id, _ = _decode_frame(frame)
            except ProtocolError as exc:
                # A malformed frame ends this connection, never the session.
                logger.info("session %s data plane: %s", driver.session_id, exc)
                await ws.close(CLOSE_BAD_FRAME, "bad frame")
                return
            await _apply(ws, driver, op, payload, flag, request_id)

    async def _push(self, ws: ServerConnection, driver: SessionDriver, after_seq: int) -> None:
        cursor = after_seq
        try:
            while True:
                batch = await driver.read_events(cursor, 256, 30.0)
                if batch.missed:
                    record_on_node("events_lost", float(batch.missed))
                if batch.events or batch.missed or batch.closed:
                    await ws.send(encode_event_batch(batch))
                    self.frames_out += 1
                cursor = batch.last_seq
                if batch.closed:
                    await ws.close(CLOSE_SESSION_ENDED, "session ended")
                    return
        except ConnectionClosed:
            return
        except Exception as exc:
            # Never a silent stop: the handle sees the socket drop and reads
            # over Ray from its position, losing nothing.
            logger.warning("session %s data plane push stopped: %r", driver.session_id, exc)
            await ws.close(1011, "push failed")


async def _apply(
    ws: ServerConnection, driver: SessionDriver, op: Any, payload: Any, flag: Any, request_id: int
) -> None:
    """Carry out one frame's operation on the session; acknowledge a request."""
    error: BaseException | None = None
    try:
        if op == OP_AUDIO and isinstance(payload, bytes):
            await driver.send_audio(payload, commit=bool(flag))
        elif op == OP_MESSAGE and isinstance(payload, (str, dict)):
            await driver.send_message(payload)
        elif op == OP_INTERRUPT:
            await driver.interrupt()
        elif op == OP_PLAYBACK:
            driver.report_playback(payload)
        else:
            error = ProtocolError(f"unknown data plane operation {op!r}")
    except (UserError, SessionClosedError) as exc:
        error = exc
    if request_id:
        reply: dict[str, Any] = {"ack": request_id}
        if error is not None:
            reply["error"] = error
        await ws.send(wire.encode(reply))
    elif error is not None and not isinstance(error, SessionClosedError):
        # Audio has no reply: a refused chunk is told to the readers.
        await driver.report_error({"message": str(error), "type": "invalid_input"})


class EventStream:
    """A handle's buffer of one session's pushed events, read by its iterator.

    The buffer is bounded; when the handle does not read, the oldest events
    go and the next read reports how many were missed (as the actor's own log
    does). The stream only moves forward from what it has handed out.
    """

    def __init__(self, after_seq: int, max_buffered: int) -> None:
        self._pending: deque[tuple[int, RealtimeSessionEvent]] = deque(maxlen=max_buffered)
        self._stream_seq = after_seq
        self._served_seq = after_seq
        self._closed = False
        self._broken = False
        self._wakeup = asyncio.Event()

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

    def _add_batch(self, frame: bytes) -> None:
        """Take one pushed batch (:func:`ray_realtime.wire.encode_batch` bytes);
        ProtocolError for anything else."""
        events, last_seq, _, closed = wire.decode_batch(frame)
        if not all(isinstance(event, _SESSION_EVENTS) for event in events):
            # Well-formed msgpack is not yet a batch of events: never
            # hand a peer's plain value to the application as one.
            raise ProtocolError("data plane sent a batch holding a non-event")
        first = last_seq - len(events) + 1
        for offset, event in enumerate(events):
            self._pending.append((first + offset, event))
        self._stream_seq = last_seq
        if closed:
            self._closed = True
        self._wake()

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


class DataPlaneClient(EventStream):
    """The handle's end of a one-session connection: sends frames, receives
    pushed event batches and acks.

    A background task reads the socket: acks resolve the waiting request,
    events go to the bounded buffer the handle's iterator takes from.
    """

    def __init__(self, ws: ClientConnection, after_seq: int, max_buffered: int) -> None:
        super().__init__(after_seq, max_buffered)
        self._ws = ws
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
        ssl_context: ssl.SSLContext | None = None,
    ) -> DataPlaneClient:
        """Connect, say hello and wait for the welcome; :class:`ModelConnectionError`
        if any of it fails (refused: close code :data:`CLOSE_UNAUTHORIZED`).

        A ``wss://`` url needs ``ssl_context`` (see :func:`client_ssl_context`);
        the actor's certificate is verified with it.
        """
        if url.startswith("wss://") and ssl_context is None:
            raise ModelConnectionError("the data plane uses TLS but this process has no TLS setup")
        ws: ClientConnection | None = None
        try:
            ws = await connect(
                url,
                max_size=MAX_FRAME_BYTES,
                compression=None,
                open_timeout=timeout,
                ssl=ssl_context if url.startswith("wss://") else None,
            )
            await ws.send(
                msgpack.packb(
                    {"session_id": session_id, "token": token, "after_seq": after_seq},
                    use_bin_type=True,
                )
            )
            welcome = await asyncio.wait_for(ws.recv(), timeout)
            if welcome != _WELCOME:
                raise ModelConnectionError("the data plane did not welcome this handle")
            await ws.send(_READY)
        except (TimeoutError, OSError, ConnectionClosed, InvalidHandshake) as exc:
            if ws is not None:
                await ws.close()
            code = getattr(getattr(exc, "rcvd", None), "code", None)
            reason = "refused the session's secret" if code == CLOSE_UNAUTHORIZED else str(exc)
            raise ModelConnectionError(f"data plane connection failed: {reason}") from None
        except BaseException:
            if ws is not None:
                await ws.close()
            raise
        return cls(ws, after_seq, max_buffered)

    async def send_audio(self, audio: bytes, commit: bool) -> None:
        """Send one audio frame (no reply); :class:`DataPlaneBroken` if the
        socket is gone."""
        await self._send_frame([OP_AUDIO, audio, commit, 0])

    async def send_message(self, message: str | dict[str, Any], timeout: float = 30.0) -> None:
        """Send a user message and wait for the session to take it."""
        await self._request(OP_MESSAGE, message, timeout)

    async def send_playback(self, snapshot: Any) -> None:
        """Report the user's playback position (no reply)."""
        await self._send_frame([OP_PLAYBACK, list(snapshot), False, 0])

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

    async def _read_loop(self) -> None:
        try:
            async for frame in self._ws:
                if not isinstance(frame, bytes) or not frame:
                    raise ProtocolError("data plane sent a text or empty frame")
                if frame[0] & 0xF0 == 0x80:  # a msgpack map: an ack
                    self._on_ack(wire.decode(frame))
                    continue
                self._add_batch(frame)
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
        request_id, error = _parse_ack(reply)
        future = self._acks.get(request_id)
        if future is not None and not future.done():
            future.set_result(error)

    async def close(self) -> None:
        """Close the socket and stop the reader."""
        self._closed = True
        await self._ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
