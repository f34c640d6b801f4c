"""Small network helpers shared by the model client and the cluster layer.

This module sits at the bottom of the package and imports nothing of ours, so
any layer may use it.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback", "split_host_port"]


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` names this machine's loopback interface.

    ``"localhost"`` and any loopback IP (``127.0.0.0/8``, ``::1``, with or
    without the brackets of a URL) count; other host names do not (they are
    not resolved: a name could point anywhere).
    """
    if not host:
        return False
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host_port(address: str) -> tuple[str, int] | None:
    """``"host:port"`` (or ``"[v6]:port"``) as ``(host, port)``; ``None`` when
    ``address`` has no valid port."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    number = int(port)
    if not 0 < number < 65536:
        return None
    return host.strip("[]"), number
