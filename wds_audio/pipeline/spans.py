"""A local clip's bytes held as their place in the shard file, read again when the clip is decoded.

A training stream holds up to ``shuffle_buffer`` encoded clips (and a rebalancing reservoir its
own): as bytes, 8 streams x 256 5-s FLAC clips of ~110 kB are up to 225 MB. A map-style Dataset
shuffles indices and holds nothing. Measured with 2,048 such clips, where the buffers fill
(benchmarks/throughput.py (c), 3 paired rounds): peak PSS of the loader's process tree 750 MB with
the bytes held, 628 MB with spans, at the same clips/s. From a local shard the reader can keep a :class:`Span` instead (file, offset, size, and
the file's identity) and the bytes are read when the clip is drawn, from the page cache, which
the sequential read has just filled. Any check of the whole shard (``verify_local``) still sees
every byte as it streams past.

A span is read only from the very file the stream read: the file's identity (device, inode, size,
modification time) is taken from the open stream, and its first bytes are kept with the span; a
file replaced or rewritten since gives a clear error, counted as a skip, never other bytes.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x.bin")
    >>> _ = open(path, "wb").write(b"headerPAYLOAD")
    >>> span = Span(path, identity(os.stat(path)), 6, 7)
    >>> read_span(span)
    b'PAYLOAD'
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

OPEN_FILES = 16  # descriptors kept open per process (a stream's buffer spans a shard or two)
HEAD_BYTES = 16  # of a clip kept with its span and compared when it is read again (a FLAC's "fLaC" + STREAMINFO)


@dataclass(frozen=True)
class Span:
    """``size`` bytes at ``offset`` of the local file ``path``, whose identity was ``ident``, and
    whose first bytes were ``head``."""

    path: str
    ident: tuple[int, int, int, int]
    offset: int
    size: int
    head: bytes = b""


def identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What tells one version of a file from another: device, inode, size, modification time."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class _Files:
    """Open descriptors by path, least recently used closed first. A descriptor is read only while
    the file it names still has the identity a span was taken with (checked at every read: a
    rewrite in place moves the modification time on); a file replaced since (a new inode under the
    name) is read through the descriptor still open on the old one, or, once that was closed, is
    an error."""

    def __init__(self, keep: int = OPEN_FILES) -> None:
        self.keep, self.lock = keep, threading.Lock()
        self.fds: OrderedDict[str, int] = OrderedDict()

    def pread(self, span: Span) -> bytes:
        # under the lock: another thread must not close (and the kernel reuse) a descriptor mid-read
        with self.lock:
            fd = self.fds.get(span.path)
            if fd is not None and identity(os.fstat(fd)) != span.ident:
                os.close(self.fds.pop(span.path))
                fd = None
            if fd is None:
                fd = os.open(span.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                now = identity(os.fstat(fd))
                if now != span.ident:
                    os.close(fd)
                    raise OSError(f"{span.path} changed after it was read (device, inode, size, mtime were "
                                  f"{span.ident}, now {now})")
                self.fds[span.path] = fd
                while len(self.fds) > self.keep:
                    os.close(self.fds.popitem(last=False)[1])
            self.fds.move_to_end(span.path)
            return os.pread(fd, span.size, span.offset)

    def close(self) -> None:
        with self.lock:
            while self.fds:
                os.close(self.fds.popitem()[1])


_FILES = _Files()


def _forked() -> None:
    """In a forked child: the parent's descriptors closed, a new lock (the parent's may have been
    held by another thread at the fork)."""
    fds = list(_FILES.fds.values())
    _FILES.__init__()  # type: ignore[misc]
    for fd in fds:
        os.close(fd)


os.register_at_fork(after_in_child=_forked)


def read_span(span: Span) -> bytes:
    """The bytes of ``span``; OSError when the file changed or is shorter than it was."""
    data = _FILES.pread(span)
    if len(data) != span.size:
        raise OSError(f"{span.path}: {len(data)} of {span.size} bytes at offset {span.offset}")
    if not data.startswith(span.head):
        raise OSError(f"{span.path}: the {span.size} bytes at offset {span.offset} do not begin as they did when "
                      "the shard was read")
    return data


def with_bytes(sample: dict[str, Any]) -> dict[str, Any]:
    """``sample`` with every :class:`Span` among its members replaced by the bytes it names (the
    same dict when it holds none)."""
    spans = {k: v for k, v in sample.items() if isinstance(v, Span)}
    if not spans:
        return sample
    return {**sample, **{k: read_span(v) for k, v in spans.items()}}
