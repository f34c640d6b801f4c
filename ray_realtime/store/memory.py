"""The in-process session store: the seam's working fake.

:class:`MemoryStore` keeps every session in a :class:`StoreState` and nothing
survives the process. It is what unit tests of the session side use, and the
reference the conformance suite holds the durable backends to.
"""

from __future__ import annotations

from collections.abc import Sequence

from ray_realtime.exceptions import StoreError
from ray_realtime.store.interface import BaseSessionStore
from ray_realtime.store.records import SessionState, StoreOp
from ray_realtime.store.state import StoreState

__all__ = ["MemoryStore"]


class MemoryStore(BaseSessionStore):
    """A :class:`~ray_realtime.store.interface.SessionStore` in this process's memory."""

    def __init__(self) -> None:
        self._state = StoreState()
        self._closed = False
        self.batches = 0
        """How many batches :meth:`apply` took (a figure for tests and benchmarks)."""

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the memory store is closed")

    async def apply(self, ops: Sequence[StoreOp]) -> None:
        """Apply ``ops`` in order."""
        self._check_open()
        self.batches += 1
        self._state.apply(ops)

    async def load(self, session_id: str) -> SessionState:
        """A snapshot of one session."""
        self._check_open()
        return self._state.load(session_id)

    async def list_sessions(self) -> list[str]:
        """The stored session ids, sorted."""
        self._check_open()
        return self._state.session_ids()

    async def aclose(self) -> None:
        """Refuse further calls (the data is dropped)."""
        self._closed = True
