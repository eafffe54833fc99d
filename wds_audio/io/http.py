"""http(s):// objects as ranged GETs on kept-alive connections (io/pool.py)."""
from __future__ import annotations

import re

from . import pool as httppool
from .options import SourceError, SourceOptions
from .resume import _Body, _skip
from .retry import _HTTPStatus

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
