"""The SQLite session store: one file, write-ahead log, a row per thing.

Three tables - ``sessions`` (agent, settings, sequence, secrets), ``items``
(one row per history item, with its position) and ``readers`` (one row per
reader) - so each write touches the rows it changes: appending an item
inserts one row and replacing it updates one row; nothing rewrites a whole
session. Each batch of ops is one transaction, so a batch lands whole or not
at all.

Durability: the database runs in WAL mode. With ``synchronous="NORMAL"`` (the
default) a committed batch survives the death of the process (SIGKILL
included); a power loss or kernel crash may roll back the last batches. With
``synchronous="FULL"`` every commit is also fsync'ed, surviving power loss at
the cost of one fsync per batch.

``sqlite3`` blocks, so every call runs on one thread the store owns (SQLite
connections belong to the thread that opened them), never on the event loop.

The file holds the sessions' secrets; it is created readable by its owner only
(mode 0600; SQLite gives its ``-wal`` and ``-shm`` files the same mode).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from ray_realtime.exceptions import (
    SessionNotFoundError,
    StoreError,
    StoreUnavailableError,
    UserError,
)
from ray_realtime.store.interface import BaseSessionStore
from ray_realtime.store.records import (
    AgentRecord,
    DeleteItem,
    DeleteSession,
    PutItem,
    PutSession,
    RemoveReader,
    Secrets,
    SessionState,
    SetReader,
    StoredItem,
    StoreOp,
    UpdateSession,
    assert_never,
    pack_value,
    unpack_value,
)

__all__ = ["SqliteStore"]

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id    TEXT PRIMARY KEY,
    agent_name    TEXT,
    agent_version INTEGER NOT NULL DEFAULT 0,
    settings      BLOB NOT NULL DEFAULT x'80',
    seq           INTEGER NOT NULL DEFAULT 0,
    secrets       BLOB NOT NULL DEFAULT x'80'
);
CREATE TABLE IF NOT EXISTS items (
    session_id TEXT NOT NULL,
    item_id    TEXT NOT NULL,
    pos        INTEGER NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (session_id, item_id)
);
CREATE INDEX IF NOT EXISTS items_by_pos ON items (session_id, pos);
CREATE TABLE IF NOT EXISTS readers (
    session_id TEXT NOT NULL,
    reader_id  TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (session_id, reader_id)
);
"""
# x'80' is msgpack's empty map: the defaults of settings and secrets.

_ENSURE = "INSERT INTO sessions (session_id) VALUES (?) ON CONFLICT DO NOTHING"
_PUT_ITEM = (
    "INSERT INTO items (session_id, item_id, pos, data) VALUES "
    "(?, ?, (SELECT COALESCE(MAX(pos), 0) + 1 FROM items WHERE session_id = ?), ?) "
    "ON CONFLICT (session_id, item_id) DO UPDATE SET data = excluded.data"
)
_SET_READER = (
    "INSERT INTO readers (session_id, reader_id, seq) VALUES (?, ?, ?) "
    "ON CONFLICT (session_id, reader_id) DO UPDATE SET seq = excluded.seq"
)


def _translate(path: str, exc: sqlite3.Error) -> StoreError:
    """Our error for a sqlite3 one: an operational failure (locked, disk full,
    I/O, read-only) may pass and is retried; anything else means a bad file."""
    reason = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, sqlite3.OperationalError):
        return StoreUnavailableError(f"the SQLite store {path} failed: {reason}")
    return StoreError(f"the SQLite store {path} is unusable: {reason}")


