"""Local files (plain paths, file://) and pipe: URLs, with the same slicing and sha256 checks as remote reads."""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import urllib.request
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

from .options import SourceError, SourceMetrics
from .request import _Want
from .resume import _skip

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

    def fileno(self) -> int:
        return self._f.fileno()

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
