"""A forwarding proxy in front of a moto S3 server that breaks uploads on command (tests only, 127.0.0.1).

Faults apply to writes (PUT/POST) whose path matches a pattern (fnmatch on ``/bucket/key``), one per
request, in the order they were added:
- ``"drop"``: read half of the request body, then close the connection without an answer (a connection
  dropped mid-upload); the proxy then asks moto whether the key exists and logs the answer;
- a status (500, 503): read the body, answer that status with an S3 error document, forward nothing;
- ``"deny"``: answer 403 AccessDenied (a bucket without write permission).
Everything else is forwarded unchanged.
"""
from __future__ import annotations

import fnmatch
import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class S3FaultProxy:
    def __init__(self, upstream: str) -> None:
        u = urlsplit(upstream)
        self.up_host, self.up_port = u.hostname, u.port
        self.faults: list[tuple[str, object, int | None]] = []  # (pattern, fault, remaining or None: always)
        self.hits: list[tuple[str, object]] = []
        self.after_drop: list[tuple[str, int]] = []  # (path, moto's HEAD status right after the drop)
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a) -> None:
                pass

            def _fault(self):
                if self.command not in ("PUT", "POST"):
                    return None
                path = self.path.split("?", 1)[0]
                with proxy.lock:
                    for i, (pat, fault, left) in enumerate(proxy.faults):
                        if fnmatch.fnmatch(path, pat):
                            if left is not None:
                                if left <= 1:
                                    proxy.faults.pop(i)
                                else:
                                    proxy.faults[i] = (pat, fault, left - 1)
                            proxy.hits.append((path, fault))
                            return fault
                return None

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _any(self) -> None:
                fault = self._fault()
                path = self.path.split("?", 1)[0]
                if fault == "drop":
                    n = int(self.headers.get("Content-Length") or 0)
                    self.rfile.read(n // 2)
                    self.close_connection = True
                    self.connection.shutdown(2)
                    c = http.client.HTTPConnection(proxy.up_host, proxy.up_port, timeout=10)
                    c.request("HEAD", path)
                    proxy.after_drop.append((path, c.getresponse().status))
                    c.close()
                    return
                body = self._body()
                if fault is not None:
                    code, err = (403, "AccessDenied") if fault == "deny" else (int(fault), "InternalError")
                    doc = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{err}</Code>'
                           f"<Message>injected</Message></Error>").encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(doc)))
                    self.end_headers()
                    self.wfile.write(doc)
                    return
                c = http.client.HTTPConnection(proxy.up_host, proxy.up_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                c.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST") else None,
                          headers=headers)
                r = c.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                        self.send_header(k, v)
                length = r.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                c.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, pattern: str, fault: object, times: int | None = 1) -> None:
        with self.lock:
            self.faults.append((pattern, fault, times))

    def __enter__(self) -> "S3FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
