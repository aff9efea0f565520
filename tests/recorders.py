"""Loopback HTTP servers for tests: a base that serves a handler on a free 127.0.0.1 port,
one that serves a WSGI app (the receiver, a partner's endpoint), and a recorder of every
POST (our stand-in for rampwatch's webhook endpoint).
Importable from any test as ``recorders`` (the tests folder is on sys.path)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from werkzeug.serving import make_server


class Loopback:
    """Serves ``handler`` on 127.0.0.1 (a free port) in a daemon thread until ``close()``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class WsgiLoopback:
    """Serves the WSGI ``app`` on 127.0.0.1 (a free port, threaded) until ``close()``.

    Shutdown waits for the serving loop's next poll: 50 ms, not werkzeug's 500."""

    def __init__(self, app: Any):
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def __enter__(self) -> WsgiLoopback:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CallbackRecorder(Loopback):
    """Records every POST (headers, raw body, arrival time) and answers 200 ``OK``."""

    path = "/webhooks/test"

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with recorder.lock:
                    recorder.posts.append({"headers": dict(self.headers), "raw": raw, "at": time.monotonic()})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return self.base + self.path

    def raws(self) -> list[bytes]:
        with self.lock:
            return [p["raw"] for p in self.posts]

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.raws()]
