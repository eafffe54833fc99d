"""Keep-alive HTTP(S) GETs: idle connections kept per process and host, redirects followed.

urllib opens a new TCP (and TLS) connection for every request and the server starts a new
handler for each; a loader makes one request per shard slice, so that set-up was a good part of
the transport's CPU on both ends (measured: benchmarks/remote.py). A connection goes back to the
pool only once its response was read to the end; one that failed or was cut off is closed.
A reused connection the server has meanwhile closed is retried once on a fresh one, silently:
that is how keep-alive works, not a network fault. Requests through a proxy (``http_proxy``
etc., read once per process and host) still go through urllib.

Example:
    >>> resp = get("http://127.0.0.1:8000/x.tar", {"Range": "bytes=0-511"}, timeout=5)  # doctest: +SKIP
    >>> resp.status, len(resp.read())                                                   # doctest: +SKIP
    (206, 512)
"""
from __future__ import annotations

import functools
import http.client
import os
import threading
import urllib.request
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

MAX_IDLE = 8  # idle connections kept per (scheme, host, port)
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
_IDLE: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
_LOCK = threading.Lock()


def _after_fork() -> None:
    global _LOCK
    _LOCK = threading.Lock()
    _IDLE.clear()  # the parent's sockets are not this process's to use


os.register_at_fork(after_in_child=_after_fork)


class HTTPStatusError(Exception):
    """The server answered with a status >= 400 (after redirects)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"HTTP {code} {reason}")
        self.code, self.reason = code, reason


class PooledResponse:
    """An ``http.client.HTTPResponse`` whose connection returns to the pool when it is closed
    after the whole body was read."""

    def __init__(self, resp: http.client.HTTPResponse, conn: http.client.HTTPConnection, key: tuple[str, str, int]) -> None:
        self._resp, self._conn, self._key = resp, conn, key
        self.status, self.reason, self.headers = resp.status, resp.reason, resp.headers

    def read(self, n: int | None = None) -> bytes:
        return self._resp.read(n)

    def read1(self, n: int = -1) -> bytes:
        return self._resp.read1(n)

    def readinto(self, b: Any) -> int:
        return self._resp.readinto(b)

    def readinto1(self, b: Any) -> int:
        """Like ``read1`` but into ``b``: what has arrived (at most one receive from the socket),
        without a bytes object in between (one copy less per byte)."""
        resp = self._resp
        if resp.chunked or resp.fp is None:
            data = resp.read1(len(b))
            b[:len(data)] = data
            return len(data)
        view = memoryview(b).cast("B")
        if resp.length is not None:
            view = view[:resp.length]
        n = resp.fp.readinto1(view) if len(view) else 0
        if resp.length is not None:
            resp.length -= n
        return n

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        resp = self._resp
        # read to its end: closed by a read that found nothing left, or no bytes left to read
        # (read1 does not close the response when it takes the last byte)
        reusable = (resp.isclosed() or resp.length == 0) and not resp.will_close
        resp.close()
        if reusable:
            _put(self._key, conn)
        else:
            conn.close()


def _put(key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
    with _LOCK:
        idle = _IDLE.setdefault(key, [])
        if len(idle) < MAX_IDLE:
            idle.append(conn)
            return
    conn.close()


def _take(key: tuple[str, str, int]) -> http.client.HTTPConnection | None:
    with _LOCK:
        idle = _IDLE.get(key)
        return idle.pop() if idle else None


@functools.lru_cache(maxsize=256)
def _uses_proxy(scheme: str, host: str) -> bool:
    # read once per process and host: scanning the environment cost ~0.5 ms per request
    return scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host)


def _urllib_get(url: str, headers: dict[str, str], timeout: float) -> Any:
    # a new opener, not urlopen's: that one read the proxy settings once, at its first use
    opener = urllib.request.build_opener()
    try:
        return opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError as e:
        e.close()
        raise HTTPStatusError(e.code, str(e.reason)) from None


def get(url: str, headers: dict[str, str], timeout: float) -> Any:
    """GET ``url`` on a kept-alive connection; the response has status, headers, read1, readinto,
    close. Raises HTTPStatusError for a status >= 400, OSError/HTTPException for network faults."""
    parts = urlsplit(url)
    if _uses_proxy(parts.scheme, parts.hostname or ""):
        return _urllib_get(url, headers, timeout)
    for _ in range(MAX_REDIRECTS + 1):
        resp = _get_once(parts, headers, timeout)
        if resp.status not in _REDIRECTS or not resp.headers.get("Location"):
            if resp.status >= 400:
                resp.close()
                raise HTTPStatusError(resp.status, resp.reason)
            return resp
        location = resp.headers["Location"]
        resp.read()  # drain, so the connection can be reused
        resp.close()
        url = urljoin(url, location)
        parts = urlsplit(url)
    raise HTTPStatusError(310, f"more than {MAX_REDIRECTS} redirects")


def _get_once(parts: SplitResult, headers: dict[str, str], timeout: float) -> PooledResponse:
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.hostname}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    key = (parts.scheme, parts.hostname or "", port)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = _take(key)
    if conn is not None:
        try:
            return _send(conn, key, target, parts.netloc, headers, timeout)
        except _STALE:
            conn.close()  # closed by the server while idle: one more try on a new connection
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "", port, timeout=timeout)
    try:
        return _send(conn, key, target, parts.netloc, headers, timeout)
    except BaseException:
        conn.close()
        raise


def _send(conn: http.client.HTTPConnection, key: tuple[str, str, int], target: str, host: str,
          headers: dict[str, str], timeout: float) -> PooledResponse:
    conn.timeout = timeout
    if conn.sock is not None:
        conn.sock.settimeout(timeout)
    conn.request("GET", target, headers={"Host": host, "Accept-Encoding": "identity", **headers})
    return PooledResponse(conn.getresponse(), conn, key)
