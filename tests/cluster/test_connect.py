"""Tests for ray_realtime.cluster.connect.

``test_embedded_ray_binds_loopback`` is the only test here that starts Ray (in
a child process, so it runs even when the test session already holds Ray);
all other tests replace ``ray.init``/``ray.shutdown`` with fakes.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray._private import ray_constants

from ray_realtime import exceptions
from ray_realtime.actors.raylib import NAMESPACE
from ray_realtime.cluster import connect as conn
from ray_realtime.cluster.connect import (
    LOOPBACK_IP,
    ClusterConnectError,
    connect,
    disconnect,
)

ENV = conn.ENABLE_CLUSTER_ENV


# --------------------------------------------------------------------------- real Ray


# The embedded start runs in a child process: the test session may already
# hold a Ray runtime (the shared cluster fixture of tests/conftest.py), and
# connect() in this process would then only return False.
_EMBEDDED_CHECK = r"""
import json, sys, time

import ray

from ray_realtime.actors.raylib import NAMESPACE
from ray_realtime.cluster.connect import LOOPBACK_IP, connect, disconnect

checks = {}
started = False
try:
    t0 = time.perf_counter()
    started = connect(num_cpus=1)
    checks["ray_init_seconds"] = round(time.perf_counter() - t0, 2)
    checks["started"] = started
    checks["initialized"] = ray.is_initialized()
    alive = [n for n in ray.nodes() if n["Alive"]]
    checks["addresses"] = [n["NodeManagerAddress"] for n in alive]
    checks["node_ip"] = ray.util.get_node_ip_address()
    checks["namespace"] = ray.get_runtime_context().namespace
    # Already initialised: nothing happens and the caller must not shut down.
    checks["second_connect"] = connect()
    checks["auto_connect"] = connect("auto", num_cpus=4)
    disconnect(False)
    checks["still_initialized"] = ray.is_initialized()
finally:
    disconnect(started)
    if ray.is_initialized():  # connect() failed half-way; Ray is ours anyway
        ray.shutdown()
checks["after_shutdown_initialized"] = ray.is_initialized()
checks["expected"] = {"loopback": LOOPBACK_IP, "namespace": NAMESPACE}
print(json.dumps(checks))
"""


@pytest.mark.ray
def test_embedded_ray_binds_loopback(record_property: Callable[[str, object], None]) -> None:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.pop(ENV, None)  # connect() must set the loopback switch itself
    root = Path(__file__).resolve().parent.parent.parent
    proc = subprocess.run(
        [sys.executable, "-c", _EMBEDDED_CHECK],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(root),
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    checks = json.loads(proc.stdout.strip().splitlines()[-1])
    record_property("ray_init_seconds", checks["ray_init_seconds"])
    assert checks["started"] is True
    assert checks["initialized"] is True
    assert checks["addresses"] == [LOOPBACK_IP]
    assert checks["node_ip"] == LOOPBACK_IP
    assert checks["namespace"] == NAMESPACE
    assert checks["expected"] == {"loopback": LOOPBACK_IP, "namespace": NAMESPACE}
    assert checks["second_connect"] is False
    assert checks["auto_connect"] is False
    assert checks["still_initialized"] is True
    assert checks["after_shutdown_initialized"] is False


# --------------------------------------------------------------------------- fake Ray


class FakeRay:
    """Records ray.init/ray.shutdown calls without starting anything."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.initialized = False
        self.fail = fail
        self.init_calls: list[dict[str, Any]] = []
        self.cluster_flag_during_init: list[bool] = []
        self.shutdowns = 0

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs: Any) -> None:
        self.init_calls.append(kwargs)
        self.cluster_flag_during_init.append(ray_constants.ENABLE_RAY_CLUSTER)
        if self.fail is not None:
            raise self.fail
        self.initialized = True

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.initialized = False


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRay]:
    fake = FakeRay()
    monkeypatch.setattr(ray, "is_initialized", fake.is_initialized)
    monkeypatch.setattr(ray, "init", fake.init)
    monkeypatch.setattr(ray, "shutdown", fake.shutdown)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(ENV, raising=False)
    yield fake


def test_already_initialised_does_nothing(fake_ray: FakeRay) -> None:
    fake_ray.initialized = True
    assert connect() is False
    assert connect("10.0.0.1:6379") is False
    assert fake_ray.init_calls == []
    disconnect(False)
    assert fake_ray.shutdowns == 0


