"""The process's provider session (``workers.pooling``): the environment's proxies and CA
bundle are honoured, read once per host, and a host's ``~/.netrc`` never adds a login.

Real HTTP servers on 127.0.0.1 stand for the provider and for an egress proxy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from orders.providers.transport import send
from workers.pooling import pooled_session


class _Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[tuple[str, str | None]] = []  # (request line's target, Authorization)
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Recorder

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        body = self.server.name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[tuple[_Recorder, _Recorder]]:
    """A provider and a proxy, each a real server on loopback."""
    made = [_Recorder("provider"), _Recorder("proxy")]
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}) for s in made]
    for t in threads:
        t.start()
    yield made[0], made[1]
    for s in made:
        s.shutdown()
        s.server_close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No proxy or CA bundle of the shell's; a home of the test's own."""
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    ):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NETRC", raising=False)
    return tmp_path


def _get(session: requests.Session, url: str) -> requests.Response:
    return send(session, requests.Request("GET", url), what="test read", timeout=5)


def test_a_netrc_login_of_the_host_never_reaches_a_provider(
    servers: tuple[_Recorder, _Recorder], clean_env: Path
) -> None:
    provider, _ = servers
    netrc = clean_env / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    netrc.chmod(0o600)
    assert _get(pooled_session(2), provider.url + "/order").text == "provider"
    assert provider.seen == [("/order", None)]


def test_the_environments_proxy_is_used_and_no_proxy_is_honoured(
    servers: tuple[_Recorder, _Recorder], clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider, proxy = servers
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    session = pooled_session(2)
    # A host the proxy stands in front of: the request goes to the proxy, never resolved here.
    answer = _get(session, "http://provider.invalid/api/orders/1")
    assert answer.text == "proxy"
    assert proxy.seen == [("http://provider.invalid/api/orders/1", None)]
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = pooled_session(2)
    assert _get(direct, provider.url + "/order").text == "provider"
    assert provider.seen == [("/order", None)] and len(proxy.seen) == 1


def test_the_environment_is_read_once_per_host(
    servers: tuple[_Recorder, _Recorder], clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider, proxy = servers
    bundle = clean_env / "ca.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    session = pooled_session(2)
    first = session.merge_environment_settings(provider.url + "/a", {}, None, None, None)
    assert first["verify"] == str(bundle) and first["proxies"] == {}
    # What the environment says later is not read again for this host (the process's
    # environment is set before it starts); another host reads it as it is then.
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    again = session.merge_environment_settings(provider.url + "/b", {}, None, None, None)
    assert again == first
    other = session.merge_environment_settings("http://provider.invalid/x", {}, None, None, None)
    assert other["proxies"].get("http") == proxy.url
    # The caller's own settings still win over the environment's.
    mine = session.merge_environment_settings(provider.url + "/c", {}, None, False, None)
    assert mine["verify"] is False
