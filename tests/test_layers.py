"""The package's imports point one way: down the layers of ``shared/DESIGN.md``.

The layers, bottom to top (each row may import only rows below it; the units
of a row marked shared form one layer and may import each other)::

    cli                            the console script
    mcp                            re-exports agents/mcp under the SDK's path
    demo · bench · ops             commands
    gateway/                       phone and browser calls into sessions (opens them via runner)
    runner/                        RealtimeRunner, RealtimeSession, the backend seam
    actors/ · cluster/  (shared)   Ray shells; connect, deploy, placement
    session/                       the driver that runs one session, executors
    core/ · model/ · agents/ ·     session logic · model client · definitions ·
    store/                         session store (backends and its actor)
    wire.py                        msgpack codec
    types/                         plain data
    exceptions.py · netutil.py     the exception tree · address helpers
    local/                         the bundled model server: imports nothing of ours

The package root (``ray_realtime/__init__.py``) re-exports the public names and
sits above everything; nothing inside the package imports it.

Every import counts, wherever it is written: at module level, inside a function
(a lazy import still runs against the order when it runs), and under ``if
TYPE_CHECKING:`` (a type-only import is still a dependency a reader must follow
and the type checker must resolve; allowing it would let circles hide there).
Importing a submodule runs its packages' ``__init__`` too; those implicit
edges are not counted, since every import would otherwise lead to the root.

Besides the order, no import circle may cross a unit boundary: the modules of
one strongly connected component of the import graph must all be in one unit.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import ray_realtime

PACKAGE = "ray_realtime"
PACKAGE_DIR = Path(ray_realtime.__file__).parent
ROOT_UNIT = "<root>"

# Bottom to top: (units, shared). A unit is the first name under the package:
# a subpackage (``core``) or a top-level module (``wire``).
LAYERS: list[tuple[tuple[str, ...], bool]] = [
    (("local",), False),
    (("exceptions", "netutil"), False),
    (("types",), False),
    (("wire",), False),
    (("core", "model", "agents", "store"), False),
    (("session",), False),
    (("actors", "cluster"), True),
    (("runner",), False),
    (("gateway",), False),
    (("bench", "demo", "ops"), False),
    (("cli",), False),
    (("mcp",), False),
    ((ROOT_UNIT,), False),
]


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``source`` imports ``target`` at ``line``."""

    source: str
    target: str
    line: int


def module_name(path: Path, package_dir: Path, package: str) -> str:
    """The dotted name of the module in ``path``."""
    parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(package_dir: Path, package: str) -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {
        module_name(path, package_dir, package): path for path in sorted(package_dir.rglob("*.py"))
    }


def imports_of(name: str, path: Path, modules: dict[str, Path], package: str) -> Iterator[Import]:
    """The package modules ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    yield Import(name, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if not is_package:
                    base.pop()
                base = base[: len(base) - (node.level - 1)]
                parent = ".".join([*base, node.module] if node.module else base)
            else:
                parent = node.module or ""
            if not (parent == package or parent.startswith(package + ".")):
                continue
            for alias in node.names:
                # ``from pkg import mod`` imports the submodule ``pkg.mod``.
                child = f"{parent}.{alias.name}"
                yield Import(name, child if child in modules else parent, node.lineno)


def unit_of(module: str, package: str) -> str:
    """The layer unit of a module: the first name below the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT_UNIT


def rank_of(unit: str) -> int:
    """The row of ``unit`` in :data:`LAYERS`; KeyError for a unit not placed."""
    for rank, (units, _shared) in enumerate(LAYERS):
        if unit in units:
            return rank
    raise KeyError(unit)


