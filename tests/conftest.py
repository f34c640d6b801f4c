"""Shared test fixtures.

Ray tests share ONE Ray runtime for the whole pytest session: a
``ray.cluster_utils.Cluster`` of three nodes on 127.0.0.1 (a head and two
workers, each labelled with a ``zone`` resource), with the ray-realtime
service deployed on it with small pools. Starting Ray costs seconds and every
actor about 0.8 s, so tests reuse it and keep their own actor count small.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

# Tests must never reach a real model by accident.
os.environ.pop("OPENAI_API_KEY", None)

# Only for the shared `ray.cluster_utils.Cluster` below (and the embedded
# runtimes tests start in this process): Cluster starts its nodes with Ray's
# defaults, which bind the machine's network address unless this is 0, and
# that cluster is meant to stay on loopback like a served one (CI has no
# network; tests assert loopback addresses). The project's own entry points do
# not need it: tests/cluster/test_serve.py runs them without it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# Every Ray runtime of this run (ours and the subprocesses' that inherit the
# variable) keeps its session folders in one fresh folder, removed at the end,
# instead of piling up in the system temp folder's `ray`. Short, because Ray
# puts Unix sockets under it (107-character limit).
_RAY_TMPDIR = tempfile.mkdtemp(prefix="rrt", dir="/tmp" if os.path.isdir("/tmp") else None)
os.environ["RAY_TMPDIR"] = _RAY_TMPDIR


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove this run's Ray folder (every runtime is shut down by now)."""
    shutil.rmtree(_RAY_TMPDIR, ignore_errors=True)


# One unit of time for waits in tests; raise it on a slow machine.
UNIT = float(os.environ.get("RAY_REALTIME_TEST_UNIT", "1.0"))

SERVICE_CONFIG: dict[str, Any] = {
    "warm_pool_size": 1,
    "tool_workers_per_node": 1,
    "guardrail_workers_per_node": 1,
    "max_sessions_per_node": 50,
    "local_model": True,
    "health_interval_seconds": 1.0,
}


class RayTestCluster:
    """The session's Ray cluster: address, node ids by zone, the router."""

    def __init__(self, cluster: Any, zones: dict[str, str], router: Any) -> None:
        self.cluster = cluster
        self.address: str = cluster.address
        self.zones = zones
        self.router = router

    def node_of_zone(self, zone: str) -> str:
        """Node id of the node labelled ``zone``."""
        return self.zones[zone]


def collect_ray_leaks() -> None:
    """Collect now, quietly, the port-probe socket Ray leaks (in a reference
    cycle) each time it starts a node in this process; left to a later garbage
    collection its ResourceWarning fails whichever test runs then."""
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayTestCluster]:
    """A 3-node Ray cluster on loopback with the service deployed (shared)."""
    import ray
    from ray.cluster_utils import Cluster

    from ray_realtime.cluster.service import ensure_service, shutdown_service

    if ray.is_initialized():
        pytest.skip("Ray is already initialised by someone else")
    cluster = Cluster(
        initialize_head=True,
        # No dashboard: nothing here needs it, and its fixed port (8265) clashes
        # with any other Ray on the machine.
        head_node_args={"num_cpus": 1, "resources": {"zone_a": 1}, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1, resources={"zone_b": 1})
    cluster.add_node(num_cpus=1, resources={"zone_c": 1})
    cluster.wait_for_nodes()
    collect_ray_leaks()
    ray.init(address=cluster.address, namespace="ray_realtime", log_to_driver=False)
    try:
        zones: dict[str, str] = {}
        for node in ray.nodes():
            for zone in ("a", "b", "c"):
                if f"zone_{zone}" in node.get("Resources", {}):
                    zones[zone] = node["NodeID"]
        router = asyncio.run(ensure_service(SERVICE_CONFIG))
        yield RayTestCluster(cluster, zones, router)
        asyncio.run(shutdown_service())
    finally:
        ray.shutdown()
        cluster.shutdown()
