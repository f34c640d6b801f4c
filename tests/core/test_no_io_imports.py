"""The session core does no I/O: its modules never import asyncio, ray or
websockets, and importing it does not pull ray or websockets in."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import ray_realtime.core

CORE_DIR = Path(ray_realtime.core.__file__).parent
FORBIDDEN = ("asyncio", "ray", "websockets")
CORE_MODULES = sorted(CORE_DIR.glob("*.py"))


def imported_modules(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (at any depth)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def is_forbidden(name: str) -> bool:
    return name.split(".")[0] in FORBIDDEN


def test_core_modules_found() -> None:
    names = {p.name for p in CORE_MODULES}
    assert {"session_core.py", "history.py", "event_log.py"} <= names, names


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_core_module_does_not_import_io(path: Path) -> None:
    bad = [name for name in imported_modules(path) if is_forbidden(name)]
    assert not bad, f"{path.name} imports {bad}"


def test_forbidden_check_is_by_top_level_package() -> None:
    assert (
        is_forbidden("ray.util") and is_forbidden("asyncio") and is_forbidden("websockets.client")
    )
    assert not is_forbidden("ray_realtime.core") and not is_forbidden("rayleigh")


def test_importing_session_core_does_not_load_ray_or_websockets() -> None:
    code = (
        "import json, sys\n"
        "import ray_realtime.core.session_core\n"
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('ray', 'websockets'))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing the core loaded {loaded}"


def test_importing_session_core_does_not_load_ray() -> None:
    """The part of the transitive check that holds today: no Ray."""
    code = (
        "import sys\n"
        "import ray_realtime.core.session_core\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
