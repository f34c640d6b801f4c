"""The exception tree: every class pickles, derives from RayRealtimeError and
appears in the module docstring's tree."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from typing import Any

import pytest

from ray_realtime import exceptions as exc_module
from ray_realtime.exceptions import (
    InputTooLargeError,
    NoCapacityError,
    RayRealtimeError,
    SessionError,
    ToolError,
)

ALL_CLASSES: list[type[RayRealtimeError]] = [
    getattr(exc_module, name) for name in exc_module.__all__
]

try:
    import cloudpickle
except ImportError:  # pragma: no cover - optional
    cloudpickle = None

SERIALISERS: list[tuple[str, Callable[[Any], Any]]] = [
    ("pickle", lambda e: pickle.loads(pickle.dumps(e))),
]
if cloudpickle is not None:
    SERIALISERS.append(("cloudpickle", lambda e: pickle.loads(cloudpickle.dumps(e))))


def sample(cls: type[RayRealtimeError]) -> tuple[RayRealtimeError, dict[str, Any]]:
    """An instance with every extra attribute set, and those attributes."""
    if issubclass(cls, InputTooLargeError):
        return cls("too big: 12 > 10", 12, 10), {"size": 12, "limit": 10}
    if issubclass(cls, SessionError):
        return cls("session gone", "sess-1"), {"session_id": "sess-1"}
    if issubclass(cls, ToolError):
        return cls("tool failed", "lookup"), {"tool_name": "lookup"}
    if issubclass(cls, NoCapacityError):
        return cls("nothing fits", "PlacementRequirement()"), {
            "requirement_repr": "PlacementRequirement()"
        }
    return cls(f"a {cls.__name__}"), {}


def test_all_lists_every_exception_class_in_the_module() -> None:
    defined = {
        name
        for name, value in vars(exc_module).items()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == exc_module.__name__
    }
    assert defined == set(exc_module.__all__)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_derives_from_ray_realtime_error(cls: type) -> None:
    assert issubclass(cls, RayRealtimeError)
    assert issubclass(cls, Exception)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("how", "roundtrip"), SERIALISERS, ids=[s[0] for s in SERIALISERS])
def test_roundtrip_preserves_type_str_and_attributes(
    cls: type[RayRealtimeError], how: str, roundtrip: Callable[[Any], Any]
) -> None:
    original, extras = sample(cls)
    copy = roundtrip(original)
    assert type(copy) is cls, f"{how} changed the type"
    assert str(copy) == str(original), f"{how} changed str()"
    assert copy.message == original.message
    assert copy.args == original.args
    for name, value in extras.items():
        assert getattr(copy, name) == value, f"{how} lost {name}"


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_str_is_the_message(cls: type[RayRealtimeError]) -> None:
    error, _ = sample(cls)
    assert str(error) == error.message
    assert str(cls()) == ""


def test_extra_attributes_default() -> None:
    assert (InputTooLargeError("x").size, InputTooLargeError("x").limit) == (0, 0)
    assert SessionError("x").session_id == ""
    assert ToolError("x").tool_name == ""
    assert NoCapacityError("x").requirement_repr == ""


def test_docstring_tree_lists_every_class() -> None:
    doc = exc_module.__doc__ or ""
    tree_names = set(re.findall(r"(?:├──|└──|^\s{4})\s*([A-Z]\w+)", doc, flags=re.M))
    missing = sorted(set(exc_module.__all__) - tree_names)
    assert not missing, f"not in the docstring tree: {missing}"


def test_docstring_tree_matches_the_class_hierarchy() -> None:
    """Each class sits under its real parent in the tree (by indentation)."""
    doc = exc_module.__doc__ or ""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        match = re.match(r"^(\s*(?:[│ ]\s*)*)(?:├── |└── )?([A-Z]\w+Error)\b", line)
        if not match or match.group(2) not in exc_module.__all__:
            continue
        depth = len(match.group(1)) + (4 if ("├──" in line or "└──" in line) else 0)
        name = match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[name] = stack[-1][1]
        stack.append((depth, name))
    assert set(parents) == set(exc_module.__all__) - {"RayRealtimeError"}, parents
    for name, parent in parents.items():
        cls = getattr(exc_module, name)
        assert cls.__bases__[0].__name__ == parent, f"{name} is drawn under {parent}"
