"""URL schemes, dispatched from one table: local path, file://, http(s)://, s3://, gs://, pipe:.

Remote objects (http, https, s3, gs) are read as one byte stream that survives the network:
each request has connect/read timeouts; when a connection drops, stalls, ends early or answers
with a 5xx, the stream reopens at the byte it had reached (HTTP ``Range`` / S3 ranged GET),
after an exponential backoff with jitter, and goes on, so a tar reader on top never sees a gap
or a duplicate. After ``SourceOptions.retries`` retries of one shard it raises SourceError.
With a sha256 (from dataset.json) the bytes are checked: a streamed shard when its last byte
is read, a fetched shard (``fetch_shard``: into memory or the cache) before any byte is used;
a version of an object (its strong ETag) already checked is not hashed again unless asked
(``SourceOptions.verify_remote``).

s3:// goes through s3fs and gs:// through gcsfs (both via fsspec); endpoint, region and
credentials come from the usual environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...,
GOOGLE_APPLICATION_CREDENTIALS) and are never logged. Error messages drop credentials and
query strings from URLs.

Example:
    >>> from wds_audio.sources import SourceOptions, open_shard, read_bytes   # doctest: +SKIP
    >>> manifest = read_bytes("s3://bucket/esc50/dataset.json")
    >>> opts = SourceOptions(timeout_s=10, retries=5)
    >>> with open_shard("https://host/esc50/train/fold1-000000.tar", options=opts) as f:
    ...     tar_bytes = f.read()
"""
from __future__ import annotations

import hashlib
import http.client
import io
import logging
import os
import random
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter as _Counter
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Protocol
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit

from . import httppool

log = logging.getLogger(__name__)

REMOTE = frozenset({"http", "https", "s3", "gs", "gcs"})
READ_STEP = 1 << 20  # most bytes one read of a response body asks for
VERIFY_MODES = ("always", "once", "never")  # SourceOptions.verify_remote


@dataclass
class SourceOptions:
    """How shards are read. Times are in seconds, sizes in bytes.

    timeout_s: connect timeout and the longest a read may wait for data (a stall).
    retries: retries per shard (so ``retries + 1`` tries) before SourceError.
    backoff_s, max_backoff_s: the n-th retry waits about ``backoff_s * 2**(n-1)`` (capped),
        jittered to between half and all of it so workers do not retry in lockstep.
    chunk_bytes: size of each ranged GET for s3/gs, and the read buffer.
    cache_dir, cache_bytes: a local ShardCache for remote shards that have a sha256
        (None: no cache; cache_bytes None: no size limit).
    prefetch: remote reads (a whole shard or a ranged slice) fetched ahead of the one being read,
        to hide the latency of remote stores (0: none). In the loader, a worker's streams share one
        queue (wds_audio.fetchqueue): at most ``prefetch`` reads run at once per worker, the one
        the next batches need first, and each stream holds at most ``prefetch`` fetched ahead.
    prefetch_bytes: memory one stream may hold in prefetched slices: a slice larger than
        ``prefetch_bytes / prefetch`` is opened ahead (its latency hidden) and then streamed,
        not downloaded whole.
    verify_local: also check whole local shards against their sha256.
    verify_remote: how whole remote shards are checked against their sha256 from dataset.json.
        "once" (default): the first time this process reads an object, and again whenever the
        server's strong ETag for it is not the one it had when it was checked (a rewritten object
        gets a new ETag from S3, GCS, nginx and our test server); a server that sends no strong
        ETag gets every read hashed. Damage that leaves the ETag alone (bit rot on the server's
        disk, a broken proxy) is caught on a later read only with "always". "always": every
        whole read is hashed. "never" (or False): none. sha256 costs ~0.7-0.9 ms of CPU per MB
        (SHA-NI): ~0.11 of the ~3 CPU-seconds of a benchmarks/remote.py epoch when every read is
        hashed; without it a transfer is still checked
        for its length, tar headers for their checksums, FLAC frames for their CRCs. True means
        "always". A cache always checks what it keeps.
    s3_presign: read s3:// objects with presigned GETs (signed by s3fs, credentials as usual) over
        kept-alive HTTP connections: a ranged GET of ~0.7 MB through s3fs/aiobotocore cost ~7 ms
        of client CPU, a presigned one ~0.8 ms (measured one request at a time). False: every read
        goes through s3fs. A store that refuses presigned URLs (403) is read through s3fs from then on.
    stale_tmp_s: cache temporaries untouched this long are left over from a killed run.
    """

    timeout_s: float = 30.0
    retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    chunk_bytes: int = 4 << 20
    cache_dir: str | None = None
    cache_bytes: int | None = None
    prefetch: int = 4
    prefetch_bytes: int = 64 << 20
    verify_local: bool = False
    verify_remote: str | bool = "once"
    s3_presign: bool = True
    stale_tmp_s: float = 1800.0

    def __post_init__(self) -> None:
        if isinstance(self.verify_remote, bool):
            self.verify_remote = "always" if self.verify_remote else "never"
        if self.verify_remote not in VERIFY_MODES:
            raise ValueError(f"verify_remote must be one of {VERIFY_MODES} or a bool, got {self.verify_remote!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.retries < 0 or self.prefetch < 0:
            raise ValueError(f"retries and prefetch must be >= 0, got {self.retries}, {self.prefetch}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("backoff_s and max_backoff_s must be >= 0")
        if self.chunk_bytes < 4096:
            raise ValueError(f"chunk_bytes must be >= 4096, got {self.chunk_bytes}")
        if self.cache_bytes is not None and self.cache_bytes <= 0:
            raise ValueError(f"cache_bytes must be positive or None, got {self.cache_bytes}")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        full = min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1))
        return full * (0.5 + 0.5 * rng.random())


