"""Object stores through fsspec (s3fs, gcsfs): one private filesystem per process, ranged reads."""
from __future__ import annotations

import hashlib
import os
import threading
from typing import Any, Callable

from .options import SourceOptions, scheme_of
from .resume import _Body


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
_ENV_KEYS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_REGION",
             "AWS_DEFAULT_REGION", "GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST")


def _filesystem(protocol: str, options: SourceOptions, make: Callable[[SourceOptions], Any]) -> Any:
    """One private filesystem per (process, protocol, timeout, environment), made by ``make``.

    Private, so its own retries can be turned off (ours are counted and backed off) without
    changing an instance fsspec hands to other code; keyed by a hash of the environment so a
    changed endpoint or credential gives a new client (the values themselves are not kept).
    """
    env = hashlib.sha256(repr([os.environ.get(k) for k in _ENV_KEYS]).encode()).hexdigest()
    key = (os.getpid(), protocol, options.timeout_s, env)
    with _FS_LOCK:
        if key not in _FS_CACHE:
            _FS_CACHE[key] = make(options)
        return _FS_CACHE[key]


def require(package: str, protocol: str) -> None:
    """Import ``package`` or say which extra installs it."""
    try:
        __import__(package)
    except ImportError as e:
        raise ImportError(f"{protocol}:// URLs need the {package} package: pip install 'wds-audio[remote]' "
                          f"(or pip install {package})") from e


class _FsspecOpener:
    etag = None  # s3fs/gcsfs reads: no ETag (every whole read is hashed)

    def __init__(self, url: str, options: SourceOptions, make: Callable[[SourceOptions], Any],
                 small: bool = False) -> None:
        self.url, self.options, self.small = url, options, small
        self.fs = _filesystem(scheme_of(url), options, make)

    def open_at(self, offset: int, end: int | None, total: int | None) -> tuple[_Body, int | None]:
        if total is None and end is None and self.small:
            # the rest of a small object in one GET (s3fs would send a HEAD first to learn the size)
            return _RangeBody(self.fs, self.url, offset, None, self.options.chunk_bytes), None
        if total is None:
            total = int(self.fs.size(self.url))
        stop = total if end is None else min(end, total)
        return _RangeBody(self.fs, self.url, offset, stop, self.options.chunk_bytes), total
