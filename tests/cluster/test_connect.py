"""Tests for ray_realtime.cluster.connect.

``test_embedded_ray_binds_loopback`` is the only test here that starts Ray (in
a child process, so it runs even when the test session already holds Ray);
all other tests replace ``ray.init``/``ray.shutdown`` with fakes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
import socket
import subprocess
import sys
import threading
import time
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
    cluster_address,
    connect,
    disconnect,
    forget_local_address,
    publish_local_address,
)

ENV = conn.ENABLE_CLUSTER_ENV


# --------------------------------------------------------------------------- real Ray


# The embedded start runs in a child process: the test session may already
# hold a Ray runtime (the shared cluster fixture of tests/conftest.py), and
# connect() in this process would then only return False.
_EMBEDDED_CHECK = r"""
import asyncio, json, sys, time

import ray

from ray_realtime.actors.raylib import NAMESPACE
from ray_realtime.cluster.connect import (
    LOOPBACK_IP, connect, connect_async, disconnect,
)

checks = {}
started = False
try:
    t0 = time.perf_counter()
    # Off the event loop, in connect's own thread: Ray's processes must
    # outlive the call (they die with the thread that started them).
    started = asyncio.run(connect_async(num_cpus=1))
    checks["ray_init_seconds"] = round(time.perf_counter() - t0, 2)

    @ray.remote(num_cpus=0)
    def one() -> int:
        return 1

    checks["remote_call"] = ray.get(one.remote(), timeout=60)
    checks["started"] = started
    checks["initialized"] = ray.is_initialized()
    alive = [n for n in ray.nodes() if n["Alive"]]
    checks["addresses"] = [n["NodeManagerAddress"] for n in alive]
    checks["node_ip"] = ray.util.get_node_ip_address()
    checks["namespace"] = ray.get_runtime_context().namespace
    # Already initialised: nothing happens and the caller must not shut down.
    checks["second_connect"] = connect()
    checks["auto_connect"] = connect("auto", num_cpus=4)
    # `status` against a Ray without the service says how to start it.
    import contextlib, io
    from ray_realtime.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        checks["status_code"] = main(["status"])
    checks["status_err"] = err.getvalue()
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
    assert checks["remote_call"] == 1
    assert checks["initialized"] is True
    assert checks["addresses"] == [LOOPBACK_IP]
    assert checks["node_ip"] == LOOPBACK_IP
    assert checks["namespace"] == NAMESPACE
    assert checks["expected"] == {"loopback": LOOPBACK_IP, "namespace": NAMESPACE}
    assert checks["second_connect"] is False
    assert checks["auto_connect"] is False
    assert checks["still_initialized"] is True
    assert checks["status_code"] == 2
    assert re.search(
        r"no ray-realtime service is running at 127\.0\.0\.1:\d+; "
        r"start one with `ray-realtime serve`",
        checks["status_err"],
    ), checks["status_err"]
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
def fake_ray(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeRay]:
    fake = FakeRay()
    monkeypatch.setattr(ray, "is_initialized", fake.is_initialized)
    monkeypatch.setattr(ray, "init", fake.init)
    monkeypatch.setattr(ray, "shutdown", fake.shutdown)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(ENV, raising=False)
    # Token auth is Ray's business; the fake cluster below has none.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    # "auto" reads this folder's ray_current_cluster, never the machine's.
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    yield fake


class FakeGcs:
    """A TCP listener on 127.0.0.1 that answers each connection with ``reply``
    (an HTTP/2 SETTINGS frame by default, as a gRPC server does), or, with
    ``reply=None``, accepts and says nothing."""

    SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

    def __init__(self, reply: bytes | None = SETTINGS) -> None:
        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.reply is None:
                self.held.append(conn)  # silent: keep it open, answer nothing
                continue
            with conn:
                conn.sendall(self.reply)

    def close(self) -> None:
        # shutdown() wakes the accept() in the thread; close() alone does not.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for held in self.held:
            held.close()
        self._thread.join(5)


@pytest.fixture
def gcs() -> Iterator[FakeGcs]:
    server = FakeGcs()
    yield server
    server.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
            "logging_level": logging.ERROR,  # quiet unless RAY_REALTIME_VERBOSE
            "_node_ip_address": "127.0.0.1",
        }
    ]
    assert os.environ[ENV] == "0"
    # Ray's import-time cluster flag is forced off during init, then restored.
    assert fake_ray.cluster_flag_during_init == [False]
    assert ray_constants.ENABLE_RAY_CLUSTER == previous_flag


