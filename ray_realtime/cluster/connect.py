"""Connect the current process (the driver) to Ray.

:func:`connect` has two modes:

* **Embedded** (``address`` is ``None``/``"local"`` and ``RAY_ADDRESS`` is
  unset or empty): start a private single-node Ray runtime inside this
  process, bound to the loopback interface ``127.0.0.1``, with the dashboard
  disabled. This is what tests, demos and ``ray-realtime serve`` without
  ``--address`` use. Even when a cluster started with ``ray start`` is running
  on the machine, a fresh runtime is started (``ray.init(address="local")``).
* **Join** (an ``address`` is given, or ``RAY_ADDRESS`` is set): connect to an
  existing cluster, e.g. ``"auto"``, ``"127.0.0.1:40123"``, ``"10.0.0.5:6379"``
  or ``"ray://head:10001"``. Nothing is started locally.

Ray and the loopback interface (Ray 2.60, Linux)
------------------------------------------------
Ray rewrites every loopback address it is given -- the node address of a new
runtime *and* the address of a cluster to join -- to the machine's routable IP,
unless clustering is disabled via ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``. Ray
reads that variable into ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``
once, when ``ray`` is first imported. A runtime bound to 127.0.0.1 is then
unreachable for a second process that asks for ``127.0.0.1:port``: Ray turns
it into ``<machine IP>:port``, where nothing listens, and retries for minutes.
So :func:`connect`

1. in embedded mode, sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in
   ``os.environ`` unless it is already set (the Ray processes it spawns
   inherit it) and passes ``_node_ip_address="127.0.0.1"``;
2. in join mode, resolves ``"auto"`` to the cluster's address itself, and when
   that address is a loopback one, joins ``127.0.0.1:port`` directly;
3. in both, aligns ``ENABLE_RAY_CLUSTER`` with the loopback choice while
   ``ray.init`` runs (restoring the previous value afterwards).

Setting the variable to ``1`` yourself opts an embedded runtime out (Ray then
binds the routable IP).

Bounded joins
-------------
Ray retries an address where nothing (or something else) listens for many
minutes, in native code that Ctrl-C does not interrupt. Before joining,
:func:`connect` therefore checks, within ``timeout`` seconds, that a gRPC
server answers there (it opens a TCP connection and expects the HTTP/2
SETTINGS frame every gRPC server sends first); otherwise it raises
:class:`ClusterConnectError` naming the address, and Ray is never asked.

Quiet by default
----------------
Ray's own log lines (token-authentication notices, "Started a local Ray
instance", raylet warnings) are not shown unless ``RAY_REALTIME_VERBOSE=1``
(the CLI's ``--verbose``): the driver's ``ray`` logger is set to ``ERROR``, and
the cluster messages Ray would print ("(raylet) ...", with colour codes even
into a file) go to this module's logger at ``INFO`` instead.

Typical use::

    started = connect()
    try:
        ...
    finally:
        disconnect(started)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import ray

from ray_realtime.actors.raylib import NAMESPACE
from ray_realtime.exceptions import ClusterConnectError
from ray_realtime.netutil import is_loopback, split_host_port

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "LOOPBACK_IP",
    "VERBOSE_ENV",
    "ClusterConnectError",
    "cluster_address",
    "connect",
    "connect_async",
    "current_address",
    "disconnect",
    "forget_local_address",
    "publish_local_address",
    "verbose",
]

logger = logging.getLogger(__name__)

LOOPBACK_IP = "127.0.0.1"
"""Address an embedded Ray runtime binds to."""

DEFAULT_CONNECT_TIMEOUT = 5.0
"""Seconds a cluster's address may take to answer before a join fails."""

VERBOSE_ENV = "RAY_REALTIME_VERBOSE"
"""``1`` shows Ray's own log lines (the CLI's ``--verbose`` sets it)."""

ENABLE_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
RAY_ADDRESS_ENV = "RAY_ADDRESS"
_AUTH_MODE_ENV = "RAY_AUTH_MODE"
_LOCAL = "local"
_AUTO = "auto"
_CLIENT_PREFIX = "ray://"
_START_HINT = "start one with `ray-realtime serve`"


def _env_truthy(value: str) -> bool:
    """Ray's own boolean parsing of environment variables."""
    return value.lower() in ("1", "true")


