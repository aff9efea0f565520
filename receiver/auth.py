"""The two bearer tokens of ``/api`` and the decorator that asks for one.

* ``RAMPWATCH_API_TOKEN``, the partner's: create, read and list orders, read the
  events feed.
* ``RAMPWATCH_OPS_TOKEN``, the operator's: everything the partner may do, and
  raw bodies (personal data), reconcile, anomalies.

``@requires("partner")`` or ``@requires("ops")`` on a view. The token given is
compared with both configured tokens, in constant time, every time (which one
matched is not a timing signal). No token configured at all: 403 (the API is
never open by accident). No bearer token, or one that matches neither: 401. The
partner's token where the operator's is needed: 403 naming the token (and saying
so when ``RAMPWATCH_OPS_TOKEN`` is not set). ``g.role`` holds the caller's role for a view that varies by it.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from flask import current_app, g, request

from receiver.errors import Forbidden, Unauthorized

Role = Literal["partner", "ops"]
ROLES: tuple[Role, ...] = ("partner", "ops")
TOKEN_SETTINGS = {"partner": "RAMPWATCH_API_TOKEN", "ops": "RAMPWATCH_OPS_TOKEN"}

F = TypeVar("F", bound=Callable[..., Any])


def requires(role: Role) -> Callable[[F], F]:
    """The view needs the ``role`` token (``ops`` also satisfies ``partner``)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            g.role = authenticate(role)
            return view(*args, **kwargs)

        guarded.required_role = role  # type: ignore[attr-defined]  # read by the OpenAPI spec and its test
        return guarded  # type: ignore[return-value]

    return decorate


def authenticate(role: Role) -> Role:
    """The caller's role, at least ``role``; raises Unauthorized or Forbidden."""
    settings = current_app.extensions["rampwatch"].settings
    partner, ops = settings.api_token, settings.ops_token
    if not partner and not ops:
        raise Forbidden("the API is disabled: neither RAMPWATCH_API_TOKEN nor RAMPWATCH_OPS_TOKEN is set")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("a bearer token is required")
    offered = given.strip().encode()
    # Both comparisons run whatever the first says.
    is_partner = bool(partner) and hmac.compare_digest(offered, (partner or "").encode())
    is_ops = bool(ops) and hmac.compare_digest(offered, (ops or "").encode())
    if is_ops:
        return "ops"
    if not is_partner:
        raise Unauthorized("invalid bearer token")
    if role == "ops":
        if not ops:
            raise Forbidden("this endpoint needs the operator token, and RAMPWATCH_OPS_TOKEN is not set")
        raise Forbidden("this endpoint needs the operator token (RAMPWATCH_OPS_TOKEN), not the partner's")
    return "partner"


def require_ops_for(what: str) -> None:
    """Inside a partner view: refuse (403) a part of it that only the operator may use."""
    if g.get("role") != "ops":
        raise Forbidden(f"{what} needs the operator token (RAMPWATCH_OPS_TOKEN)")
