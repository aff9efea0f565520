"""What every provider sandbox shares: a loopback HTTP server, fault switches, a courier.

A provider's sandbox (``orders/providers/<slug>/sandbox.py``) subclasses
``SandboxKit`` and adds only what is its own: orders, signing, endpoints. The kit
serves and calls loopback addresses only, and bounds every wait.

Subclass API
------------
Class attributes:

* ``name``: the slug, used in log names (``rampwatch.sandbox.<name>``) and threads.
* ``extra_switches``: ``{name: default}`` beyond the common switches ``drop``,
  ``drop_rate`` (+ global ``seed``), ``duplicate``, ``delay`` and ``reorder``. A
  ``bool`` default makes an on/off switch, a ``float`` default a duration of
  0..600 s (e.g. ``detail_delay``, ``detail_fail``).
* ``callback_timeout``: seconds allowed to each callback POST (5).
* ``status_field``: the key of an order dict that holds its present status, what
  ``truth()`` reports ("status").
* ``known_steps`` and ``step_noun``: the steps ``advance`` accepts, which
  ``autopilot`` checks first (empty: any), and what they are called in the error
  ("unknown statuses: ...").

Must implement:

* ``_handle(request: Request) -> (status, payload)`` or ``(status, payload,
  headers)``: every request outside ``/sandbox/`` (GET, POST, PATCH).
  ``request.headers`` is case-insensitive. A ``payload`` is sent as compact JSON, or
  as is when it is ``bytes``; ``headers`` (e.g. ``Retry-After``) are sent after
  ``Content-Type`` and ``Content-Length``.
* ``advance(order_id, step)``: what ``autopilot`` calls for each step.

May implement:

* ``_control(method, parts, body) -> Reply | None``: control routes
  under ``/sandbox/`` (``parts``: the unquoted path segments after it; ``body``: the
  JSON object posted, or ``{}``); None answers 404. The kit serves
  ``GET|POST /sandbox/switches``, ``POST /sandbox/flush``,
  ``GET /sandbox/deliveries``, ``GET /sandbox/orders`` (``truth()``) and
  ``GET /sandbox/orders/<id>`` (``order(id)``) first.
* ``_check_steps(steps)``: raise ValueError for an autopilot step ``advance``
  refuses (by default: one not in ``known_steps``).

Uses: ``self._lock`` (an RLock shared with the courier) around order state,
``self._orders`` (id -> order dict; ``order(id)`` returns copies),
``self._effective(order_id)`` (the switches in force for an order),
``self._detail_fault(order_id)`` (applies the ``detail_delay`` and ``detail_fail``
switches of a sandbox that declares them: waits, then says whether to fail) and
``self._send_callback(order_id, label, body, headers=None, url=None)``, which
queues one signed callback subject to the switches: ``drop``/``drop_rate`` record
it in ``dropped``; ``reorder`` holds it until ``flush()``, which releases the held
newest first; otherwise ``1 + duplicate`` copies are due after ``delay``. One
background thread POSTs due callbacks in due-time order, one attempt each, and
records ``(order_id, label, HTTP status or error name)`` in ``deliveries``.
``url=None`` means the sandbox's ``callback_url`` at delivery time.

Helpers for sandboxes and their CLIs: ``compact`` (Node-style JSON bytes),
``parse_object``, ``finite_number``, ``check_nonempty``, ``is_loopback_url`` /
``check_loopback_url``, RSA keys (``new_rsa_key``, ``load_rsa_public_key``,
``load_or_create_rsa_key``: a key pair kept in PEM files across restarts),
``serve_until_signalled(sandbox)`` (start, print the URL, serve until SIGTERM) and
``run_cli`` (the whole ``main`` of ``python -m orders.providers.<name>.sandbox``).
"""

from __future__ import annotations

import argparse
import copy
import heapq
import ipaddress
import itertools
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, unquote, urlsplit

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from requests.structures import CaseInsensitiveDict

MAX_BODY = 1 << 20
MAX_DELAY = 600.0
MAX_DUPLICATE = 100

COMMON_SWITCHES: Mapping[str, Any] = {
    "drop": False,
    "drop_rate": 0.0,
    "seed": None,
    "duplicate": 0,
    "delay": 0.0,
    "reorder": False,
}
_GLOBAL_ONLY_SWITCHES = frozenset({"seed"})

Delivery = tuple[str, str, int | str]
# (status, payload) or (status, payload, extra response headers)
Reply = tuple[int, Any] | tuple[int, Any, Mapping[str, str]]


