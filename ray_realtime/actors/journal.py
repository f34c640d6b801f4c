"""A session's journal: what the session actor writes to the session store.

One :class:`SessionJournal` per session, over the actor's shared
:class:`~ray_realtime.store.writer.WriteBehindStore`. It sees every event the
session's core emits (the driver's ``before_emit`` hook) and turns them into
store writes:

* the session record at open (:meth:`SessionJournal.open`): how to rebuild the
  session (the pickled agent, context and configs, model secrets removed),
  the current agent, a hash of the session's secret - never the secret;
* history items: ``history_added`` queues the item and returns the flush for
  the driver to hold the event (and the events after it) until the flush
  acknowledges - the session keeps running meanwhile - so an item that any
  reader saw in ``history_added`` is in the store; items changed by a history
  delta (transcripts; the session's log form of ``history_updated``) are
  written within ``dirty_delay`` seconds, encoded once per delay however many
  deltas came, and at the end of every turn; removed items are deleted. The
  journal follows the history through the deltas on a list of its own, so
  each costs the size of the change, not of the history;
* the event sequence number, as a *reservation*: before an event numbered
  past the stored mark is appended, the mark moves ``seq_block`` numbers ahead
  and is flushed. A restored session numbers its events from the stored mark,
  so its numbers never go back below any a reader already received;
* the turn in progress (the agent that started it), so a restored session
  ends a turn the fault cut visibly;
* readers' positions, when the host reports them (:meth:`SessionJournal.reader_at`;
  written with the session's next write) - not wired to the data plane yet:
  recovery does not need them, the sequence reservation keeps numbers safe.

Every write is queued in O(1); only the emission of events waits on the
store: behind the flush of ``history_added`` (shared by everything queued
meanwhile) and once every ``seq_block`` events. A flush that fails reports an ``error`` event
(``store_unavailable``) and lets the event through: the session goes on, and
the writer keeps retrying in the background.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ray_realtime.core.history import insertion_index
from ray_realtime.core.history_log import HistoryDelta, LogEvent, apply_ops
from ray_realtime.exceptions import ProtocolError, StoreError
from ray_realtime.store.records import (
    AgentRecord,
    DeleteItem,
    DeleteSession,
    PutItem,
    PutSession,
    Secrets,
    SessionState,
    SetReader,
    StoredItem,
    UpdateSession,
)
from ray_realtime.store.writer import WriteBehindStore
from ray_realtime.types.events import (
    RealtimeAgentEndEvent,
    RealtimeAgentStartEvent,
    RealtimeError,
    RealtimeHandoffEvent,
    RealtimeHistoryAdded,
    RealtimeHistoryUpdated,
    RealtimeSessionEvent,
)
from ray_realtime.types.items import RealtimeItem, item_to_dict

__all__ = ["SECRET_HASH_KEY", "SessionJournal", "hash_secret", "secret_matches"]

logger = logging.getLogger(__name__)

SECRET_HASH_KEY = "sha256"
"""The key of the secret's hash in the stored :class:`Secrets`."""

_FLUSH_WAIT_SECONDS = 5.0
# Model config keys that carry credentials: never stored (a restored session
# takes the key from its own process's environment).
_SECRET_MODEL_KEYS = ("api_key", "headers")


