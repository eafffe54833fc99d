"""The stream that survives the network: it reopens at the byte it reached after a failure worth
a retry, with exponential backoff and jitter, and checks the object's version and sha256.

Schemes plug in an opener (one request for the bytes from an offset); all of retries, ranges,
ETag and sha256 logic lives here, once.
"""
from __future__ import annotations

import hashlib
import io
import logging
import random
import time
from typing import Any, BinaryIO, Callable, Protocol

from .options import READ_STEP, SourceError, SourceOptions, redact
from .request import _checked, _checked_before, _Want
from .retry import _retriable, _Truncated, reason_of

log = logging.getLogger(__name__)


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


def _skip(body: Any, n: int) -> None:
    while n > 0:
        got = body.read(min(n, 1 << 20))
        if not got:
            raise _Truncated(f"body ended while skipping to offset ({n} bytes short)")
        n -= len(got)


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


def _buffered(raw: io.RawIOBase, options: SourceOptions) -> BinaryIO:
    return io.BufferedReader(raw, buffer_size=min(options.chunk_bytes, 1 << 20))  # type: ignore[return-value]