class SqliteStore(BaseSessionStore):
    """A :class:`~ray_realtime.store.interface.SessionStore` in a SQLite file.

    Open it with ``await SqliteStore.open(path)``; one process at a time
    should write a given file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout_seconds: float = 5.0,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise UserError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.path = str(path)
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout_seconds
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ray-realtime-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout_seconds: float = 5.0,
    ) -> SqliteStore:
        """Open (creating if needed) the store at ``path``."""
        store = cls(path, synchronous, busy_timeout_seconds)
        try:
            await store._run(store._connect)
        except BaseException:
            store._executor.shutdown(wait=False)
            raise
        return store

    # ------------------------------------------------------------ plumbing

    async def _run(self, fn: Callable[[], _T]) -> _T:
        if self._closed:
            raise StoreError(f"the SQLite store {self.path} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn)
        except sqlite3.Error as exc:
            raise _translate(self.path, exc) from exc
        except OSError as exc:
            raise StoreUnavailableError(
                f"the SQLite store {self.path} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _connect(self) -> None:
        # Create the file owner-only before SQLite does (it holds secrets).
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None, "SqliteStore used before open()"
        return self._conn

    # ----------------------------------------------------------- the writes

    async def apply(self, ops: Sequence[StoreOp]) -> None:
        """Apply ``ops`` in one transaction."""
        if ops:
            batch = list(ops)
            await self._run(lambda: self._apply_sync(batch))

    def _apply_sync(self, ops: list[StoreOp]) -> None:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                self._apply_one(db, op)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _apply_one(db: sqlite3.Connection, op: StoreOp) -> None:
        if isinstance(op, PutSession):
            state = op.state
            sid = state.session_id
            db.execute("DELETE FROM items WHERE session_id = ?", (sid,))
            db.execute("DELETE FROM readers WHERE session_id = ?", (sid,))
            db.execute(
                "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                (
                    sid,
                    state.agent.name if state.agent else None,
                    state.agent.version if state.agent else 0,
                    pack_value(dict(state.settings), "model settings"),
                    state.seq,
                    pack_value(state.secrets.reveal(), "secrets"),
                ),
            )
            db.executemany(
                "INSERT INTO items VALUES (?, ?, ?, ?)",
                [(sid, item.item_id, pos, item.data) for pos, item in enumerate(state.items, 1)],
            )
            db.executemany(
                "INSERT INTO readers VALUES (?, ?, ?)",
                [(sid, reader, seq) for reader, seq in state.readers.items()],
            )
        elif isinstance(op, UpdateSession):
            sid = op.session_id
            db.execute(_ENSURE, (sid,))
            if op.agent is not None:
                db.execute(
                    "UPDATE sessions SET agent_name = ?, agent_version = ? WHERE session_id = ?",
                    (op.agent.name, op.agent.version, sid),
                )
            if op.settings is not None:
                db.execute(
                    "UPDATE sessions SET settings = ? WHERE session_id = ?",
                    (pack_value(dict(op.settings), "model settings"), sid),
                )
            if op.seq is not None:
                db.execute("UPDATE sessions SET seq = ? WHERE session_id = ?", (op.seq, sid))
            if op.secrets is not None:
                db.execute(
                    "UPDATE sessions SET secrets = ? WHERE session_id = ?",
                    (pack_value(op.secrets.reveal(), "secrets"), sid),
                )
        elif isinstance(op, DeleteSession):
            for table in ("items", "readers", "sessions"):
                db.execute(f"DELETE FROM {table} WHERE session_id = ?", (op.session_id,))
        elif isinstance(op, PutItem):
            sid = op.session_id
            db.execute(_ENSURE, (sid,))
            db.execute(_PUT_ITEM, (sid, op.item.item_id, sid, op.item.data))
        elif isinstance(op, DeleteItem):
            db.execute(_ENSURE, (op.session_id,))
            db.execute(
                "DELETE FROM items WHERE session_id = ? AND item_id = ?",
                (op.session_id, op.item_id),
            )
        elif isinstance(op, SetReader):
            db.execute(_ENSURE, (op.session_id,))
            db.execute(_SET_READER, (op.session_id, op.reader_id, op.seq))
        elif isinstance(op, RemoveReader):
            db.execute(_ENSURE, (op.session_id,))
            db.execute(
                "DELETE FROM readers WHERE session_id = ? AND reader_id = ?",
                (op.session_id, op.reader_id),
            )
        else:
            assert_never(op)

    # ------------------------------------------------------------ the reads

    async def load(self, session_id: str) -> SessionState:
        """One session's state, read in one transaction."""
        return await self._run(lambda: self._load_sync(session_id))

    def _load_sync(self, session_id: str) -> SessionState:
        db = self._db()
        db.execute("BEGIN")
        try:
            row = db.execute(
                "SELECT agent_name, agent_version, settings, seq, secrets "
                "FROM sessions WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            if row is None:
                raise SessionNotFoundError(f"the store holds no session {session_id!r}", session_id)
            items = db.execute(
                "SELECT item_id, data FROM items WHERE session_id = ? ORDER BY pos",
                (session_id,),
            ).fetchall()
            readers = db.execute(
                "SELECT reader_id, seq FROM readers WHERE session_id = ?", (session_id,)
            ).fetchall()
        finally:
            db.execute("COMMIT")
        return _state_of(session_id, row, items, readers)

    async def list_sessions(self) -> list[str]:
        """The stored session ids, sorted."""
        rows = await self._run(
            lambda: self._db().execute("SELECT session_id FROM sessions ORDER BY 1").fetchall()
        )
        return [str(row[0]) for row in rows]

    async def aclose(self) -> None:
        """Close the file and stop the store's thread."""
        if self._closed:
            return
        if self._conn is not None:
            conn = self._conn
            await self._run(conn.close)
            self._conn = None
        self._closed = True
        self._executor.shutdown(wait=False)


def _state_of(session_id: str, row: Any, items: list[Any], readers: list[Any]) -> SessionState:
    agent_name, agent_version, settings, seq, secrets = row
    try:
        return SessionState(
            session_id,
            None if agent_name is None else AgentRecord(agent_name, agent_version),
            unpack_value(bytes(settings), "model settings"),
            seq,
            Secrets(unpack_value(bytes(secrets), "secrets")),
            {str(reader): int(pos) for reader, pos in readers},
            tuple(StoredItem(str(item_id), bytes(data)) for item_id, data in items),
        )
    except (UserError, TypeError, ValueError) as exc:
        raise StoreError(
            f"the stored state of session {session_id!r} is malformed: {type(exc).__name__}"
        ) from exc
