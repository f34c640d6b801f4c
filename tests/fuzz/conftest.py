"""Hypothesis profiles for the fuzz suite.

``RAY_REALTIME_FUZZ`` picks how hard the fuzz tests try:

* unset (or ``ci``): a modest, derandomised run (the same examples every time), a few
  seconds per target, so the suite stays fast and a failure is reproducible;
* ``deep``: 5,000 random examples per target (minutes);
* a number, e.g. ``RAY_REALTIME_FUZZ=20000``: that many random examples per target.

Hypothesis keeps no example database here; a failing example is printed in full, with
a ``@reproduce_failure`` line for random runs. (Its ``.hypothesis/`` cache folder holds
its own ``.gitignore``.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from .common import ErrorRecords

_COMMON = {
    "deadline": None,  # the tests bound their own time, per example, with real servers
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}

settings.register_profile("ci", max_examples=80, derandomize=True, **_COMMON)
settings.register_profile("deep", max_examples=5000, **_COMMON)

_choice = os.environ.get("RAY_REALTIME_FUZZ", "ci").strip() or "ci"
if _choice.isdigit():
    settings.register_profile("custom", max_examples=int(_choice), **_COMMON)
    _choice = "custom"
settings.load_profile(_choice)


@pytest.fixture(scope="module")
def error_records() -> Iterator[ErrorRecords]:
    """ERROR records of the package's loggers while a fuzz module runs (a module-scoped
    handler: hypothesis does not reset function-scoped fixtures between examples)."""
    handler = ErrorRecords()
    logger = logging.getLogger("ray_realtime")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
