"""gs:// (and gcs://) specifics: the gcsfs filesystem with per-request limits and one try per
request, and reads pinned to one generation of the object.

A GCS object's generation changes whenever its bytes are rewritten, so it serves as the object's
strong ETag: every ranged GET after the first asks for the generation the first one saw (a rewrite
in the middle of a read is an error, never a mix of two versions), and under ``verify_remote="once"``
a generation hashed right once is not hashed again.
"""
from __future__ import annotations

import functools
from typing import Any

from .objects import _FsspecOpener, _RangeBody, require
from .options import SourceError, SourceOptions
from .request import _Want
from .resume import _Body, _Opener
from .retry import _HTTPStatus


@functools.lru_cache(maxsize=None)
def _one_try(cls: type) -> type:
    """``cls`` with one try per HTTP request: gcsfs's own loop (6 tries, up to 32 s apart, a fixed
    class setting) is left out, so wds_audio.io.resume retries, backs off and counts every failure,
    and an error status is reported as ``http <code>``."""
    from gcsfs.retry import HttpError

    request = getattr(cls._request, "__wrapped__", None)  # the request without gcsfs's retry decorator
    if request is None:  # pragma: no cover - a gcsfs without it keeps its own retries
        return cls

    async def _request(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await request(self, *args, **kwargs)
        except HttpError as e:
            if not isinstance(e.code, (int, str)) or not str(e.code).isdigit():
                raise
            raise _HTTPStatus(int(e.code), str(e.message)) from e

    return type(f"OneTry{cls.__name__}", (cls,), {"_request": _request})


def gcs_filesystem(options: SourceOptions) -> Any:
    require("gcsfs", "gs")
    import aiohttp
    import gcsfs

    # Per request: connect and per-read (stall) limits, no limit on the whole transfer.
    limits = aiohttp.ClientTimeout(total=None, sock_connect=options.timeout_s, sock_read=options.timeout_s)
    return _one_try(gcsfs.GCSFileSystem)(skip_instance_cache=True, requests_timeout=limits)


class _GenerationBody(_RangeBody):
    """Ranged GETs of one generation; a generation gone (404) is reported as the object changed."""

    def __init__(self, opener: "_GcsOpener", start: int, stop: int) -> None:
        super().__init__(opener.fs, opener.url, start, stop, opener.options.chunk_bytes)
        self.opener = opener

    def readinto(self, view: memoryview) -> int:
        if not self.buf and self.pos < self.stop:  # type: ignore[operator]
            try:
                data = self.fs.cat_file(self.path, start=self.pos, end=min(self.pos + self.chunk, self.stop),
                                        generation=self.opener.etag)
            except FileNotFoundError:
                self.opener.changed(self.pos)
                raise
            self.pos += len(data)
            self.buf = memoryview(data)
        n = min(len(view), len(self.buf))  # 0 at the end, or when the object ended early (truncated)
        view[:n], self.buf = self.buf[:n], self.buf[n:]
        return n


class _GcsOpener(_FsspecOpener):
    def __init__(self, url: str, options: SourceOptions, small: bool = False) -> None:
        super().__init__(url, options, gcs_filesystem, small)
        self.etag: str | None = None  # the generation read (set by the first ranged open)

    def open_at(self, offset: int, end: int | None, total: int | None) -> tuple[_Body, int | None]:
        if self.etag is None and total is None and end is None and self.small:
            return super().open_at(offset, end, total)  # metadata: one GET of whatever is there now
        if self.etag is None:
            info = self.fs.info(self.url)
            self.etag, total = str(info["generation"]), int(info["size"])  # checked against dataset.json
        if total is None:
            total = int(self.fs.size(self.url))
        stop = total if end is None else min(end, total)
        return _GenerationBody(self, offset, stop), total

    def changed(self, offset: int) -> None:
        """Raise 'object changed' if the object's generation is no longer the one being read."""
        self.fs.invalidate_cache(self.url)
        try:
            now = str(self.fs.info(self.url)["generation"])
        except FileNotFoundError:
            now = "none (deleted)"
        if now != self.etag:
            raise SourceError(self.url, f"object changed while reading (generation {self.etag} -> {now})", 0, offset)


def gcs_opener(want: _Want) -> _Opener:
    return _GcsOpener(want.url, want.options, want.small)