def test_verbose_keeps_rays_info_lines(fake_ray: FakeRay, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(conn.VERBOSE_ENV, "1")
    assert connect() is True
    assert fake_ray.init_calls[0]["logging_level"] == logging.INFO


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
    ("address", "env_address"),
    [
        ("127.0.0.1:{port}", None),
        ("localhost:{port}", None),
        (None, "127.0.0.1:{port}"),
        ("auto", "localhost:{port}"),
        ("127.0.0.1:{port}", "10.0.0.1:6379"),
    ],
)
def test_joining_a_loopback_address_stays_on_loopback(
    fake_ray: FakeRay,
    gcs: FakeGcs,
    monkeypatch: pytest.MonkeyPatch,
    address: str | None,
    env_address: str | None,
) -> None:
    # Ray would rewrite 127.0.0.1 to the machine's IP (where a served runtime
    # does not listen) unless its cluster flag is off while it connects.
    if env_address is not None:
        monkeypatch.setenv("RAY_ADDRESS", env_address.format(port=gcs.port))
    previous_flag = ray_constants.ENABLE_RAY_CLUSTER
    target = None if address is None else address.format(port=gcs.port)
    assert connect(target) is True
    assert fake_ray.init_calls == [
        {
            "address": gcs.address,
            "namespace": NAMESPACE,
            "runtime_env": None,
            "log_to_driver": False,
            "logging_level": logging.ERROR,
        }
    ]
    assert fake_ray.cluster_flag_during_init == [False]
    assert ray_constants.ENABLE_RAY_CLUSTER == previous_flag
    assert ENV not in os.environ  # joining never touches the variable


def test_auto_finds_the_published_local_address(fake_ray: FakeRay, gcs: FakeGcs) -> None:
    # What `ray-realtime serve` records is where "auto" looks first.
    assert publish_local_address(gcs.address) is True
    assert cluster_address("auto") == gcs.address
    assert connect("auto") is True
    assert fake_ray.init_calls[0]["address"] == gcs.address
    forget_local_address("127.0.0.1:1")  # someone else's: left alone
    assert cluster_address("auto") == gcs.address
    forget_local_address(gcs.address)
    assert not (Path(os.environ["RAY_TMPDIR"]) / "ray" / "ray_current_cluster").exists()


def test_join_mode_rejects_num_cpus(fake_ray: FakeRay) -> None:
    with pytest.raises(ValueError, match="num_cpus"):
        connect("auto", num_cpus=2)
    assert fake_ray.init_calls == []


def test_nothing_listening_fails_at_once_naming_the_address(fake_ray: FakeRay) -> None:
    address = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(ClusterConnectError) as info:
        connect(address)
    assert time.monotonic() - t0 < 2.0
    assert info.value.address == address
    assert address in str(info.value)
    assert "ray-realtime serve" in str(info.value)
    assert fake_ray.init_calls == []  # Ray's minutes-long retry loop never starts


def test_a_silent_listener_fails_within_the_timeout(fake_ray: FakeRay) -> None:
    silent = FakeGcs(reply=None)
    try:
        t0 = time.monotonic()
        with pytest.raises(ClusterConnectError, match=r"within 0\.5 s") as info:
            connect(silent.address, timeout=0.5)
        assert time.monotonic() - t0 < 3.0
    finally:
        silent.close()
    assert info.value.address == silent.address
    assert fake_ray.init_calls == []


def test_something_else_listening_is_not_a_cluster(fake_ray: FakeRay) -> None:
    http = FakeGcs(reply=b"HTTP/1.1 400 Bad Request\r\n\r\n")
    try:
        with pytest.raises(ClusterConnectError, match="not a Ray cluster") as info:
            connect(http.address)
    finally:
        http.close()
    assert http.address in str(info.value)
    assert fake_ray.init_calls == []


@pytest.mark.parametrize("address", ["nonsense", "host:port", "10.0.0.1:99999"])
def test_malformed_address_is_a_typed_error(fake_ray: FakeRay, address: str) -> None:
    with pytest.raises(ClusterConnectError, match="invalid Ray address"):
        connect(address)


@pytest.mark.parametrize("joining", [False, True])
def test_failures_are_wrapped(fake_ray: FakeRay, gcs: FakeGcs, joining: bool) -> None:
    address = gcs.address if joining else None
    cause = ConnectionError("Could not find any running Ray instance.")
    fake_ray.fail = cause
    with pytest.raises(ClusterConnectError) as info:
        connect(address)
    err = info.value
    assert err.__cause__ is cause
    assert err.address == address
    assert "Could not find any running Ray instance" in str(err)
    assert fake_ray.shutdowns == 1  # half-initialised state is cleaned up
    assert isinstance(err, exceptions.ClusterError)


def test_one_cluster_connect_error_class() -> None:
    assert ClusterConnectError is exceptions.ClusterConnectError
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
