"""The benchmarks' model server: the bundled local model server, with every
output audio chunk stamped with the time the server sent it.

Both execution paths of a benchmark talk to one such server, started as a
separate process (``python -m bench.model_server --port 0 [...]``; the first
stdout line is its URL), so the in-process path does not share its GIL with
the server and both paths see exactly the same server settings.

The stamp: the first 16 bytes of each ``response.output_audio.delta``'s PCM
are replaced by ``b"RRTS"``, the chunk's index in its item (uint32) and
``time.monotonic()`` just before the frame is written (float64). On Linux
``time.monotonic`` reads ``CLOCK_MONOTONIC``, which is the same clock in
every process of the machine, so the handle can subtract it from its own
``time.monotonic()`` on receipt: that is the chunk's hop latency, model
server -> (session actor ->) handle. The audio bytes otherwise pass unchanged,
so the number of chunks and their sizes are those of the plain server.
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import contextlib
import signal
import struct
import time
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.server import ServerConnection

from ray_realtime.local.connection import Connection
from ray_realtime.local.server import LocalModelServer

__all__ = ["STAMP_MAGIC", "StampingModelServer", "main", "read_stamp", "stamp_delta"]

STAMP_MAGIC = b"RRTS"
_STAMP = struct.Struct("<4sId")


def read_stamp(pcm: bytes) -> tuple[int, float] | None:
    """``(chunk index, send time)`` of a stamped chunk, else None."""
    if len(pcm) < _STAMP.size or pcm[:4] != STAMP_MAGIC:
        return None
    _, index, sent = _STAMP.unpack_from(pcm)
    return int(index), float(sent)


def stamp_delta(delta: str, index: int, sent: float) -> str:
    """``delta`` (base64 PCM) with its first 16 bytes replaced by the stamp; a delta
    shorter than the stamp is returned unchanged. Only the first 24 base64 characters
    (18 bytes) are decoded and encoded again: the rest is kept as it is."""
    if len(delta) < 24:
        return delta
    head = bytearray(binascii.a2b_base64(delta[:24]))
    _STAMP.pack_into(head, 0, STAMP_MAGIC, index, sent)
    return binascii.b2a_base64(head, newline=False).decode("ascii") + delta[24:]


class _StampingConnection(Connection):
    """A connection that stamps its output audio chunks."""

    def __init__(self, ws: ServerConnection, options: Any, model: str) -> None:
        super().__init__(ws, options, model)
        self._chunk_index: dict[str, int] = {}

    async def emit_audio_delta(self, delta: str, ids: dict[str, Any]) -> None:
        item_id = str(ids.get("item_id", ""))
        index = self._chunk_index.get(item_id, 0)
        self._chunk_index[item_id] = index + 1
        if len(self._chunk_index) > 64:  # bounded: forget the oldest items
            self._chunk_index.pop(next(iter(self._chunk_index)))
        await super().emit_audio_delta(stamp_delta(delta, index, time.monotonic()), ids)


class StampingModelServer(LocalModelServer):
    """:class:`LocalModelServer` whose output audio chunks carry send stamps."""

    connection_class = _StampingConnection


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.model_server", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pace-audio", action="store_true")
    parser.add_argument("--audio-ms-per-char", type=float, default=12.5)
    parser.add_argument("--audio-chunk-ms", type=int, default=40)
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    server = StampingModelServer(
        "127.0.0.1",
        args.port,
        pace_audio=args.pace_audio,
        audio_ms_per_char=args.audio_ms_per_char,
        audio_chunk_ms=args.audio_chunk_ms,
        max_connections=4096,
    )
    print(await server.start(), flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; the first stdout line is the URL."""
    asyncio.run(_serve(_parse(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