def verbose() -> bool:
    """Whether Ray's own log lines are shown (``RAY_REALTIME_VERBOSE``)."""
    return _env_truthy(os.environ.get(VERBOSE_ENV, ""))


@contextlib.contextmanager
def _cluster_flag(enabled: bool | None) -> Iterator[None]:
    """Set Ray's import-time ``ENABLE_RAY_CLUSTER`` flag while ``ray.init``
    runs (``None``: leave it). With the flag off Ray keeps loopback addresses
    as given instead of swapping in the machine's routable IP."""
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - layout of a future Ray
        yield
        return
    previous = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if previous is None or enabled is None:  # pragma: no cover - future Ray / unset
        yield
        return
    ray_constants.ENABLE_RAY_CLUSTER = enabled
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous


def _quiet_ray() -> int:
    """The driver's Ray log level; unless verbose, the ``ray`` logger is
    quieted and cluster messages go to this module's logger (see the module
    docstring)."""
    if verbose():
        return logging.INFO
    logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        from ray._private import worker as ray_worker
    except ImportError:  # pragma: no cover - layout of a future Ray
        return logging.ERROR
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is not None and not getattr(original, "_ray_realtime_quiet", False):

        def to_logger(data: dict[str, Any], ignore_prefix: bool) -> None:
            # Ray's background thread prints cluster messages ("(raylet) ...")
            # with this function; in quiet mode they go to our logger at INFO
            # (shown only where the application configures logging).
            for line in data.get("lines", ()):
                logger.info("(%s) %s", data.get("pid", "?"), line)

        to_logger._ray_realtime_quiet = True  # type: ignore[attr-defined]
        ray_worker.print_to_stdstream = to_logger
    return logging.ERROR


def _init(kwargs: dict[str, Any], address: str | None, what: str, flag: bool | None) -> None:
    """Call ``ray.init`` and wrap any failure in :class:`ClusterConnectError`."""
    try:
        with _cluster_flag(flag):
            ray.init(**kwargs)
    except Exception as exc:
        # A half-finished init may have left a connection or processes behind;
        # Ray was not initialised before this call, so cleaning up is safe.
        try:
            ray.shutdown()
        except Exception:  # pragma: no cover - best effort cleanup
            pass
        where = "" if address is None else f" at {address}"
        raise ClusterConnectError(f"could not {what}{where}: {exc}", address) from exc


def cluster_address(address: str | None = None) -> str | None:
    """The ``host:port`` a join would connect to, or ``None`` for an embedded
    start.

    ``"auto"`` becomes ``RAY_ADDRESS`` when that names an address, else the
    cluster recorded on this machine (the one last started with ``ray start``
    or ``ray-realtime serve``), else the one Ray finds running; ``ray://``
    addresses are returned unchanged.

    Raises:
        ClusterConnectError: ``"auto"`` and no cluster runs on this machine.
    """
    target = address if address is not None else (os.environ.get(RAY_ADDRESS_ENV) or None)
    if target is None or target == _LOCAL:
        return None
    if target != _AUTO:
        return target
    from_env = os.environ.get(RAY_ADDRESS_ENV) or _AUTO
    if from_env != _AUTO:
        return from_env  # as Ray does: RAY_ADDRESS overrides "auto"
    # The recorded address first: Ray prefers any one running GCS process it
    # finds over it, which on a machine with other Ray runtimes is a guess.
    recorded = _recorded_address()
    if recorded:
        return recorded
    try:
        from ray._private import services

        found = services.get_ray_address_from_environment(_AUTO, None)
    except (ImportError, AttributeError):  # pragma: no cover - future Ray
        return target
    except ConnectionError as exc:
        raise ClusterConnectError(
            f"no ray-realtime service or Ray cluster is running on this machine "
            f"(address 'auto'); {_START_HINT}",
            _AUTO,
        ) from exc
    return str(found) if found else target


# HTTP/2 client connection preface and an empty SETTINGS frame. Ray's GCS (and
# its client server) speak gRPC, i.e. HTTP/2, whose server "MUST" send a
# SETTINGS frame first (RFC 9113, 3.4): one answer tells a live cluster from a
# port where something else, or something stuck, listens.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_SETTINGS = 0x04
_H2_FRAME_HEADER = 9


