"""The HTTP session a process calls the providers through: pooled keep-alive connections,
and at most ``limit`` requests in flight to any one provider from the process.

``pooled_session(limit)`` mounts ``BoundedAdapter`` on a ``requests.Session``. Its
connection pool keeps up to ``limit`` connections per host alive between requests, and a
semaphore per host (``scheme://host:port``, one per provider's API) holds every request
beyond ``limit`` until one in flight ends. The bound lives here, under every caller,
rather than in the poll batches alone: a batch, a single poll, a poll the callback stream
asks for and an order creation in the same process all count against it, and a slow
provider's host fills only its own semaphore, never another provider's. Each process has
its own semaphores, so the fleet's bound is ``limit`` times the processes.

The session reads the environment (``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY``,
``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``) once per host, not at every request as
``requests`` does (scanning ``os.environ`` and looking for ``~/.netrc`` cost a poll more CPU
than verifying its answer's signature), and never reads ``~/.netrc``: provider calls carry
the signatures and keys of the settings, never a login the host's home directory holds.

A request waits at most ``GATE_WAIT`` seconds for its turn, then fails as a connection
timeout would (``requests.ConnectTimeout``): the callers read that as a provider that
cannot be reached now, and the sweep asks again after its backoff.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

GATE_WAIT = 60.0  # seconds a request may wait for a free slot on its provider's host


class BoundedAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` with at most ``limit`` requests in flight per host."""

    def __init__(self, limit: int, *, gate_wait: float = GATE_WAIT):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        # pool_block=False: the semaphore already bounds what is in flight; the pool only
        # keeps that many connections alive for reuse.
        super().__init__(pool_connections=16, pool_maxsize=limit, pool_block=False)
        self.limit = limit
        self.gate_wait = gate_wait
        self._gates: dict[str, threading.BoundedSemaphore] = {}
        self._guard = threading.Lock()

    def gate(self, url: str | bytes | None) -> threading.BoundedSemaphore:
        """The semaphore of ``url``'s host, made on first use."""
        host = _origin(url)
        with self._guard:
            gate = self._gates.get(host)
            if gate is None:
                gate = self._gates[host] = threading.BoundedSemaphore(self.limit)
            return gate

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        gate = self.gate(request.url)
        if not gate.acquire(timeout=self.gate_wait):
            raise requests.ConnectTimeout(f"no free slot for {self.limit} requests to the host in time")
        try:
            # The body is read inside send (callers never stream), so the slot is held
            # for the whole exchange.
            return super().send(request, *args, **kwargs)
        finally:
            gate.release()


def _origin(url: str | bytes | None) -> str:
    parts = urlsplit(url.decode() if isinstance(url, bytes) else url or "")
    return f"{parts.scheme}://{parts.netloc}".lower()


class PooledSession(requests.Session):
    """A ``requests.Session`` that reads the environment once per host (module docstring).

    ``trust_env`` is off, so ``requests`` neither reads ``~/.netrc`` nor the environment
    at every request; ``merge_environment_settings`` gives what it would have read from
    the environment (the proxies for the host, ``NO_PROXY`` applied, and the CA bundle),
    as the environment stood the first time the host was called."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        self._reader = requests.Session()  # trust_env on: reads the environment as requests does
        self._environment: dict[tuple[str, str | None], tuple[dict[str, str], Any]] = {}

    def merge_environment_settings(
        self, url: str | bytes | None, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        origin = _origin(url)
        no_proxy = (proxies or {}).get("no_proxy")  # the caller's, applied as requests does
        known = self._environment.get((origin, no_proxy))
        if known is None:
            read = self._reader.merge_environment_settings(
                origin, {"no_proxy": no_proxy} if no_proxy else {}, None, None, None
            )
            known = self._environment[(origin, no_proxy)] = (read["proxies"], read["verify"])
        env_proxies, env_verify = known
        proxies = dict(proxies or {})
        for scheme, proxy in env_proxies.items():
            proxies.setdefault(scheme, proxy)
        if verify is True or verify is None:
            verify = env_verify
        return super().merge_environment_settings(url, proxies, stream, verify, cert)


def pooled_session(limit: int) -> requests.Session:
    """A ``PooledSession`` whose http and https calls go through one ``BoundedAdapter(limit)``."""
    session = PooledSession()
    adapter = BoundedAdapter(limit)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