class SourceError(Exception):
    """A shard could not be read: ``url``, a short ``reason`` ("timeout", "http 503", ...),
    the ``retries`` spent on it and the byte ``offset`` reached."""

    def __init__(self, url: str, reason: str, retries: int = 0, offset: int | None = None) -> None:
        super().__init__(url, reason, retries, offset)
        self.url, self.reason, self.retries, self.offset = url, reason, retries, offset

    def __str__(self) -> str:
        msg = f"{redact(self.url)}: {self.reason}"
        if self.retries:
            msg += f" (after {self.retries} retries)"
        if self.offset:
            msg += f" at byte {self.offset}"
        return msg


class SourceMetrics:
    """Thread-safe counters of the source layer; ``as_dict()`` gives a plain, picklable dict.

    Counters: bytes_read, opens, resumes, failed_shards, cache_hits, cache_misses,
    cache_evictions, cache_evicted_bytes, cache_corrupt, cache_too_big, prefetch_wait_s,
    sha256_checked (whole remote reads hashed and found right), sha256_skipped (whole remote reads
    of an object version this process had already checked, see ``SourceOptions.verify_remote``),
    and retries by reason (``retries`` in as_dict, with their sum in ``retries_total``).
    """

    NAMES = ("bytes_read", "opens", "resumes", "failed_shards", "cache_hits", "cache_misses",
             "cache_evictions", "cache_evicted_bytes", "cache_corrupt", "cache_too_big", "prefetch_wait_s",
             "sha256_checked", "sha256_skipped")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, float] = dict.fromkeys(self.NAMES, 0)
        self._retries: _Counter[str] = _Counter()

    def add(self, name: str, n: int | float = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def add_retry(self, reason: str) -> None:
        with self._lock:
            self._retries[reason] += 1

    def __getitem__(self, name: str) -> float:
        with self._lock:
            return self._counts.get(name, 0)

    def retries(self) -> dict[str, int]:
        with self._lock:
            return dict(self._retries)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out["retries"] = dict(self._retries)
            out["retries_total"] = sum(self._retries.values())
            return out

    def merge(self, other: dict[str, Any]) -> None:
        """Add an ``as_dict()`` from elsewhere (e.g. a DataLoader worker) into these counters."""
        with self._lock:
            for k, v in other.items():
                if k == "retries":
                    self._retries.update(v)
                elif k != "retries_total":
                    self._counts[k] = self._counts.get(k, 0) + v

    def __getstate__(self) -> dict[str, Any]:
        return self.as_dict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        self.merge(state)


def redact(url: str) -> str:
    """``url`` without user:password and query string (pre-signed URLs carry signatures there)."""
    if url.startswith("pipe:"):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


# ---- failures: which ones are worth a retry, and what to call them ----------------------------


class _HTTPStatus(Exception):
    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(code, message)
        self.code = code

    def __str__(self) -> str:
        return f"HTTP {self.code} {self.args[1]}".strip()


class _Truncated(Exception):
    """The body ended before the object's size."""


_FATAL = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, TypeError,
          ValueError, AttributeError, KeyError, IndexError, NameError, ImportError, NotImplementedError,
          AssertionError)
_FATAL_NAMES = ("Credentials", "ParamValidation", "InvalidConfig", "UnknownService")