def hash_secret(secret: str) -> str:
    """The hex SHA-256 of a session's secret (what the store keeps)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def secret_matches(offered: Any, stored_hash: str) -> bool:
    """Whether ``offered`` hashes to ``stored_hash`` (constant time)."""
    if not isinstance(offered, str) or not stored_hash:
        return False
    return hmac.compare_digest(hash_secret(offered).encode(), stored_hash.encode())


def public_model_config(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """``model_config`` without its credentials (what may be stored)."""
    return {k: v for k, v in model_config.items() if k not in _SECRET_MODEL_KEYS}


class SessionJournal:
    """Writes one session's durable state (see the module docstring)."""

    def __init__(
        self,
        store: WriteBehindStore,
        session_id: str,
        settings: Mapping[str, Any],
        *,
        reserved_seq: int = 0,
        history: list[RealtimeItem] | None = None,
        report: Callable[[RealtimeSessionEvent], None] | None = None,
        seq_block: int = 256,
        dirty_delay: float = 0.05,
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.settings: dict[str, Any] = dict(settings)
        self.reserved_seq = reserved_seq
        self._block = seq_block
        self._dirty_delay = dirty_delay
        self._report = report
        self._known: dict[str, RealtimeItem] = {i.item_id: i for i in history or ()}
        # The history as the events so far left it (to see what a delta replaced).
        self._items: list[RealtimeItem] = list(history or ())
        self._dirty: dict[str, RealtimeItem] = {}
        self._dirty_timer: asyncio.TimerHandle | None = None
        self._readers: dict[str, int] = {}
        self._closed = False

    # ------------------------------------------------------------- writes

    def open(self, agent: AgentRecord, secret: str) -> None:
        """Queue the session's whole record (a new session)."""
        self._enqueue_safe(
            PutSession(
                SessionState(
                    self.session_id,
                    agent,
                    self.settings,
                    self.reserved_seq,
                    Secrets({SECRET_HASH_KEY: hash_secret(secret)}),
                )
            )
        )

    def agent_changed(self, agent: AgentRecord, payload: bytes | None = None) -> None:
        """The session runs another agent now (``payload``: its pickle, when
        it came from ``update_agent`` and may be registered nowhere)."""
        if payload is not None:
            self.settings["agent_payload"] = payload
        self._enqueue_safe(UpdateSession(self.session_id, agent=agent, settings=self.settings))

    async def reserve(self, seq: int) -> None:
        """Make numbers up to ``seq`` safe to give events the host appends
        itself (a restored session's ``session_recovered``): move the stored
        mark past it and wait for the store."""
        if seq > self.reserved_seq:
            self.reserved_seq = seq + self._block - 1
            self._enqueue_safe(UpdateSession(self.session_id, seq=self.reserved_seq))
            await self._flush()

    async def flush(self) -> None:
        """Write everything queued, changed items included, and wait for the
        store (a hand-over before the session moves to another actor)."""
        if not self._closed:
            self._write_dirty()
        await self._flush()

    def reader_at(self, reader_id: str, seq: int) -> None:
        """A reader received events up to ``seq`` (written with the next batch)."""
        self._readers[reader_id] = seq

    def closed(self) -> None:
        """The session ended: forget it in the store."""
        self._closed = True
        if self._dirty_timer is not None:
            self._dirty_timer.cancel()
        self._enqueue_safe(DeleteSession(self.session_id))

    # ------------------------------------------------------- the emit hook

    def before_emit(self, event: LogEvent, seq: int) -> Awaitable[None] | None:
        """The driver's ``before_emit``: queue what ``event`` changes; an
        awaitable when the event must wait for the store."""
        if self._closed:
            return None
        flush = False
        if isinstance(event, RealtimeHistoryAdded):
            self._items.insert(insertion_index(self._items, event.item), event.item)
            self._put(event.item)
            flush = True
        elif isinstance(event, HistoryDelta):
            flush = self._delta(event)
        elif isinstance(event, RealtimeHistoryUpdated):
            self._items = list(event.history)
            self._updated(event.history)
        elif isinstance(event, RealtimeAgentStartEvent):
            self._set_turn(event.agent.name)
        elif isinstance(event, RealtimeAgentEndEvent):
            self._write_dirty()
            self._set_turn("")
        elif isinstance(event, RealtimeHandoffEvent):
            self._enqueue_safe(
                UpdateSession(self.session_id, agent=AgentRecord(event.to_agent.name))
            )
        if seq > self.reserved_seq:
            self.reserved_seq = seq + self._block - 1
            self._enqueue_safe(UpdateSession(self.session_id, seq=self.reserved_seq))
            flush = True
        return self._flush() if flush else None

    def _put(self, item: RealtimeItem) -> None:
        self._known[item.item_id] = item
        self._dirty.pop(item.item_id, None)
        self._enqueue_safe(
            PutItem(self.session_id, StoredItem.from_dict(item.item_id, item_to_dict(item)))
        )

    def _delta(self, event: HistoryDelta) -> bool:
        """Queue what a delta changed; True when it added an item (a reader
        will see it in ``history_added``: wait for the store)."""
        for op in event.ops:
            kind, _, value = op
            if kind == "reset":
                self._items = list(value)
                self._updated(self._items)
                continue
            undo: list[Any] = []
            try:
                apply_ops(self._items, [op], undo)
            except ProtocolError as exc:  # never expected: the core made the op
                logger.warning("session %s: journal history op: %s", self.session_id, exc)
                continue
            old = undo[0][2] if undo else None
            if kind == "insert":
                self._put(value)
            elif kind == "set":
                if old is not None and old.item_id != value.item_id:
                    self._forget(old.item_id)
                self._changed(value)
            elif old is not None:  # remove
                self._forget(old.item_id)
        return event.added

    def _changed(self, item: RealtimeItem) -> None:
        self._known[item.item_id] = item
        self._dirty[item.item_id] = item
        if self._dirty_timer is None:
            loop = asyncio.get_running_loop()
            self._dirty_timer = loop.call_later(self._dirty_delay, self._write_dirty)

    def _forget(self, item_id: str) -> None:
        if self._known.pop(item_id, None) is not None:
            self._dirty.pop(item_id, None)
            self._enqueue_safe(DeleteItem(self.session_id, item_id))

    def _updated(self, history: list[RealtimeItem]) -> None:
        # Items are replaced, never changed in place: identity finds the changes.
        seen: set[str] = set()
        for item in history:
            seen.add(item.item_id)
            if self._known.get(item.item_id) is not item:
                self._known[item.item_id] = item
                self._dirty[item.item_id] = item
        for item_id in [i for i in self._known if i not in seen]:
            del self._known[item_id]
            self._dirty.pop(item_id, None)
            self._enqueue_safe(DeleteItem(self.session_id, item_id))
        if self._dirty and self._dirty_timer is None:
            loop = asyncio.get_running_loop()
            self._dirty_timer = loop.call_later(self._dirty_delay, self._write_dirty)

    def _write_dirty(self) -> None:
        if self._dirty_timer is not None:
            self._dirty_timer.cancel()
            self._dirty_timer = None
        dirty, self._dirty = self._dirty, {}
        for item in dirty.values():
            self._put(item)

    def _set_turn(self, agent_name: str) -> None:
        if self.settings.get("turn", "") != agent_name:
            self.settings["turn"] = agent_name
            self._enqueue_safe(UpdateSession(self.session_id, settings=self.settings))

    def _enqueue_safe(self, op: Any) -> None:
        try:
            if self._readers:
                readers, self._readers = self._readers, {}
                for reader_id, seq in readers.items():
                    self.store.enqueue(SetReader(self.session_id, reader_id, seq))
            self.store.enqueue(op)
        except StoreError as exc:
            self._failed(exc)

    async def _flush(self) -> None:
        try:
            await asyncio.wait_for(self.store.flush(), _FLUSH_WAIT_SECONDS)
        except (TimeoutError, StoreError) as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        message = f"the session store did not take a write: {type(exc).__name__}: {exc}"
        logger.warning("session %s: %s", self.session_id, message)
        if self._report is not None:
            self._report(
                RealtimeError(
                    {"message": message, "type": "store_unavailable", "code": "store_unavailable"}
                )
            )