@dataclass(frozen=True)
class Request:
    """One HTTP request as a sandbox sees it."""

    method: str
    target: str  # the request-target exactly as sent: path and query
    path: str
    query: Mapping[str, list[str]]
    raw: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def arg(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class _Callback:
    order_id: str
    label: str
    body: bytes
    headers: Mapping[str, str]
    url: str | None
    copies: int


class SandboxKit:
    """The shared base of provider sandboxes. Thread-safe; see the module docstring."""

    name: ClassVar[str] = "sandbox"
    extra_switches: ClassVar[Mapping[str, Any]] = {}
    callback_timeout: ClassVar[float] = 5.0
    status_field: ClassVar[str] = "status"
    known_steps: ClassVar[Collection[str]] = ()
    step_noun: ClassVar[str] = "steps"

    def __init__(self, *, callback_url: str | None = None, host: str = "127.0.0.1", port: int = 0):
        if not is_loopback_ipv4(host):
            raise ValueError("the sandbox binds only a loopback IPv4 address such as 127.0.0.1")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError("port must be 0..65535 (0 picks a free port)")
        self.host = host
        self.port = port
        self.log = logging.getLogger(f"rampwatch.sandbox.{self.name}")
        self._callback_url: str | None = None
        self.callback_url = callback_url

        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)
        self._orders: dict[str, dict[str, Any]] = {}
        self._defaults: dict[str, Any] = {**COMMON_SWITCHES, **self.extra_switches}
        self._switches: dict[str, Any] = dict(self._defaults)
        self._order_switches: dict[str, dict[str, Any]] = {}
        self._random = random.Random(self._defaults["seed"])
        self._queue: list[tuple[float, int, _Callback]] = []
        self._seq = itertools.count()
        self._held: list[_Callback] = []
        self._in_flight = 0
        self._deliveries: list[Delivery] = []
        self._dropped: list[tuple[str, str]] = []

        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []

    # -- what subclasses provide

    def _handle(self, request: Request) -> Reply:
        return 404, {"error": "Not found"}

    def _control(self, method: str, parts: list[str], body: dict[str, Any]) -> Reply | None:
        return None

    def _check_steps(self, steps: list[Any]) -> None:
        """Raise ValueError when ``advance`` would refuse one of ``steps``: by default, one
        not in ``known_steps`` (when there are any)."""
        unknown = [s for s in steps if s not in self.known_steps] if self.known_steps else []
        if unknown:
            raise ValueError(f"unknown {self.step_noun}: {', '.join(map(str, unknown))}")

    def advance(self, order_id: str, step: Any) -> Any:
        raise NotImplementedError

    # -- lifecycle

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        self._stopping.clear()
        server = _Server((self.host, self.port), self)
        self._server = server
        serve = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.name}-sandbox-http",
            daemon=True,
        )
        courier = threading.Thread(
            target=self._deliver_loop, name=f"{self.name}-sandbox-courier", daemon=True
        )
        self._threads = [serve, courier]
        for thread in self._threads:
            thread.start()
        self.log.info("%s sandbox listening on %s", self.name, self.url)
        return self

    def stop(self) -> None:
        """Stop serving; callbacks not yet delivered are discarded (one in flight may finish)."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        with self._cv:
            self._cv.notify_all()
        server.shutdown()
        server.server_close()
        for thread in self._threads:
            thread.join(timeout=self.callback_timeout + 1.0)
        with self._cv:
            self._queue.clear()
            self._cv.notify_all()
        self._server = None
        self._threads = []
        self.log.info("%s sandbox stopped", self.name)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321`` (running sandboxes only)."""
        if self._server is None:
            raise RuntimeError("the sandbox is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def callback_url(self) -> str | None:
        return self._callback_url

    @callback_url.setter
    def callback_url(self, value: str | None) -> None:
        self._callback_url = None if value is None else check_loopback_url(value, "callback_url")

    # -- orders

    def order(self, order_id: str) -> dict[str, Any]:
        """The order as the sandbox holds it (unsigned). Raises KeyError when unknown."""
        with self._lock:
            return copy.deepcopy(self._orders[order_id])

    def truth(self) -> dict[str, str]:
        """Every order's present status (its ``status_field``), id -> status."""
        with self._lock:
            return {oid: order[self.status_field] for oid, order in self._orders.items()}

    def autopilot(self, order_id: str, steps: Iterable[Any], interval: float = 1.0) -> threading.Thread:
        """``advance`` the order through ``steps``, one every ``interval`` seconds, on a
        daemon thread (returned, already started). Stops early when the sandbox stops."""
        plan = list(steps)
        self._check_steps(plan)
        if not finite_number(interval) or not 0 <= interval <= MAX_DELAY:
            raise ValueError(f"interval must be 0..{MAX_DELAY:g} seconds")
        with self._lock:
            if order_id not in self._orders:
                raise KeyError(order_id)

        def run() -> None:
            for step in plan:
                if self._stopping.wait(interval):
                    return
                try:
                    self.advance(order_id, step)
                except Exception:
                    self.log.exception("autopilot for order %s stopped", order_id)
                    return

        thread = threading.Thread(target=run, name=f"{self.name}-sandbox-autopilot-{order_id}", daemon=True)
        thread.start()
        return thread

    # -- switches

    def set_switches(
        self, order_id: str | None = None, *, reset: bool = False, **switches: Any
    ) -> dict[str, Any]:
        """Set fault switches globally, or for one order when ``order_id`` is given (a
        per-order value of None removes that override). ``reset=True`` first restores the
        defaults (global) or removes the order's overrides. Returns ``switches``.
        Raises ValueError on an unknown switch or a bad value; nothing changes then."""
        if order_id is not None and not isinstance(order_id, str):
            raise ValueError("order_id must be a string")
        if not isinstance(reset, bool):
            raise ValueError("reset: expected true or false")
        unknown = sorted(set(switches) - set(self._defaults))
        if unknown:
            raise ValueError(f"unknown switches: {', '.join(unknown)}; known: {', '.join(self._defaults)}")
        if order_id is not None and _GLOBAL_ONLY_SWITCHES & set(switches):
            raise ValueError("seed is a global switch")
        checked = {
            name: None if order_id is not None and value is None else self._check_switch(name, value)
            for name, value in switches.items()
        }
        with self._lock:
            if order_id is None:
                if reset:
                    self._switches = dict(self._defaults)
                    self._order_switches.clear()
                    self._random = random.Random(self._defaults["seed"])
                self._switches.update(checked)
                if "seed" in checked:
                    self._random = random.Random(checked["seed"])
            else:
                overrides = {} if reset else dict(self._order_switches.get(order_id, {}))
                for name, value in checked.items():
                    if value is None:
                        overrides.pop(name, None)
                    else:
                        overrides[name] = value
                if overrides:
                    self._order_switches[order_id] = overrides
                else:
                    self._order_switches.pop(order_id, None)
            self.log.info("switches set (order %s): %s", order_id or "*", sorted(checked))
            return self.switches

    @property
    def switches(self) -> dict[str, Any]:
        """``{"global": {...}, "orders": {order_id: {overrides}}}``."""
        with self._lock:
            return {"global": dict(self._switches), "orders": copy.deepcopy(self._order_switches)}

    def _effective(self, order_id: str | None) -> dict[str, Any]:
        with self._lock:
            out = dict(self._switches)
            if order_id is not None:
                out.update(self._order_switches.get(order_id, {}))
            return out

    def _detail_fault(self, order_id: str | None) -> bool:
        """A read of ``order_id`` under the ``detail_delay`` and ``detail_fail`` switches (of
        a sandbox that declares them): waits ``detail_delay`` (less when the sandbox stops),
        then True when ``detail_fail`` is on and the read must fail."""
        switches = self._effective(order_id)
        if switches["detail_delay"] > 0:
            self._stopping.wait(switches["detail_delay"])
        return switches["detail_fail"]

    def _check_switch(self, name: str, value: Any) -> Any:
        default = self._defaults[name]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{name}: expected true or false")
            return value
        if name == "seed":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError("seed: expected an integer or null")
            return value
        if name == "duplicate":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DUPLICATE:
                raise ValueError(f"duplicate: expected an integer 0..{MAX_DUPLICATE}")
            return value
        if not finite_number(value):
            raise ValueError(f"{name}: expected a number")
        value = float(value)
        if name == "drop_rate":
            if not 0.0 <= value <= 1.0:
                raise ValueError("drop_rate: expected 0..1")
        elif not 0.0 <= value <= MAX_DELAY:
            raise ValueError(f"{name}: expected 0..{MAX_DELAY:g} seconds")
        return value

    # -- callbacks

    @property
    def deliveries(self) -> list[Delivery]:
        """(order id, label, HTTP status or error name) of every callback actually POSTed."""
        with self._lock:
            return list(self._deliveries)

    @property
    def dropped(self) -> list[tuple[str, str]]:
        """(order id, label) of every callback a ``drop``/``drop_rate`` switch swallowed."""
        with self._lock:
            return list(self._dropped)

    @property
    def held(self) -> int:
        """How many callbacks ``reorder`` holds until ``flush()``."""
        with self._lock:
            return len(self._held)

    def flush(self) -> int:
        """Release the callbacks held by ``reorder`` for immediate delivery, newest first.
        Returns how many were released; ``wait_idle()`` waits for their delivery."""
        with self._cv:
            held, self._held = self._held, []
            for callback in reversed(held):
                self._schedule_locked(callback, 0.0)
            if held:
                self.log.info("flushed %d held callbacks", len(held))
            return len(held)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until no callback is queued or in flight (held ones do not count). False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._queue or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cv.wait(remaining)
            return True

    def _send_callback(
        self,
        order_id: str,
        label: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        url: str | None = None,
    ) -> str:
        """Queue one callback subject to the order's switches. Returns what happened:
        ``queued``, ``held``, ``dropped`` or ``no callback_url``."""
        with self._cv:
            if url is None and self._callback_url is None:
                self.log.debug("no callback_url: callback for order %s (%s) not sent", order_id, label)
                return "no callback_url"
            switches = self._effective(order_id)
            rate = switches["drop_rate"]
            if switches["drop"] or (rate > 0 and self._random.random() < rate):
                self._dropped.append((order_id, label))
                self.log.info("callback for order %s (%s) dropped by switch", order_id, label)
                return "dropped"
            callback = _Callback(
                order_id=order_id,
                label=label,
                body=body,
                headers={"Content-Type": "application/json", **(headers or {})},
                url=url,
                copies=1 + switches["duplicate"],
            )
            if switches["reorder"]:
                self._held.append(callback)
                self.log.info("callback for order %s (%s) held for reorder", order_id, label)
                return "held"
            self._schedule_locked(callback, switches["delay"])
            return "queued"

    def _schedule_locked(self, callback: _Callback, delay: float) -> None:
        due = time.monotonic() + delay
        for _ in range(callback.copies):
            heapq.heappush(self._queue, (due, next(self._seq), callback))
        self._cv.notify_all()

    def _deliver_loop(self) -> None:
        while True:
            with self._cv:
                while True:
                    if self._stopping.is_set():
                        return
                    now = time.monotonic()
                    if self._queue and self._queue[0][0] <= now:
                        _, _, callback = heapq.heappop(self._queue)
                        self._in_flight += 1
                        break
                    self._cv.wait(self._queue[0][0] - now if self._queue else None)
            outcome: int | str = "not sent"
            try:
                outcome = self._post(callback)
            finally:
                with self._cv:
                    self._in_flight -= 1
                    self._deliveries.append((callback.order_id, callback.label, outcome))
                    self._cv.notify_all()

    def _post(self, callback: _Callback) -> int | str:
        url = callback.url or self._callback_url
        if url is None:
            return "no callback_url"
        if not is_loopback_url(url):  # checked on entry too; never call out
            return "not loopback"
        what = f"callback for order {callback.order_id} ({callback.label})"
        try:
            resp = requests.post(
                url,
                data=callback.body,
                headers=dict(callback.headers),
                timeout=self.callback_timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            self.log.warning("%s failed: %s", what, type(exc).__name__)
            return type(exc).__name__
        except Exception as exc:
            self.log.exception("%s failed", what)
            return type(exc).__name__
        self.log.info("%s answered HTTP %d", what, resp.status_code)
        return resp.status_code

    # -- HTTP dispatch

    def _dispatch(self, request: Request) -> Reply:
        try:
            if request.path == "/sandbox" or request.path.startswith("/sandbox/"):
                return self._control_request(request)
            return self._handle(request)
        except Exception:
            self.log.exception("sandbox failed on %s %s", request.method, request.path)
            return 500, {"error": "Internal error"}

    def _control_request(self, request: Request) -> Reply:
        parts = [unquote(p) for p in request.path.split("/")[2:]]
        body: dict[str, Any] = {}
        if request.method in ("POST", "PATCH") and request.raw.strip():
            parsed = parse_object(request.raw)
            if parsed is None:
                return 400, {"error": "body must be a JSON object"}
            body = parsed
        match (request.method, parts):
            case ("GET", ["switches"]):
                return 200, self.switches
            case ("POST", ["switches"]):
                try:
                    return 200, self.set_switches(**body)
                except (TypeError, ValueError) as exc:
                    return 400, {"error": str(exc)}
            case ("POST", ["flush"]):
                return 200, {"flushed": self.flush()}
            case ("GET", ["deliveries"]):
                with self._lock:
                    return 200, {
                        "deliveries": [list(d) for d in self._deliveries],
                        "dropped": [list(d) for d in self._dropped],
                        "held": len(self._held),
                        "pending": len(self._queue) + self._in_flight,
                    }
            case ("GET", ["orders"]):
                return 200, {"orders": self.truth()}
            case ("GET", ["orders", order_id]):
                try:
                    return 200, self.order(order_id)
                except KeyError:
                    return 404, {"error": "unknown order"}
        reply = self._control(request.method, parts, body)
        return reply if reply is not None else (404, {"error": "Not found"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], kit: SandboxKit):
        self.kit = kit
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.kit.log.debug("connection error from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # a silent client cannot hold a thread forever
    sys_version = ""

    def version_string(self) -> str:
        return f"RampwatchSandbox-{self.server.kit.name}/1"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _serve(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._send(413 if length > MAX_BODY else 400, {"error": "Invalid request"})
            return
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = Request(
            method=method,
            target=self.path,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            raw=raw,
            headers=CaseInsensitiveDict(self.headers.items()),
        )
        status, payload, *headers = self.server.kit._dispatch(request)
        self._send(status, payload, *headers)

    def _send(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else compact(payload)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.server.kit.log.debug("client went away before the answer")

    def log_message(self, format: str, *args: Any) -> None:
        self.server.kit.log.debug("%s " + format, self.address_string(), *args)


# -- helpers shared by sandboxes


def serve_until_signalled(sandbox: SandboxKit) -> int:
    """Start ``sandbox``, print ``<name> sandbox listening on <url>``, serve until
    SIGTERM or SIGINT, stop. The exit code: 0, or 2 when it cannot listen (for CLIs)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            sandbox.start()
        except OSError as exc:
            print(f"{sandbox.name} sandbox: cannot listen on {sandbox.port}: {exc}", file=sys.stderr)
            return 2
        print(f"{sandbox.name} sandbox listening on {sandbox.url}", flush=True)
        while not stop.wait(0.5):
            continue
    finally:
        sandbox.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def run_cli(
    name: str,
    argv: Sequence[str] | None,
    *,
    description: str,
    callback_help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    build: Callable[[argparse.Namespace], SandboxKit],
) -> int:
    """The ``main`` of ``python -m orders.providers.<name>.sandbox``. Parses ``argv``:
    ``--port``, ``--callback-url`` (``callback_help``), the sandbox's own flags
    (``add_arguments``), ``--log-level``; sets up logging; ``build``s the sandbox from
    the parsed arguments (an OSError, ValueError or TypeError is printed as
    ``<name> sandbox: <error>`` and exits 2); then ``serve_until_signalled``."""
    parser = argparse.ArgumentParser(
        prog=f"python -m orders.providers.{name}.sandbox", description=description
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--callback-url", default=None, help=callback_help)
    add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sandbox = build(args)
    except (OSError, ValueError, TypeError) as exc:
        print(f"{name} sandbox: {exc}", file=sys.stderr)
        return 2
    return serve_until_signalled(sandbox)


def new_rsa_key() -> RSAPrivateKey:
    """A fresh 2048-bit RSA key (public exponent 65537)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def load_rsa_public_key(path: Path) -> RSAPublicKey:
    """The RSA public key in the PEM file ``path``; ValueError when it holds another kind."""
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def load_or_create_rsa_key(
    private_path: Path,
    public_path: Path,
    *,
    private_format: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
    public_format: serialization.PublicFormat = serialization.PublicFormat.SubjectPublicKeyInfo,
) -> RSAPrivateKey:
    """The RSA key in the PEM file ``private_path``, created when absent (``new_rsa_key``,
    written in ``private_format``, unencrypted, mode 0600; an existing file is never
    overwritten). Its public half is written to ``public_path`` in ``public_format``
    when that file is absent or differs. Missing folders are created. ValueError when
    ``private_path`` holds no RSA private key."""
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    if private_path.exists():
        key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
        if not isinstance(key, RSAPrivateKey):
            raise ValueError(f"{private_path} is not an RSA private key")
    else:
        key = new_rsa_key()
        pem = key.private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption())
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, public_format)
    if not public_path.exists() or public_path.read_bytes() != public_pem:
        public_path.write_bytes(public_pem)
    return key


def compact(payload: Any) -> bytes:
    """Compact JSON, UTF-8, as a Node service would send it."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_object(raw: bytes) -> dict[str, Any] | None:
    """The JSON object in ``raw`` (key order kept), or None."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def check_nonempty(**values: Any) -> None:
    """ValueError ``<name> must be a non-empty string`` for the first of ``values`` that is not."""
    for name, value in values.items():
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string")


def is_loopback_ipv4(host: Any) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback


def is_loopback_host(host: str | None) -> bool:
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: Any) -> bool:
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