def _chain(e: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        reason = getattr(e, "reason", None)
        if isinstance(e, urllib.error.URLError) and isinstance(reason, BaseException):
            e = reason
        else:
            e = e.__cause__ or e.__context__


def _status_of(e: BaseException) -> int | None:
    for x in _chain(e):
        if isinstance(x, _HTTPStatus):
            return x.code
        resp = getattr(x, "response", None)  # botocore ClientError
        if isinstance(resp, dict):
            code = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(code, int):
                return code
    return None


def _is_timeout(x: BaseException) -> bool:
    return isinstance(x, TimeoutError) or "Timeout" in type(x).__name__


def _is_refused(x: BaseException) -> bool:
    return isinstance(x, ConnectionRefusedError)


def _is_reset(x: BaseException) -> bool:
    name = type(x).__name__
    # aiohttp keeps the reset only in the text of its ClientPayloadError
    return isinstance(x, (ConnectionError, http.client.RemoteDisconnected)) or "Disconnect" in name \
        or ("Payload" in name and "ConnectionResetError" in str(x))


def _is_truncated(x: BaseException) -> bool:
    name = type(x).__name__
    return isinstance(x, (_Truncated, http.client.IncompleteRead)) or "Payload" in name or "IncompleteRead" in name


# The most specific cause wins: aiohttp, for one, reports a reset as an incomplete payload.
_LABELS = (("timeout", _is_timeout), ("refused", _is_refused), ("reset", _is_reset), ("truncated", _is_truncated))


def reason_of(e: BaseException) -> str:
    """A short, stable label for a failure: timeout, reset, refused, truncated, http <code>, ..."""
    status = _status_of(e)
    if status is not None:
        return f"http {status}"
    if isinstance(e, FileNotFoundError):
        return "not found"
    if isinstance(e, PermissionError):
        return "permission denied"
    chain = list(_chain(e))
    for label, test in _LABELS:
        if any(test(x) for x in chain):
            return label
    return f"error: {type(e).__name__}: {e}"[:200]


def _retriable(e: BaseException) -> bool:
    status = _status_of(e)
    if status is not None:
        return status >= 500 or status in (408, 425, 429)
    # botocore's configuration errors (no credentials, bad parameters) will not heal by waiting
    return not isinstance(e, _FATAL) and not any(w in type(e).__name__ for w in _FATAL_NAMES)


# ---- what is asked for ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Want:
    """One read: the object, the byte range wanted, what dataset.json says about the object."""

    url: str
    options: SourceOptions
    metrics: SourceMetrics
    expected_bytes: int | None = None
    expected_sha256: str | None = None
    start: int = 0
    length: int | None = None
    small: bool = False  # metadata read whole into memory: one GET, no HEAD for the size first

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.length is None

    @property
    def end(self) -> int | None:
        return None if self.length is None else self.start + self.length

    @property
    def sha256(self) -> str | None:
        """The checksum to verify: only a read of the whole object can be checked, and a remote
        one only unless ``verify_remote`` is "never" (a cache checks what it keeps regardless)."""
        if not self.whole or (self.options.verify_remote == "never" and scheme_of(self.url) in REMOTE):
            return None
        return self.expected_sha256


class CheckedVersions:
    """The object versions (URL, strong ETag, sha256) found right by a whole read's hash: under
    ``verify_remote="once"`` a whole read of one of them is not hashed again.

    Process-local by default. Given ``slots`` (a writable int64 array, e.g. a NumPy view of shared
    memory) it is one set for every process that holds them: the loader gives its DataLoader workers
    one table, so a shard checked by one worker is not hashed again by the others, nor by the
    workers of the next epoch when they are not persistent. The table keeps 64-bit fingerprints,
    open-addressed; a fingerprint lost to a full table or to two processes writing one slot at
    once only costs one more hash.
    """

    PROBES = 8

    def __init__(self, slots: Any = None) -> None:
        self._slots = slots
        self._local: set[int] = set()
        self._lock = threading.Lock()

    @staticmethod
    def fingerprint(url: str, etag: str, sha256: str) -> int:
        fp = int.from_bytes(hashlib.blake2b(f"{url}\0{etag}\0{sha256}".encode(), digest_size=8).digest(),
                            "little", signed=True)
        return fp or 1  # 0 marks an empty slot

    def _probe(self, fp: int) -> Iterator[int]:
        n = len(self._slots)
        return ((fp + i) % n for i in range(min(self.PROBES, n)))

    def __contains__(self, fp: int) -> bool:
        with self._lock:
            if self._slots is None:
                return fp in self._local
            for i in self._probe(fp):
                if self._slots[i] == fp:
                    return True
                if self._slots[i] == 0:
                    return False
            return False

    def add(self, fp: int) -> None:
        with self._lock:
            if self._slots is None:
                self._local.add(fp)
                return
            for i in self._probe(fp):
                if self._slots[i] in (0, fp):
                    self._slots[i] = fp
                    return
            self._slots[fp % len(self._slots)] = fp  # full here: one older entry is forgotten


_CHECKED = CheckedVersions()


def share_checked_versions(slots: Any) -> None:
    """Keep this process's checked versions in ``slots`` (a NumPy int64 array, see CheckedVersions)
    from now on; a no-op when they are kept there already."""
    global _CHECKED
    old = _CHECKED._slots
    if old is None or old.ctypes.data != slots.ctypes.data:
        _CHECKED = CheckedVersions(slots)


def _strong(etag: str | None) -> bool:
    return bool(etag) and not etag.startswith("W/")  # type: ignore[union-attr]


def _checked_before(want: _Want, etag: str | None) -> bool:
    """This version (``etag``) of the whole object was already hashed right (verify_remote="once")."""
    if want.options.verify_remote != "once" or not want.sha256 or not _strong(etag):
        return False
    return CheckedVersions.fingerprint(want.url, etag, want.sha256) in _CHECKED  # type: ignore[arg-type]


def _checked(want: _Want, etag: str | None) -> None:
    """The whole object hashed right: remembered by its strong ETag, counted."""
    want.metrics.add("sha256_checked")
    if _strong(etag):
        _CHECKED.add(CheckedVersions.fingerprint(want.url, etag, want.sha256))  # type: ignore[arg-type]


# ---- openers: one request for the bytes from an offset ---------------------------------------


class _Body(Protocol):
    """A response body: HTTP ones also have read/read1, pooled ones readinto1 (see
    _ResumingStream._read_some, _skip)."""

    def readinto(self, b: memoryview) -> int: ...
    def close(self) -> None: ...


class _Opener(Protocol):
    etag: str | None  # the object's ETag, once a response gave one (kept across resumes)

    def open_at(self, offset: int, end: int | None, total: int | None) -> tuple[_Body, int | None]:
        """A body from ``offset`` (to ``end``, exclusive, or the object's end) and the object's size."""
        ...


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class _HttpOpener:
    def __init__(self, url: str, options: SourceOptions, name: str | None = None) -> None:
        self.url, self.options = url, options
        self.name = name or url  # what errors call the object (a presigned URL carries credentials)
        self.etag: str | None = None

    def open_at(self, offset: int, end: int | None, total: int | None) -> tuple[_Body, int | None]:
        headers = {}
        if offset or end is not None:
            headers["Range"] = f"bytes={offset}-{'' if end is None else end - 1}"
        try:
            resp = httppool.get(self.url, headers, self.options.timeout_s)  # a kept-alive connection
        except httppool.HTTPStatusError as e:
            raise _HTTPStatus(e.code, e.reason) from None
        try:
            return resp, self._check(resp, offset)
        except BaseException:
            resp.close()
            raise

    def _check(self, resp: httppool.PooledResponse, offset: int) -> int | None:
        etag = resp.headers.get("ETag")
        if self.etag and etag and etag != self.etag:
            raise SourceError(self.name, f"object changed while reading (ETag {self.etag} -> {etag})", 0, offset)
        self.etag = self.etag or etag
        length = resp.headers.get("Content-Length")
        if resp.status == 206:
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                raise SourceError(self.name, f"server answered Range {offset}- with "
                                            f"Content-Range {resp.headers.get('Content-Range')!r}", 0, offset)
            return None if m.group(3) == "*" else int(m.group(3))
        if offset:
            # The server ignored Range: skip what is not wanted or was already delivered.
            _skip(resp, offset)
        return int(length) if length is not None else None


def _skip(body: Any, n: int) -> None:
    while n > 0:
        got = body.read(min(n, 1 << 20))
        if not got:
            raise _Truncated(f"body ended while skipping to offset ({n} bytes short)")
        n -= len(got)


class _RangeBody:
    """Reads an fsspec object from ``start`` to ``stop`` as ranged GETs of ``chunk`` bytes."""

    def __init__(self, fs: Any, path: str, start: int, stop: int | None, chunk: int) -> None:
        self.fs, self.path, self.pos, self.stop, self.chunk = fs, path, start, stop, chunk
        self.buf = memoryview(b"")

    def readinto(self, view: memoryview) -> int:
        if not self.buf:
            if self.stop is None:  # up to the end of the object, in one request (small objects only)
                if self.pos < 0:
                    return 0
                data = self.fs.cat_file(self.path, start=self.pos)
                self.pos = -1
                self.buf = memoryview(data)
                return self.readinto(view) if data else 0
            if self.pos >= self.stop:
                return 0
            data = self.fs.cat_file(self.path, start=self.pos, end=min(self.pos + self.chunk, self.stop))
            self.pos += len(data)
            self.buf = memoryview(data)
        n = min(len(view), len(self.buf))
        view[:n], self.buf = self.buf[:n], self.buf[n:]
        return n

    def close(self) -> None:
        self.buf = memoryview(b"")


_FS_CACHE: dict[tuple[Any, ...], Any] = {}
_FS_LOCK = threading.Lock()
_FS_PACKAGES = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}
_ENV_KEYS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_REGION",
             "AWS_DEFAULT_REGION", "GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST")


