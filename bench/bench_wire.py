"""Benchmark of the wire codec on the hot path: a batch of output audio events.

Encodes and decodes a batch of 256 ``RealtimeAudio`` events, each holding
40 ms of 24 kHz mono PCM16 (1920 bytes), with

* msgpack: :func:`ray_realtime.wire.encode_events` / ``decode_events``;
* pickle (protocol 5), what Ray uses for plain Python objects;
* JSON with base64 audio, rebuilding the same dataclasses on decode.

Prints µs per event (median of several runs) and bytes per event. Runs in a
few seconds; not a test. Usage: ``python bench/bench_wire.py``.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import statistics
import time
from collections.abc import Callable
from typing import Any

from ray_realtime import wire
from ray_realtime.types.events import RealtimeAudio
from ray_realtime.types.model_events import RealtimeModelAudioEvent

BATCH = 256
CHUNK_BYTES = 24_000 * 2 * 40 // 1000  # 40 ms of 24 kHz mono PCM16 = 1920 bytes
RUNS = 9  # timed runs per codec; the median is reported
LOOPS = 40  # batches per timed run


def make_events() -> list[RealtimeAudio]:
    return [
        RealtimeAudio(
            audio=RealtimeModelAudioEvent(
                data=os.urandom(CHUNK_BYTES),
                response_id="resp_CvN3kq2y7Xz",
                item_id="item_CvN3kqA1b2c",
                content_index=0,
            ),
            item_id="item_CvN3kqA1b2c",
            content_index=0,
        )
        for _ in range(BATCH)
    ]


# --------------------------------------------------------------------------- codecs


def pickle_encode(events: list[RealtimeAudio]) -> bytes:
    return pickle.dumps(events, protocol=5)


def pickle_decode(data: bytes) -> list[RealtimeAudio]:
    events: list[RealtimeAudio] = pickle.loads(data)
    return events


def json_encode(events: list[RealtimeAudio]) -> bytes:
    return json.dumps(
        [
            {
                "type": e.type,
                "item_id": e.item_id,
                "content_index": e.content_index,
                "audio": {
                    "type": e.audio.type,
                    "data": base64.b64encode(e.audio.data).decode("ascii"),
                    "response_id": e.audio.response_id,
                    "item_id": e.audio.item_id,
                    "content_index": e.audio.content_index,
                },
            }
            for e in events
        ],
        separators=(",", ":"),
    ).encode()


def json_decode(data: bytes) -> list[RealtimeAudio]:
    return [
        RealtimeAudio(
            audio=RealtimeModelAudioEvent(
                data=base64.b64decode(a["data"]),
                response_id=a["response_id"],
                item_id=a["item_id"],
                content_index=a["content_index"],
            ),
            item_id=e["item_id"],
            content_index=e["content_index"],
        )
        for e in json.loads(data)
        for a in (e["audio"],)
    ]


CODECS: list[tuple[str, Callable[[Any], bytes], Callable[[bytes], Any]]] = [
    ("msgpack (ray_realtime.wire)", wire.encode_events, wire.decode_events),
    ("pickle (protocol 5)", pickle_encode, pickle_decode),
    ("JSON + base64", json_encode, json_decode),
]


# --------------------------------------------------------------------------- timing


def per_event_us(function: Callable[[Any], Any], argument: Any) -> float:
    """Median over RUNS of the time per event of ``function(argument)``, in µs."""
    function(argument)  # warm up
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        for _ in range(LOOPS):
            function(argument)
        samples.append((time.perf_counter() - start) / (LOOPS * BATCH) * 1e6)
    return statistics.median(samples)


def main() -> None:
    events = make_events()
    rows = []
    for name, encode, decode in CODECS:
        data = encode(events)
        if decode(data) != events:
            raise SystemExit(f"{name}: the round trip changed the events")
        encode_us = per_event_us(encode, events)
        decode_us = per_event_us(decode, data)
        rows.append((name, encode_us, decode_us, encode_us + decode_us, len(data) / BATCH))

    print(
        f"{BATCH} RealtimeAudio events per batch, {CHUNK_BYTES} B of PCM16 each; "
        f"median of {RUNS} runs x {LOOPS} batches"
    )
    header = f"{'codec':<28} {'encode µs':>10} {'decode µs':>10} {'total µs':>10} {'B/event':>9}"
    print(header)
    print("-" * len(header))
    base = rows[0][3]
    for name, encode_us, decode_us, total_us, size in rows:
        ratio = "" if total_us == base else f"  ({total_us / base:.1f}x)"
        times = f"{encode_us:>10.2f} {decode_us:>10.2f} {total_us:>10.2f}"
        print(f"{name:<28} {times} {size:>9.0f}{ratio}")


if __name__ == "__main__":
    main()