def _probe(address: str, timeout: float) -> None:
    """Fail fast, naming the address, unless a Ray cluster answers there.

    Ray itself retries an unreachable or silent address for many minutes, in
    native code that Ctrl-C does not interrupt; this check is bounded by
    ``timeout``.
    """
    hostport = address[len(_CLIENT_PREFIX) :] if address.startswith(_CLIENT_PREFIX) else address
    parsed = split_host_port(hostport)
    if parsed is None:
        raise ClusterConnectError(
            f"invalid Ray address {address!r}: expected host:port, 'auto' or ray://host:port",
            address,
        )
    host, port = parsed
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if _env_truthy(os.environ.get("RAY_USE_TLS", "")):
                return  # TLS first: the plaintext preface would not be answered
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.sendall(_H2_PREFACE)
            header = b""
            while len(header) < _H2_FRAME_HEADER:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = sock.recv(_H2_FRAME_HEADER - len(header))
                if not chunk:
                    break
                header += chunk
    except TimeoutError as exc:
        raise ClusterConnectError(
            f"no Ray cluster answered at {address} within {timeout:g} s", address
        ) from exc
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        hint = f"; {_START_HINT}" if is_loopback(host) else ""
        raise ClusterConnectError(
            f"no Ray cluster is listening at {address} ({reason}){hint}", address
        ) from exc
    if len(header) < _H2_FRAME_HEADER or header[3] != _H2_SETTINGS:
        raise ClusterConnectError(
            f"what listens at {address} is not a Ray cluster (it does not speak gRPC)",
            address,
        )


def _enable_local_token_auth() -> None:
    """Use the machine's Ray token, as Ray does for a cluster it finds itself.

    Ray turns token authentication on for ``address="auto"`` when a token
    exists and ``RAY_AUTH_MODE`` is unset, but not for an explicit address; a
    loopback address is this machine's cluster, so it gets the same rule.
    """
    if os.environ.get(_AUTH_MODE_ENV) is not None:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # pragma: no cover - a Ray without token auth
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def connect(
    address: str | None = None,
    *,
    namespace: str = NAMESPACE,
    num_cpus: int | None = None,
    runtime_env: dict[str, Any] | None = None,
    log_to_driver: bool = False,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    metrics_export_port: int | None = None,
) -> bool:
    """Connect this process to Ray, starting an embedded runtime if needed.

    Args:
        address: Cluster to join (``"auto"``, ``"host:port"``, ``"ray://..."``).
            ``None`` falls back to ``RAY_ADDRESS``; when that is unset too, or
            when ``address == "local"``, an embedded runtime is started on
            127.0.0.1.
        namespace: Ray namespace for named actors.
        num_cpus: CPUs the embedded runtime advertises (default: all). Only
            valid in embedded mode.
        runtime_env: Job-level runtime environment passed to ``ray.init``.
        log_to_driver: Forward worker stdout/stderr to this process.
        timeout: Seconds the cluster's address may take to accept a TCP
            connection before the join fails.
        metrics_export_port: Where the embedded runtime's metrics agent serves
            Prometheus metrics (``/metrics``). Only valid in embedded mode: a
            cluster's nodes take it from ``ray start --metrics-export-port``.

    Returns:
        ``True`` when this call initialised Ray (the caller should later call
        ``disconnect(True)``); ``False`` when Ray was already initialised, in
        which case nothing is done and the arguments are ignored.

    Raises:
        ValueError: ``num_cpus`` or ``metrics_export_port`` was given while
            joining an existing cluster.
        ClusterConnectError: Ray could not be started, no cluster was found, or
            nothing listens at the address (the message names it).
    """
    if ray.is_initialized():
        return False

    given = address if address is not None else (os.environ.get(RAY_ADDRESS_ENV) or None)
    if num_cpus is not None and given not in (None, _LOCAL):
        raise ValueError(
            f"num_cpus can only be set for an embedded Ray runtime, not when joining {given!r}"
        )
    if metrics_export_port is not None and given not in (None, _LOCAL):
        raise ValueError(
            "the metrics export port can only be set for an embedded Ray runtime; a "
            f"cluster's nodes set it with `ray start --metrics-export-port` ({given!r})"
        )
    logging_level = _quiet_ray()
    target = cluster_address(address)
    if target is None:
        os.environ.setdefault(ENABLE_CLUSTER_ENV, "0")
        kwargs: dict[str, Any] = {
            "address": _LOCAL,
            "namespace": namespace,
            "num_cpus": num_cpus,
            "runtime_env": runtime_env,
            "log_to_driver": log_to_driver,
            "include_dashboard": False,
            "logging_level": logging_level,
            "_node_ip_address": LOOPBACK_IP,
        }
        if metrics_export_port is not None:
            kwargs["_metrics_export_port"] = metrics_export_port
        flag = _env_truthy(os.environ[ENABLE_CLUSTER_ENV])
        _init(kwargs, None, f"start an embedded Ray runtime on {LOOPBACK_IP}", flag)
        return True

    _probe(target, timeout)
    parsed = split_host_port(target)
    local = not target.startswith(_CLIENT_PREFIX) and parsed is not None and is_loopback(parsed[0])
    if local:
        assert parsed is not None
        # Join the loopback address itself (see the module docstring).
        target = f"{LOOPBACK_IP}:{parsed[1]}"
        _enable_local_token_auth()
    kwargs = {
        "address": target,
        "namespace": namespace,
        "runtime_env": runtime_env,
        "log_to_driver": log_to_driver,
        "logging_level": logging_level,
    }
    _init(kwargs, target, "connect to the Ray cluster", False if local else None)
    return True


