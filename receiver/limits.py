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
  A process remembers for ``CLEAR_FOR`` (1 s) that a client was under its budget, so
  a provider's steady stream of good callbacks costs one Redis command each (the
  enqueue), not two; the process that counts a refusal forgets it at once, another
  web process within that second.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import time
from collections.abc import Callable, Sequence

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


CLEAR_FOR = 1.0  # seconds a process trusts that a client was under its budget
MAX_REMEMBERED = 10_000  # clients remembered so, at most


@functools.lru_cache(maxsize=MAX_REMEMBERED)
def _budget_key(provider: str, address: str | None) -> str:
    """A client's key. Hashed: the key names no address (Redis keys show up in monitoring);
    remembered, as every callback of a provider asks for it."""
    digest = hashlib.sha256((address or "unknown").encode()).hexdigest()[:32]
    return f"rampwatch:unverified:{provider}:{digest}"


class UnverifiedLimiter:
    """Counts refused requests per (provider, client address) in fixed windows."""

    def __init__(self, redis: Redis, limit: int, window: int, clock: Callable[[], float] = time.monotonic):
        self.redis = redis
        self.limit = limit
        self.window = window
        self.clock = clock
        self._clear: dict[str, float] = {}  # key -> until when it is known to be under budget

    def check(self, provider: str, address: str | None) -> None:
        """Raise RateLimited when this client has used up its refusals for the window."""
        key = _budget_key(provider, address)
        now = self.clock()
        if self._clear.get(key, 0.0) > now:
            return
        count = self.redis.get(key)  # the TTL is read only when refused
        if count is None or int(count) < self.limit:
            if len(self._clear) >= MAX_REMEMBERED:
                self._clear.clear()  # many addresses: start over rather than grow
            self._clear[key] = now + CLEAR_FOR
            return
        ttl = self.redis.ttl(key)
        retry_after = int(ttl) if ttl and int(ttl) > 0 else self.window
        raise RateLimited(
            f"too many refused {provider} requests from this address; retry in {retry_after}s",
            retry_after,
        )

    def count(self, provider: str, address: str | None) -> None:
        """One more refusal for this client, in the current window."""
        key = _budget_key(provider, address)
        self._clear.pop(key, None)
        with self.redis.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, self.window, nx=True)
            pipe.execute()