def _filesystem(protocol: str, options: SourceOptions) -> Any:
    """One private filesystem per (process, protocol, timeout, environment).

    Private, so its own retries can be turned off (ours are counted and backed off) without
    changing an instance fsspec hands to other code; keyed by a hash of the environment so a
    changed endpoint or credential gives a new client (the values themselves are not kept).
    """
    env = hashlib.sha256(repr([os.environ.get(k) for k in _ENV_KEYS]).encode()).hexdigest()
    key = (os.getpid(), protocol, options.timeout_s, env)
    with _FS_LOCK:
        if key not in _FS_CACHE:
            _FS_CACHE[key] = _make_filesystem(protocol, options)
        return _FS_CACHE[key]


def _make_filesystem(protocol: str, options: SourceOptions) -> Any:
    package = _FS_PACKAGES[protocol]
    try:
        __import__(package)
    except ImportError as e:
        raise ImportError(f"{protocol}:// URLs need the {package} package: pip install 'wds-audio[remote]' "
                          f"(or pip install {package})") from e
    if protocol == "s3":
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True, config_kwargs={
            "connect_timeout": options.timeout_s, "read_timeout": options.timeout_s,
            "retries": {"total_max_attempts": 1}, "signature_version": "s3v4"})
        fs.retries = 1  # s3fs's own retry loop: one try, this module retries
        return fs
    import aiohttp  # pragma: no cover - gcsfs is not installed in the test environment
    import gcsfs  # pragma: no cover

    # Per request: connect and per-read (stall) limits, no limit on the whole transfer.
    # gcsfs retries some errors itself (a fixed class setting); ours come on top.
    limits = aiohttp.ClientTimeout(total=None, sock_connect=options.timeout_s, sock_read=options.timeout_s)
    return gcsfs.GCSFileSystem(skip_instance_cache=True, requests_timeout=limits)  # pragma: no cover


class _FsspecOpener:
    etag = None  # s3fs/gcsfs reads: no ETag (every whole read is hashed)

    def __init__(self, url: str, options: SourceOptions, small: bool = False) -> None:
        self.url, self.options, self.small = url, options, small
        self.fs = _filesystem(scheme_of(url), options)

    def open_at(self, offset: int, end: int | None, total: int | None) -> tuple[_Body, int | None]:
        if total is None and end is None and self.small:
            # the rest of a small object in one GET (s3fs would send a HEAD first to learn the size)
            return _RangeBody(self.fs, self.url, offset, None, self.options.chunk_bytes), None
        if total is None:
            total = int(self.fs.size(self.url))
        stop = total if end is None else min(end, total)
        return _RangeBody(self.fs, self.url, offset, stop, self.options.chunk_bytes), total


_PRESIGN_S = 3600  # lifetime of a presigned URL; one is reused for half of it
_PRESIGNED: dict[tuple[int, str], tuple[str, float]] = {}  # (id of the filesystem, s3 URL) -> (URL, signed at)
_PRESIGN_REFUSED: set[int] = set()  # filesystems whose store answered 403 to a presigned GET


class _PresignedOpener:
    """An s3:// object read as ranged GETs of a presigned URL on kept-alive connections (see
    ``SourceOptions.s3_presign``); s3fs signs it with the usual credentials, endpoint and region."""

    def __init__(self, url: str, options: SourceOptions, small: bool = False) -> None:
        self.url, self.options = url, options
        self.fallback = _FsspecOpener(url, options, small)
        self.http: _HttpOpener | None = None

    @property
    def etag(self) -> str | None:
        return self.http.etag if self.http is not None else None

    def open_at(self, offset: int, end: int | None, total: int | None) -> tuple[_Body, int | None]:
        fs = self.fallback.fs
        if id(fs) in _PRESIGN_REFUSED:
            return self.fallback.open_at(offset, end, total)
        url = _presigned(fs, self.url)  # re-signed when it gets old: a resume may come much later
        if self.http is None:
            self.http = _HttpOpener(url, self.options, name=self.url)
        self.http.url = url  # the same opener: it remembers the object's ETag across resumes
        try:
            return self.http.open_at(offset, end, total)
        except _HTTPStatus as e:
            if e.code not in (403, 404):
                raise
            code = e.code
        if code == 404:  # as s3fs reports it (outside the except: the HTTP status must not be its cause)
            raise FileNotFoundError(f"no such key: {self.url}")
        _PRESIGN_REFUSED.add(id(fs))
        log.info("%s: presigned GET refused (HTTP 403); reading s3:// through s3fs from now on", redact(self.url))
        return self.fallback.open_at(offset, end, total)


