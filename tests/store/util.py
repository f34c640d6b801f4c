"""Helpers of the store tests: items, random op sequences, a gated store.

:class:`GatedStore` forwards to a real :class:`MemoryStore` and records each
batch; a test can close the gate (writes wait, as on a slow backend) or make
writes fail (as on a backend that is down). It is not a mock of the seam: the
data still lands in a working store.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from ray_realtime.exceptions import StoreUnavailableError
from ray_realtime.store import (
    AgentRecord,
    BaseSessionStore,
    DeleteItem,
    DeleteSession,
    MemoryStore,
    PutItem,
    PutSession,
    RemoveReader,
    SessionState,
    SetReader,
    StoredItem,
    StoreOp,
    UpdateSession,
)

__all__ = ["GatedStore", "item", "random_ops"]


def item(item_id: str, text: str = "") -> StoredItem:
    """A history item as the session would encode it."""
    return StoredItem.from_dict(
        item_id, {"type": "message", "role": "user", "id": item_id, "text": text or item_id}
    )


def random_ops(rng: random.Random, count: int) -> list[StoreOp]:
    """``count`` ops of every kind over a few sessions, items and readers."""
    sessions = ["s1", "s2", "s3"]
    item_ids = [f"i{n}" for n in range(8)]
    ops: list[StoreOp] = []
    for n in range(count):
        sid = rng.choice(sessions)
        roll = rng.random()
        if roll < 0.4:
            ops.append(PutItem(sid, item(rng.choice(item_ids), f"v{n}")))
        elif roll < 0.5:
            ops.append(DeleteItem(sid, rng.choice(item_ids)))
        elif roll < 0.65:
            ops.append(SetReader(sid, rng.choice("abc"), n))
        elif roll < 0.7:
            ops.append(RemoveReader(sid, rng.choice("abc")))
        elif roll < 0.85:
            ops.append(
                UpdateSession(
                    sid,
                    seq=n if rng.random() < 0.7 else None,
                    agent=AgentRecord(f"agent{n % 3}", n) if rng.random() < 0.3 else None,
                    settings={"n": n} if rng.random() < 0.2 else None,
                )
            )
        elif roll < 0.95:
            ops.append(PutSession(SessionState(sid, seq=n, items=(item(rng.choice(item_ids)),))))
        else:
            ops.append(DeleteSession(sid))
    return ops


class GatedStore(BaseSessionStore):
    """A :class:`MemoryStore` whose writes can be held or made to fail."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.gate = asyncio.Event()
        self.gate.set()
        self.failing = False
        self.batches: list[list[StoreOp]] = []
        self.calls = 0
        self.entered = asyncio.Event()

    async def apply(self, ops: Sequence[StoreOp]) -> None:
        self.calls += 1
        self.entered.set()
        await self.gate.wait()
        if self.failing:
            raise StoreUnavailableError("the backend is down (test)")
        self.batches.append(list(ops))
        await self.inner.apply(ops)

    async def load(self, session_id: str) -> SessionState:
        return await self.inner.load(session_id)

    async def list_sessions(self) -> list[str]:
        return await self.inner.list_sessions()

    @property
    def ops_written(self) -> int:
        """How many ops reached the inner store."""
        return sum(len(batch) for batch in self.batches)