# The thread that runs connect() for connect_async(). It lives as long as the
# process: an embedded runtime's processes are started with
# PR_SET_PDEATHSIG, which kills them when the *thread* that started them ends,
# so a short-lived thread would take Ray down with it.
_connector_jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
_connector_lock = threading.Lock()
_connector: threading.Thread | None = None


def _connector_loop() -> None:
    while True:
        _connector_jobs.get()()


def _run_on_connector(job: Callable[[], None]) -> None:
    global _connector
    with _connector_lock:
        if _connector is None or not _connector.is_alive():
            _connector = threading.Thread(
                target=_connector_loop, name="ray-realtime-connect", daemon=True
            )
            _connector.start()
    _connector_jobs.put(job)


async def connect_async(address: str | None = None, **options: Any) -> bool:
    """:func:`connect` without blocking the running event loop.

    Starting or joining Ray takes seconds; the work runs in one long-lived
    daemon thread of this module (not the loop's executor, whose threads an
    interrupted program would wait for at exit), so other tasks go on
    meanwhile. Already connected: returns ``False`` at once.
    """
    if ray.is_initialized():
        return False
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()

    def settle(result: bool | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(bool(result))

    def job() -> None:
        try:
            result = connect(address, **options)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    _run_on_connector(job)
    return await done


def disconnect(started: bool) -> None:
    """Shut Ray down if ``started`` (the value :func:`connect` returned) is true.

    A ``False`` value means Ray belongs to someone else and is left running.
    Safe to call when Ray is already shut down.
    """
    if started and ray.is_initialized():
        ray.shutdown()


def current_address() -> str:
    """The ``host:port`` of the cluster this process is connected to.

    Raises:
        RuntimeError: Ray is not initialised.
    """
    if not ray.is_initialized():
        raise RuntimeError("Ray is not initialised; call connect() first")
    return str(ray.get_runtime_context().gcs_address)


def _address_file() -> str | None:
    try:
        from ray._common.utils import get_ray_address_file
    except ImportError:  # pragma: no cover - layout of a future Ray
        return None
    return str(get_ray_address_file(None))


def _recorded_address() -> str | None:
    path = _address_file()
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def publish_local_address(address: str) -> bool:
    """Record ``address`` as this machine's current cluster, where ``"auto"``
    looks first (Ray's ``ray_current_cluster`` file, as ``ray start`` writes
    it). Returns whether it was written."""
    path = _address_file()
    if path is None:
        return False
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.{os.getpid()}"
        with open(partial, "w", encoding="utf-8") as f:
            f.write(address)
        os.replace(partial, path)
    except OSError:
        return False
    return True


def forget_local_address(address: str) -> None:
    """Remove the record :func:`publish_local_address` wrote, if it still
    names ``address`` (a later ``ray start`` may have replaced it)."""
    path = _address_file()
    if path is not None and _recorded_address() == address:
        with contextlib.suppress(OSError):
            os.remove(path)
