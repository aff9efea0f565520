"""The loopback rule: a sandbox listens on, and calls, this machine only.

A sandbox posts callbacks to URLs it is given (per order, at Fuspay) and
listens on a port; neither may reach another machine, so a misconfigured test
or dev run can never call a real provider's partner or expose the fake. This
module owns the checks: ``is_loopback_ipv4`` (where a sandbox may listen),
``is_loopback_url`` and ``check_loopback_url`` (where it may post).
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit


def is_loopback_ipv4(host: Any) -> bool:
    """True for an IPv4 loopback address such as 127.0.0.1 (what a sandbox may bind)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` or a loopback IPv4 or IPv6 address."""
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: Any) -> bool:
    """True for an http(s) URL whose host is a loopback one."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and is_loopback_host(host)


def check_loopback_url(url: Any, what: str) -> str:
    """``url`` when it is an http(s) URL on a loopback host; ValueError otherwise."""
    if not is_loopback_url(url):
        raise ValueError(f"{what} must be an http(s) URL on a loopback host (127.0.0.1, localhost)")
    return url