def _presigned(fs: Any, url: str) -> str:
    key, now = (id(fs), url), time.monotonic()
    hit = _PRESIGNED.get(key)
    if hit is None or now - hit[1] > _PRESIGN_S / 2:
        hit = _PRESIGNED[key] = (fs.sign(url, expiration=_PRESIGN_S), now)
    return hit[0]


# ---- the resuming stream ----------------------------------------------------------------------


class _ResumingStream(io.RawIOBase):
    """One logical byte stream over as many requests as the network needs."""

    def __init__(self, want: _Want, opener: _Opener) -> None:
        super().__init__()
        self.url, self._want, self._opener = want.url, want, opener
        self._opt, self._metrics = want.options, want.metrics
        self._sha = hashlib.sha256() if want.sha256 else None
        self._total = want.expected_bytes  # the object's size, once known
        self._pos = want.start
        self._body: _Body | None = None
        self._failures = 0
        self._done = False
        self._rng = random.Random()  # jitter only; independent per stream on purpose
        self._attempt(self._connect)  # errors such as 404 surface at open time
        if self._sha is not None and _checked_before(want, opener.etag):
            self._sha = None
            self._metrics.add("sha256_skipped")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._done:
            return 0
        view = memoryview(b).cast("B")
        return self._attempt(lambda: self._read_some(view))

    def close(self) -> None:
        self._drop_body()
        super().close()

    @property
    def _stop(self) -> int | None:
        """Where this stream ends (exclusive), when known."""
        end = self._want.end
        return end if end is not None else self._total

    def _connect(self) -> None:
        if self._stop is not None and self._pos >= self._stop:
            return self._finish()  # nothing (left) to read
        body, total = self._opener.open_at(self._pos, self._want.end, self._total)
        self._metrics.add("opens")
        if self._pos > self._want.start:
            self._metrics.add("resumes")
        if total is not None and self._total is not None and total != self._total:
            self._drop_body(body)
            what = "dataset.json says" if self._want.expected_bytes is not None else "it was"
            self._give_up(f"object is {total} bytes, {what} {self._total}")
        self._total = total if total is not None else self._total
        if self._total is not None and self._want.end is not None and self._want.end > self._total:
            self._drop_body(body)
            self._give_up(f"bytes {self._want.start}-{self._want.end} asked of an object of {self._total} bytes")
        self._body = body
        if self._stop is not None and self._pos >= self._stop:
            self._finish()

    def _read_some(self, view: memoryview) -> int:
        if self._body is None:
            self._connect()
            if self._done:
                return 0
        assert self._body is not None
        stop = self._stop
        want = len(view) if stop is None else min(len(view), stop - self._pos)
        want = min(want, READ_STEP)
        if hasattr(self._body, "readinto1"):
            # HTTP: readinto1/read1 return what has arrived, so bytes received before a stall or a
            # drop count as progress (readinto would wait to fill the buffer and lose them on a timeout)
            n = self._body.readinto1(view[:want])
        elif hasattr(self._body, "read1"):  # a response through a proxy (urllib)
            data = self._body.read1(want)
            n = len(data)
            view[:n] = data
        else:  # a ranged-GET body: straight into the caller's buffer
            n = self._body.readinto(view[:want])
        if not n:
            if stop is not None and self._pos < stop:
                raise _Truncated(f"body ended at byte {self._pos} of {stop}")
            self._finish()
            return 0
        self._pos += n
        self._metrics.add("bytes_read", n)
        if self._sha is not None:
            self._sha.update(view[:n])
        if stop is not None and self._pos >= stop:
            self._finish()  # check as soon as the last byte arrives: tar readers stop before EOF
        return n

    def _finish(self) -> None:
        self._done = True
        self._drop_body()
        want = self._want
        if want.whole and want.expected_bytes is not None and self._pos != want.expected_bytes:
            self._give_up(f"object is {self._pos} bytes, dataset.json says {want.expected_bytes}")
        if self._sha is not None:
            if self._sha.hexdigest() != want.sha256:
                self._give_up(f"sha256 mismatch: got {self._sha.hexdigest()}, expected {want.sha256}")
            _checked(want, self._opener.etag)

    def _attempt(self, step: Callable[[], Any]) -> Any:
        while True:
            try:
                return step()
            except SourceError:
                raise
            except Exception as e:  # noqa: BLE001 - classified below, fatal ones re-raised as SourceError
                self._on_failure(e)

    def _on_failure(self, e: Exception) -> None:
        self._drop_body()
        reason = reason_of(e)
        if not _retriable(e):
            self._give_up(reason, e)
        if self._failures >= self._opt.retries:
            self._give_up(reason, e)
        self._failures += 1
        self._metrics.add_retry(reason)
        delay = self._opt.backoff(self._failures, self._rng)
        log.info("%s: %s at byte %d; retry %d/%d in %.2fs", redact(self.url), reason, self._pos,
                 self._failures, self._opt.retries, delay)
        time.sleep(delay)

    def _give_up(self, reason: str, cause: BaseException | None = None) -> None:
        self._done = True
        self._drop_body()
        self._metrics.add("failed_shards")
        err = SourceError(self.url, reason, self._failures, self._pos)
        log.warning("%s", err)
        raise err from cause

    def _drop_body(self, body: _Body | None = None) -> None:
        if body is None:
            body = self._body
        if body is self._body:
            self._body = None
        if body is not None:
            try:
                body.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is gone anyway
                pass