def layer_violations(edges: Iterable[Import], package: str) -> list[str]:
    """Every import that does not point down the layers (or within its unit)."""
    problems = []
    for edge in edges:
        source, target = unit_of(edge.source, package), unit_of(edge.target, package)
        if source == target:
            continue
        try:
            source_rank, target_rank = rank_of(source), rank_of(target)
        except KeyError as exc:
            problems.append(f"{edge.source}: unit {exc.args[0]!r} is not placed in LAYERS")
            continue
        if target_rank < source_rank:
            continue
        if target_rank == source_rank and LAYERS[source_rank][1]:
            continue
        problems.append(
            f"{edge.source} (line {edge.line}) imports {edge.target}: "
            f"{source!r} may not import {target!r}"
        )
    return problems


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def crossing_circles(edges: Iterable[Import], package: str) -> list[list[str]]:
    """Import circles whose modules lie in more than one unit."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    return [
        component
        for component in strongly_connected(graph)
        if len({unit_of(m, package) for m in component}) > 1
    ]


def all_imports(package_dir: Path, package: str) -> list[Import]:
    """Every import between the package's own modules."""
    modules = package_modules(package_dir, package)
    found = (
        edge for name, path in modules.items() for edge in imports_of(name, path, modules, package)
    )
    return list(dict.fromkeys(found))  # one edge per statement and target


# ------------------------------------------------------------- the package


@pytest.fixture(scope="module")
def edges() -> list[Import]:
    return all_imports(PACKAGE_DIR, PACKAGE)


def test_every_unit_is_placed() -> None:
    units = {unit_of(name, PACKAGE) for name in package_modules(PACKAGE_DIR, PACKAGE)}
    placed = {unit for row, _shared in LAYERS for unit in row}
    assert units == placed, f"place new units in LAYERS, drop gone ones: {units ^ placed}"


def test_imports_point_down_the_layers(edges: list[Import]) -> None:
    # A sanity check on the reader itself: it sees the imports it should.
    assert Import("ray_realtime.core.history", "ray_realtime.types.items", 14) in edges
    assert any(
        e.source == "ray_realtime.runner.runner" and e.target.startswith("ray_realtime.actors.")
        for e in edges
    ), "the runner's lazy import of actors/ was missed"
    assert layer_violations(edges, PACKAGE) == []


def test_local_imports_nothing_of_the_package_beyond_itself(edges: list[Import]) -> None:
    outside = [
        e
        for e in edges
        if unit_of(e.source, PACKAGE) == "local" and unit_of(e.target, PACKAGE) != "local"
    ]
    assert any(unit_of(e.source, PACKAGE) == "local" for e in edges)
    assert outside == []


def test_no_import_circle_crosses_a_unit(edges: list[Import]) -> None:
    assert crossing_circles(edges, PACKAGE) == []


# ---------------------------------------------------- the checker, on a plant


def _plant(root: Path, files: dict[str, str]) -> Path:
    package_dir = root / "pkg"
    for relative, text in files.items():
        path = package_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for directory in [package_dir, *package_dir.rglob("*")]:
        if directory.is_dir() and not (directory / "__init__.py").exists():
            (directory / "__init__.py").write_text("", encoding="utf-8")
    return package_dir


def test_checker_flags_upward_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    package_dir = _plant(
        tmp_path,
        {
            "types/items.py": "from pkg.runner import session\n",
            "core/history.py": (
                "def f():\n    from pkg.actors.handle import x\n"
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from ..session import driver\n"
            ),
            "runner/session.py": "from pkg.types import items\nfrom pkg import wire\n",
            "actors/handle.py": "from pkg.cluster.service import y\n",
            "cluster/service.py": "import pkg.actors.handle\n",
            "session/driver.py": "",
            "wire.py": "",
            "local/server.py": "from pkg.exceptions import E\n",
            "exceptions.py": "",
        },
    )
    found = layer_violations(all_imports(package_dir, "pkg"), "pkg")
    assert len(found) == 4, found
    assert any("pkg.types.items" in p and "'runner'" in p for p in found)
    assert any("pkg.core.history" in p and "'actors'" in p for p in found)
    assert any("pkg.core.history" in p and "'session'" in p for p in found)
    assert any("pkg.local.server" in p for p in found)


def test_checker_flags_a_circle_across_units_only(tmp_path: Path) -> None:
    package_dir = _plant(
        tmp_path,
        {
            "actors/handle.py": "from pkg.cluster import service\n",
            "cluster/service.py": "def f():\n    from pkg.actors import handle\n",
            "agents/agent.py": "from pkg.agents.handoffs import H\n",
            "agents/handoffs.py": "from pkg.agents.agent import A\n",
        },
    )
    circles = crossing_circles(all_imports(package_dir, "pkg"), "pkg")
    assert circles == [["pkg.actors.handle", "pkg.cluster.service"]]
