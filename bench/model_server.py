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
import base64
import contextlib
import signal
import struct
import time
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.server import ServerConnection

from ray_realtime.local.connection import Connection
from ray_realtime.local.server import LocalModelServer

__all__ = ["STAMP_MAGIC", "StampingModelServer", "main", "read_stamp"]

STAMP_MAGIC = b"RRTS"
_STAMP = struct.Struct("<4sId")


def read_stamp(pcm: bytes) -> tuple[int, float] | None:
    """``(chunk index, send time)`` of a stamped chunk, else None."""
    if len(pcm) < _STAMP.size or pcm[:4] != STAMP_MAGIC:
        return None
    _, index, sent = _STAMP.unpack_from(pcm)
    return int(index), float(sent)


class _StampingConnection(Connection):
    """A connection that stamps its output audio chunks."""

    def __init__(self, ws: ServerConnection, options: Any, model: str) -> None:
        super().__init__(ws, options, model)
        self._chunk_index: dict[str, int] = {}

    async def emit(self, event_type: str, **fields: Any) -> None:
        if event_type == "response.output_audio.delta":
            pcm = bytearray(base64.b64decode(fields["delta"]))
            if len(pcm) >= _STAMP.size:
                item_id = str(fields.get("item_id", ""))
                index = self._chunk_index.get(item_id, 0)
                self._chunk_index[item_id] = index + 1
                if len(self._chunk_index) > 64:  # bounded: forget the oldest items
                    self._chunk_index.pop(next(iter(self._chunk_index)))
                _STAMP.pack_into(pcm, 0, STAMP_MAGIC, index, time.monotonic())
                fields["delta"] = base64.b64encode(pcm).decode("ascii")
        await super().emit(event_type, **fields)


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