# ---- local files and pipes --------------------------------------------------------------------


class _Limited(io.RawIOBase):
    """At most ``left`` bytes of another stream, optionally checked against a sha256 when its
    last byte (``size``) is read: tar readers stop at the end-of-archive blocks, not at EOF."""

    def __init__(self, want: _Want, f: BinaryIO, left: int | None, sha256: str | None = None,
                 size: int | None = None) -> None:
        super().__init__()
        self.url, self._f, self._left, self._metrics = want.url, f, left, want.metrics
        self._expected, self._size = sha256, size
        self._sha = hashlib.sha256() if sha256 else None
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if self._left is not None:
            view = view[: self._left]
        n = self._f.readinto(view) if view else 0  # type: ignore[attr-defined]
        if n:
            self._pos += n
            if self._left is not None:
                self._left -= n
            if self._sha is not None:
                self._sha.update(view[:n])
        if self._sha is not None and (not n or (self._size is not None and self._pos >= self._size)):
            got, self._sha = self._sha.hexdigest(), None
            if got != self._expected:
                self._metrics.add("failed_shards")
                raise SourceError(self.url, f"sha256 mismatch: got {got}, expected {self._expected}", 0, self._pos)
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def _local_path(url: str) -> str:
    if not url.startswith("file:"):
        return url
    parts = urlparse(url)
    if parts.netloc not in ("", "localhost"):
        raise SourceError(url, f"file:// URL names host {parts.netloc!r}; only local files can be opened")
    return urllib.request.url2pathname(unquote(parts.path))


def _slice(want: _Want, f: BinaryIO, sha256: str | None = None, size: int | None = None) -> BinaryIO:
    """``f`` (seekable, at 0) limited to the wanted byte range."""
    if want.start:
        f.seek(want.start)
    if want.length is None and sha256 is None:
        return f
    return io.BufferedReader(_Limited(want, f, want.length, sha256, size))  # type: ignore[return-value]


def _open_local(want: _Want) -> BinaryIO:
    path = _local_path(want.url)
    try:
        f = open(path, "rb")
    except OSError as e:
        want.metrics.add("failed_shards")
        raise SourceError(want.url, f"cannot open {path}: {e.strerror or e}") from e
    want.metrics.add("opens")
    size = os.fstat(f.fileno()).st_size
    bad = None
    if want.expected_bytes is not None and size != want.expected_bytes:
        bad = f"file is {size} bytes, dataset.json says {want.expected_bytes}"
    elif want.end is not None and want.end > size:
        bad = f"bytes {want.start}-{want.end} asked of a file of {size} bytes"
    if bad:
        f.close()
        want.metrics.add("failed_shards")
        raise SourceError(want.url, bad)
    return _slice(want, f, want.sha256 if want.options.verify_local else None, size)


class _PipeReader(io.RawIOBase):
    """stdout of a shell command; a non-zero exit status is an error at end of stream."""

    def __init__(self, url: str, metrics: SourceMetrics) -> None:
        super().__init__()
        self.url, self._metrics = url, metrics
        self._proc = subprocess.Popen(url[len("pipe:"):], shell=True, stdout=subprocess.PIPE)  # noqa: S602 - user's own command
        metrics.add("opens")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        assert self._proc.stdout is not None
        n = self._proc.stdout.readinto(b)  # type: ignore[attr-defined]
        if n:
            self._metrics.add("bytes_read", n)
            return n
        rc = self._proc.wait()
        if rc != 0:
            self._metrics.add("failed_shards")
            raise SourceError(self.url, f"command exited with status {rc}")
        return 0

    def close(self) -> None:
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # stopped reading early and the command did not notice
            self._proc.kill()
            self._proc.wait()
        super().close()


def _open_pipe(want: _Want) -> BinaryIO:
    f: BinaryIO = io.BufferedReader(_PipeReader(want.url, want.metrics))  # type: ignore[assignment]
    if want.start:
        _skip(f, want.start)  # a pipe cannot seek: read up to the start
    if want.length is None:
        return f
    return io.BufferedReader(_Limited(want, f, want.length))  # type: ignore[return-value]


def _opener(want: _Want) -> _Opener:
    scheme = scheme_of(want.url)
    if scheme in ("http", "https"):
        return _HttpOpener(want.url, want.options)
    if scheme == "s3" and want.options.s3_presign:
        return _PresignedOpener(want.url, want.options, want.small)
    return _FsspecOpener(want.url, want.options, want.small)


def _open_remote(want: _Want) -> BinaryIO:
    return _buffered(_ResumingStream(want, _opener(want)), want.options)


def _buffered(raw: io.RawIOBase, options: SourceOptions) -> BinaryIO:
    return io.BufferedReader(raw, buffer_size=min(options.chunk_bytes, 1 << 20))  # type: ignore[return-value]


SCHEMES: dict[str, Callable[[_Want], BinaryIO]] = {
    "": _open_local, "file": _open_local, "http": _open_remote, "https": _open_remote,
    "s3": _open_remote, "gs": _open_remote, "gcs": _open_remote, "pipe": _open_pipe,
}


def scheme_of(url: str) -> str:
    """The table key of ``url``: "" for a plain path (including ``C:`` drive letters)."""
    if url.startswith("pipe:"):
        return "pipe"
    s = urlparse(url).scheme
    return "" if len(s) <= 1 else s


