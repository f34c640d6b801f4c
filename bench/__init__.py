"""ray-realtime benchmarks: one script per measurement, and the combined suite.

Each ``bench_*.py`` runs alone (``python bench/bench_turn.py --quick``);
``ray-realtime bench`` / :func:`ray_realtime.bench.main` runs them all in one
process and one Ray runtime. ``common`` holds the pure helpers (statistics,
tables, machine facts, process-tree CPU and memory sampling), ``harness`` the
Ray / service / model-server plumbing. See ``docs/benchmarks.md``.
"""
