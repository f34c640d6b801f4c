"""The store's records: validation, the msgpack codec, secrets that never show,
and the import rules of the store package."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import msgpack
import pytest

import ray_realtime.store
from ray_realtime.exceptions import (
    InputTooLargeError,
    SerializationError,
    StoreError,
    UserError,
)
from ray_realtime.store import (
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
)
from ray_realtime.store.records import (
    MAX_ID_CHARS,
    MAX_ITEM_BYTES,
    decode_ops,
    decode_state,
    encode_ops,
    encode_state,
)
from tests.store.util import item

SECRET = "sk-do-not-show-7f3a"


def every_op() -> list[StoreOp]:
    state = SessionState(
        "s",
        agent=AgentRecord("a", 2),
        settings={"voice": "alloy", "nested": [1, 2.5, None, b"raw"]},
        seq=3,
        secrets=Secrets({"api_key": SECRET}),
        readers={"r": 3},
        items=(item("i1"),),
    )
    return [
        PutSession(state),
        UpdateSession("s", AgentRecord("b", 1), {"x": 1}, 4, Secrets({"t": SECRET})),
        UpdateSession("s", seq=5),
        DeleteSession("s"),
        PutItem("s", item("i2")),
        DeleteItem("s", "i2"),
        SetReader("s", "r", 9),
        RemoveReader("s", "r"),
    ]


def test_ops_and_states_roundtrip_through_the_codec() -> None:
    ops = every_op()
    assert decode_ops(encode_ops(ops)) == ops
    state = ops[0].state  # type: ignore[union-attr]
    assert decode_state(encode_state(state)) == state


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # never valid msgpack
        msgpack.packb({"not": "a list"}),
        msgpack.packb([["no_such_op", "s"]]),
        msgpack.packb([["put_item", "s"]]),
        msgpack.packb([["set_reader", "s", "r", -1]]),
        msgpack.packb([["put_item", "", "i", b""]]),
        msgpack.packb([["update_session", "s", ["a", "not-a-version"], None, None, None]]),
    ],
)
def test_malformed_batches_are_a_store_error(payload: bytes) -> None:
    with pytest.raises(StoreError):
        decode_ops(payload)


def test_malformed_state_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        decode_state(msgpack.packb(["s", None]))


def test_bad_values_are_typed_errors() -> None:
    with pytest.raises(UserError):
        SetReader("", "r", 1)
    with pytest.raises(UserError):
        SetReader("s", "r", True)
    with pytest.raises(InputTooLargeError):
        DeleteItem("s", "x" * (MAX_ID_CHARS + 1))
    with pytest.raises(InputTooLargeError) as caught:
        StoredItem("big", b"\0" * (MAX_ITEM_BYTES + 1))
    assert caught.value.limit == MAX_ITEM_BYTES
    with pytest.raises(UserError):
        StoredItem("i", "text, not bytes")  # type: ignore[arg-type]
    with pytest.raises(SerializationError):
        UpdateSession("s", settings={"callback": object()})
    with pytest.raises(UserError):
        Secrets({"k": 1})  # type: ignore[dict-item]
    with pytest.raises(StoreError):
        StoredItem("i", msgpack.packb([1, 2])).to_dict()


def test_secrets_never_show_in_repr_or_str() -> None:
    secrets = Secrets({"api_key": SECRET, "token": SECRET + "2"})
    for text in (
        repr(secrets),
        str(secrets),
        repr(SessionState("s", secrets=secrets)),
        repr(UpdateSession("s", secrets=secrets)),
        repr(PutSession(SessionState("s", secrets=secrets))),
        f"{secrets}",
    ):
        assert SECRET not in text
    assert repr(secrets) == "Secrets(api_key=***, token=***)"
    assert secrets["api_key"] == SECRET
    assert secrets.reveal() == {"api_key": SECRET, "token": SECRET + "2"}


def test_secrets_pickle_as_ray_would_send_them() -> None:
    secrets = Secrets({"api_key": SECRET})
    assert pickle.loads(pickle.dumps(secrets)) == secrets
    state = SessionState("s", secrets=secrets)
    assert pickle.loads(pickle.dumps(state)) == state


def test_a_plain_mapping_of_secrets_becomes_secrets() -> None:
    state = SessionState("s", secrets={"k": "v"})  # type: ignore[arg-type]
    assert isinstance(state.secrets, Secrets)
    assert SECRET not in repr(UpdateSession("s", secrets={"k": SECRET}))  # type: ignore[arg-type]


# ------------------------------------------------------------- import rules

STORE_DIR = Path(ray_realtime.store.__file__).parent
ALLOWED = {"ray_realtime.exceptions", "msgpack"}


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(top-level imports, imports inside functions) of a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top: set[str] = set()
    nested: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        target = top if node in tree.body else nested
        target.update(names)
    return top, nested


@pytest.mark.parametrize("path", sorted(STORE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_the_store_imports_only_what_it_may(path: Path) -> None:
    """Stdlib, msgpack, our exceptions and the store itself; Ray only in the
    actor shell; redis only lazily, inside the Redis backend."""
    import sys

    top, nested = _imports(path)
    for name in top | nested:
        root = name.split(".")[0]
        if name.startswith("ray_realtime.store") or name in ALLOWED or root == "__future__":
            continue
        if root in sys.stdlib_module_names:
            continue
        if root == "ray" and path.name == "actor.py":
            continue
        if root == "redis" and path.name == "redis_store.py" and name in nested - top:
            continue
        pytest.fail(f"{path.name} imports {name}")