def _want(url: str, options: SourceOptions | None, metrics: SourceMetrics | None, expected_bytes: int | None,
          expected_sha256: str | None, start: int, length: int | None) -> tuple[str, _Want]:
    scheme = scheme_of(url)
    if scheme not in SCHEMES:
        raise ValueError(f"{redact(url)}: unsupported URL scheme {scheme!r}; known: {sorted(k for k in SCHEMES if k)}")
    if start < 0 or (length is not None and length < 0):
        raise ValueError(f"{redact(url)}: start and length must be >= 0, got {start}, {length}")
    return scheme, _Want(url, options or SourceOptions(), metrics if metrics is not None else SourceMetrics(),
                         expected_bytes, expected_sha256, start, length)


# ---- public entry points ----------------------------------------------------------------------


def open_shard(url: str, *, options: SourceOptions | None = None, expected_bytes: int | None = None,
               expected_sha256: str | None = None, metrics: SourceMetrics | None = None,
               start: int = 0, length: int | None = None) -> BinaryIO:
    """A readable stream of the object at ``url`` (or of its bytes ``start:start+length``),
    resumed across network failures.

    A remote read asks only for the wanted range. With ``options.cache_dir`` set, a remote shard
    with a sha256 is fetched whole into the cache (or found there) and the range is read from
    the cached file. The sha256 is checked when the whole object is read. Raises SourceError
    when the object cannot be read (after the retries, for the failures worth retrying).

    Example:
        >>> with open_shard("http://127.0.0.1:8000/train/fold1-000000.tar",      # doctest: +SKIP
        ...                 options=SourceOptions(timeout_s=5), expected_sha256=sha) as f:
        ...     for member in tarfile.open(fileobj=f, mode="r|"):
        ...         ...
    """
    scheme, want = _want(url, options, metrics, expected_bytes, expected_sha256, start, length)
    if scheme in REMOTE and want.options.cache_dir and expected_sha256:
        return _slice(want, _open_cached(want))
    return SCHEMES[scheme](want)


def fetch_shard(url: str, *, options: SourceOptions | None = None, expected_bytes: int | None = None,
                expected_sha256: str | None = None, metrics: SourceMetrics | None = None,
                start: int = 0, length: int | None = None) -> BinaryIO:
    """Like open_shard, but a remote shard (or range) is downloaded whole, into memory or the
    cache when configured, and a whole shard is checked against its sha256 before it is
    returned: meant for ``prefetch``, so the download happens in the background and a damaged
    shard is refetched once before any of its samples is used. Local files and pipes are
    simply opened.

    Example:
        >>> opts = SourceOptions(prefetch=2)                                        # doctest: +SKIP
        >>> fetch = lambda u: fetch_shard(u, options=opts, expected_sha256=sha_of[u])
        >>> for url, f in prefetch(urls, fetch, opts.prefetch):
        ...     ...
    """
    scheme, want = _want(url, options, metrics, expected_bytes, expected_sha256, start, length)
    if scheme not in REMOTE:
        return SCHEMES[scheme](want)
    if want.options.cache_dir and expected_sha256:
        return _slice(want, _open_cached(want))
    for attempt in range(2):
        buf, etag = _download_to_memory(replace(want, expected_sha256=None))
        if _checked_before(want, etag):
            want.metrics.add("sha256_skipped")
            return MemoryReader(buf)  # type: ignore[return-value]
        got = hashlib.sha256(buf).hexdigest() if want.sha256 else None
        if got == want.sha256:
            if got:
                _checked(want, etag)
            return MemoryReader(buf)  # type: ignore[return-value]
        if attempt:
            want.metrics.add("failed_shards")
            raise SourceError(url, f"sha256 mismatch: got {got}, expected {want.sha256}", 1)
        want.metrics.add_retry("checksum")  # one full refetch: a resume may have spliced two versions
    raise AssertionError("unreachable")  # pragma: no cover


def _download_to_memory(want: _Want) -> tuple[bytearray | memoryview, str | None]:
    """The wanted bytes, read into one buffer allocated once when their length is known, and the
    object's ETag (None when the server sent none)."""
    size = want.length if want.length is not None else (
        want.expected_bytes - want.start if want.expected_bytes is not None else None)
    if size is None:
        out = io.BytesIO()
        etag = _download(want, out)
        return out.getbuffer(), etag
    opener = _opener(want)
    raw = _ResumingStream(want, opener)
    buf = bytearray(size)
    view, pos = memoryview(buf), 0
    try:
        while pos < size and (n := raw.readinto(view[pos:])):
            pos += n
    finally:
        raw.close()
    # short: the object ended first (a whole read has already raised)
    return (buf if pos == size else buf[:pos]), opener.etag


class MemoryReader(io.RawIOBase):
    """A read-only stream over a buffer: ``read`` copies once (``io.BytesIO(bytearray)`` would copy
    the whole buffer first)."""

    def __init__(self, buf: bytearray | memoryview) -> None:
        super().__init__()
        self._view, self._pos = memoryview(buf), 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        end = len(self._view) if n is None or n < 0 else min(len(self._view), self._pos + n)
        out = bytes(self._view[self._pos:end])
        self._pos = max(self._pos, end)
        return out

    def readinto(self, b: Any) -> int:
        out = memoryview(b).cast("B")
        n = max(0, min(len(out), len(self._view) - self._pos))
        out[:n] = self._view[self._pos:self._pos + n]  # one copy, straight from the buffer
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def part(self, start: int, stop: int | None = None) -> "MemoryReader":
        """A reader of bytes ``start:stop`` of the same buffer (no copy)."""
        return MemoryReader(self._view[start:stop])  # type: ignore[arg-type]

    def close(self) -> None:
        self._view = memoryview(b"")
        super().close()


def _download(want: _Want, out: Any) -> str | None:
    """Copy the wanted bytes to ``out``; the object's ETag (None when the server sent none)."""
    opener = _opener(want)
    with _buffered(_ResumingStream(want, opener), want.options) as src:
        while chunk := src.read(want.options.chunk_bytes):
            out.write(chunk)
    return opener.etag