def test_embedded_mode_arguments(fake_ray: FakeRay) -> None:
    previous_flag = ray_constants.ENABLE_RAY_CLUSTER
    runtime_env = {"env_vars": {"X": "1"}}
    assert connect(num_cpus=2, runtime_env=runtime_env, log_to_driver=True) is True
    assert fake_ray.init_calls == [
        {
            "address": "local",
            "namespace": NAMESPACE,
            "num_cpus": 2,
            "runtime_env": runtime_env,
            "log_to_driver": True,
            "include_dashboard": False,
            "_node_ip_address": "127.0.0.1",
        }
    ]
    assert os.environ[ENV] == "0"
    # Ray's import-time cluster flag is forced off during init, then restored.
    assert fake_ray.cluster_flag_during_init == [False]
    assert ray_constants.ENABLE_RAY_CLUSTER == previous_flag


def test_embedded_mode_respects_explicit_cluster_env(
    fake_ray: FakeRay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "1")
    assert connect() is True
    assert fake_ray.cluster_flag_during_init == [True]
    assert os.environ[ENV] == "1"


def test_local_address_forces_embedded_even_with_ray_address(
    fake_ray: FakeRay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert connect("local", namespace="other") is True
    (call,) = fake_ray.init_calls
    assert call["address"] == "local"
    assert call["namespace"] == "other"
    assert call["_node_ip_address"] == "127.0.0.1"


def test_empty_ray_address_means_embedded(
    fake_ray: FakeRay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "")
    assert connect() is True
    assert fake_ray.init_calls[0]["address"] == "local"


@pytest.mark.parametrize(
    ("address", "env_address", "expected"),
    [
        ("auto", None, "auto"),
        ("ray://head:10001", None, "ray://head:10001"),
        (None, "10.0.0.1:6379", "10.0.0.1:6379"),
        ("10.0.0.2:6379", "10.0.0.1:6379", "10.0.0.2:6379"),
    ],
)
def test_join_mode_arguments(
    fake_ray: FakeRay,
    monkeypatch: pytest.MonkeyPatch,
    address: str | None,
    env_address: str | None,
    expected: str,
) -> None:
    if env_address is not None:
        monkeypatch.setenv("RAY_ADDRESS", env_address)
    assert connect(address) is True
    assert fake_ray.init_calls == [
        {
            "address": expected,
            "namespace": NAMESPACE,
            "runtime_env": None,
            "log_to_driver": False,
        }
    ]
    assert ENV not in os.environ  # joining never touches the loopback switch


def test_join_mode_rejects_num_cpus(fake_ray: FakeRay) -> None:
    with pytest.raises(ValueError, match="num_cpus"):
        connect("auto", num_cpus=2)
    assert fake_ray.init_calls == []


@pytest.mark.parametrize("address", [None, "10.0.0.1:6379"])
def test_failures_are_wrapped(fake_ray: FakeRay, address: str | None) -> None:
    cause = ConnectionError("Could not find any running Ray instance.")
    fake_ray.fail = cause
    with pytest.raises(ClusterConnectError) as info:
        connect(address)
    err = info.value
    assert err.__cause__ is cause
    assert err.address == address
    assert "Could not find any running Ray instance" in str(err)
    assert fake_ray.shutdowns == 1  # half-initialised state is cleaned up
    assert isinstance(err, exceptions.ClusterConnectError)
    assert isinstance(err, exceptions.ClusterError)


def test_cluster_connect_error_pickles() -> None:
    err = ClusterConnectError("could not connect", "10.0.0.1:6379")
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is ClusterConnectError
    assert clone.args == ("could not connect", "10.0.0.1:6379")
    assert (clone.message, clone.address) == ("could not connect", "10.0.0.1:6379")
    assert str(clone) == "could not connect"
    assert pickle.loads(pickle.dumps(ClusterConnectError("x"))).address is None


def test_disconnect_only_shuts_down_what_it_started(fake_ray: FakeRay) -> None:
    disconnect(True)  # not initialised: nothing to do
    assert fake_ray.shutdowns == 0
    assert connect() is True
    disconnect(False)
    assert fake_ray.shutdowns == 0
    disconnect(True)
    assert fake_ray.shutdowns == 1
    assert not fake_ray.initialized
