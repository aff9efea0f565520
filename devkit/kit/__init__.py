"""The shared kit of the provider sandboxes, split by concern.

``sandbox`` (``SandboxKit``, the base class: lifecycle, orders, autopilot),
``server`` (Werkzeug's server, ``Request``, ``Reply``, routing), ``switches``
(fault switches), ``courier`` (the callback thread), ``control`` (the
``/sandbox/`` API), ``keys`` (RSA key files), ``cli`` (``python -m
devkit.<slug>``), ``loopback`` and ``wire`` (small checks). This package
re-exports what a sandbox uses, so one import line serves it.
"""

from devkit.kit.cli import run_cli, serve_until_signalled
from devkit.kit.courier import Delivery
from devkit.kit.keys import load_or_create_rsa_key, load_rsa_public_key, new_rsa_key
from devkit.kit.loopback import check_loopback_url, is_loopback_host, is_loopback_ipv4, is_loopback_url
from devkit.kit.sandbox import SandboxKit
from devkit.kit.server import MAX_BODY, Reply, Request, route, rules_map
from devkit.kit.switches import COMMON_SWITCHES, DETAIL_SWITCHES, MAX_DELAY, MAX_DUPLICATE
from devkit.kit.wire import check_nonempty, compact, finite_number, parse_object

__all__ = [
    "COMMON_SWITCHES",
    "DETAIL_SWITCHES",
    "MAX_BODY",
    "MAX_DELAY",
    "MAX_DUPLICATE",
    "Delivery",
    "Reply",
    "Request",
    "SandboxKit",
    "check_loopback_url",
    "check_nonempty",
    "compact",
    "finite_number",
    "is_loopback_host",
    "is_loopback_ipv4",
    "is_loopback_url",
    "load_or_create_rsa_key",
    "load_rsa_public_key",
    "new_rsa_key",
    "parse_object",
    "route",
    "rules_map",
    "run_cli",
    "serve_until_signalled",
]