_CACHES: dict[tuple[Any, ...], Any] = {}


def _cache_for(options: SourceOptions) -> Any:
    from .cache import ShardCache

    key = (os.getpid(), os.path.abspath(options.cache_dir or ""), options.cache_bytes, options.stale_tmp_s)
    with _FS_LOCK:
        if key not in _CACHES:
            _CACHES[key] = ShardCache(options.cache_dir, options.cache_bytes,  # type: ignore[arg-type]
                                      stale_s=options.stale_tmp_s)
        return _CACHES[key]


def _open_cached(want: _Want) -> BinaryIO:
    """The whole shard from the cache (filled on a miss), open at byte 0."""
    from .cache import ChecksumMismatch

    cache = _cache_for(want.options)
    whole = replace(want, expected_sha256=None, start=0, length=None)  # the cache hashes what is written

    def fill(out: Any) -> None:
        _download(whole, out)

    for attempt in range(2):
        try:
            return cache.open(want.url, want.expected_sha256, fill, expected_bytes=want.expected_bytes,
                              metrics=want.metrics)
        except ChecksumMismatch as e:
            if attempt:
                want.metrics.add("failed_shards")
                raise SourceError(want.url, f"sha256 mismatch: got {e.actual}, expected {e.expected}", 1) from e
            want.metrics.add_retry("checksum")
    raise AssertionError("unreachable")  # pragma: no cover


class Prefetcher:
    """``(item, stream or exception)`` in the order of ``items``, with up to ``depth`` opens in flight
    at once (a thread each), started when the Prefetcher is made, not when it is first iterated.

    Several requests in flight hide a per-request latency that a single opener thread would pay
    once per item; starting at construction lets every stream of a worker overlap its first
    requests with the others'. The consumer holds one item, at most ``depth`` more are open.
    """

    def __init__(self, items: Iterable[Any], open_fn: Callable[[Any], BinaryIO], depth: int,
                 metrics: SourceMetrics | None = None) -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self._items, self._open, self._metrics = iter(items), open_fn, metrics
        self._pool = ThreadPoolExecutor(depth, thread_name_prefix="wds-audio-prefetch")
        self._pending: Any = deque()
        self._closed = False
        for _ in range(depth):
            self._submit()

    def _submit(self) -> None:
        try:
            item = next(self._items)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - the item iterable failed: raised in order, in the consumer
            self._pending.append((None, e))
            return
        self._pending.append((item, self._pool.submit(self._open, item)))

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> tuple[Any, BinaryIO | Exception]:
        if not self._pending:
            self.close()
            raise StopIteration
        item, fut = self._pending.popleft()
        if isinstance(fut, Exception):
            self.close()
            raise fut
        t0 = time.perf_counter()
        try:
            got: Any = fut.result()
        except Exception as e:  # noqa: BLE001 - delivered in its place; the caller's policy decides
            got = e
        if self._metrics is not None:
            self._metrics.add("prefetch_wait_s", time.perf_counter() - t0)
        self._submit()
        return item, got

    def close(self) -> None:
        """Stop opening; what was opened and not handed out is closed (now or when it arrives)."""
        if self._closed:
            return
        self._closed = True
        for _, fut in self._pending:
            if not isinstance(fut, Exception) and not fut.cancel():
                fut.add_done_callback(_close_result)
        self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _close_result(fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is None and hasattr(fut.result(), "close"):
        fut.result().close()


def prefetch(urls: Iterable[str], open_fn: Callable[[str], BinaryIO], depth: int = 1, *,
             metrics: SourceMetrics | None = None) -> Iterator[tuple[str, BinaryIO | Exception]]:
    """``(url, stream or exception)`` in the order of ``urls``, up to ``depth`` opened ahead at once.

    ``open_fn`` (use ``fetch_shard`` to download remote shards whole) runs on a pool of ``depth``
    threads for at most ``depth`` shards the consumer has not taken yet, so memory stays bounded.
    An exception from ``open_fn`` is delivered in its place, not raised: the caller's error policy
    decides. Leaving the loop early stops and closes what was opened. ``depth=0`` opens in the
    caller's thread. Time the consumer waits is added to ``metrics["prefetch_wait_s"]``.

    Example:
        >>> for url, f in prefetch(urls, lambda u: fetch_shard(u, options=opts), depth=2):  # doctest: +SKIP
        ...     if isinstance(f, Exception):
        ...         log.warning("skipping %s: %s", url, f); continue
        ...     with f:
        ...         consume(f)
    """
    if depth <= 0:
        yield from _open_each(urls, open_fn)
        return
    p = Prefetcher(urls, open_fn, depth, metrics)
    try:
        yield from p
    finally:
        p.close()


def _open_each(urls: Iterable[str], open_fn: Callable[[str], BinaryIO]) -> Iterator[tuple[str, BinaryIO | Exception]]:
    for url in urls:
        try:
            got: BinaryIO | Exception = open_fn(url)
        except Exception as e:  # noqa: BLE001 - delivered to the caller in order
            got = e
        yield url, got


def open_url(url: str, options: SourceOptions | None = None) -> BinaryIO:
    """A readable binary stream for ``url`` (kept for older callers: ``open_shard`` with defaults)."""
    return open_shard(url, options=options)


def read_bytes(url: str, *, options: SourceOptions | None = None, metrics: SourceMetrics | None = None) -> bytes:
    """The whole object at ``url`` (e.g. a remote ``dataset.json``), through the retrying path.

    Example:
        >>> manifest = json.loads(read_bytes("s3://bucket/esc50/dataset.json"))   # doctest: +SKIP
    """
    scheme, want = _want(url, options, metrics, None, None, 0, None)
    with (SCHEMES[scheme](replace(want, small=True))) as f:
        return f.read()
