"""The public surface of ray_realtime is deliberate.

* ``ray_realtime.__all__`` is pinned below, written out: adding or removing a
  public name means editing this test.
* Every name of it resolves, and every class or function among them has a
  docstring of its own.
* Every public module of the package defines ``__all__`` (a list of string
  literals naming things the module defines or imports). Modules that need Ray
  (``ray_realtime.actors.*``, ``ray_realtime.cluster.*``, ``ray_realtime.cli``,
  ``ray_realtime.demo``) are only parsed, never imported, so this test does not
  start or even import Ray.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import ray_realtime

EXPECTED_ALL = [
    "AgentRef",
    "AssistantAudio",
    "AssistantMessageItem",
    "AssistantText",
    "ClusterConnectError",
    "ClusterError",
    "ConfigError",
    "FunctionTool",
    "GuardrailFunctionOutput",
    "GuardrailRef",
    "Handoff",
    "InputAudio",
    "InputImage",
    "InputText",
    "InputTooLargeError",
    "ModelConnectionError",
    "ModelError",
    "NoCapacityError",
    "OutputGuardrail",
    "OutputGuardrailResult",
    "ProtocolError",
    "RayRealtimeError",
    "RealtimeAgent",
    "RealtimeAgentEndEvent",
    "RealtimeAgentStartEvent",
    "RealtimeAudio",
    "RealtimeAudioEnd",
    "RealtimeAudioInterrupted",
    "RealtimeError",
    "RealtimeEventsLost",
    "RealtimeGuardrailTripped",
    "RealtimeGuardrailsSettings",
    "RealtimeHandoffEvent",
    "RealtimeHistoryAdded",
    "RealtimeHistoryUpdated",
    "RealtimeInputAudioTimeoutTriggered",
    "RealtimeInputAudioTranscriptionConfig",
    "RealtimeItem",
    "RealtimeModel",
    "RealtimeModelConfig",
    "RealtimeModelListener",
    "RealtimeRawModelEvent",
    "RealtimeRunConfig",
    "RealtimeRunner",
    "RealtimeSession",
    "RealtimeSessionEvent",
    "RealtimeSessionModelSettings",
    "RealtimeSessionRecovered",
    "RealtimeToolApprovalRequired",
    "RealtimeToolCallItem",
    "RealtimeToolEnd",
    "RealtimeToolStart",
    "RealtimeTurnDetectionConfig",
    "RunContextWrapper",
    "SerializationError",
    "ServiceNotRunningError",
    "SessionAccessError",
    "SessionClosedError",
    "SessionError",
    "SessionLostError",
    "SessionNotFoundError",
    "SystemMessageItem",
    "Tool",
    "ToolContext",
    "ToolDefinitionError",
    "ToolError",
    "ToolRef",
    "ToolTimeoutError",
    "UserError",
    "UserMessageItem",
    "__version__",
    "function_tool",
    "output_guardrail",
    "realtime_handoff",
]

PACKAGE_DIR = Path(ray_realtime.__file__).parent

# Modules that import Ray: parsed for __all__, never imported here.
RAY_PACKAGES = ("ray_realtime.actors", "ray_realtime.cluster")
RAY_MODULES = ("ray_realtime.cli", "ray_realtime.demo", "ray_realtime.store.actor")


def _is_public(module_name: str) -> bool:
    return not any(part.startswith("_") for part in module_name.split(".")[1:])


def _needs_ray(module_name: str) -> bool:
    return module_name in RAY_MODULES or any(
        module_name == pkg or module_name.startswith(pkg + ".") for pkg in RAY_PACKAGES
    )


def _public_modules() -> list[tuple[str, bool]]:
    """(name, is_package) of every public module of ray_realtime, found on disk
    (walk_packages would import the Ray packages to look inside them)."""
    found = [("ray_realtime", True)]
    for info in pkgutil.iter_modules([str(PACKAGE_DIR)], "ray_realtime."):
        found.append((info.name, info.ispkg))
        if info.ispkg:
            sub_dir = PACKAGE_DIR / info.name.rsplit(".", 1)[1]
            for sub in pkgutil.iter_modules([str(sub_dir)], info.name + "."):
                found.append((sub.name, sub.ispkg))
    assert not any(ispkg for name, ispkg in found if name.count(".") > 1), (
        "a package nested two levels deep: extend _public_modules"
    )
    return sorted((name, ispkg) for name, ispkg in found if _is_public(name))


PUBLIC_MODULES = _public_modules()


def _source_path(module_name: str, is_package: bool) -> Path:
    rel = Path(*module_name.split(".")[1:])
    return (
        PACKAGE_DIR / rel / "__init__.py" if is_package else (PACKAGE_DIR / rel).with_suffix(".py")
    )


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names a module binds at top level (definitions, assignments, imports),
    looking inside top-level if/try blocks."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for sub in ast.walk(target):
                        if isinstance(sub, ast.Name):
                            names.add(sub.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    return names


def _declared_all(tree: ast.Module) -> list[str] | None:
    """The literal ``__all__`` list of a module, or None when it has none."""
    for node in tree.body:
        value: ast.expr | None = None
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            value = node.value
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "__all__"
        ):
            value = node.value
        if value is not None:
            assert isinstance(value, (ast.List, ast.Tuple)), "__all__ must be a literal list"
            items = []
            for element in value.elts:
                assert isinstance(element, ast.Constant) and isinstance(element.value, str), (
                    "__all__ must hold string literals"
                )
                items.append(element.value)
            return items
    return None


def _is_empty_namespace(tree: ast.Module) -> bool:
    """A package ``__init__`` with nothing but (at most) a docstring: it binds
    no public name, so there is nothing for ``__all__`` to list."""
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return not body


# ------------------------------------------------------------------- root API


def test_root_all_is_pinned() -> None:
    assert sorted(EXPECTED_ALL) == EXPECTED_ALL, "keep EXPECTED_ALL sorted"
    assert len(set(EXPECTED_ALL)) == len(EXPECTED_ALL)
    assert list(ray_realtime.__all__) == EXPECTED_ALL


def test_root_names_resolve() -> None:
    for name in ray_realtime.__all__:
        assert hasattr(ray_realtime, name), f"ray_realtime.{name} is in __all__ but missing"
    namespace: dict[str, object] = {}
    exec("from ray_realtime import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(EXPECTED_ALL)
    assert isinstance(ray_realtime.__version__, str) and ray_realtime.__version__


def _own_docstring(obj: object) -> str | None:
    doc = obj.__doc__
    if not doc or not doc.strip():
        return None
    # @dataclass writes "Name(field: type, ...)" into a class without a docstring.
    if inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):
        return None
    return doc


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_root_class_or_function_has_docstring(name: str) -> None:
    obj = getattr(ray_realtime, name)
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return  # constants and type aliases (unions) carry no docstring of their own
    assert _own_docstring(obj), f"ray_realtime.{name} has no docstring"


def test_public_modules_were_found() -> None:
    names = {name for name, _ in PUBLIC_MODULES}
    # A sanity check on the walk itself: a few modules every layout has.
    for expected in (
        "ray_realtime",
        "ray_realtime.core.session_core",
        "ray_realtime.runner.session",
        "ray_realtime.local.server",
        "ray_realtime.actors.handle",
        "ray_realtime.cli",
    ):
        assert expected in names
    assert "ray_realtime.local.__main__" not in names


# ------------------------------------------------------------- every module


@pytest.mark.parametrize(
    ("module_name", "is_package"), PUBLIC_MODULES, ids=[name for name, _ in PUBLIC_MODULES]
)
def test_module_declares_all(module_name: str, is_package: bool) -> None:
    path = _source_path(module_name, is_package)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    declared = _declared_all(tree)
    if declared is None:
        assert is_package and _is_empty_namespace(tree), f"{module_name} defines no __all__"
        return
    assert len(set(declared)) == len(declared), f"{module_name}.__all__ has duplicates"
    bound = _top_level_names(tree)
    has_getattr = "__getattr__" in bound  # a lazy module attribute (PEP 562)
    missing = [n for n in declared if n not in bound and not has_getattr]
    assert not missing, f"{module_name}.__all__ names what it does not define: {missing}"

    if _needs_ray(module_name):
        return  # parsed only: importing it would import Ray
    module = importlib.import_module(module_name)
    assert list(module.__all__) == declared
    for name in declared:
        assert hasattr(module, name), f"{module_name}.{name} is in __all__ but missing"
