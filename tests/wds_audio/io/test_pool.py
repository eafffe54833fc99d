"""Keep-alive GETs against a real HTTP/1.1 server on 127.0.0.1: reuse, redirects, stale connections."""
from __future__ import annotations

import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from wds_audio.io import pool
from wds_audio.io.open import open_shard
from wds_audio.io.options import SourceMetrics, SourceOptions

BODY = bytes(range(256)) * 40


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections = 0
    paths: list[str] = []

    def setup(self) -> None:
        super().setup()
        type(self).connections += 1

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/data")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/missing":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
        if self.path == "/close-after":  # keep-alive promised, then the server drops the idle connection
            self.close_connection = True


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.connections, _Handler.paths = 0, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    pool._IDLE.clear()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    pool._IDLE.clear()


def _get_all(url: str) -> bytes:
    resp = pool.get(url, {}, timeout=5)
    try:
        out = b""
        while chunk := resp.read1(1000):
            out += chunk
        return out
    finally:
        resp.close()


def test_bodies_read_to_the_end_reuse_one_connection(server: str) -> None:
    assert [_get_all(f"{server}/data") for _ in range(5)] == [BODY] * 5
    assert _Handler.connections == 1


def test_a_body_left_unread_closes_its_connection(server: str) -> None:
    resp = pool.get(f"{server}/data", {}, timeout=5)
    resp.read1(10)
    resp.close()
    assert _get_all(f"{server}/data") == BODY
    assert _Handler.connections == 2


def test_a_connection_the_server_closed_while_idle_is_replaced_silently(server: str) -> None:
    url = f"{server}/close-after"
    metrics = SourceMetrics()
    for _ in range(3):
        with open_shard(url, options=SourceOptions(retries=0), metrics=metrics) as f:
            assert f.read() == BODY
    assert _Handler.connections == 3 and metrics.retries() == {}


def test_redirects_are_followed_and_errors_raised(server: str) -> None:
    assert _get_all(f"{server}/redirect") == BODY
    with pytest.raises(pool.HTTPStatusError) as e:
        pool.get(f"{server}/missing", {}, timeout=5)
    assert e.value.code == 404
    assert _get_all(f"{server}/data") == BODY
    assert _Handler.connections == 1  # the redirect and the 404 left the connection reusable


def test_proxy_settings_route_through_urllib(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With http_proxy set, a GET goes to the proxy (here the test server) with the absolute URL, even
    when urllib's global opener was made earlier without it."""
    with urllib.request.urlopen(f"{server}/data") as r:  # noqa: S310 - builds urlopen's opener now
        r.read()
    pool._uses_proxy.cache_clear()
    monkeypatch.setenv("http_proxy", server)
    monkeypatch.setenv("no_proxy", "local.example")
    try:
        assert pool._uses_proxy("http", "data.example") and not pool._uses_proxy("http", "local.example")
        resp = pool.get("http://data.example/shard.tar", {}, timeout=5)  # no such host: only the proxy can answer
        try:
            assert resp.read() == BODY
        finally:
            resp.close()
        assert _Handler.paths[-1] == "http://data.example/shard.tar"
    finally:
        pool._uses_proxy.cache_clear()
