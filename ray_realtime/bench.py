"""``ray-realtime bench``: run the benchmark suite of the source tree.

The benchmarks live in the repository's ``bench/`` directory (beside this
package in a source checkout or an editable install); :func:`main` puts the
repository on ``sys.path`` and runs ``bench.suite``: every measurement in
sequence in this process and one embedded Ray runtime, a combined table on
stdout and ``bench/results/latest.md``. See ``docs/benchmarks.md``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

__all__ = ["main", "repository_root"]


def repository_root() -> Path | None:
    """The source tree holding ``bench/suite.py``, or None (installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "bench" / "suite.py").is_file() else None


def main(argv: list[str] | None = None) -> int:
    """Run the suite with ``argv`` (``--quick``, ``--only a,b``, ``--out FILE``);
    returns the exit status (0: every benchmark ran; 1: one failed; 2: no
    source tree)."""
    root = repository_root()
    if root is None:
        print(
            "ray-realtime bench needs the source tree (its bench/ directory); "
            "run it from a checkout or an editable install",
            file=sys.stderr,
        )
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    suite = importlib.import_module("bench.suite")
    status: int = suite.main(argv, prog="ray-realtime bench")
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
