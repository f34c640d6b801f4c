"""One conformance suite for every session store backend.

Each test runs against the in-process fake, SQLite, the embedded host (no
Ray), the write-behind writer, the real store actor and a real Redis (see
``any_store`` in ``conftest.py``). The reference for the write rules is
:class:`ray_realtime.store.state.StoreState`.
"""

from __future__ import annotations

import random

import pytest

from ray_realtime.exceptions import SessionNotFoundError
from ray_realtime.store import (
    AgentRecord,
    DeleteItem,
    DeleteSession,
    PutItem,
    PutSession,
    RemoveReader,
    Secrets,
    SessionState,
    SessionStore,
    SetReader,
    StoredItem,
    StoreOp,
    UpdateSession,
)
from ray_realtime.store.state import StoreState
from tests.store.util import item, random_ops


def full_state(session_id: str = "sess-1") -> SessionState:
    return SessionState(
        session_id,
        agent=AgentRecord("triage", 3),
        settings={"voice": "alloy", "turn_detection": {"type": "server_vad", "threshold": 0.5}},
        seq=41,
        secrets=Secrets({"token": "tok-SECRET-1", "api_key": "sk-SECRET-2"}),
        readers={"reader-a": 40, "reader-b": 12},
        items=(item("i1", "hello"), item("i2", "world")),
    )


def ids(state: SessionState) -> list[str]:
    return [i.item_id for i in state.items]


async def test_put_then_load_returns_the_whole_state(any_store: SessionStore) -> None:
    state = full_state()
    await any_store.put_session(state)
    loaded = await any_store.load("sess-1")
    assert loaded == state
    assert loaded.secrets["token"] == "tok-SECRET-1"
    assert loaded.items[0].to_dict()["text"] == "hello"
    assert "tok-SECRET-1" not in repr(loaded)


async def test_load_of_an_unknown_session_raises_not_found(any_store: SessionStore) -> None:
    with pytest.raises(SessionNotFoundError) as caught:
        await any_store.load("nobody")
    assert caught.value.session_id == "nobody"


async def test_update_sets_only_the_given_fields(any_store: SessionStore) -> None:
    await any_store.put_session(full_state())
    await any_store.update_session("sess-1", seq=99)
    await any_store.update_session("sess-1", agent=AgentRecord("billing", 4))
    loaded = await any_store.load("sess-1")
    assert (loaded.seq, loaded.agent) == (99, AgentRecord("billing", 4))
    assert loaded.settings == full_state().settings
    assert loaded.secrets == full_state().secrets
    assert ids(loaded) == ["i1", "i2"]
    await any_store.update_session("sess-1", settings={"voice": "echo"}, secrets={"token": "t2"})
    loaded = await any_store.load("sess-1")
    assert loaded.settings == {"voice": "echo"}
    assert loaded.secrets == Secrets({"token": "t2"})


async def test_a_write_to_an_unknown_session_creates_it(any_store: SessionStore) -> None:
    await any_store.append_items("fresh", [item("a")])
    loaded = await any_store.load("fresh")
    assert loaded == SessionState("fresh", items=(item("a"),))
    await any_store.update_session("fresh-2", seq=5)
    assert (await any_store.load("fresh-2")).seq == 5


async def test_items_keep_order_and_are_replaced_in_place(any_store: SessionStore) -> None:
    await any_store.append_items("s", [item("a"), item("b"), item("c")])
    await any_store.replace_item("s", item("b", "b, transcribed later"))
    # Appending an id already stored replaces it (a retried batch duplicates nothing).
    await any_store.append_items("s", [item("a", "a again"), item("d")])
    loaded = await any_store.load("s")
    assert ids(loaded) == ["a", "b", "c", "d"]
    assert loaded.items[0].to_dict()["text"] == "a again"
    assert loaded.items[1].to_dict()["text"] == "b, transcribed later"
    # Replacing an id never stored appends it: a replace never loses an item.
    await any_store.replace_item("s", item("e"))
    assert ids(await any_store.load("s")) == ["a", "b", "c", "d", "e"]


async def test_deleted_items_go_and_come_back_at_the_end(any_store: SessionStore) -> None:
    await any_store.append_items("s", [item("a"), item("b"), item("c")])
    await any_store.delete_item("s", "a")
    await any_store.delete_item("s", "never-there")
    assert ids(await any_store.load("s")) == ["b", "c"]
    await any_store.append_items("s", [item("a")])
    assert ids(await any_store.load("s")) == ["b", "c", "a"]


