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
    >>> from wds_audio.io import SourceOptions, open_shard, read_bytes   # doctest: +SKIP
    >>> manifest = read_bytes("s3://bucket/esc50/dataset.json")
    >>> opts = SourceOptions(timeout_s=10, retries=5)
    >>> with open_shard("https://host/esc50/train/fold1-000000.tar", options=opts) as f:
    ...     tar_bytes = f.read()
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import replace
from typing import Any, BinaryIO, Callable

from .file import _open_local, _open_pipe, _slice
from .gcs import gcs_opener
from .http import _HttpOpener
from .objects import _FS_LOCK
from .options import REMOTE, SourceError, SourceMetrics, SourceOptions, redact, scheme_of
from .request import _checked, _checked_before, _Want
from .resume import _buffered, _Opener, _ResumingStream
from .s3 import s3_opener

log = logging.getLogger(__name__)


def _http_opener(want: _Want) -> _Opener:
    return _HttpOpener(want.url, want.options)


# The remote schemes: how one request for an object's bytes is made. The rest of a remote read
# (retries, resuming, checks) is the same for all of them (resume.py).
OPENERS: dict[str, Callable[[_Want], _Opener]] = {
    "http": _http_opener, "https": _http_opener, "s3": s3_opener, "gs": gcs_opener, "gcs": gcs_opener,
}


def _opener(want: _Want) -> _Opener:
    return OPENERS[scheme_of(want.url)](want)


def _open_remote(want: _Want) -> BinaryIO:
    return _buffered(_ResumingStream(want, _opener(want)), want.options)


SCHEMES: dict[str, Callable[[_Want], BinaryIO]] = {
    "": _open_local, "file": _open_local, "pipe": _open_pipe, **{scheme: _open_remote for scheme in OPENERS},
}


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
