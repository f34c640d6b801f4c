"""Connect the current process (the driver) to Ray.

:func:`connect` has two modes:

* **Embedded** (``address`` is ``None``/``"local"`` and ``RAY_ADDRESS`` is
  unset or empty): start a private single-node Ray runtime inside this
  process, bound to the loopback interface ``127.0.0.1``, with the dashboard
  disabled. This is what tests, demos and ``ray-realtime serve`` without
  ``--address`` use. Even when a cluster started with ``ray start`` is running
  on the machine, a fresh runtime is started (``ray.init(address="local")``).
* **Join** (an ``address`` is given, or ``RAY_ADDRESS`` is set): connect to an
  existing cluster, e.g. ``"auto"``, ``"10.0.0.5:6379"`` or
  ``"ray://head:10001"``. Nothing is started locally.

Keeping an embedded Ray on loopback (Ray 2.60, Linux)
-----------------------------------------------------
``ray.init(_node_ip_address="127.0.0.1")`` alone is **not** enough: Ray
rewrites a loopback address to the machine's routable IP unless clustering is
disabled via ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``. Ray reads that variable
into ``ray._private.ray_constants.ENABLE_RAY_CLUSTER`` once, when ``ray`` is
first imported, so setting it later has no effect on the driver. Embedded
mode therefore

1. sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in ``os.environ`` unless the
   variable is already set (the Ray processes it spawns inherit it), and
2. while ``ray.init`` runs, aligns ``ENABLE_RAY_CLUSTER`` with the variable
   (restoring the previous value afterwards), and
3. passes ``_node_ip_address="127.0.0.1"`` and ``include_dashboard=False``.

With that, GCS, raylet, workers and agents all listen on 127.0.0.1 and
``ray.nodes()`` reports ``NodeManagerAddress == "127.0.0.1"``. Setting the
variable to ``1`` yourself opts out (Ray then binds the routable IP).

Typical use::

    started = connect()
    try:
        ...
    finally:
        disconnect(started)
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray

from ray_realtime.actors.raylib import NAMESPACE
from ray_realtime.exceptions import ClusterConnectError as _ProjectClusterConnectError

__all__ = [
    "LOOPBACK_IP",
    "ClusterConnectError",
    "connect",
    "disconnect",
]

LOOPBACK_IP = "127.0.0.1"
"""Address an embedded Ray runtime binds to."""

ENABLE_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
RAY_ADDRESS_ENV = "RAY_ADDRESS"
_LOCAL = "local"


class ClusterConnectError(_ProjectClusterConnectError):
    """Ray could not be started or the cluster could not be reached.

    Extends :class:`ray_realtime.exceptions.ClusterConnectError` with the
    ``address`` attribute. Self-contained on purpose: moving it into
    ``ray_realtime/exceptions.py`` means adding the attribute there and
    replacing this class by an import. All constructor arguments are forwarded
    to ``super().__init__`` (``args == (message, address)``), so the exception
    pickles round trip unchanged.

    Attributes:
        message: Human readable explanation (also ``str(error)``).
        address: The address that was tried (``None`` for an embedded start).
    """

    def __init__(self, message: str = "", address: str | None = None) -> None:
        super().__init__(message, address)
        self.message = message
        self.address = address


def _env_truthy(value: str) -> bool:
    """Ray's own boolean parsing of environment variables."""
    return value.lower() in ("1", "true")


@contextmanager
def _cluster_flag_from_env() -> Iterator[None]:
    """Make Ray honour ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` during ``ray.init``.

    Ray caches the variable at import time; when ``ray`` was imported before the
    variable was set, the cached flag is stale and a loopback
    ``_node_ip_address`` would be replaced by the routable IP.
    """
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover - layout of a future Ray
        yield
        return
    previous = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    value = os.environ.get(ENABLE_CLUSTER_ENV)
    if previous is None or value is None:  # pragma: no cover - future Ray / unset
        yield
        return
    ray_constants.ENABLE_RAY_CLUSTER = _env_truthy(value)
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous


def _init(kwargs: dict[str, Any], address: str | None, what: str) -> None:
    """Call ``ray.init`` and wrap any failure in :class:`ClusterConnectError`."""
    try:
        ray.init(**kwargs)
    except Exception as exc:
        # A half-finished init may have left a connection or processes behind;
        # Ray was not initialised before this call, so cleaning up is safe.
        try:
            ray.shutdown()
        except Exception:  # pragma: no cover - best effort cleanup
            pass
        where = "" if address is None else f" at {address!r}"
        raise ClusterConnectError(f"could not {what}{where}: {exc}", address) from exc


def connect(
    address: str | None = None,
    *,
    namespace: str = NAMESPACE,
    num_cpus: int | None = None,
    runtime_env: dict[str, Any] | None = None,
    log_to_driver: bool = False,
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

    Returns:
        ``True`` when this call initialised Ray (the caller should later call
        ``disconnect(True)``); ``False`` when Ray was already initialised, in
        which case nothing is done and the arguments are ignored.

    Raises:
        ValueError: ``num_cpus`` was given while joining an existing cluster.
        ClusterConnectError: Ray could not be started or reached. Note that Ray
            keeps retrying unreachable ``host:port`` addresses for a long time
            before giving up.
    """
    if ray.is_initialized():
        return False

    target = address if address is not None else (os.environ.get(RAY_ADDRESS_ENV) or None)
    if target is None or target == _LOCAL:
        os.environ.setdefault(ENABLE_CLUSTER_ENV, "0")
        kwargs: dict[str, Any] = {
            "address": _LOCAL,
            "namespace": namespace,
            "num_cpus": num_cpus,
            "runtime_env": runtime_env,
            "log_to_driver": log_to_driver,
            "include_dashboard": False,
            "_node_ip_address": LOOPBACK_IP,
        }
        with _cluster_flag_from_env():
            _init(kwargs, None, f"start an embedded Ray runtime on {LOOPBACK_IP}")
        return True

    if num_cpus is not None:
        raise ValueError(
            f"num_cpus can only be set for an embedded Ray runtime, not when joining {target!r}"
        )
    kwargs = {
        "address": target,
        "namespace": namespace,
        "runtime_env": runtime_env,
        "log_to_driver": log_to_driver,
    }
    _init(kwargs, target, "connect to the Ray cluster")
    return True


def disconnect(started: bool) -> None:
    """Shut Ray down if ``started`` (the value :func:`connect` returned) is true.

    A ``False`` value means Ray belongs to someone else and is left running.
    Safe to call when Ray is already shut down.
    """
    if started and ray.is_initialized():
        ray.shutdown()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
