"""Who may post callbacks, and how often a client may fail to.

* The client address is ``request.remote_addr``: the peer's, or, when
  ``RAMPWATCH_TRUSTED_PROXIES`` is N > 0, the address the N-th proxy from us saw
  (werkzeug's ``ProxyFix``, installed by ``create_app``). Entries further left in
  ``X-Forwarded-For`` are whatever the client wrote and are never used.
* A provider with ``<PREFIX>ALLOWED_IPS`` set answers 403 to every other address.
* Unverified traffic is rate-limited per provider and client address: each
  refused request (4xx: bad signature, bad payload, too large, too slow...) counts
  in Redis for ``RAMPWATCH_UNVERIFIED_WINDOW`` seconds; once a client has
  ``RAMPWATCH_UNVERIFIED_LIMIT`` refusals in the window, its requests are answered
  429 with ``Retry-After`` until the window ends, before any signature is checked.
  Verified callbacks never count, so a provider whose callbacks verify is never
  throttled. When Redis is down the check fails like the enqueue would: 503.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence

from redis import Redis

from config import IPNetwork
from receiver.errors import AddressNotAllowed, RateLimited


def address_allowed(address: str | None, allowed: Sequence[IPNetwork]) -> bool:
    """Whether ``address`` may post: any address when ``allowed`` is empty."""
    if not allowed:
        return True
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:203.0.113.7 is 203.0.113.7
    return any(ip in network for network in allowed)


def require_allowed(provider: str, address: str | None, allowed: Sequence[IPNetwork]) -> None:
    if not address_allowed(address, allowed):
        raise AddressNotAllowed(f"this client address may not post {provider} callbacks")


class UnverifiedLimiter:
    """Counts refused requests per (provider, client address) in fixed windows."""

    def __init__(self, redis: Redis, limit: int, window: int):
        self.redis = redis
        self.limit = limit
        self.window = window

    def _key(self, provider: str, address: str | None) -> str:
        # Hashed: the key names no address (Redis keys show up in monitoring).
        digest = hashlib.sha256((address or "unknown").encode()).hexdigest()[:32]
        return f"rampwatch:unverified:{provider}:{digest}"

    def check(self, provider: str, address: str | None) -> None:
        """Raise RateLimited when this client has used up its refusals for the window."""
        key = self._key(provider, address)
        count = self.redis.get(key)  # one command on every callback; the TTL only when refused
        if count is not None and int(count) >= self.limit:
            ttl = self.redis.ttl(key)
            retry_after = int(ttl) if ttl and int(ttl) > 0 else self.window
            raise RateLimited(
                f"too many refused {provider} requests from this address; retry in {retry_after}s",
                retry_after,
            )

    def count(self, provider: str, address: str | None) -> None:
        """One more refusal for this client, in the current window."""
        key = self._key(provider, address)
        with self.redis.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, self.window, nx=True)
            pipe.execute()
