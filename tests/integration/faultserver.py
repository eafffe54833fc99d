"""A small HTTP server for tests: serves a directory, honours Range, injects faults on command.

Faults are set per path pattern (fnmatch, relative to the root, e.g. ``"train/*.tar"``) and
consumed per path, one per request, in the order they were added:

- ``status=503``: answer with that status (and a short body) instead of the file;
- ``reset_after=N``: send N body bytes, then reset the connection (TCP RST);
- ``truncate_after=N``: promise the full Content-Length, send N bytes, close cleanly;
- ``stall_after=N, stall_s=S``: send N bytes, then send nothing for S seconds, then close;
- ``latency_s=S``: wait S seconds before answering (on top of the server-wide ``latency_s``);
- ``ignore_range=True``: answer 200 with the whole file even when a Range was asked for.

``times`` is how many requests of each matching path a fault applies to (None: all of them).
The server counts requests per path and keeps a log of (path, Range header, status).

It also answers as a read-only S3 endpoint for GET and HEAD with path-style addressing
(``/bucket/key``), which is how botocore talks to an endpoint given as an IP address, so the
same faults can be injected under s3fs.

Example:
    >>> with FaultServer(root) as srv:                                          # doctest: +SKIP
    ...     srv.add_fault("train/*.tar", Fault(reset_after=10_000))
    ...     data = urllib.request.urlopen(srv.url("train/a.tar")).read()
"""
from __future__ import annotations

import fnmatch
import os
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass
class Fault:
    status: int | None = None
    reset_after: int | None = None
    truncate_after: int | None = None
    stall_after: int | None = None
    stall_s: float = 0.0
    latency_s: float = 0.0
    ignore_range: bool = False
    times: int | None = 1


class _Rule:
    def __init__(self, pattern: str, fault: Fault) -> None:
        self.pattern, self.fault = pattern, fault
        self.used: Counter[str] = Counter()

    def take(self, path: str) -> bool:
        if not fnmatch.fnmatchcase(path, self.pattern):
            return False
        if self.fault.times is not None and self.used[path] >= self.fault.times:
            return False
        self.used[path] += 1
        return True


class FaultServer:
    """ThreadingHTTPServer on 127.0.0.1:<free port> serving ``root`` with faults on command."""

    def __init__(self, root: str | Path, host: str = "127.0.0.1") -> None:
        self.root = Path(root).resolve()
        self.latency_s = 0.0
        self.etag = "strong"  # "strong" (mtime-size, as nginx), "weak" (W/...) or None (no ETag header)
        self.requests: Counter[str] = Counter()
        self.log: list[tuple[str, str | None, int]] = []
        self.queries: list[tuple[str, str]] = []  # (path, query string) of every request
        # (path, Range header) of each request a fault was given to, in the order they were given:
        # the log is written later, so two requests of one path may be logged in the other order
        self.faulted: list[tuple[str, str | None]] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _QuietServer((host, 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, rel: str) -> str:
        return f"{self.base}/{rel.lstrip('/')}"

    def add_fault(self, pattern: str, fault: Fault) -> None:
        with self._lock:
            self._rules.append(_Rule(pattern, fault))

    def clear(self) -> None:
        """Drop all faults and counts."""
        with self._lock:
            self._rules.clear()
            self.requests.clear()
            self.log.clear()
            self.queries.clear()
            self.faulted.clear()

    def start(self) -> "FaultServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="faultserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes stalled handlers
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _next_fault(self, path: str, query: str = "", rng: str | None = None) -> Fault | None:
        with self._lock:
            self.requests[path] += 1
            self.queries.append((path, query))
            for rule in self._rules:
                if rule.take(path):
                    self.faulted.append((path, rng))
                    return rule.fault
        return None

    def _record(self, path: str, rng: str | None, status: int) -> None:
        with self._lock:
            self.log.append((path, rng, status))


class _QuietServer(ThreadingHTTPServer):
    request_queue_size = 128  # socketserver's 5 drops SYNs when loaders open many ranges at once
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, retry) closes its end mid-response: expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _make_handler(server: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        srv = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    srv: FaultServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet during tests
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        fault = self.srv._next_fault(rel, urlsplit(self.path).query, self.headers.get("Range"))
        delay = self.srv.latency_s + (fault.latency_s if fault else 0.0)
        if delay:
            time.sleep(delay)
        target = (self.srv.root / rel).resolve()
        if self.srv.root not in target.parents or not target.is_file():
            return self._error(rel, 404, "NoSuchKey")
        if fault and fault.status:
            return self._error(rel, fault.status, "InternalError" if fault.status == 500 else "SlowDown")
        size = target.stat().st_size
        start, end, status = 0, size, 200
        rng = self.headers.get("Range")
        if rng and not (fault and fault.ignore_range):
            parsed = _parse_range(rng, size)
            if parsed is None:
                self._record(rel, 416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end, status = parsed[0], parsed[1], 206
        self._record(rel, status)
        self.send_response(status)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        if self.srv.etag:
            weak = "W/" if self.srv.etag == "weak" else ""
            self.send_header("ETag", f'{weak}"{target.stat().st_mtime_ns:x}-{size:x}"')
        self.send_header("Last-Modified", formatdate(target.stat().st_mtime, usegmt=True))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if body:
            self._send_body(target, start, end, fault)

    def _send_body(self, target: Path, start: int, end: int, fault: Fault | None) -> None:
        cut = None
        if fault is not None:
            cut = next((n for n in (fault.reset_after, fault.truncate_after, fault.stall_after) if n is not None), None)
        if cut is None:
            # sendfile: the benchmarks run this server on the loader's cores, so it should cost
            # as little CPU as a real one (a read + copy + write per request cost ~30 % more)
            with open(target, "rb") as f:
                sent = start
                while sent < end:
                    n = os.sendfile(self.connection.fileno(), f.fileno(), sent, end - sent)
                    if not n:  # the file shrank under us: the client sees a short body
                        break
                    sent += n
            return
        with open(target, "rb") as f:
            f.seek(start)
            payload = f.read(end - start)
        self.wfile.write(payload[:cut])
        self.wfile.flush()
        assert fault is not None
        if fault.stall_after is not None:
            self.srv._stop.wait(fault.stall_s)
        if fault.reset_after is not None:
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _error(self, rel: str, code: int, s3_code: str) -> None:
        self._record(rel, code)
        body = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{s3_code}</Code>"
                f"<Message>injected {code}</Message></Error>").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _record(self, rel: str, status: int) -> None:
        self.srv._record(rel, self.headers.get("Range"), status)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:  # the fault closed the socket under the handler
            pass


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single ``bytes=`` range, or None when it cannot be satisfied."""
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):  # suffix range: the last N bytes
        n = int(m.group(2))
        return (max(0, size - n), size) if n else None
    start = int(m.group(1))
    end = min(size, int(m.group(2)) + 1) if m.group(2) else size
    return (start, end) if start < size and start < end else None
