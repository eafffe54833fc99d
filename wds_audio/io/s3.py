"""s3:// specifics: the s3fs filesystem, and reads through presigned URLs on kept-alive
connections (falls back to s3fs where the store refuses them).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from .http import _HttpOpener
from .objects import _FsspecOpener, require
from .options import SourceOptions, redact
from .request import _Want
from .resume import _Body, _Opener
from .retry import _HTTPStatus

log = logging.getLogger(__name__)
_PRESIGN_S = 3600  # lifetime of a presigned URL; one is reused for half of it
_PRESIGNED: dict[tuple[int, str], tuple[str, float]] = {}  # (id of the filesystem, s3 URL) -> (URL, signed at)
_PRESIGN_REFUSED: set[int] = set()  # filesystems whose store answered 403 to a presigned GET


class _PresignedOpener:
    """An s3:// object read as ranged GETs of a presigned URL on kept-alive connections (see
    ``SourceOptions.s3_presign``); s3fs signs it with the usual credentials, endpoint and region."""

    def __init__(self, url: str, options: SourceOptions, small: bool = False) -> None:
        self.url, self.options = url, options
        self.fallback = _FsspecOpener(url, options, s3_filesystem, small)
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


def s3_filesystem(options: SourceOptions) -> Any:
    require("s3fs", "s3")
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, config_kwargs={
        "connect_timeout": options.timeout_s, "read_timeout": options.timeout_s,
        "retries": {"total_max_attempts": 1}, "signature_version": "s3v4"})
    fs.retries = 1  # s3fs's own retry loop: one try, wds_audio.io.resume retries
    return fs


def s3_opener(want: _Want) -> _Opener:
    if want.options.s3_presign:
        return _PresignedOpener(want.url, want.options, want.small)
    return _FsspecOpener(want.url, want.options, s3_filesystem, want.small)