async def test_reader_positions(any_store: SessionStore) -> None:
    await any_store.set_reader("s", "r1", 3)
    await any_store.set_reader("s", "r2", 7)
    await any_store.set_reader("s", "r1", 9)
    assert (await any_store.load("s")).readers == {"r1": 9, "r2": 7}
    await any_store.remove_reader("s", "r2")
    await any_store.remove_reader("s", "unknown")
    assert (await any_store.load("s")).readers == {"r1": 9}


async def test_put_session_replaces_items_and_readers(any_store: SessionStore) -> None:
    await any_store.put_session(full_state())
    await any_store.append_items("sess-1", [item("i3")])
    replacement = SessionState("sess-1", seq=2, items=(item("x"),), readers={"z": 1})
    await any_store.put_session(replacement)
    assert await any_store.load("sess-1") == replacement
    await any_store.append_items("sess-1", [item("y")])
    assert ids(await any_store.load("sess-1")) == ["x", "y"]


async def test_delete_and_list_sessions(any_store: SessionStore) -> None:
    assert await any_store.list_sessions() == []
    for session_id in ("b", "a", "c"):
        await any_store.put_session(full_state(session_id))
    assert await any_store.list_sessions() == ["a", "b", "c"]
    await any_store.delete_session("b")
    await any_store.delete_session("not-there")
    assert await any_store.list_sessions() == ["a", "c"]
    with pytest.raises(SessionNotFoundError):
        await any_store.load("b")
    # A session deleted then written again starts empty.
    await any_store.append_items("b", [item("new")])
    assert await any_store.load("b") == SessionState("b", items=(item("new"),))


async def test_sessions_are_independent(any_store: SessionStore) -> None:
    await any_store.append_items("one", [item("a")])
    await any_store.append_items("two", [item("a", "other"), item("b")])
    await any_store.delete_item("one", "a")
    assert ids(await any_store.load("one")) == []
    assert ids(await any_store.load("two")) == ["a", "b"]


async def test_awkward_ids_and_binary_data_survive(any_store: SessionStore) -> None:
    session_id = "sess:{x}/ü 🎧"
    blob = bytes(range(256)) * 4096  # 1 MiB, every byte value
    await any_store.append_items(session_id, [StoredItem("item:{1}", blob), item("é")])
    await any_store.set_reader(session_id, "reader:{q}", 5)
    loaded = await any_store.load(session_id)
    assert loaded.items[0] == StoredItem("item:{1}", blob)
    assert ids(loaded) == ["item:{1}", "é"]
    assert loaded.readers == {"reader:{q}": 5}
    assert session_id in await any_store.list_sessions()


async def test_one_batch_of_mixed_ops(any_store: SessionStore) -> None:
    ops: list[StoreOp] = [
        PutSession(full_state("m")),
        PutItem("m", item("i3")),
        UpdateSession("m", seq=50),
        DeleteItem("m", "i1"),
        SetReader("m", "reader-a", 50),
        RemoveReader("m", "reader-b"),
        PutItem("m", item("i2", "updated")),
        PutSession(full_state("gone")),
        DeleteSession("gone"),
    ]
    await any_store.apply(ops)
    await any_store.flush()
    reference = StoreState()
    reference.apply(ops)
    assert await any_store.load("m") == reference.load("m")
    assert await any_store.list_sessions() == ["m"]


async def test_random_batches_match_the_reference(any_store: SessionStore) -> None:
    rng = random.Random(1234)
    ops = random_ops(rng, 300)
    reference = StoreState()
    reference.apply(ops)
    position = 0
    while position < len(ops):
        size = rng.randint(1, 40)
        await any_store.apply(ops[position : position + size])
        position += size
    assert await any_store.list_sessions() == reference.session_ids()
    for session_id in reference.session_ids():
        assert await any_store.load(session_id) == reference.load(session_id), session_id


async def test_flush_returns_with_everything_readable(any_store: SessionStore) -> None:
    await any_store.append_items("f", [item(f"i{n}") for n in range(50)])
    await any_store.flush()
    assert len((await any_store.load("f")).items) == 50
